"""Job roll-up from batch rows (pure): progress while running, the right final state at the end."""

from __future__ import annotations

import pytest

from shared.steps.rollup import error_summary, final_state, summarize
from shared.store.status import BatchRow, BatchState, JobRow, JobState


def batch(state: BatchState, ok: int = 0, failed: int = 0, rejected: int = 0) -> BatchRow:
    return BatchRow("j", f"b-{state}-{ok}{failed}{rejected}", state=state, items_succeeded=ok, items_failed=failed, items_rejected=rejected)


def test_running_job_shows_progress_but_stays_running() -> None:
    job = JobRow("j", state=JobState.RUNNING, planned=True)
    row = summarize(job, [batch(BatchState.SUCCEEDED, ok=100), batch(BatchState.RUNNING)])
    assert (row.state, row.items_succeeded) == (JobState.RUNNING, 100)
    assert row.batches_by_state == '{"Active":1,"Succeeded":1}'  # Submitting, Submitted and Running are one group


def test_unplanned_job_never_finishes_early() -> None:
    job = JobRow("j", state=JobState.ACCEPTED, planned=False)
    assert summarize(job, [batch(BatchState.SUCCEEDED, ok=5)]).state == JobState.ACCEPTED


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        ([batch(BatchState.SUCCEEDED, ok=3)], JobState.SUCCEEDED),
        ([batch(BatchState.SUCCEEDED, ok=3), batch(BatchState.REJECTED, rejected=1)], JobState.PARTIALLY_SUCCEEDED),
        ([batch(BatchState.SPLIT, ok=2, failed=1), batch(BatchState.SUCCEEDED, ok=1)], JobState.PARTIALLY_SUCCEEDED),
        ([batch(BatchState.REJECTED, rejected=4)], JobState.REJECTED),
        ([batch(BatchState.TIMED_OUT, failed=2), batch(BatchState.REJECTED, rejected=1)], JobState.FAILED),
    ],
)
def test_final_states(batches: list[BatchRow], expected: JobState) -> None:
    assert summarize(JobRow("j", state=JobState.RUNNING, planned=True), batches).state == expected


def test_final_state_table() -> None:
    assert final_state(0, 0, 0) == JobState.FAILED
    assert final_state(1, 1, 0) == JobState.PARTIALLY_SUCCEEDED


def test_terminal_states() -> None:
    assert BatchState.SPLIT.is_terminal and not BatchState.SUBMITTING.is_terminal
    assert JobState.REJECTED.is_terminal and not JobState.ACCEPTED.is_terminal


def test_the_error_summary_names_only_codes_that_items_ended_with() -> None:
    """A batch whose failed items all carry their own code adds no `x0` entry for the batch's code."""
    failed = BatchRow("j", "batch-000001", state=BatchState.FAILED, items_failed=2, error_code="OperationFailed",
                      failed_items='{"a": "InvalidGeometry", "b": "InvalidGeometry"}')
    rejected = BatchRow("j", "rejected-000001", state=BatchState.REJECTED, items_rejected=1)
    code, text = error_summary([failed, rejected], JobRow("j"))
    assert (code, text) == ("InvalidGeometry", "InvalidGeometry x2, InvalidItem x1")
