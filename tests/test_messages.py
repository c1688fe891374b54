"""Message parsing: every accepted form, both encodings, and clear errors for the rest."""

from __future__ import annotations

import base64

import orjson
import pytest

from shared.errors import InvalidInputError
from shared.messages import BatchMessage, ItemsRef, JobRequest, PollMessage, decode_body
from tests.helpers import make_item


def test_decode_raw_and_base64_json_alike() -> None:
    body = orjson.dumps({"v": 1, "items": []})
    assert decode_body(body) == decode_body(base64.b64encode(body)) == {"v": 1, "items": []}
    assert decode_body(b"  " + body + b"\n") == {"v": 1, "items": []}


@pytest.mark.parametrize("body", [b"not json at all", b"{broken", base64.b64encode(b"{broken"), b""])
def test_undecodable_bodies_are_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInputError):
        decode_body(body)


def test_bare_item_and_feature_collection() -> None:
    item = make_item("a")
    assert JobRequest.from_json(item).items == [item]
    fc = {"type": "FeatureCollection", "features": [item, make_item("b")]}
    request = JobRequest.from_json(fc)
    assert [i["id"] for i in request.items or []] == ["a", "b"] and request.collection is None


def test_v1_inline_items_in_every_shape() -> None:
    for items in (make_item("a"), [make_item("a")], {"type": "FeatureCollection", "features": [make_item("a")]}):
        request = JobRequest.from_json({"v": 1, "collection": "landcover", "items": items, "job_id": "j-1", "batch_size": 5})
        assert (request.collection, request.job_id, request.batch_size, len(request.items or [])) == ("landcover", "j-1", 5, 1)


