"""submit_poison never fails on a message's content: every poisoned message ends as a row of its own.

A handler that raises on a poison queue sends the message to `<queue>-poison-poison`, where nothing
reads it: the message would vanish without a row. A poison copy has a new message id, so it cannot
prove it claimed any job: it never changes one. These run the poison handler on Azurite directly.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from shared.steps.handlers import handle_poison_message
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
