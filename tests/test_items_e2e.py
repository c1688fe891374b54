"""What validation decides, end to end: the rows, the counts and what the catalog holds.

Bad items are rejected one by one while the good ones go on; `repair: ["bbox"]` fills missing boxes;
an id repeated under upsert keeps its last copy; a search that matches nothing is a success.
"""

from __future__ import annotations

import json

import orjson

from devhost.jobs import send_items, wait_for_jobs
from shared.store.status import BatchState, JobState
from tests.corpus import corpus_items
from tests.helpers import make_item, nested
from tests.test_pipeline_e2e import batch_rows, run, stored, with_collection

LANDSAT = "pystac-client-cassette-pc-landsat-8-c2-l2-first50.json"


def test_an_item_nested_300_levels_deep_is_rejected_and_the_good_ones_are_ingested(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    deep = make_item("deep", properties={"datetime": "2023-01-01T00:00:00Z", "x": nested(300)})
    items = [make_item("a"), deep, make_item("b")]
    body = json.dumps({"v": 1, "job_id": "deep-1", "collection": collection, "items": items}).encode()  # orjson stops at 254 levels
    job = run(stack, body, "deep-1")
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 2, 1)
    assert "nested more than" in orjson.loads(batch_rows(stack, "deep-1")["rejected-000001"].rejected_items)["deep"]
    assert set(stored(stack, collection)) == {"a", "b"}


def test_an_item_id_with_a_trailing_newline_is_rejected_not_ingested(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    job = run(stack, {"v": 1, "job_id": "nl-1", "collection": collection, "items": [make_item("a"), make_item("b\n")]}, "nl-1")
    assert (job.items_succeeded, job.items_rejected) == (1, 1)
    assert set(stored(stack, collection)) == {"a"}


def test_repair_bbox_ingests_the_landsat_items_that_lack_one_and_counts_them(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack, "landsat")
    items = corpus_items(LANDSAT)
    send_items(stack.services, items, collection=collection, job_id="plain-1")
    plain = wait_for_jobs(stack.services, ["plain-1"], timeout=120)["plain-1"]
    assert (plain.items_succeeded, plain.items_rejected, plain.items_repaired) == (42, 8, 0)
    # A large job goes as an items_ref blob, whose batches each record their own rejected items.
    reasons = {k: v for row in batch_rows(stack, "plain-1").values() for k, v in orjson.loads(row.rejected_items or "{}").items()}
    assert len(reasons) == 8 and all('repair: ["bbox"]' in reason for reason in reasons.values())

    with_collection(stack, "landsat-repaired")
    body = {"v": 1, "job_id": "repair-1", "collection": "landsat-repaired", "repair": ["bbox"], "items_ref": {"blob": ""}}
    body["items_ref"]["blob"] = stack.services.payloads.put("inbox/landsat.json", orjson.dumps({"type": "FeatureCollection", "features": items}))
    job = run(stack, body, "repair-1", timeout=120)
    assert (job.state, job.items_succeeded, job.items_rejected, job.items_repaired) == (JobState.SUCCEEDED, 50, 0, 8)
    assert sum(row.items_repaired for row in batch_rows(stack, "repair-1").values()) == 8
    held = stored(stack, "landsat-repaired")
    assert len(held) == 50 and all(isinstance(item.get("bbox"), list) for item in held.values())


def test_upsert_keeps_the_last_copy_of_a_repeated_id_and_records_the_others_as_superseded(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    first, last = make_item("a", title="first"), make_item("a", title="last")
    job = run(stack, {"v": 1, "job_id": "dup-u", "collection": collection, "mode": "upsert", "items": [first, make_item("b"), last]}, "dup-u")
    assert (job.state, job.items_succeeded, job.items_rejected, job.items_superseded) == (JobState.SUCCEEDED, 2, 0, 1)
    row = batch_rows(stack, "dup-u")["superseded-000001"]
    assert row.state == BatchState.SUPERSEDED and row.items_rejected == 0 and row.error_code == ""
    assert stored(stack, collection)["a"]["title"] == "last"
    created = run(stack, {"v": 1, "job_id": "dup-c", "collection": "landcover", "items": [make_item("c"), make_item("c")]}, "dup-c")
    assert (created.items_succeeded, created.items_rejected, created.items_superseded) == (1, 1, 0)


def test_a_search_that_matches_nothing_succeeds_with_zero_items_and_says_so(make_stack) -> None:
    stack = make_stack(settings={"SOURCE_URL_ALLOWLIST": "127.0.0.1"})
    collection = with_collection(stack)
    search = {"url": f"{stack.emulator.url}/source/search", "params": {"ids": ["nothing-here"]}}
    job = run(stack, {"v": 1, "job_id": "empty-1", "collection": collection, "search": search}, "empty-1")
    assert (job.state, job.item_count, job.items_done) == (JobState.SUCCEEDED, 0, 0)
    assert "matched no items" in job.error_message
    deleted = run(stack, {"v": 1, "job_id": "empty-2", "collection": collection, "delete": {"search": search}}, "empty-2")
    assert (deleted.state, deleted.item_count) == (JobState.SUCCEEDED, 0)