def test_v1_items_ref_blob_range_and_url() -> None:
    request = JobRequest.from_json({"v": 1, "items_ref": {"blob": "drop/x.ndjson", "start": 10, "end": 99}})
    assert request.items_ref == ItemsRef(blob="drop/x.ndjson", start=10, end=99)
    assert JobRequest.from_json({"v": 1, "items_ref": {"url": "https://h/x.json"}}).items_ref == ItemsRef(url="https://h/x.json")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([1, 2], "JSON object"),
        ({"v": 2, "items": []}, '"v": 1'),
        ({"v": 1}, "exactly one"),
        ({"v": 1, "items": [], "items_ref": {"blob": "a/b"}}, "exactly one"),
        ({"v": 1, "items": [], "job_id": "bad/id"}, "job_id .* '/' at position 4"),
        ({"v": 1, "items": [], "job_id": "job-1\n"}, "job_id .* '\\\\n' at position 6"),
        ({"v": 1, "items": [], "job_id": "j" * 65}, "job_id .* 65 characters long"),
        ({"v": 1, "items": [], "repair": ["geometry"]}, "repair"),
        ({"v": 1, "items": [], "repair": "bbox"}, "repair"),
        ({"v": 1, "items": [], "batch_size": 0}, "batch_size"),
        ({"v": 1, "items": [], "mode": "merge"}, "mode"),
        ({"v": 1, "items_ref": {"blob": "nocontainer"}}, "container/path"),
        ({"v": 1, "items_ref": {"blob": "a/b", "start": 5, "end": 1}}, "end"),
        ({"v": 1, "search": {"url": 5, "params": {}}}, "url"),
        ({"v": 1, "search": {"url": "https://x/search", "method": "PUT"}}, "GET or POST"),
        ({"v": 1, "delete": {"nope": 1}}, "ids"),
        ({"v": 1, "items": [], "sign": "aws"}, "sign"),
    ],
)
def test_malformed_job_messages_say_why(body: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        JobRequest.from_json(body)


def test_a_search_without_url_searches_the_target_catalog() -> None:
    request = JobRequest.from_json({"v": 1, "collection": "c-1", "delete": {"search": {"params": {"ids": ["a"]}}}})
    assert request.delete_search is not None and request.delete_search.url == ""
    copy = JobRequest.from_json({"v": 1, "collection": "c-2", "search": {"params": {"collections": ["c-1"]}}})
    assert copy.search is not None and copy.search.url == ""


def test_search_delete_sign_and_upsert_messages() -> None:
    search = JobRequest.from_json({"v": 1, "collection": "c1c", "search": {"url": "https://pc/api/stac/v1/search",
                                   "params": {"collections": ["io-lulc-annual-v02"]}, "max_items": 4},
                                   "sign": "planetary-computer", "mode": "upsert"})
    assert (search.search.url, search.search.method, search.search.max_items, search.sign, search.mode) == (
        "https://pc/api/stac/v1/search", "POST", 4, "planetary-computer", "upsert")
    delete = JobRequest.from_json({"v": 1, "collection": "c1c", "delete": {"ids": ["a", "b"]}})
    assert delete.is_delete and delete.delete_ids == ["a", "b"]
    assert JobRequest.from_json({"v": 1, "delete": {"search": {"url": "https://x/search"}}}).delete_search is not None


def test_batch_and_poll_messages_round_trip() -> None:
    batch = BatchMessage("j", "batch-000001", attempt=2)
    assert BatchMessage.from_json(orjson.loads(batch.to_json())) == batch
    # Only what identifies the batch is read: items, payload and collection come from its row.
    assert orjson.loads(batch.to_json()) == {"v": 1, "kind": "batch", "job_id": "j", "batch_id": "batch-000001", "attempt": 2}
    forged = {**orjson.loads(batch.to_json()), "items": [make_item("evil")], "payload_blob": "elsewhere/x", "collection": "c"}
    assert BatchMessage.from_json(forged) == batch
    for keys in ({"job_id": "a/b", "batch_id": "batch-1"}, {"job_id": "j", "batch_id": "x\ny"}, {"job_id": "j"}):
        with pytest.raises(InvalidInputError):
            BatchMessage.from_json(keys)
    poll = PollMessage("j", "batch-000001", "landcover", "https://gc/inma/operations/1?api-version=x", 3, "2026-01-01T00:00:00+00:00")
    assert PollMessage.from_json(orjson.loads(poll.to_json())) == poll
    with pytest.raises(InvalidInputError):
        PollMessage.from_json({"job_id": "j"})


def test_repair_is_opt_in() -> None:
    assert JobRequest.from_json({"v": 1, "items": []}).repair == frozenset()
    assert JobRequest.from_json({"v": 1, "items": [], "repair": ["bbox"]}).repair == {"bbox"}


def test_a_delivery_claims_as_itself_and_a_carried_claim_must_look_like_a_row_key() -> None:
    from shared.steps.job_claims import JobClaim, conflict_job_id, fingerprint

    body = {"v": 1, "items": [], "claim": {"by": "m-2", "fingerprint": "f"}}
    claim = JobClaim.of_delivery(body, "queue-msg-1")
    assert claim == JobClaim("queue-msg-1", fingerprint(body))  # a claim in the body is never read
    assert conflict_job_id(claim) == "job-id-conflict-queue-msg-1"
    assert JobClaim.carried(body) == JobClaim("m-2", "f")  # (the work queue's re-sends only)
    assert JobClaim.carried({**body, "claim": {"by": "a/b\n#x", "fingerprint": "f"}}) is None


@pytest.mark.parametrize("body", [
    {"v": 1, "kind": "batch", "job_id": "j", "batch_id": "batch-000001", "items": [make_item("a")]},
    {"v": 1, "kind": "plan", "job_id": "j", "blob": "stac-drop/x.ndjson", "etag": "e", "items": []},
    {"v": 1, "kind": "job", "job_id": "j", "items": []},
    {"v": 1, "job_id": "j", "items": [], "claim": {"by": "m-1", "fingerprint": "f"}},
    {"v": 1, "job_id": "j", "items": [], "attempt": 3, "first_attempt": "2026-01-01T00:00:00+00:00"},
    {"job_id": "j", "v": 2},
])
def test_the_inbox_reads_job_messages_only(body: dict) -> None:
    from shared.messages import inbox_job

    with pytest.raises(InvalidInputError):
        inbox_job(body)


def test_the_inbox_still_reads_every_job_shape() -> None:
    from shared.messages import inbox_job

    assert inbox_job({**make_item("a"), "kind": "not ours to judge"}).items == [{**make_item("a"), "kind": "not ours to judge"}]
    assert inbox_job({"v": 1, "job_id": "j", "items": [make_item("a")]}).job_id == "j"
