"""The per-item outcomes of settled batches, and the item index table (real Azurite)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from devhost.azurite import Azurite
from shared.services import connect_storage, ensure_storage
from shared.settings import Settings
from shared.store.item_index import ItemState, batch_outcomes, record_batch
from shared.store.status import BatchRow, BatchState
from tests.conftest import unique_storage_names

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BLOBS: dict[str, bytes] = {}


def read(ref: str) -> bytes:
    return BLOBS[ref]


def row(**fields) -> BatchRow:
    base = BatchRow(job_id="job-a", batch_id="batch-000001", collection="c1", state=BatchState.SUCCEEDED,
                    item_ids=orjson.dumps(["a", "b", "c"]).decode(), item_count=3, operation_id="op-1", finished=NOW)
    return replace(base, **fields)


def states(outcomes) -> dict[str, tuple[str, str]]:
    return {o.item: (str(o.state), o.code) for o in outcomes}


def test_a_succeeded_batch_settles_every_item() -> None:
    assert states(batch_outcomes(row(items_succeeded=3), read=read)) == {
        "a": ("Succeeded", ""), "b": ("Succeeded", ""), "c": ("Succeeded", "")}


def test_a_failed_batch_names_its_failed_items_and_the_rest_landed() -> None:
    outcomes = batch_outcomes(row(state=BatchState.FAILED, failed_items='{"b": "ItemAlreadyExistsInCollection"}',
                                  items_succeeded=2, items_failed=1, error_message="ErrorsInBatchOperation: 1 of 3"), read=read)
    assert states(outcomes) == {"a": ("Succeeded", ""), "b": ("Failed", "ItemAlreadyExistsInCollection"), "c": ("Succeeded", "")}
    assert next(o for o in outcomes if o.item == "b").message == "ErrorsInBatchOperation: 1 of 3"


@pytest.mark.parametrize("state", [BatchState.FAILED, BatchState.TIMED_OUT])
def test_a_batch_that_failed_as_a_whole_fails_every_item_with_its_code(state: BatchState) -> None:
    outcomes = batch_outcomes(row(state=state, items_failed=3, error_code="RetriesExhausted", failed_items="{}"), read=read)
    assert set(states(outcomes).values()) == {("Failed", "RetriesExhausted")}


def test_a_batch_the_service_refused_rejects_every_item_and_keeps_earlier_rejections() -> None:
    outcomes = batch_outcomes(row(state=BatchState.REJECTED, items_rejected=4, error_code="BadRequest",
                                  rejected_items='{"line 7": "line 7 is not valid JSON"}'), read=read)
    assert states(outcomes) == {"line 7": ("Rejected", "InvalidItem"), "a": ("Rejected", "BadRequest"),
                                "b": ("Rejected", "BadRequest"), "c": ("Rejected", "BadRequest")}


def test_a_split_row_says_which_items_went_on_in_which_child() -> None:
    split = row(state=BatchState.SPLIT, failed_items='{"a": "StacValidationFailed"}', items_succeeded=1, items_failed=1)
    outcomes = batch_outcomes(split, read=read, children={"c": "batch-000001.1"})
    assert states(outcomes) == {"a": ("Failed", "StacValidationFailed"), "b": ("Succeeded", ""), "c": ("Resubmitted", "")}
    assert next(o for o in outcomes if o.item == "c").message == "resubmitted in batch-000001.1"


def test_overflow_blobs_are_read() -> None:
    BLOBS.update({"p/ids.json": b'["x", "y"]', "p/failed.json": b'{"y": "GenericIngestionError"}',
                  "p/rejected.json": b'{"line 3": "no id"}'})
    outcomes = batch_outcomes(row(state=BatchState.FAILED, item_ids="", item_ids_blob="p/ids.json", failed_items="",
                                  failed_items_blob="p/failed.json", rejected_items="", rejected_items_blob="p/rejected.json",
                                  items_failed=1, items_rejected=1), read=read)
    assert states(outcomes) == {"x": ("Succeeded", ""), "y": ("Failed", "GenericIngestionError"), "line 3": ("Rejected", "InvalidItem")}


def test_rejected_rows_from_planning_and_unfinished_batches() -> None:
    rejected = row(batch_id="rejected-000001", state=BatchState.REJECTED, items_rejected=2, error_code="InvalidItem",
                   item_ids='["dup", "dup#4"]', rejected_items='{"dup": "appears more than once", "dup#4": "appears more than once"}')
    outcomes = batch_outcomes(rejected, read=read)
    assert states(outcomes) == {"dup": ("Rejected", "InvalidItem"), "dup#4": ("Rejected", "InvalidItem")}
    assert {o.item_id for o in outcomes} == {"dup"}
    assert batch_outcomes(row(state=BatchState.RUNNING), read=read) == []
    superseded = row(batch_id="superseded-000001", state=BatchState.SUPERSEDED, items_superseded=1, item_ids='["a#0"]',
                     rejected_items='{"a#0": "replaced by the copy at #2"}')
    assert states(batch_outcomes(superseded, read=read)) == {"a#0": ("Superseded", "")}
    assert not batch_outcomes(superseded, read=read)[0].is_problem


@pytest.fixture
def storage(azurite: Azurite):
    settings = Settings.from_env({"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": "https://x.invalid",
                                  **unique_storage_names()})
    store = connect_storage(settings)
    ensure_storage(settings, store)
    return store


def test_the_index_is_written_in_transactions_of_at_most_100_and_rewrites_idempotently(storage) -> None:
    ids = [f"item-{n:03d}" for n in range(250)]
    batch = row(item_ids=orjson.dumps(ids).decode(), item_count=250, failed_items='{"item-007": "Boom"}',
                state=BatchState.FAILED, items_failed=1, items_succeeded=249)
    storage.status.create_batches([batch], NOW)
    record_batch(batch, services=storage)
    assert storage.items.operations == 3 + 1  # 100 + 100 + 50, and the collection's marker
    record_batch(batch, services=storage)  # a redelivery writes the same entities again
    entities = list(storage.items.table.query_entities("PartitionKey eq 'c1'"))
    assert len(entities) == 250
    assert storage.items.lookup("item-007", "c1")[0].state == ItemState.FAILED
    assert storage.items.collections() == ["c1"]


def test_lookup_finds_every_job_of_an_item_oldest_first_in_any_collection(storage) -> None:
    later = row(job_id="job-b", finished=NOW + timedelta(minutes=5), state=BatchState.FAILED, items_failed=1,
                failed_items='{"a": "ItemAlreadyExistsInCollection"}')
    record_batch(later, services=storage)
    record_batch(row(job_id="job-a"), services=storage)
    record_batch(row(job_id="job-c", collection="c2"), services=storage)
    found = storage.items.lookup("a", "c1")
    assert [(o.job_id, str(o.state)) for o in found] == [("job-a", "Succeeded"), ("job-b", "Failed")]
    assert [o.job_id for o in storage.items.lookup("a")] == ["job-a", "job-c", "job-b"]
    assert storage.items.lookup("ab", "c1") == []  # a prefix of nothing
    assert storage.items.lookup("b", "c1")[0].job_id == "job-a"
