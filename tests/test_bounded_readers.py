"""Issue 23, part 2: every read a message can cause is bounded, and a bomb ends in a clear terminal row
that names the cap it hit (never a crash loop, never a worker's whole memory).

Uploads and `items_ref` blobs on Azurite, searches against a hostile server on 127.0.0.1
(`tests.hostile_source`), the GeoCatalog emulator behind, all through the local stack. The caps are
set small so that each bomb is small too; `bench/bombs.py` runs the full-size ones.
"""

from __future__ import annotations

import gzip
import io

import orjson
import pytest
from azure.storage.queue import QueueClient

from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from shared.errors import InvalidInputError
from shared.inputs.documents import OverlongLine, bounded_lines
from shared.inputs.egress import EgressPolicy, GuardedSession
from shared.inputs.search import BoundedSearch, SearchBounds, SearchPage, SourceFetcher
from shared.limits import LimitExceeded
from shared.steps.search_jobs import encoded_results
from shared.steps.segments import TooLarge
from shared.store.status import JobState
from tests.helpers import make_item
from tests.hostile_source import HostileSource, hostile_source
from tests.test_items_ref import put_blob
from tests.test_pipeline_e2e import batch_rows, run, stored, with_collection
from tests.test_uploads_e2e import ndjson, upload

KIB = 1024


@pytest.fixture
def source() -> HostileSource:
    with hostile_source() as server:
        yield server


def rejected_reasons(stack: LocalStack, job_id: str) -> dict[str, str]:
    return {k: v for row in batch_rows(stack, job_id).values() for k, v in orjson.loads(row.rejected_items or "{}").items()}


def poison_count(stack: LocalStack) -> int:
    queue = QueueClient.from_connection_string(stack.azurite.connection_string, f"{stack.services.settings.submit_queue}-poison")
    return len(queue.peek_messages(max_messages=32))


def search_job(job_id: str, collection: str, url: str, **search: object) -> dict:
    return {"v": 1, "job_id": job_id, "collection": collection, "search": {"url": url, "method": "GET", "params": {}, **search}}


# ----- lines, items and decompressed bytes -------------------------------------------------------------------------


def test_bounded_lines_skip_a_long_line_without_holding_it_and_go_on() -> None:
    data = b'{"a":1}\n' + b"x" * 5000 + b"\n" + b'{"b":2}\r\n' + b"y" * 300
    assert list(bounded_lines(io.BufferedReader(io.BytesIO(data), buffer_size=64), 100)) == [
        b'{"a":1}\n', OverlongLine(5001), b'{"b":2}\r\n', OverlongLine(300)]


@pytest.mark.parametrize("name", ["bomb.ndjson", "bomb.ndjson.gz"])
def test_a_line_over_the_cap_is_one_rejected_item_named_by_its_line_and_the_rest_ingest(make_stack, name: str) -> None:
    stack = make_stack(settings={"MAX_LINE_BYTES": str(64 * KIB), "BATCH_MAX_ITEMS": "2"})
    collection = with_collection(stack)
    items = [make_item(f"l{n}") for n in range(5)]
    huge = b'{"type": "Feature", "id": "huge", "properties": {"s": "' + b"a" * (4 << 20) + b'"}}\n'
    data = ndjson(items[:2]) + huge + ndjson(items[2:])  # the huge item is line 3
    job_id = upload(stack, f"{collection}/{name}", gzip.compress(data) if name.endswith(".gz") else data)
    job = wait_for_jobs(stack.services, [job_id], timeout=90)[job_id]
    assert (job.state, job.item_count, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 6, 5, 1)
    assert rejected_reasons(stack, job_id) == {"line 3": "is longer than MAX_LINE_BYTES (64 KiB)"}
    assert set(stored(stack, collection)) == {f"l{n}" for n in range(5)}


def test_a_json_gz_holding_one_huge_string_is_rejected_naming_the_item_cap(make_stack) -> None:
    stack = make_stack(settings={"MAX_ITEM_BYTES": str(256 * KIB)})
    collection = with_collection(stack)
    bomb = gzip.compress(b'{"type": "Feature", "id": "x", "properties": {"s": "' + b"a" * (20 << 20) + b'"}}')
    job_id = upload(stack, f"{collection}/bomb.json.gz", bomb)
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert job.state == JobState.REJECTED and job.error_code == "LimitExceeded"
    assert "larger than MAX_ITEM_BYTES (256 KiB)" in job.error_message
    assert poison_count(stack) == 0


