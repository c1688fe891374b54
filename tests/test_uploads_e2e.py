"""End to end: uploads into the drop container start jobs (BlobCreated events, as Event Grid sends them)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import orjson
import pytest
from azure.storage.queue import QueueClient

from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Timings
from shared.catalog.client import GeoCatalogClient, OperationRef
from shared.errors import RetryableError
from shared.inputs.blob_events import BlobCreated, blob_created_event, blob_created_from_event
from shared.inputs.documents import file_kind
from shared.messages import BatchMessage, PollMessage
from shared.steps.handlers import handle_blob_event, handle_poll_message, handle_work_message
from shared.steps.uploads import collection_from_path, upload_job_id
from shared.store.status import BatchRow, BatchState, JobState
from tests.helpers import make_item, wait_until
from tests.test_pipeline_e2e import assert_holds_exactly, catalog, item_posts, stored, with_collection


def upload(stack: LocalStack, path: str, data: bytes) -> str:
    """Upload into the drop container; returns the job id that blob version gets."""
    container = stack.services.settings.drop_container
    result = stack.services.payloads._service.get_blob_client(container, path).upload_blob(data, overwrite=True)  # noqa: SLF001
    return upload_job_id(BlobCreated(container, path, result["etag"], len(data)))


def ndjson(items: list) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def test_twenty_thousand_item_ndjson_upload(make_stack) -> None:
    stack = make_stack(settings={"PLAN_SEGMENT_ITEMS": "5000", "BATCH_MAX_ITEMS": "250"})
    collection = with_collection(stack)
    items = [make_item(f"u{n:05d}") for n in range(20_000)]
    job_id = upload(stack, f"{collection}/nightly.ndjson", ndjson(items))
    job = wait_for_jobs(stack.services, [job_id], timeout=600)[job_id]
    assert (job.state, job.item_count, job.batch_count, job.items_succeeded) == (JobState.SUCCEEDED, 20_000, 80, 20_000)
    assert_holds_exactly(stack, collection, [{**item, "collection": collection} for item in items])
    assert item_posts(stack) == 80


def test_malformed_line_is_rejected_with_its_number_and_the_rest_ingest(make_stack) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "10"})
    collection = with_collection(stack)
    lines = [orjson.dumps(make_item(f"m{n}")) for n in range(30)]
    lines[14] = b'{"type": "Feature", "id": "broken",'  # line 15
    lines[20] = orjson.dumps(make_item("bad id!"))  # line 21: JSON, but not a valid item
    job_id = upload(stack, f"{collection}/with-bad-lines.ndjson", b"\n".join(lines) + b"\n")
    job = wait_for_jobs(stack.services, [job_id], timeout=120)[job_id]
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 28, 2)
    reasons = {k: v for row in stack.services.status.batches(job_id) for k, v in orjson.loads(row.rejected_items).items()}
    assert set(reasons) == {"line 15", "line 21"}
    assert "not valid JSON" in reasons["line 15"] and "1-64" in reasons["line 21"]
    assert {item["id"] for item in catalog(stack).search_ids(collection, ["m0", "m13", "m29"])} == {"m0", "m13", "m29"}


def test_empty_file_makes_a_job_that_says_so(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    job_id = upload(stack, f"{collection}/empty.ndjson", b"\n\n")
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert (job.state, job.item_count) == (JobState.REJECTED, 0) and "no items" in job.error_message


def test_non_json_file_is_rejected_with_the_reason(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    job_id = upload(stack, f"{collection}/not-json.json", b"<html>this is not json</html>")
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert job.state == JobState.REJECTED and "not JSON" in job.error_message


@pytest.mark.parametrize("name", ["items.ndjson.gz", "items.json.gz", "items.jsonl"])
def test_gzip_and_other_formats(make_stack, name: str) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "40"})
    collection = with_collection(stack)
    items = [make_item(f"z{n}") for n in range(100)]
    data = ndjson(items) if "nd" in name or "jsonl" in name else orjson.dumps({"type": "FeatureCollection", "features": items})
    if name.endswith(".gz"):
        data = gzip.compress(data)
    job_id = upload(stack, f"{collection}/{name}", data)
    job = wait_for_jobs(stack.services, [job_id], timeout=120)[job_id]
    assert (job.state, job.items_succeeded, job.batch_count) == (JobState.SUCCEEDED, 100, 3)
    assert_holds_exactly(stack, collection, [{**item, "collection": collection} for item in items])


def test_duplicate_events_make_one_job_and_a_new_version_makes_another(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    path = f"{collection}/twice.ndjson"
    first = upload(stack, path, ndjson([make_item("v1")]))
    wait_for_jobs(stack.services, [first], timeout=60)
    posts = item_posts(stack)
    container = stack.services.settings.drop_container
    etag, size = stack.services.payloads.properties(f"{container}/{path}")
    for _ in range(2):  # Event Grid delivering the same event again
        event = blob_created_event(container, path, etag.strip('"'), size)
        stack.services.queues.send(stack.services.settings.drop_events_queue, orjson.dumps(event).decode())
    events = next(listener for listener in stack.host.listeners if listener.name == "blob_created")
    wait_until(lambda: events.processed >= 3, timeout=30)
    assert item_posts(stack) == posts
    assert [j.job_id for j in stack.services.status.jobs()] == [first]
    second = upload(stack, path, ndjson([make_item("v2")]))
    assert second != first
    assert wait_for_jobs(stack.services, [second], timeout=60)[second].items_succeeded == 1


def _event_for(stack: LocalStack, path: str) -> bytes:
    container = stack.services.settings.drop_container
    etag, size = stack.services.payloads.properties(f"{container}/{path}")
    return orjson.dumps(blob_created_event(container, path, etag.strip('"'), size))


def _work_queue(stack: LocalStack) -> QueueClient:
    return QueueClient.from_connection_string(stack.azurite.connection_string, stack.services.settings.work_queue)


def test_the_event_plans_the_first_segment_itself_with_no_plan_message_between(make_stack) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "10", "PLAN_SEGMENT_ITEMS": "20"})
    collection = with_collection(stack)
    stack.pause_functions()
    path = f"{collection}/inline.ndjson"
    items = [make_item(f"p{n}") for n in range(30)]
    job_id = upload(stack, path, ndjson(items))
    handle_blob_event(_event_for(stack, path), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    assert len(stack.services.status.batches(job_id)) == 2  # the first segment: 20 items
    kinds = sorted(orjson.loads(m.content)["kind"] for m in _work_queue(stack).peek_messages(max_messages=32))
    assert kinds == ["batch", "batch", "plan"]  # its batches, and the hand-on to the second segment
    stack.resume_functions()
    job = wait_for_jobs(stack.services, [job_id], timeout=90)[job_id]
    assert (job.state, job.batch_count, job.items_succeeded) == (JobState.SUCCEEDED, 3, 30)


def test_a_transient_error_while_the_event_plans_sends_the_segment_as_a_plan_message(make_stack, monkeypatch) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    stack.pause_functions()
    path = f"{collection}/later.ndjson"
    job_id = upload(stack, path, ndjson([make_item("later")]))

    def unavailable(*_args, **_kwargs):
        raise RetryableError("503 from the GeoCatalog", retry_after=0, status=503)

    monkeypatch.setattr("shared.steps.handlers.plan_upload_segment", unavailable)
    handle_blob_event(_event_for(stack, path), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    plans = [orjson.loads(m.content) for m in _work_queue(stack).peek_messages(max_messages=32)]
    assert [(p["kind"], p["job_id"], p["next_batch"]) for p in plans] == [("plan", job_id, 1)]
    monkeypatch.undo()
    stack.resume_functions()
    assert wait_for_jobs(stack.services, [job_id], timeout=60)[job_id].items_succeeded == 1


def test_batches_of_an_overwritten_upload_never_read_the_new_version(make_stack) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "5"})
    collection = with_collection(stack)
    stack.pause_functions()
    path = f"{collection}/nightly.ndjson"
    old_job = upload(stack, path, ndjson([make_item(f"old{n}") for n in range(10)]))
    handle_blob_event(_event_for(stack, path), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    assert len(stack.services.status.batches(old_job)) == 2  # planned as byte ranges of the old version, not yet read
    new_items = [make_item(f"new-version-{n}") for n in range(10)]  # other lengths: the old ranges cut its lines
    new_job = upload(stack, path, ndjson(new_items))
    stack.resume_functions()
    jobs = wait_for_jobs(stack.services, [old_job, new_job], timeout=90)
    assert (jobs[old_job].state, jobs[old_job].items_succeeded, jobs[old_job].items_rejected) == (JobState.REJECTED, 0, 10)
    rows = stack.services.status.batches(old_job)
    assert {(row.state, row.error_code) for row in rows} == {(BatchState.REJECTED, "UploadChanged")}
    assert "overwritten" in rows[0].error_message
    assert (jobs[new_job].state, jobs[new_job].items_succeeded) == (JobState.SUCCEEDED, 10)
    assert_holds_exactly(stack, collection, [{**item, "collection": collection} for item in new_items])


def test_files_over_the_size_limit_and_unknown_types_are_refused(make_stack) -> None:
    stack = make_stack(settings={"MAX_UPLOAD_BYTES": "1000"})
    collection = with_collection(stack)
    big = upload(stack, f"{collection}/big.ndjson", ndjson([make_item(f"b{n}") for n in range(10)]))
    odd = upload(stack, f"{collection}/items.csv", b"id,geometry\n")
    jobs = wait_for_jobs(stack.services, [big, odd], timeout=60)
    assert jobs[big].state == JobState.REJECTED and "MAX_UPLOAD_BYTES" in jobs[big].error_message
    assert jobs[odd].state == JobState.REJECTED and "unsupported file type" in jobs[odd].error_message


def test_collection_comes_from_the_items_when_the_path_has_none(make_stack) -> None:
    stack = make_stack()
    with_collection(stack, "from-items")
    job_id = upload(stack, "loose-file.ndjson", ndjson([make_item("i1", "from-items"), make_item("i2", "from-items")]))
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert (job.state, job.collection, job.items_succeeded) == (JobState.SUCCEEDED, "from-items", 2)
    rows = stack.services.status.batches(job_id)
    assert all(row.state == BatchState.SUCCEEDED for row in rows)


def test_event_parsing_and_paths() -> None:
    event = blob_created_event("stac-drop", "landcover/2024/a b.ndjson", "0x8D", 10, "")
    assert blob_created_from_event(event) == BlobCreated("stac-drop", "landcover/2024/a b.ndjson", "0x8D", 10, "devstoreaccount1")
    assert blob_created_from_event({"eventType": "Microsoft.Storage.BlobDeleted", "data": {}}) is None
    cloud = {"type": "Microsoft.Storage.BlobCreated", "subject": "/blobServices/default/containers/c/blobs/x.json",
             "source": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/MyAcct",
             "data": {"eTag": '"0x1"', "contentLength": 3}}
    assert blob_created_from_event(cloud) == BlobCreated("c", "x.json", "0x1", 3, "myacct")
    assert collection_from_path("landcover/x.ndjson") == "landcover" and collection_from_path("x.ndjson") == ""
    assert file_kind("a/b.NDJSON.gz").gzipped and file_kind("x.geojson").ndjson is False and file_kind("x.csv") is None


def test_a_json_upload_with_an_item_too_deep_to_serialize_rejects_only_that_item(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    deep: list = []
    for _ in range(300):  # past orjson's 254-level limit
        deep = [deep]
    items = [make_item("ok-1"), {**make_item("deep-1"), "properties": {"datetime": "2024-01-01T00:00:00Z", "x": deep}},
             make_item("ok-2")]
    body = b'{"type":"FeatureCollection","features":[' + b",".join(
        orjson.dumps(i) if i["id"] != "deep-1" else _unsafe_dumps(i) for i in items) + b"]}"
    job_id = upload(stack, f"{collection}/deep.json", body)
    job = wait_for_jobs(stack.services, [job_id], timeout=120)[job_id]
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 2, 1)
    reasons = {k: v for row in stack.services.status.batches(job_id) for k, v in orjson.loads(row.rejected_items or "{}").items()}
    assert list(reasons) == ["deep-1"] and "nested more than" in reasons["deep-1"]


def _unsafe_dumps(value: object) -> bytes:
    """JSON of any depth (orjson and json refuse past their limits)."""
    if isinstance(value, dict):
        return b"{" + b",".join(orjson.dumps(k) + b":" + _unsafe_dumps(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(_unsafe_dumps(v) for v in value) + b"]"
    return orjson.dumps(value)


# ----- byte-range batches keep no copy of their items: what sends them again reads the range again -----


def _planned_upload(stack: LocalStack, collection: str, name: str, lines: list[bytes]) -> tuple[str, str]:
    """Upload and plan a file with the functions paused; returns (job id, blob path)."""
    stack.pause_functions()
    path = f"{collection}/{name}"
    job_id = upload(stack, path, b"\n".join(lines) + b"\n")
    handle_blob_event(_event_for(stack, path), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    return job_id, path


def _deliver_batch(stack: LocalStack, job_id: str, batch_id: str, message_id: str) -> BatchRow:
    """One delivery of the batch's message, as the host would make it; returns the row after it."""
    body = BatchMessage(job_id, batch_id).to_json()
    handle_work_message(body.encode(), message_id=message_id, dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    return stack.services.status.get_batch(job_id, batch_id)


def _payload_blobs(stack: LocalStack, job_id: str) -> list[str]:
    container = stack.services.payloads._service.get_container_client(stack.services.settings.payload_container)  # noqa: SLF001
    return [blob.name for blob in container.list_blobs(name_starts_with=f"{job_id}/")]


def test_a_byte_range_batch_writes_no_copy_and_a_retry_reads_its_lines_again(make_stack) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "5"})
    collection = with_collection(stack)
    lines = [orjson.dumps(make_item(f"r{n}")) for n in range(5)]
    lines[2] = b'{"type": "Feature", "id": "broken",'
    job_id, _ = _planned_upload(stack, collection, "retry.ndjson", lines)
    stack.emulator.catalog.faults.update({"server_error_next": 1})
    first = _deliver_batch(stack, job_id, "batch-000001", "first")  # its POST gets a 503: back to Queued
    assert (first.state, first.attempts, first.validated, first.items_rejected) == (BatchState.QUEUED, 1, True, 1)
    assert first.payload_start is not None and first.payload_etag  # still the range of that version, not a copy
    retried = _deliver_batch(stack, job_id, "batch-000001", "retry")
    assert (retried.state, retried.attempts) == (BatchState.SUBMITTED, 2)
    stack.resume_functions()
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 4, 1)
    assert_holds_exactly(stack, collection, [{**make_item(f"r{n}"), "collection": collection} for n in (0, 1, 3, 4)])
    assert _payload_blobs(stack, job_id) == []


