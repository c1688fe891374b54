"""Client-side helpers for local runs: send jobs, wait for them, print the status table."""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson

from shared.services import Services
from shared.store import MAX_MESSAGE_BYTES, BatchRow, JobRow


def send_job(services: Services, body: dict | bytes) -> None:
    """Drop a job message on the submit queue, as a user would (raw JSON)."""
    text = body.decode() if isinstance(body, bytes) else orjson.dumps(body).decode()
    services.queues.send(services.settings.submit_queue, text)


def send_items(services: Services, items: list, *, collection: str, job_id: str, options: dict | None = None) -> None:
    """Send items as one job: inline when the message fits, else uploaded to a blob and referenced.

    `options` are further message fields, e.g. `{"repair": ["bbox"]}` or `{"mode": "upsert"}`.
    """
    body = {"v": 1, "job_id": job_id, "collection": collection, "items": items, **(options or {})}
    text = orjson.dumps(body).decode()
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        blob = services.payloads.put(f"inbox/{job_id}.json", orjson.dumps({"type": "FeatureCollection", "features": items}))
        text = orjson.dumps({"v": 1, "job_id": job_id, "collection": collection, "items_ref": {"blob": blob}, **(options or {})}).decode()
    services.queues.send(services.settings.submit_queue, text)


def wait_for_jobs(services: Services, job_ids: Iterable[str], *, timeout: float = 300.0,
                  on_progress=None, every: float = 0.5) -> dict[str, JobRow]:
    """Poll the status table until every job row is terminal; returns the rows (raises TimeoutError)."""
    wanted = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        rows = {job_id: services.status.get_job(job_id) for job_id in wanted}
        if on_progress is not None:
            on_progress(rows)
        if all(row is not None and row.state.is_terminal for row in rows.values()):
            return rows  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not finished after {timeout:.0f}s: {[j for j, r in rows.items() if not (r and r.state.is_terminal)]}")
        time.sleep(every)


def status_table(jobs: list[JobRow], batches: dict[str, list[BatchRow]]) -> str:
    """The status table as text: one line per job, then its batches."""
    lines = [f"{'job / batch':<42} {'state':<19} {'items':>6} {'ok':>6} {'failed':>6} {'rejected':>8}  detail"]
    for job in jobs:
        lines.append(f"{job.job_id:<42} {job.state:<19} {job.item_count:>6} {job.items_succeeded:>6} "
                     f"{job.items_failed:>6} {job.items_rejected:>8}  {job.collection} {job.error_message[:60]}")
        for batch in batches.get(job.job_id, []):
            detail = batch.operation_id or batch.error_code
            if batch.error_code and batch.operation_id:
                detail = f"{batch.operation_id[:8]} {batch.error_code}"
            lines.append(f"  {batch.batch_id:<40} {batch.state:<19} {batch.item_count:>6} {batch.items_succeeded:>6} "
                         f"{batch.items_failed:>6} {batch.items_rejected:>8}  {detail}")
    return "\n".join(lines)
