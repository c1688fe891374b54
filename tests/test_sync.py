"""Sync mode and dry runs, end to end: function_app.py on the local host, Azurite and the emulator.

The emulator counts every request by route: "no item call" means no POST, PUT, PATCH or DELETE of items.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from devhost.jobs import send_job, wait_for_jobs
from devhost.stack import LocalStack
from shared.inputs.batch_items import batch_items
from shared.messages import BatchMessage, JobRequest
from shared.steps import prune
from shared.steps.fanout import batch_message
from shared.steps.job_claims import JobClaim
from shared.steps.planning import plan_job
from shared.steps.submit import submit_batch
from shared.steps.sync import content_hash, diff_items
from shared.store import BatchState, ItemState, JobRow, JobState, claim_batch, record_diff, spill_json
from tests.helpers import make_item, wait_until
from tests.test_pipeline_e2e import catalog, sent_to_catalog, waiting_message_id, with_collection

ITEM_WRITES = ("POST /stac/collections/{cid}/items", "PUT /stac/collections/{cid}/items/{iid}",
               "PATCH /stac/collections/{cid}/items/{iid}", "DELETE /stac/collections/{cid}/items/{iid}")


def item_calls(stack: LocalStack) -> dict[str, int]:
    assert stack.emulator is not None
    counts = stack.emulator.app.stats.by_route
    return {route.split()[0]: counts.get(route, 0) for route in ITEM_WRITES}


def calls_since(stack: LocalStack, before: dict[str, int]) -> dict[str, int]:
    return {method: n - before[method] for method, n in item_calls(stack).items() if n != before[method]}


def sync(stack: LocalStack, job_id: str, collection: str, items: list[dict[str, Any]], **options: Any) -> JobRow:
    assert stack.services is not None
    send_job(stack.services, {"v": 1, "job_id": job_id, "collection": collection, "mode": "sync", "batch_size": 7,
                              "items": items, **options})
    return wait_for_jobs(stack.services, [job_id], timeout=90)[job_id]


def changes(job: JobRow) -> tuple[int, int, int, int]:
    return job.items_created, job.items_replaced, job.items_unchanged, job.items_deleted


def source(n: int) -> list[dict[str, Any]]:
    return [make_item(f"s{i:03d}", properties={"datetime": "2023-01-01T00:00:00Z", "rev": 1}) for i in range(n)]


def edited(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "properties": {**item["properties"], "rev": 2}}


def held_ids(stack: LocalStack, collection: str) -> set[str]:
    return {item["id"] for item in catalog(stack).list_items(collection, limit=1000)}


def test_a_second_sync_of_the_same_source_makes_no_item_call(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = source(20)
    first = sync(stack, "sync-1", collection, items)
    assert (first.state, changes(first), first.items_succeeded) == (JobState.SUCCEEDED, (20, 0, 0, 0), 20)
    before = item_calls(stack)
    second = sync(stack, "sync-2", collection, [dict(reversed(list(i.items()))) for i in items])  # key order is no change
    assert (second.state, changes(second), second.items_succeeded) == (JobState.SUCCEEDED, (0, 0, 20, 0), 20)
    assert calls_since(stack, before) == {}
    outcomes = stack.services.items.lookup("s003", collection)
    assert [(o.job_id, o.state) for o in outcomes] == [("sync-1", ItemState.CREATED), ("sync-2", ItemState.UNCHANGED)]


def test_edits_and_removals_are_replaced_and_deleted_and_the_rest_left_alone(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = source(40)
    sync(stack, "first", collection, items, delete_missing=True)
    changed = [edited(item) for item in items[:5]]
    kept = changed + items[5:37]  # s037, s038, s039 removed from the source
    before = item_calls(stack)
    job = sync(stack, "second", collection, kept, delete_missing=True)
    assert (job.state, changes(job)) == (JobState.SUCCEEDED, (0, 5, 32, 3))
    assert (job.items_succeeded, job.items_failed, job.items_rejected) == (40, 0, 0)
    assert calls_since(stack, before) == {"PUT": 5, "DELETE": 3}
    assert held_ids(stack, collection) == {item["id"] for item in kept}
    sent = sent_to_catalog(stack, collection)
    assert all(sent[item["id"]]["properties"]["rev"] == 2 for item in changed)
    assert [o.state for o in stack.services.items.lookup("s038", collection)] == [ItemState.CREATED, ItemState.DELETED]
    assert stack.services.items.lookup("s000", collection)[-1].state == ItemState.REPLACED
    again = sync(stack, "third", collection, kept, delete_missing=True)  # nothing left to do
    assert changes(again) == (0, 0, 37, 0)
    assert calls_since(stack, before) == {"PUT": 5, "DELETE": 3}


def loaded_with_small_pages(make_stack, monkeypatch, *, count: int, page_items: int) -> tuple[LocalStack, str, list[dict[str, Any]]]:
    """A stack whose delete phase lists `page_items` ids per page, with a collection synced from `source(count)`."""
    monkeypatch.setattr(prune, "PAGE_ITEMS", page_items)
    stack = make_stack()
    collection = with_collection(stack)
    items = source(count)
    sync(stack, "first", collection, items)
    return stack, collection, items


def test_the_delete_phase_lists_and_deletes_one_catalog_page_per_invocation(make_stack, monkeypatch) -> None:
    stack, collection, items = loaded_with_small_pages(make_stack, monkeypatch, count=40, page_items=4)
    kept = items[:18] + items[20:39]  # s018, s019 and s039 removed: candidates on different pages
    before = item_calls(stack)
    job = sync(stack, "paged", collection, kept, delete_missing=True)
    assert (job.state, changes(job)) == (JobState.SUCCEEDED, (0, 0, 37, 3))
    assert (job.prune, job.prune_listed, job.prune_candidates, job.prune_cursor) == ("done", 40, 3, "")
    assert job.prune_pages >= 10 and job.prune_pages_done == job.prune_pages
    assert calls_since(stack, before) == {"DELETE": 3}
    assert held_ids(stack, collection) == {item["id"] for item in kept}


def test_copies_of_prune_messages_count_no_page_twice(make_stack, monkeypatch) -> None:
    stack, collection, items = loaded_with_small_pages(make_stack, monkeypatch, count=30, page_items=3)
    services = stack.services
    send_job(services, {"v": 1, "job_id": "copies", "collection": collection, "mode": "sync", "batch_size": 7,
                        "items": items[:27], "delete_missing": True})
    wait_until(lambda: (services.status.get_job("copies") or JobRow("x")).prune != "", timeout=60)
    for _ in range(6):  # forged or duplicated copies, while the phase runs
        services.queues.send(services.settings.work_queue, prune.prune_message("copies"))
    job = wait_for_jobs(services, ["copies"], timeout=90)["copies"]
    assert (job.state, changes(job)) == (JobState.SUCCEEDED, (0, 0, 27, 3))
    assert (job.prune_listed, job.prune_candidates) == (30, 3)
    assert held_ids(stack, collection) == {item["id"] for item in items[:27]}


def test_an_item_deleted_by_hand_is_created_again_and_one_added_by_hand_is_replaced(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = source(10)
    sync(stack, "sync-a", collection, items[:9])
    gone = catalog(stack).delete_item(collection, "s002")
    added = catalog(stack).create_items(collection, {"type": "FeatureCollection", "features": [items[9]]})
    for operation in (gone, added):
        wait_until(lambda operation=operation: catalog(stack).get_operation(operation).is_terminal)
    before = item_calls(stack)
    job = sync(stack, "sync-b", collection, items)
    assert changes(job) == (1, 1, 8, 0)  # s002 created again; s009 (never sent by a sync) replaced
    assert calls_since(stack, before) == {"POST": 1, "PUT": 1}
    assert held_ids(stack, collection) == {item["id"] for item in items}


def test_deleting_more_than_max_delete_fraction_is_refused(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = source(10)
    sync(stack, "full", collection, items)
    before = item_calls(stack)
    job = sync(stack, "half", collection, items[:5], delete_missing=True)
    assert (job.state, job.error_code, changes(job)) == (JobState.REJECTED, "DeleteRefused", (0, 0, 5, 0))
    assert "5 of the collection's 10 items" in job.error_message
    assert calls_since(stack, before) == {}
    assert len(held_ids(stack, collection)) == 10
    allowed = sync(stack, "half-allowed", collection, items[:5], delete_missing=True, max_delete_fraction=0.5)
    assert (allowed.state, changes(allowed)) == (JobState.SUCCEEDED, (0, 0, 5, 5))
    assert held_ids(stack, collection) == {item["id"] for item in items[:5]}


def test_a_dry_run_sends_nothing_and_counts_what_the_real_run_does(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = source(40)
    sync(stack, "base", collection, items)
    bad = make_item("bad-one")
    del bad["geometry"]
    next_source = [edited(item) for item in items[:5]] + items[5:37] + source(43)[40:] + [bad]
    before = item_calls(stack)
    dry = sync(stack, "dry", collection, next_source, delete_missing=True, dry_run=True)
    assert calls_since(stack, before) == {}
    assert dry.state == JobState.DRY_RUN
    assert (changes(dry), dry.items_rejected) == ((3, 5, 32, 3), 1)
    problems = stack.services.status.batches("dry", where="items_rejected gt 0")
    assert "bad-one" in problems[0].rejected_items
    assert [(o.state, o.code) for o in stack.services.items.lookup("s038", collection)][-1] == (ItemState.PLANNED, "Delete")
    assert [(o.state, o.code) for o in stack.services.items.lookup("s001", collection)][-1] == (ItemState.PLANNED, "Replace")
    real = sync(stack, "real", collection, next_source, delete_missing=True)
    assert (changes(real), real.items_rejected) == (changes(dry), dry.items_rejected)
    assert real.state == JobState.PARTIALLY_SUCCEEDED  # the rejected item
    assert calls_since(stack, before) == {"POST": 1, "PUT": 5, "DELETE": 3}


def test_dry_run_of_a_plain_create_job_counts_every_valid_item_as_created(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    before = item_calls(stack)
    send_job(stack.services, {"v": 1, "job_id": "dry-create", "collection": collection, "dry_run": True,
                              "items": source(12)})
    job = wait_for_jobs(stack.services, ["dry-create"], timeout=60)["dry-create"]
    assert (job.state, changes(job), job.items_succeeded) == (JobState.DRY_RUN, (12, 0, 0, 0), 0)
    assert calls_since(stack, before) == {}
    assert held_ids(stack, collection) == set()


def test_a_redelivered_sync_batch_after_a_crash_between_its_writes_counts_nothing_twice(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = source(7)
    sync(stack, "before", collection, items)
    services = stack.services
    stack.pause_functions()
    next_source = [edited(items[0]), edited(items[1])] + items[2:]
    request = JobRequest.from_json({"v": 1, "collection": collection, "mode": "sync", "items": next_source})
    plan_job(request, job_id="crashy", claim=JobClaim("m-1", "f"), services=services, now=datetime.now(UTC))
    message_id = waiting_message_id(stack, "batch-000001")
    # The dying worker claimed the batch and recorded its diff; it died before acting on it.
    row = services.status.get_batch("crashy", "batch-000001")
    claimed = claim_batch(services.status, row, message_id=message_id, now=datetime.now(UTC))
    diff = diff_items(claimed, batch_items(services, claimed), services=services)
    assert sorted(value[0] for value in diff.values()) == ["r", "r", "u", "u", "u", "u", "u"]
    record_diff(services.status, claimed, sync_items=spill_json(services.payloads, "crashy", "batch-000001", "sync_items", diff),
                now=datetime.now(UTC))
    before = item_calls(stack)
    stack.resume_functions()  # the batch message comes back, and a stray copy of it too
    services.queues.send(services.settings.work_queue, batch_message("crashy", "batch-000001"))
    job = wait_for_jobs(services, ["crashy"], timeout=60)["crashy"]
    assert (job.state, changes(job), job.items_succeeded) == (JobState.SUCCEEDED, (0, 2, 5, 0), 7)
    assert calls_since(stack, before) == {"PUT": 2}
    again = submit_batch(BatchMessage("crashy", "batch-000001"), message_id=message_id, services=services,
                         now=datetime.now(UTC))  # one more redelivery, after the end
    assert again is not None and again.state == BatchState.SPLIT
    assert changes(services.status.get_job("crashy")) == (0, 2, 5, 0)


def test_content_hash_ignores_key_order_and_sees_any_change() -> None:
    item = make_item("x")
    assert content_hash(item) == content_hash(dict(reversed(list(item.items()))))
    assert content_hash(item) != content_hash(edited({**item, "properties": {**item["properties"], "rev": 1}}))


@pytest.mark.parametrize(("body", "problem"), [
    ({"mode": "create", "delete_missing": True}, "go with mode"),
    ({"mode": "sync", "max_delete_fraction": 1.5}, "from 0 to 1"),
    ({"mode": "sync", "dry_run": "yes"}, "true or false"),
])
def test_sync_options_are_checked(body: dict[str, Any], problem: str) -> None:
    from shared.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=problem):
        JobRequest.from_json({"v": 1, "items": [make_item("a")], **body})


def test_a_sync_of_an_ndjson_file_diffs_its_items_and_keeps_an_item_whose_new_copy_is_rejected(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = source(20)

    def sync_file(job_id: str, lines: list[dict[str, Any]]) -> JobRow:
        data = b"".join(orjson.dumps(item) + b"\n" for item in lines)
        blob = stack.services.payloads.put(f"inbox/{job_id}/items.ndjson", data)
        send_job(stack.services, {"v": 1, "job_id": job_id, "collection": collection, "mode": "sync", "batch_size": 6,
                                  "delete_missing": True, "items_ref": {"blob": blob}})
        return wait_for_jobs(stack.services, [job_id], timeout=90)[job_id]

    first = sync_file("file-1", items)
    assert (first.state, changes(first)) == (JobState.SUCCEEDED, (20, 0, 0, 0))
    broken = {k: v for k, v in items[5].items() if k != "geometry"}
    before = item_calls(stack)
    second = sync_file("file-2", [edited(items[0]), *items[1:5], broken, *items[6:19]])  # s019 removed
    assert (changes(second), second.items_rejected) == ((0, 1, 17, 1), 1)
    assert calls_since(stack, before) == {"PUT": 1, "DELETE": 1}
    assert held_ids(stack, collection) == {item["id"] for item in items[:19]}  # s005 kept: the source still has it
