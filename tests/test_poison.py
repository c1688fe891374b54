"""submit_poison never fails on a message's content: every poisoned message ends as a row or a logged drop.

A handler that raises on a poison queue sends the message to `<queue>-poison-poison`, where nothing
reads it: the job would vanish without a row. These run the poison handler on Azurite directly.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from shared.handlers import handle_poison_message
from shared.status import JobState

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


def test_a_usable_job_id_still_names_the_row(make_stack) -> None:
    stack = make_stack()
    handle_poison_message(orjson.dumps({"v": 1, "job_id": "job-7", "items": []}), queue="submit-poison", services=stack.services, now=NOW)
    row = stack.services.status.get_job("job-7")
    assert row is not None and row.state == JobState.FAILED and row.error_code == "GaveUp"
