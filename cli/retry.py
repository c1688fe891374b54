"""`retry`: a new job `<JOB>-retry-N` with exactly the items of JOB that failed (and, if asked, were rejected).

The items are read back from the payload blobs of the batches that settled them (a validator's
rejection, never sent, is read from the job's source blob by its line or position). The new job keeps
the collection, mode and signing of the old one.

Idempotent: the retry's message is written to `retries/<retry id>.json` in the payload container (its
items beside it, `.items.json`) before it is sent, and that blob marks the retry as created. While that
retry job is unfinished, `retry` prints its id again and creates nothing. Once it has finished, the next
`retry` starts `-retry-N+1` with what is still failed (items a finished retry ingested are left out);
when nothing is left, it creates nothing.

The suffix is `-retry-N`, not `.retry-N`: job ids are `[A-Za-z0-9_-]{1,64}` (`shared/messages.py`).
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from cli.submit import Options, envelope
from shared.errors import InvalidInputError
from shared.inputs.documents import json_items, ndjson_items
from shared.items import item_id_of
from shared.services import Storage
from shared.settings import Settings
from shared.steps.fanout import batch_items
from shared.steps.planning import REJECTED_ROW_PREFIX
from shared.store import WHOLE_JOB, BatchRow, ItemOutcome, ItemState, JobRow, batch_outcomes, job_problems

RETRIES = "retries"


@dataclass
class RetryResult:
    """`job_id` is the retry job (new or still running), or "" when there was nothing to retry."""

    job_id: str = ""
    created: bool = False
    items: int = 0
    skipped: list[str] = field(default_factory=list)  # why some problems could not be retried


def retry_job_id(job_id: str, n: int) -> str:
    suffix = f"-retry-{n}"
    if len(job_id) + len(suffix) <= 64:
        return job_id + suffix
    short = f"{job_id[: 64 - len(suffix) - 9]}-{hashlib.sha256(job_id.encode()).hexdigest()[:8]}"
    return short + suffix


def retry(storage: Storage, settings: Settings, job_id: str, *, codes: Iterable[str] = (),
          include_rejected: bool = False) -> RetryResult:
    """Start (or find) the retry of `job_id`'s failed items.

    Raises:
        InvalidInputError: there is no such job, or it has not finished yet.
    """
    job = storage.status.get_job(job_id)
    if job is None:
        raise InvalidInputError(f"no job {job_id!r}")
    if not job.state.is_terminal:
        raise InvalidInputError(f"job {job_id} is still {job.state}: retry it once it has finished")
    created = _existing_retries(storage, job_id)
    if created:
        latest = retry_job_id(job_id, created)
        row = storage.status.get_job(latest)
        if row is None:  # the message may be lost after the marker was written: send it again (idempotent)
            storage.queues.send(settings.submit_queue, storage.payloads.read(_marker(storage, latest)).decode())
        if row is None or not row.state.is_terminal:
            return RetryResult(latest, created=False)
    wanted = {str(c) for c in codes}
    problems = [p for p in job_problems(job, status=storage.status, read=storage.payloads.read)
                if (p.state == ItemState.FAILED or include_rejected) and (not wanted or p.code in wanted)]
    result = RetryResult()
    result.skipped = [f"{p.item}: the whole job was {p.state} ({p.code}); resubmit its input" for p in problems if p.item == WHOLE_JOB]
    done = _succeeded_in_retries(storage, job_id, created)
    problems = [p for p in problems if p.item != WHOLE_JOB and not (p.item_id and p.item_id in done)]
    items = _items_of(storage, job, problems, result.skipped)
    if not items:
        return result
    new_id = retry_job_id(job_id, created + 1)
    template = next((b for b in storage.status.batches(job_id) if not b.batch_id.startswith(REJECTED_ROW_PREFIX)), BatchRow(job_id, ""))
    body = envelope(new_id, Options(collection=job.collection, mode=template.mode, sign=template.sign))
    if template.sign_collection:
        body["sign_collection"] = template.sign_collection
    if template.action == "delete":
        body["delete"] = {"ids": [item_id_of(i) for i in items]}
    else:
        features = orjson.dumps({"type": "FeatureCollection", "features": items})
        body["items_ref"] = {"blob": storage.payloads.put(f"{RETRIES}/{new_id}.items.json", features)}
    message = orjson.dumps(body).decode()
    storage.payloads.put(f"{RETRIES}/{new_id}.json", message.encode())  # the marker: this retry exists
    storage.queues.send(settings.submit_queue, message)
    return RetryResult(new_id, created=True, items=len(items), skipped=result.skipped)


def _marker(storage: Storage, retry_id: str) -> str:
    return f"{storage.payloads.container}/{RETRIES}/{retry_id}.json"


def _existing_retries(storage: Storage, job_id: str) -> int:
    """How many retries of `job_id` were created (their marker blobs exist: -retry-1, -retry-2, ...)."""
    n = 0
    while True:
        try:
            storage.payloads.properties(_marker(storage, retry_job_id(job_id, n + 1)))
        except InvalidInputError:
            return n
        n += 1


def _succeeded_in_retries(storage: Storage, job_id: str, count: int) -> set[str]:
    done: set[str] = set()
    for n in range(1, count + 1):
        for row in storage.status.batches(retry_job_id(job_id, n)):
            done |= {o.item_id for o in batch_outcomes(row, read=storage.payloads.read) if o.state == ItemState.SUCCEEDED}
    return done


def _items_of(storage: Storage, job: JobRow, problems: list[ItemOutcome], skipped: list[str]) -> list[dict]:
    """The items themselves: from the payload of the batch that settled each, else from the job's source blob."""
    items: list[dict] = []
    by_batch: dict[str, list[ItemOutcome]] = {}
    for problem in problems:
        by_batch.setdefault(problem.batch_id, []).append(problem)
    source: list[tuple[str, Any]] | None = None
    for batch_id, outcomes in by_batch.items():
        row = storage.status.get_batch(job.job_id, batch_id)
        if row is None:
            continue
        try:
            sent = {item_id_of(i): i for i in batch_items(storage, row)} if (row.payload_blob or row.action == "delete") else {}
        except InvalidInputError as error:  # a byte range of an upload overwritten or deleted since: those items are gone
            skipped.extend(f"{outcome.item} ({batch_id}): {error}" for outcome in outcomes)
            continue
        for outcome in outcomes:
            item = sent.get(outcome.item)
            if item is None:
                source = _source_items(storage, job) if source is None else source
                item = _find(source, outcome.item)
            if item is None:
                skipped.append(f"{outcome.item} ({batch_id}): not stored (an inline job's rejected input); resubmit it from your file")
                continue
            items.append(item)
    return items


def _source_items(storage: Storage, job: JobRow) -> list[tuple[str, Any]]:
    """(label, item) of the job's source blob: `line N` for NDJSON, `feature N` / `#P` / id for JSON; [] when none."""
    ref = job.source.split("@", 1)[0]
    ranged = ref.endswith("]") and "[" in ref
    ref = ref.split("[", 1)[0]
    if "/" not in ref or "://" in ref or " " in ref:
        return []
    try:
        data = storage.payloads.read(ref)
    except InvalidInputError:
        return []
    if ref.lower().endswith(".gz"):
        data = gzip.decompress(data)
    if ranged or ref.lower().removesuffix(".gz").endswith((".ndjson", ".jsonl")):
        return [(f"line {n}", item) for n, item in ndjson_items(data)]
    try:
        listed = json_items(data)
    except InvalidInputError:
        return []
    return [label for n, item in enumerate(listed) for label in ((f"feature {n + 1}", item), (f"#{n}", item))]


def _find(source: list[tuple[str, Any]], key: str) -> dict | None:
    for label, item in source:
        if label == key and isinstance(item, dict):
            return item
    item_id = key.split("#", 1)[0]
    for _, item in source:
        if isinstance(item, dict) and item.get("id") == item_id:
            return item
    return None
