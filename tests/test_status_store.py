"""The status table on Azurite through azure-data-tables: creation never regresses, updates are ETag-safe."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from devhost.azurite import Azurite
from shared.status import BatchRow, BatchState, JobRow, JobState, StatusStore
from shared.table_batch import TableClient
from tests.conftest import unique_storage_names

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def store(azurite: Azurite) -> StatusStore:
    table = TableClient.from_connection_string(azurite.connection_string, unique_storage_names()["STATUS_TABLE"])
    table.create_table()
    return StatusStore(table)


def test_job_row_round_trip_and_idempotent_create(store: StatusStore) -> None:
    created = store.create_job(JobRow("job-1", collection="landcover", source="inline"), NOW)
    assert (created.state, created.collection, created.created) == (JobState.ACCEPTED, "landcover", NOW)
    store.update_job("job-1", lambda r: replace(r, state=JobState.RUNNING, item_count=7), NOW)
    again = store.create_job(JobRow("job-1"), NOW)  # a redelivered message
    assert (again.state, again.item_count, again.collection) == (JobState.RUNNING, 7, "landcover")


def test_creating_batches_twice_never_regresses_a_row(store: StatusStore) -> None:
    rows = [BatchRow("job-1", f"batch-{n:06d}", collection="landcover", item_count=3) for n in range(1, 151)]
    store.create_batches(rows, NOW)  # 150 rows: two transactions (the service allows 100 operations each)
    store.update_batch("job-1", "batch-000001", lambda r: replace(r, state=BatchState.SUCCEEDED, items_succeeded=3), NOW)
    store.create_batches(rows, NOW)
    batches = store.batches("job-1")
    assert len(batches) == 150 and batches[0].state == BatchState.SUCCEEDED


def test_update_sees_the_current_row_and_can_refuse(store: StatusStore) -> None:
    store.create_batches([BatchRow("job-1", "batch-000001")], NOW)
    claim = lambda r: replace(r, state=BatchState.SUBMITTING) if r.state == BatchState.QUEUED else None  # noqa: E731
    assert store.update_batch("job-1", "batch-000001", claim, NOW) is not None
    assert store.update_batch("job-1", "batch-000001", claim, NOW) is None  # already claimed


def test_concurrent_updates_are_serialized_by_etag(store: StatusStore) -> None:
    store.create_job(JobRow("job-1"), NOW)
    barrier = threading.Barrier(8)

    def bump() -> None:
        barrier.wait()
        store.update_job("job-1", lambda r: replace(r, items_succeeded=r.items_succeeded + 1), NOW)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get_job("job-1").items_succeeded == 8  # no lost update


def test_rows_list_and_missing_rows(store: StatusStore) -> None:
    assert store.get_job("nope") is None and store.get_batch("nope", "batch-000001") is None
    store.create_job(JobRow("a"), NOW)
    store.create_job(JobRow("b"), NOW)
    store.create_batches([BatchRow("a", "batch-000001")], NOW)
    assert {j.job_id for j in store.jobs()} == {"a", "b"}
    assert [b.batch_id for b in store.batches("a")] == ["batch-000001"]