def test_a_feature_collection_with_one_huge_feature_keeps_what_came_before_and_says_why_it_stopped(make_stack) -> None:
    stack = make_stack(settings={"MAX_ITEM_BYTES": str(256 * KIB), "BATCH_MAX_ITEMS": "2"})
    collection = with_collection(stack)
    items = [make_item(f"f{n}") for n in range(3)]
    huge = make_item("huge", title="a" * (2 << 20))
    document = orjson.dumps({"type": "FeatureCollection", "features": [*items, huge, make_item("after")]})
    blob = put_blob(stack, stack.services.settings.payload_container, "in/huge-feature.json", document)
    job = run(stack, {"v": 1, "job_id": "huge-feature", "collection": collection, "items_ref": {"blob": blob}}, "huge-feature")
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 3)
    assert job.error_code == "LimitExceeded" and "item 4 of the JSON document" in job.error_message
    assert "MAX_ITEM_BYTES (256 KiB)" in job.error_message
    assert set(stored(stack, collection)) == {"f0", "f1", "f2"}


def test_a_gzip_past_the_decompressed_cap_is_rejected_naming_it(make_stack) -> None:
    stack = make_stack(settings={"MAX_DECOMPRESSED_BYTES": str(1 << 20)})
    collection = with_collection(stack)
    job_id = upload(stack, f"{collection}/zeros.ndjson.gz", gzip.compress(b" " * (8 << 20)))
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert job.state == JobState.REJECTED and job.error_code == "LimitExceeded"
    assert "more than MAX_DECOMPRESSED_BYTES (1 MiB)" in job.error_message


# ----- searches --------------------------------------------------------------------------------------------------


def source_stack(make_stack, **settings: str) -> LocalStack:
    return make_stack(settings={"SOURCE_URL_ALLOWLIST": "127.0.0.1", "SOURCE_ALLOW_LOOPBACK": "true", **settings})


def test_a_search_streams_its_pages_into_batches_up_to_max_items(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack, BATCH_MAX_ITEMS="20")
    collection = with_collection(stack)
    job = run(stack, search_job("s-many", collection, f"{source.url}/pages?total=500&limit=30", max_items=95), "s-many")
    assert (job.state, job.item_count, job.items_succeeded, job.batch_count) == (JobState.SUCCEEDED, 95, 95, 5)
    assert job.error_code == ""
    assert set(stored(stack, collection)) == {f"p{n:06d}" for n in range(95)}
    assert source.requests["/pages"] == 4  # 4 pages of 30 hold the 95 items: no page read beyond them


def test_empty_pages_with_next_links_end_the_search(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack, SEARCH_MAX_EMPTY_PAGES="5")
    collection = with_collection(stack)
    job = run(stack, search_job("s-empty", collection, f"{source.url}/empty"), "s-empty")
    assert (job.state, job.item_count) == (JobState.SUCCEEDED, 0)
    assert job.error_code == "SearchStopped" and "SEARCH_MAX_EMPTY_PAGES" in job.error_message
    assert source.requests["/empty"] == 5


def test_a_search_repeating_its_items_forever_ingests_them_once_and_ends(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack, SEARCH_MAX_EMPTY_PAGES="3")
    collection = with_collection(stack)
    job = run(stack, search_job("s-loop", collection, f"{source.url}/repeat"), "s-loop")
    assert (job.state, job.item_count, job.items_succeeded) == (JobState.SUCCEEDED, 2, 2)
    assert "SEARCH_MAX_EMPTY_PAGES" in job.error_message and "repeated an id" in job.error_message
    assert source.requests["/repeat"] == 4  # the first page, then three that bring nothing new


def test_the_page_cap_ends_a_search_with_the_items_got(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack, SEARCH_MAX_PAGES="3")
    collection = with_collection(stack)
    job = run(stack, search_job("s-pages", collection, f"{source.url}/pages?total=100&limit=4", max_items=100), "s-pages")
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 12)
    assert job.error_code == "SearchStopped" and "SEARCH_MAX_PAGES" in job.error_message


def test_features_null_is_a_clear_error_of_the_source_not_a_crash(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack)
    collection = with_collection(stack)
    job = run(stack, search_job("s-null", collection, f"{source.url}/null"), "s-null")
    assert job.state == JobState.REJECTED and "'features' is null, not a list of items" in job.error_message
    after = run(stack, search_job("s-then-null", collection, f"{source.url}/then-null"), "s-then-null")
    assert (after.state, after.items_succeeded) == (JobState.SUCCEEDED, 1)
    assert after.error_code == "SearchStopped" and "page 2" in after.error_message and "null" in after.error_message
    assert poison_count(stack) == 0


