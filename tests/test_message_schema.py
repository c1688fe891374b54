"""schemas/messages.schema.json documents what the submit queue accepts (job messages only), and
schemas/internal-messages.schema.json what the app sends itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema_rs
import orjson
import pytest
from azure.storage.queue import QueueClient

from shared.errors import InvalidInputError, RetryableError
from shared.messages import BatchMessage, JobRequest, PlanMessage, PollMessage, inbox_job
from shared.steps.handlers import retry_job_later
from shared.steps.job_claims import JobClaim
from tests.conftest import ROOT
from tests.helpers import make_item

VALIDATE = jsonschema_rs.validator_for(json.loads((ROOT / "schemas" / "messages.schema.json").read_text())).validate
INTERNAL = jsonschema_rs.validator_for(json.loads((ROOT / "schemas" / "internal-messages.schema.json").read_text())).validate

ACCEPTED = [
    make_item("a"),
    {"type": "FeatureCollection", "features": [make_item("a")]},
    {"v": 1, "collection": "landcover", "items": [make_item("a")], "job_id": "j-1", "batch_size": 10},
    {"v": 1, "collection": "landcover", "items_ref": {"blob": "stac-drop/x.ndjson", "start": 0, "end": 100}},
    {"v": 1, "items_ref": {"url": "https://example.com/items.json"}},
    {"v": 1, "collection": "landcover", "sign": "planetary-computer", "mode": "upsert",
     "search": {"url": "https://planetarycomputer.microsoft.com/api/stac/v1/search", "params": {"collections": ["io-lulc-annual-v02"]}, "max_items": 4}},
    {"v": 1, "collection": "landcover", "delete": {"ids": ["a", "b"]}},
    {"v": 1, "collection": "landsat", "repair": ["bbox"], "mode": "upsert", "items_ref": {"blob": "stac-drop/x.json"}},
    {"v": 1, "collection": "landcover", "delete": {"search": {"params": {"datetime": "2017-01-01/2017-12-31"}}}},
    {"v": 1, "collection": "landcover-copy", "search": {"params": {"collections": ["landcover"]}, "max_items": 10000}},
    {"v": 1, "collection": "landcover", "items_ref": {"blob": "stac-drop/landcover/x.ndjson.gz"}},
]


@pytest.mark.parametrize("message", ACCEPTED)
def test_documented_messages_are_accepted_by_the_code(message: dict) -> None:
    VALIDATE(message)
    inbox_job(message)


@pytest.mark.parametrize("message", [
    {"v": 1, "collection": "landcover"},
    {"v": 1, "items": [], "items_ref": {"blob": "a/b"}},
    {"v": 1, "items": [], "job_id": "no/slashes"},
    {"v": 1, "items": [], "repair": ["geometry"]},
    {"v": 1, "items": [], "repair": "bbox"},
    {"v": 1, "kind": "batch", "job_id": "j", "batch_id": "batch-000001", "collection": "landcover", "items": []},
    {"v": 1, "job_id": "j-2", "items": [make_item("a")], "claim": {"by": "0f5c-message-id", "fingerprint": "ab12"}},
    {"v": 1, "job_id": "j-2", "items": [make_item("a")], "attempt": 2},
    {"v": 2, "job_id": "j-2"},
])
def test_schema_refuses_what_the_code_refuses(message: dict) -> None:
    with pytest.raises(jsonschema_rs.ValidationError):
        VALIDATE(message)
    with pytest.raises(InvalidInputError):
        inbox_job(message)


def test_the_apps_own_messages_match_the_internal_schema_and_not_the_inbox_one() -> None:
    own = [BatchMessage("j", "batch-000001", attempt=1), PlanMessage("j", "stac-drop/a.ndjson", "0x1", "landcover", claimed_by="m-1"),
           PollMessage("j", "batch-000001", "landcover", "https://gc/inma/operations/1", 0, "2026-01-01T00:00:00+00:00")]
    for message in own:
        INTERNAL(orjson.loads(message.to_json()))
        with pytest.raises(jsonschema_rs.ValidationError):
            VALIDATE(orjson.loads(message.to_json()))


@pytest.mark.parametrize("sent", [{"v": 1, "job_id": "j-1", "items": [make_item("a")]}, make_item("bare")])
def test_a_job_re_send_goes_to_the_work_queue_and_matches_the_internal_schema(make_stack, sent: dict) -> None:
    stack = make_stack()
    stack.pause_functions()
    claim = JobClaim.of_delivery(sent, "0f5c-message-id")
    retry_job_later(sent, "j-1", claim, RetryableError("busy", retry_after=0), services=stack.services, now=datetime.now(UTC))
    work = QueueClient.from_connection_string(stack.azurite.connection_string, stack.services.settings.work_queue)
    (resend,) = [orjson.loads(m.content) for m in work.peek_messages(max_messages=32)]
    INTERNAL(resend)
    assert resend["kind"] == "job" and resend["claim"] == claim.to_json() and resend["job_id"] == "j-1"
    assert JobRequest.from_json(resend).items == [make_item("a") if "v" in sent else make_item("bare")]
    inbox = QueueClient.from_connection_string(stack.azurite.connection_string, stack.services.settings.submit_queue)
    assert inbox.peek_messages() == []
