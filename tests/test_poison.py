"""The poison handler never fails on a message's content: every poisoned message ends as a row of its own.

No trigger reads the poison queues: the sweeper drains them (`shared.steps.poison`), a bounded number of
messages per queue and sweep, each handled and then deleted. A message whose handling fails is tried
again by the next sweeps, then deleted unrecorded: so the handler must not fail on content. A poison copy
has a new message id, so it cannot prove it claimed any job: it never changes one. The first tests run
the poison handler on Azurite directly (some contents cannot be queue text); the rest drive the sweeper.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import orjson
import pytest
from azure.storage.queue import QueueClient

from devhost.stack import LocalStack
from shared.steps.fanout import batch_message
from shared.steps.handlers import handle_poison_message, handle_sweep
from shared.steps.poison import POISON_PER_SWEEP, PoisonPass, drain_poison_queues
from shared.store.status import BatchRow, BatchState, JobRow, JobState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEEP = b"[" * 1000 + b"]" * 1000  # parses (orjson allows 1024 levels) but has no repr (Python stops at 1000)

CONTENTS = {
    "job id with a trailing newline": orjson.dumps({"v": 1, "job_id": "job-1\n", "items": []}),
    "job id with a slash": orjson.dumps({"v": 1, "job_id": "a/b", "items": []}),
    "job id not a string": orjson.dumps({"v": 1, "job_id": {"x": 1}, "items": []}),
    "batch with unusable keys": orjson.dumps({"v": 1, "kind": "batch", "job_id": "a/b#?\n", "batch_id": "x\\y"}),
    "poll without ids": orjson.dumps({"v": 1, "kind": "poll"}),
    "deeply nested": DEEP,
    "base64 of deeply nested": base64.b64encode(DEEP),
    "not JSON": b"\xff\xfe not json",
    "empty": b"",
    "blob event with no blob": orjson.dumps({"eventType": "Microsoft.Storage.BlobCreated", "data": {"eTag": "1"}}),
    "blob event with a list as data": orjson.dumps({"eventType": "Microsoft.Storage.BlobCreated", "data": [1]}),
}


@pytest.mark.parametrize("name", list(CONTENTS))
def test_any_content_ends_as_a_row_never_an_exception(make_stack, name: str) -> None:
    stack = make_stack()
    body = CONTENTS[name]
    handle_poison_message(body, queue="submit-poison", services=stack.services, now=NOW)
    (row,) = stack.services.status.jobs()
    assert row.state == JobState.FAILED and "submit-poison" in row.error_message
    assert row.job_id == f"poison-{hashlib.sha256(body).hexdigest()[:24]}"  # derived from the raw bytes: stable


def test_a_job_id_it_names_is_only_mentioned_never_created(make_stack) -> None:
    stack = make_stack()
    body = orjson.dumps({"v": 1, "job_id": "job-7", "items": []})
    handle_poison_message(body, queue="submit-poison", services=stack.services, now=NOW)
    assert stack.services.status.get_job("job-7") is None
    row = stack.services.status.get_job(f"poison-{hashlib.sha256(body).hexdigest()[:24]}")
    assert row.state == JobState.FAILED and row.error_code == "GaveUp" and "job-7" in row.error_message


@pytest.mark.parametrize("queue", ["submit-poison", "work-poison", "drop-events-poison"])
def test_a_poisoned_message_never_changes_a_job_it_names(make_stack, queue: str) -> None:
    stack = make_stack()
    status = stack.services.status
    status.create_job(JobRow("running-1", state=JobState.RUNNING, claimed_by="the-real-message", fingerprint="f"), NOW)
    before = status.get_job("running-1")
    for body in ({"v": 1, "job_id": "running-1", "items": []}, {"v": 1, "kind": "job", "job_id": "running-1", "items": [],
                 "attempt": 9, "first_attempt": "2020-01-01T00:00:00+00:00", "claim": {"by": "the-real-message", "fingerprint": "f"}},
                 {"v": 1, "kind": "plan", "job_id": "running-1", "blob": "stac-drop/x.ndjson", "etag": "1",
                  "claimed_by": "the-real-message"}):
        handle_poison_message(orjson.dumps(body), queue=queue, services=stack.services, now=NOW)
    assert status.get_job("running-1") == before and status.get_job("running-1").etag == before.etag
    assert sorted(row.state for row in status.jobs() if row.job_id.startswith("poison-")) == [JobState.FAILED] * 3


def test_only_internal_poison_queues_end_the_batch_a_message_names(make_stack) -> None:
    stack = make_stack()
    status = stack.services.status
    status.create_job(JobRow("job-b", state=JobState.RUNNING, planned=True, claimed_by="m"), NOW)
    status.create_batches([BatchRow("job-b", "batch-000001", item_count=3), BatchRow("job-b", "batch-000002", item_count=2)], NOW)
    batch = orjson.dumps({"v": 1, "kind": "batch", "job_id": "job-b", "batch_id": "batch-000001"})
    handle_poison_message(batch, queue="submit-poison", services=stack.services, now=NOW)  # a forgery on the inbox
    assert status.get_batch("job-b", "batch-000001").state == BatchState.QUEUED
    handle_poison_message(batch, queue="work-poison", services=stack.services, now=NOW)  # the app's own message
    ended = status.get_batch("job-b", "batch-000001")
    assert (ended.state, ended.items_failed) == (BatchState.FAILED, 3)
    assert status.get_batch("job-b", "batch-000002").state == BatchState.QUEUED


# ----- drained by the sweeper ----------------------------------------------------------------------


def poison_queue(stack: LocalStack, queue: str) -> QueueClient:
    """`queue` is a settings field (`submit_queue`, ...); its poison queue, as the host writes it."""
    name = f"{getattr(stack.services.settings, queue)}-poison"
    return QueueClient.from_connection_string(stack.azurite.connection_string, name)


def waiting(client: QueueClient) -> int:
    """Messages in the queue, visible or not (a received but undeleted message still counts)."""
    return client.get_queue_properties().approximate_message_count


def row_id(body: bytes) -> str:
    return f"poison-{hashlib.sha256(body).hexdigest()[:24]}"


def idle_stack(make_stack) -> LocalStack:
    """A stack whose host is stopped: only the sweeps the test runs drain the poison queues."""
    stack = make_stack()
    stack.pause_functions()
    return stack


TEXT_CONTENTS = {name: body for name, body in CONTENTS.items() if body and body.isascii()}  # what a queue can hold as text


def test_a_sweep_turns_each_poison_queues_messages_into_rows_and_deletes_them(make_stack) -> None:
    stack = idle_stack(make_stack)
    status = stack.services.status
    status.create_job(JobRow("job-b", state=JobState.RUNNING, planned=True, batch_count=2, claimed_by="m"), NOW)
    status.create_batches([BatchRow("job-b", "batch-000001", item_count=3), BatchRow("job-b", "batch-000002", item_count=2)], NOW)
    for body in TEXT_CONTENTS.values():
        poison_queue(stack, "submit_queue").send_message(body.decode())
    event = orjson.dumps({"eventType": "Microsoft.Storage.BlobCreated", "data": {"url": 7}})
    poison_queue(stack, "drop_events_queue").send_message(event.decode())
    poison_queue(stack, "work_queue").send_message(batch_message("job-b", "batch-000001"))
    poison_queue(stack, "poll_queue").send_message(orjson.dumps({"v": 1, "kind": "poll", "job_id": "job-b",
                                                                 "batch_id": "batch-000002"}).decode())
    report = handle_sweep(services=stack.services, now=NOW)
    assert report.poison == PoisonPass(handled=len(TEXT_CONTENTS) + 3)
    for body in TEXT_CONTENTS.values():
        row = status.get_job(row_id(body))
        assert row.state == JobState.FAILED and row.error_code == "GaveUp" and "submit-poison" in row.error_message
    assert "drop-events-poison" in status.get_job(row_id(event)).error_message
    for batch_id in ("batch-000001", "batch-000002"):  # the app's own batch and poll messages end their batch
        ended = status.get_batch("job-b", batch_id)
        assert (ended.state, ended.error_code) == (BatchState.FAILED, "GaveUp")
    assert status.get_job("job-b").state == JobState.FAILED  # the same sweep settled the job they ended
    assert [waiting(poison_queue(stack, q)) for q in ("submit_queue", "work_queue", "poll_queue", "drop_events_queue")] == [0] * 4


def test_a_sweep_takes_at_most_a_page_of_each_poison_queue(make_stack) -> None:
    stack = idle_stack(make_stack)
    queue = poison_queue(stack, "work_queue")
    for n in range(POISON_PER_SWEEP + 8):
        queue.send_message(f"not json {n}")
    assert handle_sweep(services=stack.services, now=NOW).poison.handled == POISON_PER_SWEEP
    assert waiting(queue) == 8
    assert handle_sweep(services=stack.services, now=NOW).poison.handled == 8
    assert waiting(queue) == 0 and len(stack.services.status.jobs()) == POISON_PER_SWEEP + 8


def test_handling_a_message_again_changes_nothing(make_stack) -> None:
    """A sweep that died between handling and deleting leaves the message for the next one: idempotent."""
    stack = idle_stack(make_stack)
    status = stack.services.status
    status.create_job(JobRow("job-b", state=JobState.RUNNING, planned=True, batch_count=1, claimed_by="m"), NOW)
    status.create_batches([BatchRow("job-b", "batch-000001", item_count=3)], NOW)
    body = orjson.dumps({"v": 1, "job_id": "job-7", "items": []})
    for _ in range(2):
        poison_queue(stack, "submit_queue").send_message(body.decode())
        poison_queue(stack, "work_queue").send_message(batch_message("job-b", "batch-000001"))
    handle_sweep(services=stack.services, now=NOW)
    rows = {row.job_id: row for row in status.jobs()}
    batch = status.get_batch("job-b", "batch-000001")
    poison_queue(stack, "submit_queue").send_message(body.decode())
    poison_queue(stack, "work_queue").send_message(batch_message("job-b", "batch-000001"))
    assert handle_sweep(services=stack.services, now=NOW).poison.handled == 2
    assert {row.job_id: row for row in status.jobs()} == rows and set(rows) == {"job-b", row_id(body)}
    assert status.get_batch("job-b", "batch-000001") == batch


def test_a_message_whose_handling_fails_is_kept_for_the_next_sweeps_then_deleted(make_stack) -> None:
    stack = idle_stack(make_stack)
    queue = poison_queue(stack, "submit_queue")
    queue.send_message("fails every time")
    calls: list[bytes] = []

    def failing(body: bytes, *, queue: str, services, now) -> None:
        calls.append(body)
        raise ConnectionError("storage unavailable")

    limit = stack.services.settings.max_dequeue_count
    for attempt in range(1, limit):
        assert drain_poison_queues(failing, services=stack.services, now=NOW) == PoisonPass(released=1)
        assert waiting(queue) == 1 and queue.peek_messages()[0].dequeue_count == attempt  # visible again at once
    assert drain_poison_queues(failing, services=stack.services, now=NOW) == PoisonPass(dropped=1)
    assert waiting(queue) == 0 and calls == [b"fails every time"] * limit


def test_a_message_that_fails_once_is_recorded_by_the_next_sweep(make_stack) -> None:
    stack = idle_stack(make_stack)
    body = b'{"v": 1, "job_id": "job-9", "items": []}'
    poison_queue(stack, "submit_queue").send_message(body.decode())
    failures = [ConnectionError("storage blip")]

    def flaky(body: bytes, **kwargs) -> None:
        if failures:
            raise failures.pop()
        handle_poison_message(body, **kwargs)

    assert drain_poison_queues(flaky, services=stack.services, now=NOW) == PoisonPass(released=1)
    assert stack.services.status.get_job(row_id(body)) is None
    assert drain_poison_queues(flaky, services=stack.services, now=NOW) == PoisonPass(handled=1)
    assert stack.services.status.get_job(row_id(body)).state == JobState.FAILED


def test_a_message_received_too_often_is_deleted_without_handling(make_stack) -> None:
    """Sweeps that died holding it (e.g. it exhausted the worker) must not make it come back forever."""
    stack = idle_stack(make_stack)
    queue = poison_queue(stack, "work_queue")
    queue.send_message("kills the sweep")
    for _ in range(stack.services.settings.max_dequeue_count):
        queue.update_message(next(queue.receive_messages()), visibility_timeout=0)  # a receive whose sweep never came back

    def never(body: bytes, **kwargs) -> None:
        raise AssertionError("handled")

    assert drain_poison_queues(never, services=stack.services, now=NOW) == PoisonPass(dropped=1)
    assert waiting(queue) == 0


def test_a_poison_queue_that_cannot_be_read_does_not_stop_the_others(make_stack) -> None:
    stack = idle_stack(make_stack)
    poison_queue(stack, "submit_queue").delete_queue()
    poison_queue(stack, "poll_queue").send_message("not json")
    report = handle_sweep(services=stack.services, now=NOW)
    assert report.poison == PoisonPass(handled=1)
    assert stack.services.status.get_job(row_id(b"not json")).state == JobState.FAILED