def test_max_items_over_the_operator_cap_is_rejected_naming_it(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack, SEARCH_MAX_ITEMS="50")
    collection = with_collection(stack)
    job = run(stack, search_job("s-cap", collection, f"{source.url}/pages", max_items=51), "s-cap")
    assert job.state == JobState.REJECTED and "more than SEARCH_MAX_ITEMS (50)" in job.error_message
    assert source.requests["/pages"] == 0


def test_a_search_result_over_the_item_cap_is_refused_unread() -> None:
    results = [make_item("small"), make_item("big", title="a" * 5000)]
    encoded = list(encoded_results(results, max_item_bytes=4 * KIB))
    assert encoded[0][0] == 1 and isinstance(encoded[0][1], bytes)
    assert encoded[1] == (2, TooLarge("is larger than MAX_ITEM_BYTES (4 KiB)"))


def test_a_search_with_no_new_item_for_the_idle_time_ends() -> None:
    ticks = iter(range(0, 10_000, 30))  # every clock read is 30 s later

    def pages(deadline):
        yield SearchPage([make_item("a")], has_next=True)
        while True:
            yield SearchPage([], has_next=True)

    bounded = BoundedSearch(pages, SearchBounds(max_items=10, max_idle_seconds=60, max_empty_pages=100),
                            clock=lambda: float(next(ticks)))
    assert [item["id"] for item in bounded] == ["a"]
    assert "SEARCH_MAX_IDLE_SECONDS" in bounded.stopped


# ----- time --------------------------------------------------------------------------------------------------------


def test_a_trickling_server_is_cut_at_the_total_deadline_not_per_read(source: HostileSource) -> None:
    session = GuardedSession(EgressPolicy(frozenset({"127.0.0.1"}), allow_loopback=True, timeout=1.0, request_seconds=1.0))
    with pytest.raises(LimitExceeded, match=r"took longer than SOURCE_REQUEST_SECONDS \(1 s\)"):
        session.get_json("GET", f"{source.url}/trickle?size=100&every=0.2")  # 20 s of body, every read within 0.2 s
    assert source.trickles_finished == 0  # cut long before the last byte


def test_a_trickling_search_ends_the_job_naming_the_request_cap(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack, SOURCE_REQUEST_SECONDS="1")
    collection = with_collection(stack)
    job = run(stack, search_job("s-trickle", collection, f"{source.url}/trickle?size=100&every=0.2"), "s-trickle")
    assert job.state == JobState.REJECTED and job.error_code == "LimitExceeded"
    assert "SOURCE_REQUEST_SECONDS (1 s)" in job.error_message
    assert source.trickles_finished == 0 and poison_count(stack) == 0


def test_an_items_url_download_is_bounded_by_the_source_cap(make_stack, source: HostileSource) -> None:
    stack = source_stack(make_stack, SOURCE_MAX_SECONDS="1")
    collection = with_collection(stack)
    body = {"v": 1, "job_id": "u-trickle", "collection": collection,
            "items_ref": {"url": f"{source.url}/trickle?size=100&every=0.2"}}
    job = run(stack, body, "u-trickle")
    assert job.state == JobState.REJECTED and "SOURCE_MAX_SECONDS (1 s)" in job.error_message
    assert source.trickles_finished == 0


def test_the_source_fetcher_refuses_a_page_that_is_not_a_page(source: HostileSource) -> None:
    fetcher = SourceFetcher(GuardedSession(EgressPolicy(frozenset({"127.0.0.1"}), allow_loopback=True)))
    with pytest.raises(InvalidInputError, match="'features' is null"):
        list(fetcher.search_pages(f"{source.url}/null", {}, method="GET"))


def test_the_catalogs_own_search_streams_its_pages_and_stops_at_max_items(make_stack) -> None:
    stack = source_stack(make_stack)
    first, second = with_collection(stack, "first"), with_collection(stack, "second")
    items = [make_item(f"own{n:02d}") for n in range(12)]
    assert run(stack, {"v": 1, "job_id": "own-0", "collection": first, "items": items}, "own-0").state == JobState.SUCCEEDED
    stats = stack.emulator.app.stats

    def searches() -> int:
        return stats.by_route.get("POST /stac/search", 0) + stats.by_route.get("GET /stac/search", 0)

    searches_before = searches()
    copy = run(stack, {"v": 1, "job_id": "own-1", "collection": second,
                       "search": {"params": {"collections": [first], "limit": 2}, "max_items": 5}}, "own-1")
    assert (copy.state, copy.items_succeeded) == (JobState.SUCCEEDED, 5)
    # Pages of 2: the third page holds the fifth item; no page is read beyond it (6 of 12 items fetched).
    assert searches() - searches_before == 3
    assert len(stored(stack, second)) == 5