@pytest.mark.parametrize("first_post_landed", [False, True], ids=["refused", "accepted-answer-lost"])
def test_a_batch_to_resend_after_its_upload_was_overwritten_ends_with_a_true_verdict(
        make_stack, monkeypatch, first_post_landed: bool) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "5"})
    collection = with_collection(stack)
    items = [make_item(f"o{n}") for n in range(5)]
    job_id, path = _planned_upload(stack, collection, "moving.ndjson", [orjson.dumps(i) for i in items])
    if first_post_landed:  # the service accepts the POST, but its answer is lost (a timeout)
        create_items = GeoCatalogClient.create_items

        def answer_lost(self, collection_id, body):
            create_items(self, collection_id, body)
            raise RetryableError("read timed out")

        monkeypatch.setattr(GeoCatalogClient, "create_items", answer_lost)
    else:
        stack.emulator.catalog.faults.update({"server_error_next": 1})
    assert _deliver_batch(stack, job_id, "batch-000001", "first").state == BatchState.QUEUED
    monkeypatch.undo()
    if first_post_landed:
        wait_until(lambda: len(list(catalog(stack).search_ids(collection, [i["id"] for i in items]))) == 5)
    upload(stack, path, ndjson([make_item(f"other{n}") for n in range(5)]))  # the old version is gone
    row = _deliver_batch(stack, job_id, "batch-000001", "retry")
    if first_post_landed:
        assert (row.state, row.items_succeeded, row.items_failed) == (BatchState.SUCCEEDED, 5, 0)
    else:
        assert (row.state, row.error_code, row.items_succeeded, row.items_failed) == (BatchState.FAILED, "UploadChanged", 0, 5)
        assert set(orjson.loads(row.failed_items).values()) == {"UploadChanged"} and "overwritten" in row.error_message
    stack.resume_functions()
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert job.items_succeeded + job.items_failed == 5 and job.items_succeeded == (5 if first_post_landed else 0)


