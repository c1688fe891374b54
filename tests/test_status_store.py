"""The status table on Azurite through azure-data-tables: creation never regresses, updates are ETag-safe."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from azure.data.tables import UpdateMode

from devhost.azurite import Azurite
from shared.steps.rollup import settle_after_batch
from shared.store.status import BatchRow, BatchState, JobRow, JobState, StatusStore, counter_row_key
from shared.store.table_batch import TableClient
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


def test_rows_store_only_what_differs_from_the_defaults_and_read_back_whole(store: StatusStore) -> None:
    store.create_batches([BatchRow("job-1", "batch-000001", collection="landcover", item_count=3)], NOW)
    entity = store.table.get_entity("job-1", "batch-000001")
    assert {"state", "collection", "item_count"} <= set(entity) and not {"error_code", "items_failed", "logs"} & set(entity)
    assert entity["state"] == "Queued"  # a default, but queries filter on it
    failed = store.update_batch("job-1", "batch-000001", lambda r: replace(
        r, state=BatchState.FAILED, error_code="Boom", items_failed=3), NOW)
    assert failed is not None and (failed.error_code, failed.items_failed) == ("Boom", 3)
    store.update_batch("job-1", "batch-000001", lambda r: replace(r, error_code="", items_failed=0), NOW, current=failed)
    cleared = store.get_batch("job-1", "batch-000001")
    assert cleared is not None and (cleared.state, cleared.error_code, cleared.items_failed) == (BatchState.FAILED, "", 0)
    assert "error_code" not in store.table.get_entity("job-1", "batch-000001")  # replaced away, not left behind
    assert [b.items_failed for b in store.batches("job-1", select=["items_failed"])] == [0]


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


def _succeed(row: BatchRow) -> BatchRow | None:
    return None if row.state.is_terminal else replace(row, state=BatchState.SUCCEEDED, items_succeeded=row.item_count)


def test_a_stale_row_from_the_caller_is_never_written_over_a_newer_one(store: StatusStore) -> None:
    store.create_batches([BatchRow("job-1", "batch-000001", item_count=3)], NOW)
    stale = store.get_batch("job-1", "batch-000001")
    claim = lambda r: replace(r, state=BatchState.SUBMITTING) if r.state == BatchState.QUEUED else None  # noqa: E731
    claimed = store.update_batch("job-1", "batch-000001", claim, NOW, current=stale)
    assert claimed is not None and claimed.state == BatchState.SUBMITTING
    # The stale copy still says Queued: the claim is refused on a fresh read, not written twice.
    assert store.update_batch("job-1", "batch-000001", claim, NOW, current=stale) is None
    ended = store.update_batch("job-1", "batch-000001", _succeed, NOW, current=stale)  # its ETag fails: re-read
    assert ended is not None and ended.state == BatchState.SUCCEEDED and ended.attempts == 0
    assert store.counters("job-1") == store.recount("job-1") == {"items_planned": 3, "n_Succeeded": 1, "items_succeeded": 3}


def test_two_instances_with_stale_counter_copies_still_count_exactly(store: StatusStore) -> None:
    """Each store keeps the counter rows it wrote last; the other instance's writes make those copies stale."""
    other = StatusStore(store.table)
    rows = [BatchRow("job-1", f"batch-{n:06d}", item_count=2) for n in range(1, 41)]  # 40 batches on 16 counter rows
    store.create_batches(rows[:20], NOW)
    other.create_batches(rows[20:], NOW)
    for n, row in enumerate(rows):
        (store if n % 3 else other).update_batch("job-1", row.batch_id, _succeed, NOW)
    assert store.counters("job-1") == store.recount("job-1") == {"items_planned": 80, "n_Succeeded": 40, "items_succeeded": 80}


def test_a_counter_row_another_instance_moved_is_read_again_but_the_batch_row_is_not(store: StatusStore) -> None:
    """Submitters and pollers run on different instances and move the same counter rows: when only the
    counter copy is stale, the transaction is retried with the counter read again, not the caller's row."""
    other = StatusStore(store.table)
    shard = counter_row_key("batch-000001")
    same_shard = [f"batch-{n:06d}" for n in range(2, 10_000) if counter_row_key(f"batch-{n:06d}") == shard][:2]
    store.create_batches([BatchRow("job-1", b, item_count=2) for b in ["batch-000001", *same_shard]], NOW)
    claim = lambda r: replace(r, state=BatchState.SUBMITTING) if r.state == BatchState.QUEUED else None  # noqa: E731
    claimed = store.update_batch("job-1", "batch-000001", claim, NOW)  # `store` now holds a copy of the counter row
    other.update_batch("job-1", same_shard[0], claim, NOW)  # ...which this makes stale
    batch_reads, counter_reads = [], []
    real_get_batch, real_get_entity = store.get_batch, store.table.get_entity
    store.get_batch = lambda job_id, batch_id: batch_reads.append(batch_id) or real_get_batch(job_id, batch_id)
    store.table.get_entity = lambda pk, rk, **kw: counter_reads.append(rk) or real_get_entity(pk, rk, **kw)
    ended = store.update_batch("job-1", "batch-000001", _succeed, NOW, current=claimed)
    assert ended is not None and ended.state == BatchState.SUCCEEDED
    assert batch_reads == [] and counter_reads == [shard]
    # A stale batch row is still refused and read again, whatever the counter copy holds.
    other.update_batch("job-1", same_shard[1], claim, NOW)
    stale = other.get_batch("job-1", same_shard[0])
    store.update_batch("job-1", same_shard[0], _succeed, NOW)
    assert other.update_batch("job-1", same_shard[0], _succeed, NOW, current=stale) is None
    assert store.counters("job-1") == store.recount("job-1") == {
        "items_planned": 6, "n_Active": 1, "n_Succeeded": 2, "items_succeeded": 4}


