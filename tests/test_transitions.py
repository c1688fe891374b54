"""The state machine's verbs on Azurite: each moves only the states it may move from, writes nothing
otherwise, moves the job's counters in the same transaction as the row, and spills long text to blobs
that every reader reads back. And no step changes a row any other way."""

from __future__ import annotations

import ast
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from devhost.azurite import Azurite
from shared.steps.rollup import settle_job
from shared.store import (
    MAX_INLINE_CHARS,
    NOT_IN_CATALOG,
    WAITING,
    BatchRow,
    BatchState,
    ItemsChecked,
    ItemState,
    JobRow,
    JobState,
    Outcome,
    PayloadStore,
    Spilled,
    StatusStore,
    TableClient,
    UploadChanged,
    batch_outcomes,
    brief,
    claim_batch,
    confirm_batch,
    end_batch,
    end_job,
    finish_empty,
    give_up_claimed,
    give_up_stalled,
    mark_planned,
    mark_rejected,
    mark_running,
    mark_submitted,
    mark_woken,
    note_on_job,
    note_progress,
    read_spilled,
    read_spilled_json,
    record_source,
    record_unsent,
    requeue,
    requeue_stale,
    spill_json,
)
from shared.store.status import counter_row_key
from tests.conftest import unique_storage_names

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(azurite: Azurite) -> StatusStore:
    table = TableClient.from_connection_string(azurite.connection_string, unique_storage_names()["STATUS_TABLE"])
    table.create_table()
    return StatusStore(table)


@pytest.fixture
def payloads(azurite: Azurite) -> PayloadStore:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    store = PayloadStore(service, unique_storage_names()["PAYLOAD_CONTAINER"])
    store.ensure()
    return store


def _batch(store: StatusStore, state: BatchState = BatchState.QUEUED, **fields: Any) -> BatchRow:
    store.create_job(JobRow("job-1", state=JobState.RUNNING), NOW)
    store.create_batches([BatchRow("job-1", "batch-000001", state=state, collection="tiles", item_count=3,
                                   item_ids='["a","b","c"]', **fields)], NOW)
    row = store.get_batch("job-1", "batch-000001")
    assert row is not None
    return row


def _stored(store: StatusStore) -> BatchRow:
    row = store.get_batch("job-1", "batch-000001")
    assert row is not None
    return row


# ----- batches ----------------------------------------------------------------------------------


def test_claim_moves_queued_to_submitting_once_and_only_its_claimer_may_take_it_again(store: StatusStore) -> None:
    row = _batch(store)
    claimed = claim_batch(store, row, message_id="m1", now=NOW)
    assert claimed is not None
    assert (claimed.state, claimed.attempts, claimed.claimed_by, claimed.submit_started) == (BatchState.SUBMITTING, 1, "m1", NOW)
    assert store.counters("job-1").get("n_Active") == 1 and "n_Queued" not in store.counters("job-1")
    assert claim_batch(store, row, message_id="m2", now=NOW) is None  # a stale copy in hand: re-read, refused
    assert _stored(store).etag == claimed.etag  # ...and nothing written
    again = claim_batch(store, claimed, message_id="m1", now=NOW + timedelta(seconds=5))  # its own redelivery
    assert again is not None and (again.attempts, again.submit_started) == (2, NOW)
    assert store.counters("job-1").get("n_Active") == 1  # Submitting -> Submitting moves no counter


