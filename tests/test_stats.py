"""`stats` figures (`cli.stats`): the bounded read of recent rows on Azurite, and the figures from rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.stats import Window, collect, failure_codes, figures, summary
from devhost.azurite import Azurite
from shared.services import Storage, connect_storage, ensure_storage
from shared.settings import Settings
from shared.store import BatchRow, BatchState, JobRow, JobState
from tests.conftest import unique_storage_names

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def storage(azurite: Azurite) -> Storage:
    settings = Settings.from_env({"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": "https://x.invalid",
                                  **unique_storage_names()})
    store = connect_storage(settings)
    ensure_storage(settings, store)
    return store


def ended(batch_id: str, *, ok: int = 0, failed: int = 0, rejected: int = 0, took: float = 10.0, state=BatchState.SUCCEEDED,
          code: str = "", failed_items: str = "{}") -> BatchRow:
    return BatchRow("j", batch_id, state=state, item_count=ok + failed, items_succeeded=ok, items_failed=failed,
                    items_rejected=rejected, error_code=code, failed_items=failed_items, created=NOW,
                    submit_started=NOW, submitted=NOW + timedelta(seconds=1), finished=NOW + timedelta(seconds=took))


def test_the_read_is_bounded_and_says_when_more_rows_matched(storage: Storage) -> None:
    status = storage.status
    for n in range(5):
        status.create_job(JobRow(f"job-{n}", state=JobState.RUNNING), NOW)
    status.create_job(JobRow("old", state=JobState.RUNNING), NOW - timedelta(days=2))
    status.create_batches([BatchRow("job-0", f"batch-{n:06d}", item_count=1) for n in range(1, 8)], NOW)
    window = Window(NOW - timedelta(hours=1), NOW)
    everything = collect(status, window, max_rows=100)
    assert everything["truncated"] is False
    assert everything["jobs"]["by_state"] == {"Running": 5}  # not the job last changed two days ago
    assert everything["batches"]["by_state"] == {"Queued": 7}  # batch rows only: no job or counter row
    cut = collect(status, window, max_rows=3)
    assert cut["truncated"] is True
    assert sum(cut["jobs"]["by_state"].values()) == 3 and sum(cut["batches"]["by_state"].values()) == 3


def test_figures_from_rows() -> None:
    batches = [
        ended("b1", ok=10, took=20),
        ended("b2", ok=8, failed=2, took=40, state=BatchState.FAILED, code="OperationFailed",
              failed_items='{"x": "InvalidGeometry"}'),
        ended("rejected-000001", rejected=3, took=0, state=BatchState.REJECTED),
        ended("b3", ok=5, failed=5, took=60, state=BatchState.SPLIT),  # its items are counted in its children
        BatchRow("j", "b4", state=BatchState.SUBMITTED, item_count=7),
    ]
    jobs = [JobRow("j", state=JobState.PARTIALLY_SUCCEEDED, created=NOW, finished=NOW + timedelta(minutes=2)),
            JobRow("k", state=JobState.RUNNING, created=NOW)]
    stats = figures(jobs, batches, Window(NOW - timedelta(hours=1), NOW + timedelta(hours=1)), truncated=False)
    assert stats["items"] == {"settled": 23, "succeeded": 18, "failed": 2, "rejected": 3, "superseded": 0,
                              "per_minute": 34.5}  # 23 items over the 40 s from the first batch created to the last settled
    assert stats["failures_by_code"] == {"InvalidItem": 3, "InvalidGeometry": 1, "OperationFailed": 1}
    assert stats["submit_to_settled_seconds"] == {"count": 3, "p50": 20.0, "p90": 40.0, "p99": 40.0, "max": 40.0}
    assert stats["operation_seconds"]["max"] == 39.0
    assert stats["jobs"] == {"by_state": {"PartiallySucceeded": 1, "Running": 1},
                             "duration_seconds": {"count": 1, "p50": 120.0, "p90": 120.0, "p99": 120.0, "max": 120.0}}
    assert stats["batches"]["by_state"] == {"Failed": 1, "Rejected": 1, "Split": 1, "Submitted": 1, "Succeeded": 1}
    assert stats["detection_lag_seconds"] is None


def test_percentiles_use_the_nearest_rank_and_codes_with_no_item_are_left_out() -> None:
    values = summary(timedelta(seconds=s) for s in range(1, 101))
    assert (values["p50"], values["p90"], values["p99"], values["max"]) == (50.0, 90.0, 99.0, 100.0)
    assert summary([]) == {"count": 0}
    assert failure_codes([ended("b", ok=2, failed=1, state=BatchState.FAILED, code="Timeout",
                                failed_items='{"a": "Timeout"}')]) == {"Timeout": 1}
