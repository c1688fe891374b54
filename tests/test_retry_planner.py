"""The retry planner (`shared.retry`) on real Azurite: which items a retry job gets, where they are read
from (the sent batches' payloads, else the job's stored source named by `JobRow.source_ref`, else, on a
row written before rows kept it, by its display text), and that it is created once."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import orjson
import pytest
from azure.storage.queue import QueueClient

from devhost.azurite import Azurite
from shared.batching import feature_collection
from shared.errors import InvalidInputError
from shared.messages import decode_body
from shared.retry import RetryRequest, plan_retry, retry_job_id, source_ref_from_display_text
from shared.services import Storage, connect_storage, ensure_storage
from shared.settings import Settings
from shared.store import BatchRow, BatchState, JobRow, JobState, SourceKind, SourceRef
from tests.conftest import unique_storage_names
from tests.helpers import make_item

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(azurite: Azurite) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": "https://x.invalid",
                              **unique_storage_names()})


@pytest.fixture
def storage(settings: Settings) -> Storage:
    store = connect_storage(settings)
    ensure_storage(settings, store)
    return store


def sent_messages(azurite: Azurite, settings: Settings) -> list[dict]:
    queue = QueueClient.from_connection_string(azurite.connection_string, settings.submit_queue)
    return [decode_body(m.content) for m in queue.receive_messages(max_messages=32)]


def ndjson(items: list) -> bytes:
    return b"".join(orjson.dumps(i) + b"\n" for i in items)


def job_with_a_failed_batch_and_rejected_lines(storage: Storage, *, job_id: str, source: str, source_ref: str) -> None:
    """A finished job: batch-000001 sent `a` and `b` (`b` failed), and lines 2 and 3 of its file were rejected."""
    storage.status.create_job(JobRow(job_id, state=JobState.PARTIALLY_SUCCEEDED, collection="c-1", source=source,
                                     source_ref=source_ref), NOW)
    payload = storage.payloads.put(f"{job_id}/batch-000001.json", feature_collection([make_item("a"), make_item("b")]))
    storage.status.create_batches([
        BatchRow(job_id, "batch-000001", state=BatchState.FAILED, collection="c-1", item_count=2, item_ids='["a", "b"]',
                 payload_blob=payload, mode="upsert", sign="planetary-computer", items_succeeded=1, items_failed=1,
                 failed_items='{"b": "GenericIngestionError"}'),
        BatchRow(job_id, "rejected-000001", state=BatchState.REJECTED, collection="c-1", item_count=2,
                 item_ids='["line 2", "line 3"]', items_rejected=2, error_code="InvalidItem",
                 rejected_items='{"line 2": "no datetime", "line 3": "not JSON"}'),
    ], NOW)


def retried_items(storage: Storage, message: dict) -> list[dict]:
    return orjson.loads(storage.payloads.read(message["items_ref"]["blob"]))["features"]


def test_a_row_with_a_source_ref_gets_its_rejected_lines_from_that_range_of_that_version(
        azurite: Azurite, settings: Settings, storage: Storage) -> None:
    before = b'{"not": "this job\'s"}\n'
    bad = {**make_item("r2"), "properties": {}}
    blob = storage.payloads.put("inbox/j1/items.ndjson", before + ndjson([make_item("a"), bad]) + b"{oops\n")
    etag, size = storage.payloads.properties(blob)
    ref = SourceRef(SourceKind.BLOB, blob=blob, etag=etag, start=len(before), end=size, format="ndjson")
    job_with_a_failed_batch_and_rejected_lines(storage, job_id="j1", source="shown to people only", source_ref=ref.to_json())

    result = plan_retry(RetryRequest("j1", include_rejected=True), storage=storage, settings=settings)

    assert (result.job_id, result.created, result.items) == ("j1-retry-1", True, 2)
    assert result.skipped == ["line 3 (rejected-000001): not stored (an inline job's rejected input); resubmit it from your file"]
    [message] = sent_messages(azurite, settings)
    assert (message["job_id"], message["collection"], message["mode"], message["sign"]) == ("j1-retry-1", "c-1", "upsert",
                                                                                             "planetary-computer")
    assert [i["id"] for i in retried_items(storage, message)] == ["b", "r2"]  # line 2 counted from the range's start

    again = plan_retry(RetryRequest("j1", include_rejected=True), storage=storage, settings=settings)
    assert (again.job_id, again.created) == ("j1-retry-1", False)  # unfinished (not even seen yet): sent again, not made anew
    assert [m["job_id"] for m in sent_messages(azurite, settings)] == ["j1-retry-1"]


def test_a_source_overwritten_since_is_not_read_for_the_rejected_lines(azurite: Azurite, settings: Settings, storage: Storage) -> None:
    blob = storage.payloads.put("inbox/j2/items.ndjson", ndjson([make_item("a"), make_item("r2"), make_item("r3")]))
    etag, _ = storage.payloads.properties(blob)
    storage.payloads.put("inbox/j2/items.ndjson", ndjson([make_item("x1"), make_item("x2"), make_item("x3")]))
    ref = SourceRef(SourceKind.BLOB, blob=blob, etag=etag, format="ndjson")
    job_with_a_failed_batch_and_rejected_lines(storage, job_id="j2", source=blob, source_ref=ref.to_json())

    result = plan_retry(RetryRequest("j2", include_rejected=True), storage=storage, settings=settings)

    assert result.items == 1 and len(result.skipped) == 2  # `b` from its batch; never x2 or x3 of the new version
    [message] = sent_messages(azurite, settings)
    assert [i["id"] for i in retried_items(storage, message)] == ["b"]


def test_a_gzipped_json_document_is_read_as_its_recorded_format(azurite: Azurite, settings: Settings, storage: Storage) -> None:
    document = orjson.dumps({"type": "FeatureCollection", "features": [make_item("a"), make_item("f2"), make_item("f3")]})
    blob = storage.payloads.put("inbox/j3/items-ref-source", gzip.compress(document))  # a URL's copy: no suffix to go by
    etag, _ = storage.payloads.properties(blob)
    ref = SourceRef(SourceKind.URL, blob=blob, etag=etag, url="https://example.com/items.json", format="json.gz")
    storage.status.create_job(JobRow("j3", state=JobState.PARTIALLY_SUCCEEDED, collection="c-1", source=ref.url,
                                     source_ref=ref.to_json()), NOW)
    storage.status.create_batches([BatchRow("j3", "rejected-000001", state=BatchState.REJECTED, collection="c-1", item_count=2,
                                            item_ids='["feature 2", "f3"]', items_rejected=2, error_code="InvalidItem",
                                            rejected_items='{"feature 2": "bad", "f3": "bad"}')], NOW)

    result = plan_retry(RetryRequest("j3", include_rejected=True), storage=storage, settings=settings)

    assert (result.items, result.skipped) == (2, [])
    [message] = sent_messages(azurite, settings)
    assert [i["id"] for i in retried_items(storage, message)] == ["f2", "f3"]  # by its feature number, and by its id


def test_an_older_row_without_a_source_ref_falls_back_to_its_display_text(azurite: Azurite, settings: Settings,
                                                                             storage: Storage) -> None:
    blob = storage.payloads.put("inbox/j4/items.ndjson", ndjson([make_item("a"), make_item("r2"), make_item("r3")]))
    job_with_a_failed_batch_and_rejected_lines(storage, job_id="j4", source=f"{blob}[0:]", source_ref="")
    assert storage.status.get_job("j4").source_reference is None

    result = plan_retry(RetryRequest("j4", codes=frozenset({"InvalidItem"}), include_rejected=True), storage=storage,
                        settings=settings)

    assert (result.items, result.skipped) == (2, [])  # only code InvalidItem: `b` (GenericIngestionError) is left out
    [message] = sent_messages(azurite, settings)
    assert [i["id"] for i in retried_items(storage, message)] == ["r2", "r3"]


def test_without_include_rejected_only_failed_items_and_a_finished_retry_counts(azurite: Azurite, settings: Settings,
                                                                                storage: Storage) -> None:
    job_with_a_failed_batch_and_rejected_lines(storage, job_id="j5", source="inline", source_ref=SourceRef(SourceKind.INLINE).to_json())
    first = plan_retry(RetryRequest("j5"), storage=storage, settings=settings)
    assert (first.job_id, first.items, first.skipped) == ("j5-retry-1", 1, [])
    storage.status.create_job(JobRow("j5-retry-1", state=JobState.SUCCEEDED), NOW)
    storage.status.create_batches([BatchRow("j5-retry-1", "batch-000001", state=BatchState.SUCCEEDED, item_ids='["b"]',
                                            item_count=1, items_succeeded=1)], NOW)

    after = plan_retry(RetryRequest("j5"), storage=storage, settings=settings)

    assert (after.job_id, after.created) == ("", False)  # `b` was ingested by the finished retry: nothing is left


def test_a_job_that_is_missing_or_unfinished_is_refused(settings: Settings, storage: Storage) -> None:
    storage.status.create_job(JobRow("j6", state=JobState.RUNNING), NOW)
    with pytest.raises(InvalidInputError, match="still Running"):
        plan_retry(RetryRequest("j6"), storage=storage, settings=settings)
    with pytest.raises(InvalidInputError, match="no job"):
        plan_retry(RetryRequest("nope"), storage=storage, settings=settings)


@pytest.mark.parametrize(("text", "expected"), [
    ("stac-payloads/inbox/j/a.ndjson[10:20]", SourceRef(SourceKind.BLOB, blob="stac-payloads/inbox/j/a.ndjson", start=10, end=20)),
    ("stac-payloads/inbox/j/a.ndjson[0:]", SourceRef(SourceKind.BLOB, blob="stac-payloads/inbox/j/a.ndjson", start=0)),
    ('stac-drop/c-1/a.json@"0x8D"', SourceRef(SourceKind.BLOB, blob="stac-drop/c-1/a.json", etag='"0x8D"')),
    ("inline", None),
    ("https://example.com/items.ndjson", None),
    ("search https://example.com/search", None),
])
def test_the_display_text_fallback(text: str, expected: SourceRef | None) -> None:
    assert source_ref_from_display_text(text) == expected


def test_a_source_ref_reads_back_and_a_malformed_one_reads_as_none() -> None:
    ref = SourceRef(SourceKind.BLOB, blob="c/p.ndjson", etag="e", start=0, end=5, format="ndjson")
    assert SourceRef.from_json(ref.to_json()) == ref
    for text in ("", "{", '{"kind": "nope"}', '{"kind": "blob", "start": -1}', '{"kind": "blob", "blob": 3}', "[]"):
        assert SourceRef.from_json(text) is None


def test_a_retry_id_fits_the_job_id_rule() -> None:
    long = "x" * 64
    assert retry_job_id("j", 2) == "j-retry-2"
    assert len(retry_job_id(long, 12)) == 64 and retry_job_id(long, 12) != retry_job_id("x" * 63 + "y", 12)