def test_a_claim_records_an_upload_check_or_ends_the_batch_rejected(store: StatusStore) -> None:
    row = _batch(store, validated=False)
    check = ItemsChecked(valid=2, rejected=1, superseded=0, repaired=1, item_ids=Spilled("item_ids", '["a","b"]'),
                         rejected_items=Spilled("rejected_items", '{"line 3":"no id"}'), payload_blob="p/job-1/b.json")
    claimed = claim_batch(store, row, message_id="m1", check=check, now=NOW)
    assert claimed is not None and claimed.state == BatchState.SUBMITTING and claimed.validated
    assert (claimed.item_count, claimed.items_rejected, claimed.items_repaired, claimed.item_ids, claimed.payload_blob) == \
        (2, 1, 1, '["a","b"]', "p/job-1/b.json")
    assert store.counters("job-1")["items_rejected"] == 1  # in the claim's own transaction

    other = replace(row, batch_id="batch-000002")
    store.create_batches([other], NOW)
    nothing = replace(check, valid=0, rejected=3, item_ids=Spilled("item_ids", "[]"))
    ended = claim_batch(store, store.get_batch("job-1", "batch-000002"), message_id="m2", check=nothing, now=NOW)
    assert ended is not None and (ended.state, ended.error_code, ended.finished) == (BatchState.REJECTED, "InvalidItem", NOW)
    assert ended.error_message == "all 3 item(s) failed validation" and ended.payload_blob == ""

    third = replace(row, batch_id="batch-000003")
    store.create_batches([third], NOW)
    gone = claim_batch(store, store.get_batch("job-1", "batch-000003"), message_id="m3", check=UploadChanged("overwritten"), now=NOW)
    assert gone is not None and (gone.state, gone.items_rejected, gone.item_count, gone.error_code) == \
        (BatchState.REJECTED, 3, 0, "UploadChanged")
    counts = store.counters("job-1")
    assert (counts["n_Rejected"], counts["n_Active"], counts["items_rejected"]) == (2, 1, 1 + 3 + 3)


def test_submitted_running_and_woken_each_move_only_from_their_state(store: StatusStore) -> None:
    row = _batch(store)
    assert mark_submitted(store, row, operation_id="op", operation_url="https://gc/op", poll_role=WAITING,
                          submitted=NOW, now=NOW) is None  # still Queued
    claimed = claim_batch(store, row, message_id="m1", now=NOW)
    assert claimed is not None
    assert mark_running(store, claimed, now=NOW) is None  # not Submitted yet
    submitted = mark_submitted(store, claimed, operation_id="op", operation_url="https://gc/op", poll_role=WAITING,
                               submitted=NOW, now=NOW)
    assert submitted is not None and (submitted.state, submitted.operation_id, submitted.poll_role) == \
        (BatchState.SUBMITTED, "op", WAITING)
    woken = mark_woken(store, submitted, now=NOW)
    assert woken is not None and woken.poll_role == ""
    assert mark_woken(store, submitted, now=NOW) is None  # woken once: the second waker sends no poll
    running = mark_running(store, woken, now=NOW)
    assert running is not None and running.state == BatchState.RUNNING
    assert mark_running(store, running, now=NOW) is None
    assert mark_woken(store, running, now=NOW) is None
    assert store.counters("job-1").get("n_Active") == 1


def test_requeue_and_requeue_stale_move_only_a_submitting_batch(store: StatusStore) -> None:
    row = _batch(store)
    assert requeue(store, row, code="Http503", message="busy", now=NOW) is None
    claimed = claim_batch(store, row, message_id="m1", now=NOW)
    assert claimed is not None
    back = requeue(store, claimed, code="Http503", message="x" * 5000, now=NOW)
    assert back is not None and (back.state, back.error_code, len(back.error_message)) == (BatchState.QUEUED, "Http503", 2000)
    assert back.claimed_by == "m1"  # its claimer's delayed re-send may take it again
    claimed = claim_batch(store, back, message_id="m1", now=NOW)
    assert claimed is not None
    assert requeue_stale(store, "job-1", "batch-000001", older_than=NOW - timedelta(seconds=1), now=NOW) is None  # fresh
    swept = requeue_stale(store, "job-1", "batch-000001", older_than=NOW, now=NOW + timedelta(hours=1))
    assert swept is not None and (swept.state, swept.claimed_by, swept.error_code) == (BatchState.QUEUED, "", "Requeued")
    assert store.counters("job-1").get("n_Queued") == 1 and "n_Active" not in store.counters("job-1")


