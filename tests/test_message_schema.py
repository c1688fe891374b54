"""schemas/messages.schema.json documents what the code accepts and sends."""

from __future__ import annotations

import json

import jsonschema_rs
import orjson
import pytest

from shared.errors import InvalidInputError
from shared.messages import BatchMessage, JobRequest, PollMessage
from tests.conftest import ROOT
from tests.helpers import make_item

VALIDATE = jsonschema_rs.validator_for(json.loads((ROOT / "schemas" / "messages.schema.json").read_text())).validate

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
    {"v": 1, "job_id": "j-2", "items": [make_item("a")], "attempt": 2, "first_attempt": "2026-01-01T00:00:00+00:00",
     "claim": {"by": "0f5c-message-id", "fingerprint": "ab12"}},  # the app's own re-send after a 429
    {"v": 1, "collection": "landcover", "delete": {"search": {"params": {"datetime": "2017-01-01/2017-12-31"}}}},
    {"v": 1, "collection": "landcover-copy", "search": {"params": {"collections": ["landcover"]}, "max_items": 10000}},
    {"v": 1, "collection": "landcover", "items_ref": {"blob": "stac-drop/landcover/x.ndjson.gz"}},
]


@pytest.mark.parametrize("message", ACCEPTED)
def test_documented_messages_are_accepted_by_the_code(message: dict) -> None:
    VALIDATE(message)
    JobRequest.from_json(message)


@pytest.mark.parametrize("message", [
    {"v": 1, "collection": "landcover"},
    {"v": 1, "items": [], "items_ref": {"blob": "a/b"}},
    {"v": 1, "items": [], "job_id": "no/slashes"},
    {"v": 1, "items": [], "repair": ["geometry"]},
    {"v": 1, "items": [], "repair": "bbox"},
])
def test_schema_refuses_what_the_code_refuses(message: dict) -> None:
    with pytest.raises(jsonschema_rs.ValidationError):
        VALIDATE(message)
    with pytest.raises(InvalidInputError):
        JobRequest.from_json(message)


def test_the_apps_own_messages_match_the_schema() -> None:
    VALIDATE(orjson.loads(BatchMessage("j", "batch-000001", "landcover", items=[make_item("a")], payload_blob="p/x").to_json()))
    VALIDATE(orjson.loads(PollMessage("j", "batch-000001", "landcover", "https://gc/inma/operations/1", 0,
                                      "2026-01-01T00:00:00+00:00").to_json()))