def test_planning_after_another_instance_moved_its_counter_row_retries_without_reading_each_row(store: StatusStore) -> None:
    other = StatusStore(store.table)
    first = [BatchRow("job-1", f"batch-{n:06d}", item_count=1) for n in range(1, 11)]
    store.create_batches(first, NOW)  # counted in batch-000001's counter row, which `store` now holds a copy of
    other.update_batch("job-1", "batch-000001", _succeed, NOW)  # a submitter elsewhere moves that row
    reads = []
    real_get_batch = store.get_batch
    store.get_batch = lambda job_id, batch_id: reads.append(batch_id) or real_get_batch(job_id, batch_id)
    # A chunk counted in the same (now stale) counter row: its first transaction fails on the counter's ETag.
    shard = counter_row_key("batch-000001")
    same_shard = (f"batch-{n:06d}" for n in range(11, 10_000) if counter_row_key(f"batch-{n:06d}") == shard)
    again = [BatchRow("job-1", next(same_shard), item_count=1) for _ in range(10)]
    store.create_batches(again, NOW)
    assert reads == []  # a stale counter is no sign that a row exists: no row-by-row check
    assert store.counters("job-1") == store.recount("job-1")
    assert len(store.batches("job-1")) == 20


def test_racing_duplicate_deliveries_count_each_batch_once(store: StatusStore) -> None:
    rows = [BatchRow("job-1", f"batch-{n:06d}", item_count=1) for n in range(1, 25)]
    store.create_batches(rows, NOW)
    rows = store.batches("job-1")  # with their ETags
    instances = [StatusStore(store.table) for _ in range(4)]
    barrier = threading.Barrier(len(instances))

    def deliver_all(instance: StatusStore) -> None:
        barrier.wait()
        for row in rows:
            instance.update_batch("job-1", row.batch_id, _succeed, NOW, current=row)  # every copy starts from a stale row

    threads = [threading.Thread(target=deliver_all, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.counters("job-1") == store.recount("job-1") == {"items_planned": 24, "n_Succeeded": 24, "items_succeeded": 24}


def test_job_progress_reads_the_same_state_and_counters_as_the_whole_job(store: StatusStore) -> None:
    store.create_job(JobRow("job-1", collection="landcover", source="inline"), NOW)
    store.create_batches([BatchRow("job-1", f"batch-{n:06d}", item_count=2) for n in range(1, 6)], NOW)
    store.update_job("job-1", lambda r: replace(r, planned=True, state=JobState.RUNNING, item_count=10), NOW)
    for n in (1, 2):
        store.update_batch("job-1", f"batch-{n:06d}", _succeed, NOW)
    whole, progress = store.get_job("job-1"), store.job_progress("job-1")
    fields_ = ("state", "planned", "item_count", "items_succeeded", "items_failed", "batches_by_state", "batches_open")
    assert [getattr(progress, f) for f in fields_] == [getattr(whole, f) for f in fields_]
    assert (progress.batches_open, progress.items_succeeded, progress.collection) == (3, 4, "")  # narrow: no collection
    assert store.job_progress("nope") is None


def test_an_active_batch_moving_between_active_states_writes_only_its_own_row(store: StatusStore) -> None:
    store.create_job(JobRow("job-1"), NOW)
    store.create_batches([BatchRow("job-1", "batch-000001", item_count=2)], NOW)
    claimed = store.update_batch("job-1", "batch-000001", _claim, NOW)
    counter = store.table.get_entity("job-1", counter_row_key("batch-000001"))
    running = claimed
    for state in (BatchState.SUBMITTED, BatchState.RUNNING):  # the POST answered, then a poll saw it Running
        running = store.update_batch("job-1", "batch-000001", lambda r, s=state: replace(r, state=s), NOW, current=running)
    assert running is not None and store.get_batch("job-1", "batch-000001").state == BatchState.RUNNING
    assert store.table.get_entity("job-1", counter_row_key("batch-000001")).metadata["etag"] == counter.metadata["etag"]
    assert store.counters("job-1") == store.recount("job-1") == {"items_planned": 2, "n_Active": 1}
    job = store.get_job("job-1")
    assert (job.batches_by_state, job.batches_open) == ('{"Active":1}', 1)
    store.update_batch("job-1", "batch-000001", _succeed, NOW, current=running)
    assert store.counters("job-1") == store.recount("job-1") == {"items_planned": 2, "n_Succeeded": 1, "items_succeeded": 2}


def test_counter_rows_written_with_one_counter_per_active_state_are_read_and_rewritten_as_one(store: StatusStore) -> None:
    store.create_job(JobRow("job-1"), NOW)
    store.create_batches([BatchRow("job-1", f"batch-{n:06d}", item_count=1) for n in range(1, 4)], NOW)
    for n in range(1, 4):
        store.update_batch("job-1", f"batch-{n:06d}", _claim, NOW)
    # As an older version left them (it counted Submitting, Submitted and Running apart): one of each.
    legacy = {1: "n_Submitting", 2: "n_Submitted", 3: "n_Running"}
    for n, name in legacy.items():
        key = counter_row_key(f"batch-{n:06d}")
        entity = dict(store.table.get_entity("job-1", key))
        entity[name] = entity.pop("n_Active")
        store.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
    fresh = StatusStore(store.table)  # no cached copy of the counter rows
    assert fresh.counters("job-1") == store.recount("job-1") == {"items_planned": 3, "n_Active": 3}
    assert (fresh.get_job("job-1").batches_open, fresh.job_progress("job-1").batches_open) == (3, 3)
    for n in range(1, 4):
        fresh.update_batch("job-1", f"batch-{n:06d}", _succeed, NOW)
        assert not set(legacy.values()) & set(store.table.get_entity("job-1", counter_row_key(f"batch-{n:06d}")))
    assert fresh.counters("job-1") == store.recount("job-1") == {"items_planned": 3, "n_Succeeded": 3, "items_succeeded": 3}


def _claim(row: BatchRow) -> BatchRow | None:
    return replace(row, state=BatchState.SUBMITTING) if row.state == BatchState.QUEUED else None


def test_each_counter_row_counts_its_own_active_batches_exactly(store: StatusStore) -> None:
    rows = [BatchRow("job-e", f"batch-{n:06d}", item_count=1) for n in range(1, 41)]
    store.create_batches(rows, NOW)  # planning counts all 40 Queued batches in one counter row
    fresh = StatusStore(store.table)  # another instance: knows no counter row yet
    assert fresh.active_batches_in_shard("job-e", rows[0].batch_id) is None
    active: dict[str, int] = {}
    for row in rows:
        fresh.update_batch("job-e", row.batch_id, _claim, NOW)
        active[counter_row_key(row.batch_id)] = active.get(counter_row_key(row.batch_id), 0) + 1
        assert fresh.active_batches_in_shard("job-e", row.batch_id) == active[counter_row_key(row.batch_id)]
    for row in reversed(rows):
        fresh.update_batch("job-e", row.batch_id, _succeed, NOW)
        active[counter_row_key(row.batch_id)] -= 1
        assert fresh.active_batches_in_shard("job-e", row.batch_id) == active[counter_row_key(row.batch_id)]
    assert store.recount("job-e") == store.counters("job-e")


def test_racing_batch_ends_settle_the_job_once_all_are_done_reading_it_only_when_a_row_has_none_active(store: StatusStore) -> None:
    job_id = "job-r"
    store.create_job(JobRow(job_id, collection="landcover", source="inline"), NOW)
    rows = [BatchRow(job_id, f"batch-{n:06d}", item_count=1) for n in range(1, 61)]
    store.create_batches(rows, NOW)
    store.update_job(job_id, lambda r: replace(r, state=JobState.RUNNING, planned=True, item_count=60), NOW)
    instances = [StatusStore(store.table), StatusStore(store.table)]
    reads = []
    for instance in instances:
        progress = instance.job_progress
        instance.job_progress = lambda job, progress=progress: reads.append(job) or progress(job)  # type: ignore[method-assign]

    for row in rows:  # every batch claimed first: the ends below race while others are still active
        store.update_batch(job_id, row.batch_id, _claim, NOW)

    def end(instance: StatusStore, mine: list[BatchRow]) -> None:
        for row in mine:
            ended = instance.update_batch(job_id, row.batch_id, _succeed, NOW)
            settle_after_batch(ended, job_id, status=instance, now=NOW)

    shuffled = random.Random(7).sample(rows, len(rows))
    threads = [threading.Thread(target=end, args=(instances[n % 2], shuffled[n::4])) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job = store.get_job(job_id)
    assert (job.state, job.items_succeeded, job.batches_open) == (JobState.SUCCEEDED, 60, 0)
    assert 1 <= len(reads) < len(rows)  # an end that leaves active batches in its counter row reads nothing
