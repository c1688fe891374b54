"""Queue messages: what users send (`JobRequest`), and what the app sends itself (`BatchMessage`,
`PollMessage`). All are versioned JSON (`"v": 1`); `schemas/messages.schema.json` documents them.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from shared.errors import InvalidInputError

VERSION = 1
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # safe as a table PartitionKey and a blob path segment
MODES = ("create",)  # "upsert" (PUT per item) is not implemented yet


def decode_body(body: bytes | str) -> Any:
    """Parse a message body that is raw JSON or base64-encoded JSON.

    Raises:
        InvalidInputError: neither form parses.
    """
    raw = body.encode() if isinstance(body, str) else body
    stripped = raw.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError as error:
            raise InvalidInputError(f"message is not valid JSON: {error}") from None
    try:
        decoded = base64.b64decode(stripped, validate=True)
        return orjson.loads(decoded)
    except (binascii.Error, ValueError):
        raise InvalidInputError("message is neither JSON nor base64-encoded JSON") from None


@dataclass(frozen=True)
class ItemsRef:
    """Where a job's items are: a blob of this account (whole, or an NDJSON byte range) or an allowlisted URL."""

    blob: str = ""
    start: int | None = None
    end: int | None = None
    url: str = ""


@dataclass(frozen=True)
class JobRequest:
    """A job as a user asked for it (DESIGN §3). Exactly one of `items` / `items_ref` is set."""

    job_id: str | None = None
    collection: str | None = None
    items: list[Any] | None = None
    items_ref: ItemsRef | None = None
    batch_size: int | None = None
    mode: str = "create"

    @classmethod
    def from_json(cls, body: Any) -> JobRequest:
        """Accept a bare Item / FeatureCollection, or a `v: 1` envelope.

        Raises:
            InvalidInputError: the message has none of the accepted shapes.
        """
        if not isinstance(body, dict):
            raise InvalidInputError("message must be a JSON object")
        if body.get("type") in ("Feature", "FeatureCollection"):
            return cls(items=_items_of(body))
        if body.get("v") != VERSION:
            raise InvalidInputError("message must be a STAC Item, a FeatureCollection, or have \"v\": 1")
        if "search" in body:
            raise InvalidInputError("'search' messages are not supported yet")
        job_id = body.get("job_id")
        if job_id is not None and (not isinstance(job_id, str) or not JOB_ID.match(job_id)):
            raise InvalidInputError("job_id must be 1-64 characters of [A-Za-z0-9_-]")
        collection = body.get("collection")
        if collection is not None and not isinstance(collection, str):
            raise InvalidInputError("collection must be a string")
        batch_size = body.get("batch_size")
        if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000):
            raise InvalidInputError("batch_size must be an integer from 1 to 10000")
        mode = body.get("mode", "create")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}")
        has_items, has_ref = "items" in body, "items_ref" in body
        if has_items == has_ref:
            raise InvalidInputError("message needs exactly one of 'items' and 'items_ref'")
        common = {"job_id": job_id, "collection": collection, "batch_size": batch_size, "mode": mode}
        if has_items:
            return cls(items=_items_of(body["items"]), **common)
        return cls(items_ref=_ref_of(body["items_ref"]), **common)


def _items_of(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value.get("type") == "FeatureCollection":
        features = value.get("features")
        if not isinstance(features, list):
            raise InvalidInputError("FeatureCollection has no 'features' list")
        return features
    if isinstance(value, dict):
        return [value]
    raise InvalidInputError("'items' must be an Item, a FeatureCollection or a list of Items")


def _ref_of(value: Any) -> ItemsRef:
    if not isinstance(value, dict):
        raise InvalidInputError("'items_ref' must be an object")
    if isinstance(value.get("url"), str):
        return ItemsRef(url=value["url"])
    blob = value.get("blob")
    if not isinstance(blob, str) or "/" not in blob:
        raise InvalidInputError("'items_ref' needs 'blob': 'container/path' or 'url'")
    start, end = value.get("start"), value.get("end")
    for bound in (start, end):
        if bound is not None and (not isinstance(bound, int) or bound < 0):
            raise InvalidInputError("'items_ref' start/end must be non-negative integers")
    if start is not None and end is not None and end < start:
        raise InvalidInputError("'items_ref' end must not be before start")
    return ItemsRef(blob=blob, start=start, end=end)


@dataclass(frozen=True)
class BatchMessage:
    """One batch to POST: its items inline, or claim-checked in `payload_blob`."""

    job_id: str
    batch_id: str
    collection: str
    items: list[dict[str, Any]] | None = None
    payload_blob: str = ""
    attempt: int = 0
    mode: str = "create"
    v: int = VERSION
    kind: str = "batch"

    def to_json(self) -> str:
        body = {k: v for k, v in asdict(self).items() if v is not None and v != ""}
        return orjson.dumps(body).decode()

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BatchMessage:
        try:
            return cls(
                job_id=str(body["job_id"]),
                batch_id=str(body["batch_id"]),
                collection=str(body["collection"]),
                items=body.get("items"),
                payload_blob=str(body.get("payload_blob", "")),
                attempt=int(body.get("attempt", 0)),
                mode=str(body.get("mode", "create")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"malformed batch message: {error}") from None


@dataclass(frozen=True)
class PollMessage:
    """Check one batch's operation again (sent with a visibility delay)."""

    job_id: str
    batch_id: str
    collection: str
    operation_url: str
    attempt: int
    deadline: str  # ISO 8601, UTC
    v: int = VERSION
    kind: str = "poll"

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, body: Any) -> PollMessage:
        try:
            return cls(
                job_id=str(body["job_id"]),
                batch_id=str(body["batch_id"]),
                collection=str(body["collection"]),
                operation_url=str(body["operation_url"]),
                attempt=int(body["attempt"]),
                deadline=str(body["deadline"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"malformed poll message: {error}") from None


@dataclass(frozen=True)
class PlanMessage:
    """Plan (the next segment of) an uploaded file: read from `offset`, numbering batches from `next_batch`."""

    job_id: str
    blob: str  # container/path
    etag: str
    collection: str
    offset: int = 0  # bytes into the stored blob (plain NDJSON); 0 for formats that are read whole
    next_line: int = 1
    next_batch: int = 1
    items_before: int = 0
    v: int = VERSION
    kind: str = "plan"

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PlanMessage:
        try:
            return cls(
                job_id=str(body["job_id"]), blob=str(body["blob"]), etag=str(body["etag"]),
                collection=str(body.get("collection", "")), offset=int(body.get("offset", 0)),
                next_line=int(body.get("next_line", 1)), next_batch=int(body.get("next_batch", 1)),
                items_before=int(body.get("items_before", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"malformed plan message: {error}") from None