def test_end_batch_ends_any_open_batch_once_with_its_counts_in_the_same_transaction(store: StatusStore,
                                                                                   payloads: PayloadStore) -> None:
    row = _batch(store)
    claimed = claim_batch(store, row, message_id="m1", now=NOW)
    assert claimed is not None
    sent: list[list[Any]] = []
    submit = store.table.submit_transaction

    def watched(operations: Any, **kwargs: Any) -> Any:  # the real call to Azurite, its operations noted
        sent.append(list(operations))
        return submit(operations, **kwargs)

    store.table.submit_transaction = watched  # type: ignore[method-assign]
    outcome = Outcome(BatchState.FAILED, succeeded=2, failed={"c": "InvalidGeometry"}, code="OperationFailed",
                      message="one item failed", logs="log")
    ended = end_batch(store, claimed, outcome, payloads=payloads, now=NOW)
    assert ended is not None
    assert (ended.state, ended.items_succeeded, ended.items_failed, ended.finished, ended.logs) == (BatchState.FAILED, 2, 1, NOW, "log")
    assert orjson.loads(ended.failed_items) == {"c": "InvalidGeometry"}
    assert len(sent) == 1 and [op[1]["RowKey"] for op in sent[0]] == ["batch-000001", counter_row_key("batch-000001")]
    counts = store.counters("job-1")
    assert (counts["n_Failed"], counts["items_succeeded"], counts["items_failed"]) == (1, 2, 1) and "n_Active" not in counts
    assert counts == store.recount("job-1")

    assert end_batch(store, ended, Outcome(BatchState.SUCCEEDED, succeeded=3), payloads=payloads, now=NOW) is None  # ended once
    assert len(sent) == 1 and _stored(store).state == BatchState.FAILED and store.counters("job-1") == counts


def test_an_end_without_items_told_apart_fails_or_rejects_every_item_of_the_row(store: StatusStore,
                                                                              payloads: PayloadStore) -> None:
    row = _batch(store, items_rejected=2)  # e.g. two lines of an upload batch rejected when it was checked
    rejected = end_batch(store, row, Outcome.every_item_rejected("InvalidInput", "refused"), payloads=payloads, now=NOW)
    assert rejected is not None and (rejected.state, rejected.items_rejected, rejected.items_failed) == (BatchState.REJECTED, 5, 0)
    store.create_batches([BatchRow("job-1", "batch-000002", collection="tiles", item_count=4)], NOW)
    second = store.get_batch("job-1", "batch-000002")
    failed = end_batch(store, second, Outcome.every_item_failed(BatchState.TIMED_OUT, "TimedOut", "no answer"),
                       payloads=payloads, now=NOW)
    assert failed is not None and (failed.state, failed.items_failed, failed.failed_items) == (BatchState.TIMED_OUT, 4, "{}")
    assert store.counters("job-1") == store.recount("job-1")


def test_long_failed_items_and_logs_spill_to_blobs_that_every_reader_reads_back(store: StatusStore,
                                                                                 payloads: PayloadStore) -> None:
    ids = [f"item-{n:05d}" for n in range(3000)]  # 39K characters as a JSON list
    store.create_job(JobRow("job-1", state=JobState.RUNNING), NOW)
    row = BatchRow("job-1", "batch-000001", collection="tiles", item_count=len(ids))
    row = replace(row, **spill_json(payloads, "job-1", "batch-000001", "item_ids", ids).columns())
    assert row.item_ids == "" and row.item_ids_blob.endswith("job-1/batch-000001.ids.json")
    store.create_batches([row], NOW)
    failed = {item_id: ("BadAsset" if n % 2 else "InvalidGeometry") for n, item_id in enumerate(ids)}
    logs = "line\n" * 10_000
    ended = end_batch(store, _stored(store), Outcome(BatchState.FAILED, failed=failed, code="OperationFailed", message="all failed", logs=logs),
                      payloads=payloads, now=NOW, logs_inline_chars=100)
    assert ended is not None and ended.failed_items == "" and ended.failed_items_blob.endswith(".failed.json")
    assert ended.logs == logs[:100] and read_spilled(ended, "logs", payloads.read) == logs
    stored = _stored(store)
    assert read_spilled_json(stored, "failed_items", payloads.read, {}) == failed
    assert read_spilled_json(stored, "item_ids", payloads.read, []) == ids
    assert {o.code for o in batch_outcomes(stored, read=payloads.read)} == {"BadAsset", "InvalidGeometry"}

    mark_planned(store, "job-1", collection="tiles", item_count=len(ids), batch_count=1, now=NOW)
    job = settle_job("job-1", status=store, now=NOW, read=payloads.read)
    assert job is not None and job.state == JobState.FAILED
    assert job.error_code == "InvalidGeometry"  # counted from the spilled map, not as 3000 x the batch's own code
    assert job.error_message.startswith("InvalidGeometry x1500, BadAsset x1500")


def test_short_text_stays_inline_and_error_messages_are_cut_to_one_length(payloads: PayloadStore) -> None:
    inline = spill_json(payloads, "job-1", "batch-000001", "failed_items", {"a": "X"})
    assert inline == Spilled("failed_items", '{"a":"X"}') and len(brief("y" * 9000)) == 2000
    assert len(spill_json(payloads, "job-1", "batch-000001", "item_ids", ["z" * MAX_INLINE_CHARS]).text) == 0