def _all_or_nothing_stack_holding_taken(make_stack) -> tuple[LocalStack, str]:
    """A stack whose operations fail as a whole when one item fails, and a collection already holding "taken"."""
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), atomic_batches=True),
                       settings={"BATCH_MAX_ITEMS": "10"})
    collection = with_collection(stack)
    existing = catalog(stack).create_items(collection, make_item("taken", collection))
    wait_until(lambda: catalog(stack).get_operation(existing).is_terminal)
    return stack, collection


def test_a_failed_operation_of_a_byte_range_batch_is_isolated_from_its_lines_read_again(make_stack) -> None:
    stack, collection = _all_or_nothing_stack_holding_taken(make_stack)
    good = [make_item(f"i{n}") for n in range(4)]
    lines = [orjson.dumps(i) for i in good[:2]] + [orjson.dumps(make_item("taken")), b"{not json"] + [
        orjson.dumps(i) for i in good[2:]]
    job_id = upload(stack, f"{collection}/isolate.ndjson", b"\n".join(lines) + b"\n")
    job = wait_for_jobs(stack.services, [job_id], timeout=90)[job_id]
    assert (job.state, job.items_succeeded, job.items_failed, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 4, 1, 1)
    rows = {row.batch_id: row for row in stack.services.status.batches(job_id)}
    assert rows["batch-000001"].state == BatchState.SPLIT and orjson.loads(rows["batch-000001"].failed_items) == {
        "taken": "ItemAlreadyExistsInCollection"}
    assert set(stored(stack, collection)) == {"taken"} | {i["id"] for i in good}


