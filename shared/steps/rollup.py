"""Settling a job: once it is planned and none of its batches is still open, give it its final state.

The counters themselves move with each batch change (`shared.store.transitions`), so settling
reads one job (its row plus its counter rows: O(1) in the number of batches) and, only at the very
end, writes the final state under the job row's ETag. A batch's end skips even that read while its
own counter row still counts active batches (`settle_after_batch`). Running it twice, concurrently,
or again after a crash lands on the same answer, and a terminal job row is never changed again.
`summarize` recounts from every batch row: the repair step and the oracle that the counters are
checked against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import orjson

from shared.errors import InvalidInputError
from shared.store import (
    PRUNE_DELETING,
    PRUNE_LISTING,
    PRUNE_REFUSED,
    BatchRow,
    JobRow,
    JobState,
    StatusStore,
    end_job,
    read_spilled,
    state_group,
)

Read = Callable[[str], bytes]  # reads a payload blob (`container/path`)
SUMMARY_CODES = 5  # most frequent error codes named in a finished job's error_message


def settle_job(job_id: str, *, status: StatusStore, now: datetime, read: Read | None = None) -> JobRow | None:
    """Finish the job when it is planned and every batch is terminal; otherwise leave it as it is.

    A job that ended Unconfirmed is settled again (once the sweeper has confirmed its batches, to its true state).

    `read` reads payload blobs: the failed items of a batch that spilled them (`shared.store.spill`) are
    summed up by their own codes (without it, by their batch's code).

    Returns the finished row, or (when there is nothing to finish yet) the job's progress as read:
    its state and counters (`StatusStore.job_progress`, a narrow read, as this runs for every batch).
    """
    progress = status.job_progress(job_id)
    if progress is None or progress.state.is_final or not progress.planned or progress.batches_open:
        return progress
    job = status.get_job(job_id)
    if job is None or job.state.is_final or not job.planned or job.batches_open:
        return job
    if job.batches_by_state == "{}" and not job.items_done:
        return job  # planned with no batch rows at all: the planner ends such a job itself
    if awaits_prune(job):
        return job  # delete_missing's phase comes first (`shared.steps.prune`)
    state = final_state(job.items_succeeded, job.items_failed, job.items_rejected, job.items_unconfirmed)
    code, message = job.error_code, job.error_message
    if job.items_failed or job.items_rejected or job.items_unconfirmed:
        code, message = error_summary(status.batches(job_id, select=_SUMMARY_COLUMNS, where=_HAS_PROBLEMS), job, read=read)
    if job.prune == PRUNE_REFUSED:
        state, code = JobState.REJECTED, job.error_code
    if job.dry_run:
        state = JobState.DRY_RUN
    return end_job(status, job_id, state=state, code=code, message=message, now=now) or status.get_job(job_id)


def awaits_prune(job: JobRow | None) -> bool:
    """A sync job with delete_missing whose delete phase is not over: due once every batch settled, and
    going on (a page per invocation) while the delete batches it made run."""
    if job is None or not job.delete_missing or not job.planned or job.state.is_terminal:
        return False
    if job.prune in (PRUNE_LISTING, PRUNE_DELETING):
        return True
    return not job.prune and not job.batches_open


def settle_after_batch(ended: BatchRow | None, job_id: str, *, status: StatusStore, now: datetime,
                       read: Read | None = None) -> JobRow | None:
    """`settle_job` after a write that ended a batch (`ended`; None when another delivery ended it).

    Skipped while the batch's counter row, as this write left it, still counts an active batch: then
    this batch is not the job's last (`StatusStore.active_batches_in_shard`). So most finished batches
    cost no read of the job. The last one, whichever row it is counted in, leaves it at 0 and settles;
    and the sweeper settles any job whose last batch's process died before this.
    """
    if ended is not None:
        active = status.active_batches_in_shard(ended.job_id, ended.batch_id)
        if active is not None and active > 0:
            return None
    return settle_job(job_id, status=status, now=now, read=read)


_SUMMARY_COLUMNS = ["state", "error_code", "items_failed", "items_rejected", "items_unconfirmed", "failed_items",
                    "failed_items_blob", "rejected_items"]
_HAS_PROBLEMS = "items_failed gt 0 or items_rejected gt 0 or items_unconfirmed gt 0"
UNCONFIRMED_CODE = "Unconfirmed"  # how the summary counts items whose outcome could not be read yet


def error_summary(batches: list[BatchRow], job: JobRow, *, read: Read | None = None) -> tuple[str, str]:
    """(most frequent error code, "CodeA x2, CodeB x1") over the job's failed and rejected items.

    Read once, when the job ends: the only place that looks at every troubled batch row.
    """
    codes: Counter[str] = Counter()
    for row in batches:
        failed = _json_map(_failed_items_text(row, read))
        codes.update(failed.values())
        codes[row.error_code or "OperationFailed"] += max(row.items_failed - len(failed), 0)
        codes[row.error_code or "InvalidItem"] += row.items_rejected
        codes[UNCONFIRMED_CODE] += row.items_unconfirmed
    top = [(code, n) for code, n in codes.most_common() if n > 0]
    if job.error_code and not top:
        return job.error_code, job.error_message
    text = ", ".join(f"{code} x{n}" for code, n in top[:SUMMARY_CODES])
    if len(top) > SUMMARY_CODES:
        text += f", {len(top) - SUMMARY_CODES} more code(s)"
    if job.error_message:  # what the planner (or the last delivery) said about the whole job
        text = f"{text}; {job.error_message}"
    return (top[0][0] if top else job.error_code), text


def _failed_items_text(row: BatchRow, read: Read | None) -> str:
    """The row's failed items (from their blob when they spilled); a blob gone counts them under the batch's code."""
    if read is None:
        return row.failed_items
    try:
        return read_spilled(row, "failed_items", read)
    except InvalidInputError:
        return ""


def _json_map(text: str) -> dict[str, str]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def summarize(job: JobRow, batches: list[BatchRow]) -> JobRow:
    """The job row as its batches say it is (pure): the recount that the counters must agree with."""
    succeeded = sum(b.items_succeeded for b in batches)
    failed = sum(b.items_failed for b in batches)
    rejected = sum(b.items_rejected for b in batches)
    unconfirmed = sum(b.items_unconfirmed for b in batches)
    by_state = orjson.dumps(dict(sorted(Counter(state_group(b.state) for b in batches).items()))).decode()
    summary = replace(job, items_succeeded=succeeded, items_failed=failed, items_rejected=rejected, batches_by_state=by_state,
                      items_superseded=sum(b.items_superseded for b in batches), items_repaired=sum(b.items_repaired for b in batches),
                      items_unconfirmed=unconfirmed,
                      batches_open=sum(1 for b in batches if not b.state.is_terminal))
    if not job.planned or summary.batches_open:
        return replace(summary, state=JobState.RUNNING if job.planned else job.state)
    return replace(summary, state=final_state(succeeded, failed, rejected, unconfirmed))


def final_state(succeeded: int, failed: int, rejected: int, unconfirmed: int = 0) -> JobState:
    if unconfirmed:
        return JobState.UNCONFIRMED
    if succeeded and not failed and not rejected:
        return JobState.SUCCEEDED
    if succeeded:
        return JobState.PARTIALLY_SUCCEEDED
    if rejected and not failed:
        return JobState.REJECTED
    return JobState.FAILED