# ----- jobs -------------------------------------------------------------------------------------


def test_only_the_claimer_rejects_a_job_and_a_terminal_job_never_changes(store: StatusStore) -> None:
    store.create_job(JobRow("job-1", claimed_by="m1"), NOW)
    assert mark_rejected(store, "job-1", claimed_by="m2", item_count=0, code="InvalidInput", reason="no", now=NOW) is None
    assert mark_rejected(store, "job-1", claimed_by="", item_count=0, code="InvalidInput", reason="no", now=NOW) is None
    rejected = mark_rejected(store, "job-1", claimed_by="m1", item_count=4, code="InvalidInput", reason="r" * 3000, now=NOW)
    assert rejected is not None and (rejected.state, rejected.planned, rejected.items_rejected) == (JobState.REJECTED, True, 4)
    assert len(rejected.error_message) == 2000
    assert give_up_claimed(store, "job-1", claimed_by="m1", reason="late", now=NOW) is None
    assert finish_empty(store, "job-1", code="", message="none", now=NOW) is None
    assert record_unsent(store, "job-1", collection="c", item_count=1, batch_count=1, code="A", reason="r", now=NOW) is None
    assert note_progress(store, "job-1", items=9, batches=9, now=NOW) is None
    assert end_job(store, "job-1", state=JobState.SUCCEEDED, code="", message="", now=NOW) is None
    assert store.get_job("job-1").state == JobState.REJECTED


def test_giving_up_fails_a_job_without_batches_and_leaves_one_with_batches_to_its_roll_up(store: StatusStore) -> None:
    store.create_job(JobRow("bare", claimed_by="m1"), NOW)
    bare = give_up_claimed(store, "bare", claimed_by="m1", reason="broken", now=NOW)
    assert bare is not None and (bare.state, bare.planned, bare.error_code) == (JobState.FAILED, True, "GaveUp")
    store.create_job(JobRow("half", claimed_by="m1"), NOW)
    note_progress(store, "half", items=32, batches=2, now=NOW)
    assert note_progress(store, "half", items=16, batches=1, now=NOW).item_count == 32  # counts never go back
    half = give_up_stalled(store, "half", older_than=NOW - timedelta(seconds=1), reason="stopped", now=NOW)
    assert half is None  # changed since the cut-off
    half = give_up_stalled(store, "half", older_than=NOW, reason="stopped", now=NOW + timedelta(hours=1))
    assert half is not None and (half.state, half.planned, half.error_message) == (JobState.RUNNING, True, "stopped")
    assert give_up_stalled(store, "half", older_than=NOW + timedelta(days=1), reason="again", now=NOW) is None  # planned


def test_a_job_ends_only_when_no_batch_is_open(store: StatusStore, payloads: PayloadStore) -> None:
    row = _batch(store)
    mark_planned(store, "job-1", collection="tiles", item_count=3, batch_count=1, now=NOW)
    assert end_job(store, "job-1", state=JobState.SUCCEEDED, code="", message="", now=NOW) is None
    end_batch(store, row, Outcome(BatchState.SUCCEEDED, succeeded=3), payloads=payloads, now=NOW)
    ended = end_job(store, "job-1", state=JobState.SUCCEEDED, code="", message="", now=NOW)
    assert ended is not None and (ended.state, ended.items_succeeded) == (JobState.SUCCEEDED, 3)


def test_notes_sources_empty_searches_and_unsent_plans(store: StatusStore) -> None:
    store.create_job(JobRow("job-1", claimed_by="m1"), NOW)
    noted = note_on_job(store, "job-1", code="SearchStopped", note="n" * 3000, now=NOW)
    assert noted is not None and (noted.error_code, len(noted.error_message)) == ("SearchStopped", 2000)
    assert record_source(store, "job-1", source="search https://example.org/stac", now=NOW).source == "search https://example.org/stac"
    unsent = record_unsent(store, "job-1", collection="tiles", item_count=5, batch_count=1, code="AuthenticationFailed",
                           reason="refused", now=NOW)
    assert unsent is not None and (unsent.planned, unsent.state, unsent.error_code) == (True, JobState.ACCEPTED, "AuthenticationFailed")
    store.create_job(JobRow("empty"), NOW)
    empty = finish_empty(store, "empty", code="", message="the search matched no items", now=NOW)
    assert empty is not None and (empty.state, empty.planned, empty.item_count) == (JobState.SUCCEEDED, True, 0)


