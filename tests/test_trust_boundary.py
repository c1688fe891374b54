"""Issue 23: the submit queue is the users' inbox, and nothing written there can act as the app.

Anyone who may send a job can write any bytes to the submit queue. These tests forge the app's own
messages, and messages naming other jobs, on the real stack (function_app on the local host, Azurite,
the emulator) and check that only the app's own work queue and the rows decide what is done.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from azure.storage.queue import QueueClient

from devhost.stack import LocalStack
from shared.batching import feature_collection
from shared.steps.fanout import payload_name
from shared.steps.handlers import handle_blob_event, handle_submit_message, handle_work_message
from shared.steps.sweeper import sweep
from shared.store.status import BatchRow, JobRow, JobState
from tests.helpers import make_item, wait_until
from tests.test_pipeline_e2e import item_posts, stored, with_collection
from tests.test_uploads_e2e import _event_for, upload

ORIGINAL = "0f5c1d2e-original-message"  # the queue message id that claimed the victim job


def send(stack: LocalStack, queue: str, body: dict[str, Any]) -> str:
    """Send `body` as a user would; returns the queue message id the service gave it."""
    client = QueueClient.from_connection_string(stack.azurite.connection_string, queue)
    return client.send_message(orjson.dumps(body).decode()).id


def settled(stack: LocalStack, job_id: str) -> JobRow:
    job = wait_until(lambda: (j := stack.services.status.get_job(job_id)) and j.state.is_terminal and j, timeout=30)
    wait_until(lambda: all(listener.waiting_messages() == 0 for listener in stack.host.listeners), timeout=30)
    return job


def victim(stack: LocalStack, *, planned: bool, item_count: int = 0, with_batch: str = "") -> JobRow:
    """A Running job claimed by another message (with, optionally, a Queued batch whose message is elsewhere)."""
    status, now = stack.services.status, datetime.now(UTC)
    status.create_job(JobRow("victim", state=JobState.RUNNING, planned=planned, item_count=item_count, claimed_by=ORIGINAL,
                             fingerprint="f0", collection=with_batch), now)
    if with_batch:
        items = [make_item("real-1", with_batch)]
        payload = stack.services.payloads.put(payload_name("victim", "batch-000001"), feature_collection(items))
        status.create_batches([BatchRow("victim", "batch-000001", collection=with_batch, item_count=1,
                                        item_ids='["real-1"]', payload_blob=payload)], now)
    return status.get_job("victim")


def assert_untouched(stack: LocalStack, before: JobRow) -> None:
    after = stack.services.status.get_job(before.job_id)
    assert after == before and after.etag == before.etag


def test_a_forged_batch_message_on_the_inbox_posts_nothing_and_leaves_the_batch(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    before = victim(stack, planned=True, with_batch=collection)
    batch = stack.services.status.get_batch("victim", "batch-000001")
    forged = {"v": 1, "kind": "batch", "job_id": "victim", "batch_id": "batch-000001", "collection": collection,
              "items": [make_item("evil", collection)], "payload_blob": "elsewhere/evil.json"}
    message_id = send(stack, stack.services.settings.submit_queue, forged)
    rejected = settled(stack, f"msg-{message_id}")
    assert rejected.state == JobState.REJECTED and "kind 'batch' is not a job" in rejected.error_message
    assert item_posts(stack) == 0
    after = stack.services.status.get_batch("victim", "batch-000001")
    assert after == batch and after.etag == batch.etag
    assert_untouched(stack, before)


def test_a_batch_message_on_the_work_queue_posts_the_stored_payload_not_its_own_items(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    victim(stack, planned=True, with_batch=collection)
    forged = {"v": 1, "kind": "batch", "job_id": "victim", "batch_id": "batch-000001", "collection": collection,
              "items": [make_item("evil", collection)]}
    send(stack, stack.services.settings.work_queue, forged)
    wait_until(lambda: stack.services.status.get_batch("victim", "batch-000001").state.is_terminal, timeout=60)
    assert item_posts(stack) == 1
    assert list(stored(stack, collection)) == ["real-1"]


def test_a_forged_plan_message_on_the_inbox_does_nothing_to_the_job(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    blob = stack.services.payloads.put("inbox/evil.ndjson", orjson.dumps(make_item("evil", collection)) + b"\n")
    etag, _ = stack.services.payloads.properties(blob)
    before = victim(stack, planned=False)
    forged = {"v": 1, "kind": "plan", "job_id": "victim", "blob": blob, "etag": etag.strip('"'), "collection": collection,
              "claimed_by": ORIGINAL}
    message_id = send(stack, stack.services.settings.submit_queue, forged)
    assert settled(stack, f"msg-{message_id}").state == JobState.REJECTED
    assert stack.services.status.batches("victim") == [] and item_posts(stack) == 0
    assert_untouched(stack, before)


def test_a_plan_message_without_the_jobs_claim_plans_nothing_even_on_the_work_queue(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    stack.pause_functions()
    blob = stack.services.payloads.put("inbox/evil.ndjson", orjson.dumps(make_item("evil", collection)) + b"\n")
    etag, _ = stack.services.payloads.properties(blob)
    before = victim(stack, planned=False)
    plan = {"v": 1, "kind": "plan", "job_id": "victim", "blob": blob, "etag": etag.strip('"'), "collection": collection,
            "claimed_by": "someone-else"}
    handle_work_message(orjson.dumps(plan), message_id="m-2", dequeue_count=5, services=stack.services, now=datetime.now(UTC))
    assert stack.services.status.batches("victim") == []
    assert_untouched(stack, before)


def test_a_malformed_message_naming_a_running_job_is_rejected_under_its_own_id(make_stack) -> None:
    stack = make_stack()
    before = victim(stack, planned=True, item_count=10_000)
    message_id = send(stack, stack.services.settings.submit_queue, {"job_id": "victim", "v": 2})
    rejected = settled(stack, f"msg-{message_id}")
    assert rejected.state == JobState.REJECTED and "victim" in rejected.error_message
    assert_untouched(stack, before)


@pytest.mark.parametrize("carries_claim", [True, False])
def test_an_inbox_message_cannot_continue_or_change_a_job_another_message_claimed(make_stack, carries_claim: bool) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    before = victim(stack, planned=False)  # e.g. its planning is between two retries
    forged: dict[str, Any] = {"v": 1, "job_id": "victim", "collection": collection, "items": [make_item("evil", collection)]}
    if carries_claim:
        forged["claim"] = {"by": ORIGINAL, "fingerprint": "f0"}
    message_id = send(stack, stack.services.settings.submit_queue, forged)
    own = f"msg-{message_id}" if carries_claim else f"job-id-conflict-{message_id}"
    refused = settled(stack, own)
    assert refused.state == JobState.REJECTED
    assert ("claim" in refused.error_message) if carries_claim else (refused.error_code == "JobIdConflict")
    assert stack.services.status.batches("victim") == [] and item_posts(stack) == 0
    assert_untouched(stack, before)


def test_a_job_re_send_acts_only_as_the_claim_the_row_holds(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    stack.pause_functions()
    before = victim(stack, planned=False)
    resend = {"v": 1, "kind": "job", "job_id": "victim", "collection": collection, "items": [make_item("evil", collection)],
              "attempt": 1, "first_attempt": datetime.now(UTC).isoformat(), "claim": {"by": "not-the-claimer", "fingerprint": "f1"}}
    handle_work_message(orjson.dumps(resend), message_id="m-3", dequeue_count=5, services=stack.services, now=datetime.now(UTC))
    assert stack.services.status.batches("victim") == []
    assert_untouched(stack, before)


def test_poison_of_a_forged_message_does_not_change_another_job(make_stack) -> None:
    stack = make_stack(settings={"SWEEP_SCHEDULE": "*/1 * * * * *"})  # the sweeper drains the poison queues
    before = victim(stack, planned=False)
    forged = {"v": 1, "job_id": "victim", "items": []}
    send(stack, f"{stack.services.settings.submit_queue}-poison", forged)
    poison = settled(stack, f"poison-{hashlib.sha256(orjson.dumps(forged)).hexdigest()[:24]}")
    assert poison.state == JobState.FAILED and "victim" in poison.error_message
    assert_untouched(stack, before)


def test_an_upload_job_is_held_by_its_blob_version_and_no_message_owns_it(make_stack) -> None:
    stack = make_stack(settings={"PLAN_SEGMENT_ITEMS": "1", "BATCH_MAX_ITEMS": "1"})
    collection = with_collection(stack)
    stack.pause_functions()
    path = f"{collection}/up.ndjson"
    job_id = upload(stack, path, b"".join(orjson.dumps(make_item(f"u{n}")) + b"\n" for n in range(3)))
    handle_blob_event(_event_for(stack, path), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    before = stack.services.status.get_job(job_id)
    assert before.claimed_by.startswith("blob-version-") and not before.planned  # more segments to come
    for body in ({"job_id": job_id, "v": 2}, {"v": 1, "job_id": job_id, "items": [make_item("evil", collection)]}):
        handle_submit_message(orjson.dumps(body), message_id="m-4", dequeue_count=5, services=stack.services,
                              now=datetime.now(UTC))
    assert_untouched(stack, before)
    assert len(stack.services.status.batches(job_id)) == 1


def test_the_sweeper_gives_up_a_planning_that_stopped(make_stack) -> None:
    """What a poison copy may not do: a job whose deliveries died unplanned is ended once it is stale."""
    stack = make_stack()
    stack.pause_functions()
    settings, status = stack.services.settings, stack.services.status
    now = datetime.now(UTC)
    status.create_job(JobRow("stopped", state=JobState.RUNNING, claimed_by=ORIGINAL), now)
    status.create_job(JobRow("half", state=JobState.RUNNING, claimed_by=ORIGINAL, batch_count=1), now)
    status.create_batches([BatchRow("half", "batch-000001", item_count=2)], now)
    stale = timedelta(seconds=settings.submit_retry_seconds + settings.sweep_stale_seconds)
    sweep(services=stack.services, now=now + stale - timedelta(seconds=1))
    assert status.get_job("stopped").state == JobState.RUNNING and not status.get_job("stopped").planned
    report = sweep(services=stack.services, now=now + stale)
    assert report.plannings_given_up == 2
    stopped, half = status.get_job("stopped"), status.get_job("half")
    assert (stopped.state, stopped.error_code) == (JobState.FAILED, "GaveUp")
    assert (half.state, half.planned, half.error_code) == (JobState.RUNNING, True, "GaveUp")  # its batch still ends it
