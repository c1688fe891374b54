"""Per-collection operation timings: a moving average in the status table (Azurite), from the service's clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from devhost.azurite import Azurite
from emulator.catalog import Catalog, Timings
from shared.catalog.client import Operation, learnt_seconds, operation_seconds
from shared.store.status import BatchRow
from shared.store.timing import ALPHA, OperationTimings, record_timing, seconds_per_item
from tests.conftest import unique_storage_names

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def timings(azurite: Azurite) -> OperationTimings:
    name = unique_storage_names()["STATUS_TABLE"]
    return OperationTimings(TableServiceClient.from_connection_string(azurite.connection_string).create_table(name))


def emulated(items: int, *, per_item: float, status_at: float = 1000.0, moving: bool = False) -> Operation:
    """An operation as the emulator serves it, `status_at` seconds after its creation."""
    catalog = Catalog(timings=Timings(0.5, 1.0, per_item), moving_counters=moving)
    catalog.put_collection({"id": "tiles"})
    payload = [{"type": "Feature", "id": f"i{n}", "collection": "tiles", "geometry": None, "properties": {}}
               for n in range(items)]
    op = catalog.start_operation(op_type="AddItem", action="add", collection_id="tiles", payload=payload, now=T0)
    at = T0 + timedelta(seconds=status_at)
    catalog.settle(at)
    return Operation.from_json(catalog.operation_json(op, at))


def test_duration_is_the_services_own_from_creation_to_finish() -> None:
    finished = emulated(10, per_item=0.25, status_at=100)  # polled long after it ended
    assert finished.is_terminal and operation_seconds(finished) == pytest.approx(0.5 + 1.0 + 2.5)
    assert operation_seconds(emulated(10, per_item=0.25, status_at=1.0)) is None  # still Pending: no finish


def test_first_sample_then_a_moving_average(timings: OperationTimings) -> None:
    assert timings.get("tiles") is None and timings.seconds_per_item("tiles") is None
    timings.record("tiles", learnt_seconds(emulated(10, per_item=0.25)), 10)  # 4 s / 10 items
    assert timings.seconds_per_item("tiles") == pytest.approx(0.4)
    timings.record("tiles", learnt_seconds(emulated(10, per_item=1.35)), 10)  # 15 s / 10 items
    timing = timings.get("tiles")
    assert timing is not None and timing.samples == 2
    assert timing.seconds_per_item == pytest.approx(0.4 + ALPHA * (1.5 - 0.4))
    assert timings.get("other") is None  # per collection


def test_unfinished_canceled_or_empty_operations_teach_nothing(timings: OperationTimings) -> None:
    assert timings.record("tiles", learnt_seconds(emulated(10, per_item=0.25, status_at=2.0)), 10) is None  # Running
    canceled = Operation(id="c", status="Canceled", raw={"creationTime": "2026-01-01T00:00:00Z",
                                                         "finishTime": "2026-01-01T00:00:09Z"})
    assert timings.record("tiles", learnt_seconds(canceled), 10) is None
    assert timings.record("tiles", learnt_seconds(emulated(10, per_item=0.25)), 0) is None
    assert timings.get("tiles") is None


def test_a_collection_named_job_does_not_look_like_a_job_row(timings: OperationTimings) -> None:
    timings.record("job", learnt_seconds(emulated(4, per_item=0.25)), 4)
    table = timings._table  # noqa: SLF001 - look at the stored row itself
    assert [e["RowKey"] for e in table.query_entities("RowKey eq 'job'")] == []


def test_actions_keep_their_own_figures(timings: OperationTimings) -> None:
    """A one-item PUT costs about what a 100-item POST does: per item they differ a hundredfold."""
    record_timing(timings, BatchRow("j", "b1", collection="tiles", item_count=10), learnt_seconds(emulated(10, per_item=0.25)))
    record_timing(timings, BatchRow("j", "b2", collection="tiles", item_count=1, action="replace"),
                  learnt_seconds(emulated(1, per_item=0.5)))
    assert seconds_per_item(timings, BatchRow("j", "b3", collection="tiles")) == pytest.approx(0.4)
    assert seconds_per_item(timings, BatchRow("j", "b4", collection="tiles", action="replace")) == pytest.approx(2.0)
    assert seconds_per_item(timings, BatchRow("j", "b5", collection="tiles", action="delete")) is None


def test_without_a_store_nothing_is_predicted_or_recorded() -> None:
    row = BatchRow("j", "b1", collection="tiles", item_count=4)
    assert seconds_per_item(None, row) is None
    record_timing(None, row, learnt_seconds(emulated(4, per_item=0.25)))  # no store: a no-op, not an error


def test_moving_counters_progress_while_running_and_still_ones_do_not() -> None:
    # 0.5 s Pending, then 1 + 10 x 0.9 = 10 s Running; at 5.5 s it is half done
    moving = emulated(10, per_item=0.9, status_at=5.5, moving=True)
    still = emulated(10, per_item=0.9, status_at=5.5)
    assert moving.status == still.status == "Running"
    assert (moving.pending_items, moving.succeeded_items) == (5, 5)
    assert (still.pending_items, still.succeeded_items) == (10, 0)


def test_the_pipeline_records_each_finished_batch_in_its_collections_timing(make_stack) -> None:
    from devhost.jobs import send_items, wait_for_jobs
    from tests.helpers import make_collection, make_item

    stack = make_stack(settings={"BATCH_MAX_ITEMS": "2"})
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection("timed")))
    send_items(stack.services, [make_item(f"t{n}") for n in range(6)], collection="timed", job_id="timed-1")
    assert wait_for_jobs(stack.services, ["timed-1"], timeout=90)["timed-1"].items_succeeded == 6
    timing = stack.services.timings.get("timed")
    assert timing is not None
    assert 1 <= timing.samples <= 3  # batches ending at once may overwrite each other's sample (by design)
    assert timing.seconds_per_item == pytest.approx(0.3 / 2)  # 0.1 s Pending + 0.2 s Running, by the service's clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_instances_share_figures_within_the_refresh_period_and_write_at_most_once_per_period(azurite: Azurite) -> None:
    name = unique_storage_names()["STATUS_TABLE"]
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table(name)
    clock = FakeClock()
    writer, reader = (OperationTimings(table, refresh_seconds=5, clock=clock) for _ in range(2))
    assert reader.get("tiles") is None
    writer.record("tiles", learnt_seconds(emulated(10, per_item=0.25)), 10)  # the first sample is written at once
    assert OperationTimings(table).seconds_per_item("tiles") == pytest.approx(0.4)
    assert reader.get("tiles") is None  # its copy is younger than the refresh period
    clock.now = 5.0
    assert reader.seconds_per_item("tiles") == pytest.approx(0.4)
    clock.now = 6.0
    second = writer.record("tiles", learnt_seconds(emulated(10, per_item=1.35)), 10)  # folded in; the row was written 6 s ago: due
    clock.now = 7.0
    third = writer.record("tiles", learnt_seconds(emulated(10, per_item=1.35)), 10)  # folded in, not written yet
    assert (second.samples, third.samples) == (2, 3) and writer.get("tiles") == third
    assert OperationTimings(table).get("tiles") == second
    clock.now = 12.0
    writer.record("tiles", learnt_seconds(emulated(10, per_item=1.35)), 10)
    assert OperationTimings(table).get("tiles").samples == 4  # nothing folded in was lost
    assert reader.get("tiles").samples == 4


def test_one_thread_reads_a_stale_copy_again_while_the_others_go_on_with_it(azurite: Azurite) -> None:
    name = unique_storage_names()["STATUS_TABLE"]
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table(name)
    OperationTimings(table).record("tiles", learnt_seconds(emulated(10, per_item=0.25)), 10)
    clock = FakeClock()
    timings = OperationTimings(table, refresh_seconds=5, clock=clock)
    assert timings.seconds_per_item("tiles") == pytest.approx(0.4)
    reading, release, reads = threading.Event(), threading.Event(), []
    real_read = timings._read  # noqa: SLF001 - hold the refresher's own read

    def slow_read(key: str):
        reads.append(key)
        if len(reads) == 1:  # the refresher's read: held until the others have been served
            reading.set()
            release.wait(10)
        return real_read(key)

    timings._read = slow_read  # noqa: SLF001
    clock.now = 6.0  # the copy is stale
    refresher = threading.Thread(target=timings.get, args=("tiles",))
    refresher.start()
    assert reading.wait(10)
    others = [timings.seconds_per_item("tiles") for _ in range(5)]  # while that read is in flight
    assert others == [pytest.approx(0.4)] * 5 and len(reads) == 1
    timings.seconds_per_item("tiles", fresh=True)  # a fresh read is never skipped
    release.set()
    refresher.join(10)
    assert len(reads) == 2
