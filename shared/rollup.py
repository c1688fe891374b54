"""Rolling batch rows up into the job row: counts, progress, and the job's final state.

The roll-up recomputes from the batch rows every time (never increments), so running it twice, or
concurrently, or after a crash, always lands on the same answer; the job row is written with its
ETag, and a terminal job row is never changed again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime

import orjson

from shared.status import BatchRow, JobRow, JobState, StatusStore


def rollup_job(job_id: str, *, status: StatusStore, now: datetime) -> JobRow | None:
    """Recompute the job row from its batches; finish the job when every batch is terminal."""
    batches = status.batches(job_id)

    def change(job: JobRow) -> JobRow | None:
        if job.state.is_terminal:
            return None
        return summarize(job, batches)

    return status.update_job(job_id, change, now)


def summarize(job: JobRow, batches: list[BatchRow]) -> JobRow:
    """The job row as its batches say it is (pure)."""
    succeeded = sum(b.items_succeeded for b in batches)
    failed = sum(b.items_failed for b in batches)
    rejected = sum(b.items_rejected for b in batches)
    by_state = orjson.dumps(dict(sorted(Counter(str(b.state) for b in batches).items()))).decode()
    summary = replace(job, items_succeeded=succeeded, items_failed=failed, items_rejected=rejected, batches_by_state=by_state,
                      items_superseded=sum(b.items_superseded for b in batches), items_repaired=sum(b.items_repaired for b in batches))
    if not job.planned or not all(b.state.is_terminal for b in batches):
        return replace(summary, state=JobState.RUNNING if job.planned else job.state)
    return replace(summary, state=final_state(succeeded, failed, rejected))


def final_state(succeeded: int, failed: int, rejected: int) -> JobState:
    if succeeded and not failed and not rejected:
        return JobState.SUCCEEDED
    if succeeded:
        return JobState.PARTIALLY_SUCCEEDED
    if rejected and not failed:
        return JobState.REJECTED
    return JobState.FAILED