def test_a_failed_operation_whose_upload_was_overwritten_fails_its_unresolved_items_without_resending(make_stack) -> None:
    stack, collection = _all_or_nothing_stack_holding_taken(make_stack)
    items = [make_item("a1"), make_item("taken"), make_item("a2")]
    job_id, path = _planned_upload(stack, collection, "gone.ndjson", [orjson.dumps(i) for i in items])
    row = _deliver_batch(stack, job_id, "batch-000001", "first")
    assert row.state == BatchState.SUBMITTED
    operation_url = f"{row.operation_url}?api-version={stack.services.settings.geocatalog_api_version}"
    wait_until(lambda: catalog(stack).get_operation(OperationRef(row.operation_id, operation_url)).is_terminal)
    upload(stack, path, ndjson([make_item("other")]))  # overwritten before the failed operation is isolated
    poll = PollMessage(job_id, row.batch_id, collection, operation_url, attempt=0,
                       deadline=datetime(2100, 1, 1, tzinfo=UTC).isoformat())
    handle_poll_message(poll.to_json().encode(), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    ended = stack.services.status.get_batch(job_id, row.batch_id)
    failed = orjson.loads(ended.failed_items)
    assert ended.state == BatchState.FAILED and set(failed) == {"a1", "taken", "a2"}
    assert failed["taken"] == "ItemAlreadyExistsInCollection" and "not resubmitted" in ended.error_message
    assert [r.batch_id for r in stack.services.status.batches(job_id)] == ["batch-000001"]  # no child batch


def test_a_batch_retried_while_a_file_is_planned_goes_before_the_batches_planned_after_it(make_stack) -> None:
    """The planner hands on once the work queue holds PLAN_AHEAD_BATCHES messages, so the rest of the file is
    planned behind a retry that came due meanwhile, not ahead of it (a whole segment queued at once did)."""
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "10", "PLAN_AHEAD_BATCHES": "3"})
    collection = with_collection(stack)
    stack.pause_functions()
    path = f"{collection}/ahead.ndjson"
    items = [make_item(f"ahead{n:02d}") for n in range(60)]  # 6 batches in one segment of the default size
    job_id = upload(stack, path, ndjson(items))
    handle_blob_event(_event_for(stack, path), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    queued = [orjson.loads(m.content) for m in _work_queue(stack).peek_messages(max_messages=32)]
    # Flushes of 1, 1, 2 batches: with the last two the queue holds 4, so the continuation goes out before them.
    assert [m["kind"] for m in queued] == ["batch", "batch", "plan", "batch", "batch"]

    stack.emulator.catalog.faults.update({"server_error_next": 1, "retry_after_seconds": 0})  # the first POST: a 503
    handled = []
    queue = _work_queue(stack)
    while (message := queue.receive_message(visibility_timeout=60)) is not None:
        body = orjson.loads(message.content)
        handled.append((body["kind"], body.get("batch_id", ""), body.get("attempt", 0)))
        handle_work_message(message.content.encode(), message_id=message.id, dequeue_count=message.dequeue_count,
                            services=stack.services, now=datetime.now(UTC))
        queue.delete_message(message)
    assert handled[:3] == [("batch", "batch-000001", 0), ("batch", "batch-000002", 0), ("plan", "", 0)]
    assert sorted(handled[3:5]) == [("batch", "batch-000003", 0), ("batch", "batch-000004", 0)]  # one flush: no set order
    assert handled[5] == ("batch", "batch-000001", 1)  # the first POST's 503: its retry, before the rest of the file
    assert sorted(handled[6:]) == [("batch", "batch-000005", 0), ("batch", "batch-000006", 0)]
    stack.resume_functions()
    job = wait_for_jobs(stack.services, [job_id], timeout=90)[job_id]
    assert (job.state, job.batch_count, job.items_succeeded) == (JobState.SUCCEEDED, 6, 60)
    assert_holds_exactly(stack, collection, [{**item, "collection": collection} for item in items])