# ----- the guard --------------------------------------------------------------------------------

ROW_WRITES = {"update_job", "update_batch"}


def direct_row_writes(source: str) -> list[int]:
    """Lines of `source` that call `.update_job(...)` or `.update_batch(...)` on anything."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ROW_WRITES]


def test_the_guard_finds_a_direct_row_write() -> None:
    assert direct_row_writes("services.status.update_batch(j, b, change, now)\nx = 1\nstatus.update_job(j, f, now)") == [1, 3]
    assert direct_row_writes("claim_batch(status, row, message_id='m', now=now)") == []


@pytest.mark.parametrize("package", ["shared/steps", "shared/inputs"])
def test_steps_and_inputs_change_rows_only_through_the_transitions(package: str) -> None:
    found = {str(path.relative_to(ROOT)): lines for path in sorted((ROOT / package).rglob("*.py"))
             if (lines := direct_row_writes(path.read_text()))}
    assert found == {}, "use a verb of shared/store/transitions.py instead"


# ----- Unconfirmed: no verdict guessed, then confirmed -------------------------------------------------


def test_an_unconfirmed_batch_counts_every_item_unconfirmed_once_and_ends_its_job_unconfirmed(
        store: StatusStore, payloads: PayloadStore) -> None:
    row = _batch(store, BatchState.RUNNING)
    store.update_job("job-1", lambda r: replace(r, planned=True), NOW)
    outcome = Outcome.every_item_unconfirmed("TimedOut", "operation and catalog unreadable at the deadline")
    ended = end_batch(store, row, outcome, payloads=payloads, now=NOW)
    assert ended is not None and (ended.state, ended.items_unconfirmed, ended.items_failed) == (BatchState.UNCONFIRMED, 3, 0)
    assert end_batch(store, row, outcome, payloads=payloads, now=NOW) is None  # a redelivery: nothing counted twice
    assert store.counters("job-1") == store.recount("job-1")
    job = settle_job("job-1", status=store, now=NOW)
    assert job is not None and (job.state, job.items_unconfirmed, job.error_code) == (JobState.UNCONFIRMED, 3, "Unconfirmed")
    assert job.state.is_terminal and not job.state.is_final
    assert [o.state for o in batch_outcomes(ended, read=payloads.read)] == [ItemState.UNCONFIRMED] * 3


def test_confirm_batch_settles_each_item_as_the_catalog_says_once_and_the_job_moves_to_its_true_state(
        store: StatusStore, payloads: PayloadStore) -> None:
    row = _batch(store, BatchState.RUNNING)
    store.update_job("job-1", lambda r: replace(r, planned=True), NOW)
    unconfirmed = end_batch(store, row, Outcome.every_item_unconfirmed("TimedOut", "unreadable"), payloads=payloads, now=NOW)
    assert settle_job("job-1", status=store, now=NOW).state == JobState.UNCONFIRMED
    confirmed = confirm_batch(store, unconfirmed, landed={"a", "c"}, ids=["a", "b", "c"], payloads=payloads, now=NOW)
    assert confirmed is not None
    assert (confirmed.state, confirmed.items_succeeded, confirmed.items_failed, confirmed.items_unconfirmed) == (
        BatchState.FAILED, 2, 1, 0)
    assert {o.item: o.state for o in batch_outcomes(confirmed, read=payloads.read)} == {
        "a": ItemState.SUCCEEDED, "b": ItemState.FAILED, "c": ItemState.SUCCEEDED}
    # A second sweep racing with the first (its stale copy in hand) writes nothing.
    assert confirm_batch(store, unconfirmed, landed={"a", "b", "c"}, ids=["a", "b", "c"], payloads=payloads, now=NOW) is None
    assert store.counters("job-1") == store.recount("job-1")
    job = settle_job("job-1", status=store, now=NOW)  # also what the next sweep does after a crash right here
    assert job is not None and (job.state, job.items_succeeded, job.items_failed) == (JobState.PARTIALLY_SUCCEEDED, 2, 1)
    assert job.error_code == NOT_IN_CATALOG and job.state.is_final
    assert end_job(store, "job-1", state=JobState.FAILED, code="", message="", now=NOW) is None  # final: never again
