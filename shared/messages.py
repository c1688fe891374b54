"""Queue messages: what users send (`JobRequest`, on the submit queue: `schemas/messages.schema.json`),
and what the app sends itself (`BatchMessage` and `PlanMessage` on the work queue, `PollMessage` on the
poll queue: `schemas/internal-messages.schema.json`). All are versioned JSON (`"v": 1`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from shared.errors import InvalidInputError
from shared.ids import JOB_ID, check_collection_id, check_row_keys, is_job_id, job_id_problem  # noqa: F401 - JOB_ID re-exported

VERSION = 1
MODES = ("create", "upsert", "sync")
DEFAULT_MAX_DELETE_FRACTION = 0.1  # sync with delete_missing: refused when it would delete more of the catalog
SIGNERS = ("planetary-computer",)
REPAIRS = ("bbox",)  # opt-in fixes of real-world items (see shared/items.py)
# Fields only the app writes (on its work queue): a job message on the submit queue carrying one is refused.
APP_FIELDS = ("kind", "claim", "attempt", "first_attempt")
BATCH_ID = re.compile(r"\A[A-Za-z0-9._-]{1,128}\Z")  # our batch ids (batch-000001.2, rejected-000001): a safe RowKey


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
class CatalogRef:
    """A static STAC catalog's root document: an allowlisted URL, or a blob `container/path` of this account."""

    url: str = ""
    blob: str = ""


@dataclass(frozen=True)
class Search:
    """A STAC API item search: `url` is the API's /search ("" = the target GeoCatalog's own search);
    `params` its body (POST) or query (GET)."""

    url: str
    params: dict[str, Any]
    method: str = "POST"
    max_items: int = 1000


@dataclass(frozen=True)
class JobRequest:
    """A job as a user asked for it (DESIGN §3): exactly one source of items (`items`, `items_ref`,
    `search`, `catalog`), or `delete_ids` / `delete_search` for a delete job."""

    job_id: str | None = None
    collection: str | None = None
    items: list[Any] | None = None
    items_ref: ItemsRef | None = None
    search: Search | None = None
    catalog: CatalogRef | None = None
    delete_ids: list[str] | None = None
    delete_search: Search | None = None
    sign: str | None = None
    sign_collection: str | None = None
    batch_size: int | None = None
    mode: str = "create"
    repair: frozenset[str] = frozenset()
    dry_run: bool = False  # read, check, batch and diff as a real run would; send nothing to the GeoCatalog
    delete_missing: bool = False  # mode sync: delete catalog items the source no longer has
    max_delete_fraction: float = DEFAULT_MAX_DELETE_FRACTION

    @property
    def is_delete(self) -> bool:
        return self.delete_ids is not None or self.delete_search is not None

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
        job_id = body.get("job_id")
        if job_id is not None and (problem := job_id_problem(job_id)):
            raise InvalidInputError(f"job_id {problem}")
        collection = body.get("collection")
        if collection is not None and not isinstance(collection, str):
            raise InvalidInputError("collection must be a string")
        for name in ("collection", "sign_collection"):  # ids that break the rule never reach a row
            if body.get(name):
                check_collection_id(body[name])
        batch_size = body.get("batch_size")
        if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000):
            raise InvalidInputError("batch_size must be an integer from 1 to 10000")
        mode = body.get("mode", "create")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}")
        sources = [key for key in ("items", "items_ref", "search", "catalog", "delete") if key in body]
        if len(sources) != 1:
            raise InvalidInputError("message needs exactly one of 'items', 'items_ref', 'search', 'catalog' and 'delete'")
        sign = body.get("sign")
        if sign is not None and sign not in SIGNERS:
            raise InvalidInputError(f"sign must be one of {', '.join(SIGNERS)}")
        common = {"job_id": job_id, "collection": collection, "batch_size": batch_size, "mode": mode, "sign": sign,
                  "sign_collection": _optional_str(body, "sign_collection"), "repair": _repair_of(body.get("repair", [])),
                  **_sync_options(body, mode)}
        if "items" in body:
            return cls(items=_items_of(body["items"]), **common)
        if "items_ref" in body:
            return cls(items_ref=_ref_of(body["items_ref"]), **common)
        if "search" in body:
            return cls(search=_search_of(body["search"]), **common)
        if "catalog" in body:
            return cls(catalog=_catalog_of(body["catalog"]), **common)
        return cls(**_delete_of(body["delete"]), **common)


@dataclass(frozen=True)
class JobOptions:
    """What a job message says besides its items: target collection, mode and signing ("" = not set)."""

    collection: str = ""
    mode: str = "create"
    sign: str = ""
    sign_collection: str = ""
    dry_run: bool = False
    delete_missing: bool = False
    max_delete_fraction: float | None = None  # None: the default (DEFAULT_MAX_DELETE_FRACTION)


def job_envelope(job_id: str, options: JobOptions) -> dict[str, Any]:
    """A `v: 1` job message without its items (the sender adds `items`, `items_ref`, `search` or `delete`)."""
    body: dict[str, Any] = {"v": VERSION, "job_id": job_id, "mode": options.mode}
    for name in ("collection", "sign", "sign_collection", "dry_run", "delete_missing"):
        if value := getattr(options, name):
            body[name] = value
    if options.max_delete_fraction is not None:
        body["max_delete_fraction"] = options.max_delete_fraction
    return body


def inbox_job(body: Any) -> JobRequest:
    """A message from the submit queue read as the one shape it may have there: a job.

    The app's own messages (`kind`) and the fields it pins on its re-sends (`claim`, `attempt`,
    `first_attempt`) are refused: only the app's work queue carries them.

    Raises:
        InvalidInputError: the message is not a job.
    """
    if isinstance(body, dict) and body.get("type") not in ("Feature", "FeatureCollection"):
        present = [name for name in APP_FIELDS if name in body]
        if "kind" in present:
            kind = str(body["kind"])[:40]
            raise InvalidInputError(f"a message of kind {kind!r} is not a job: the submit queue takes job messages only")
        if present:
            raise InvalidInputError(f"{', '.join(present)}: set by the app on its own queue only, not in a job message")
    return JobRequest.from_json(body)


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


def _sync_options(body: dict[str, Any], mode: str) -> dict[str, Any]:
    """`dry_run` (any job), and `delete_missing` / `max_delete_fraction` (mode sync only)."""
    options: dict[str, Any] = {}
    for name in ("dry_run", "delete_missing"):
        if name in body and not isinstance(body[name], bool):
            raise InvalidInputError(f"{name} must be true or false")
        options[name] = bool(body.get(name, False))
    fraction = body.get("max_delete_fraction", DEFAULT_MAX_DELETE_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
        raise InvalidInputError("max_delete_fraction must be a number from 0 to 1")
    options["max_delete_fraction"] = float(fraction)
    if (options["delete_missing"] or "max_delete_fraction" in body) and mode != "sync":
        raise InvalidInputError("delete_missing and max_delete_fraction go with mode \"sync\"")
    if mode == "sync" and "delete" in body:
        raise InvalidInputError("mode \"sync\" needs a source of items, not 'delete'")
    return options


def _repair_of(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) and name in REPAIRS for name in value):
        raise InvalidInputError(f"repair must be a list of {', '.join(REPAIRS)}")
    return frozenset(value)


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{key} must be a string")
    return value


def _search_of(value: Any) -> Search:
    if not isinstance(value, dict) or not isinstance(value.get("url", ""), str):
        raise InvalidInputError("'search' must be an object; its 'url' (a STAC API's /search, default: the GeoCatalog's own) a string")
    params = value.get("params", {})
    method = str(value.get("method", "POST")).upper()
    max_items = value.get("max_items", 1000)
    if not isinstance(params, dict) or method not in ("GET", "POST"):
        raise InvalidInputError("'search' params must be an object and method GET or POST")
    if not isinstance(max_items, int) or not 1 <= max_items <= 100_000:
        raise InvalidInputError("'search' max_items must be an integer from 1 to 100000")
    return Search(url=value.get("url", ""), params=params, method=method, max_items=max_items)


def _delete_of(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and isinstance(value.get("ids"), list) and all(isinstance(i, str) for i in value["ids"]):
        return {"delete_ids": value["ids"]}
    if isinstance(value, dict) and "search" in value:
        return {"delete_search": _search_of(value["search"])}
    raise InvalidInputError("'delete' needs 'ids' (a list of item ids) or 'search'")


def _catalog_of(value: Any) -> CatalogRef:
    if isinstance(value, dict) and set(value) == {"url"} and isinstance(value["url"], str) and value["url"]:
        return CatalogRef(url=value["url"])
    if isinstance(value, dict) and set(value) == {"blob"} and isinstance(value["blob"], str) and "/" in value["blob"]:
        return CatalogRef(blob=value["blob"])
    raise InvalidInputError("'catalog' needs one of 'url' (an https URL of a catalog.json or collection.json) "
                            "and 'blob' ('container/path')")


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
    """Submit one batch: only which one. Everything else (its items, collection, mode) is read from its row."""

    job_id: str
    batch_id: str
    attempt: int = 0
    v: int = VERSION
    kind: str = "batch"

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BatchMessage:
        """Raises InvalidInputError unless the message names a batch by keys a row can have (other fields are ignored)."""
        try:
            message = cls(job_id=body["job_id"], batch_id=body["batch_id"], attempt=int(body.get("attempt", 0)))
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"malformed batch message: {error}") from None
        if not is_job_id(message.job_id) or not isinstance(message.batch_id, str) or not BATCH_ID.match(message.batch_id):
            raise InvalidInputError("malformed batch message: job_id or batch_id is not a valid key")
        return message


@dataclass(frozen=True)
class PollMessage:
    """Check one batch's operation again (sent with a visibility delay)."""

    job_id: str
    batch_id: str
    collection: str
    operation_url: str
    attempt: int
    deadline: str  # ISO 8601, UTC
    failures: int = 0  # consecutive polls that could not read the operation
    role: str = ""  # "scout" or "waiting" while the collection's timing is being learnt (`shared.steps.cold_start`)
    v: int = VERSION
    kind: str = "poll"

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, body: Any) -> PollMessage:
        if isinstance(body, dict):
            check_row_keys(body.get("job_id"), body.get("batch_id"))
        try:
            return cls(
                job_id=str(body["job_id"]),
                batch_id=str(body["batch_id"]),
                collection=str(body["collection"]),
                operation_url=str(body["operation_url"]),
                attempt=int(body["attempt"]),
                deadline=str(body["deadline"]),
                failures=int(body.get("failures", 0)),
                role=str(body.get("role", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"malformed poll message: {error}") from None


@dataclass(frozen=True)
class PlanMessage:
    """Plan (the next segment of) a stored file (an upload or an `items_ref`): read from `offset`,
    numbering batches from `next_batch`."""

    job_id: str
    blob: str  # container/path
    etag: str
    collection: str
    offset: int = 0  # bytes into the stored blob (plain NDJSON), the row group (GeoParquet); 0 for formats read whole
    next_line: int = 1
    next_batch: int = 1
    items_before: int = 0
    end: int | None = None  # plain NDJSON: stop at this byte (an `items_ref` range); None = the blob's end
    format: str = ""  # "ndjson", "json", "ndjson.gz", "json.gz" or "parquet"; "" = from the blob's name
    mode: str = "create"
    sign: str = ""
    sign_collection: str = ""
    batch_size: int = 0  # 0 = BATCH_MAX_ITEMS
    repair: str = ""  # opt-in repairs, comma-separated (e.g. "bbox")
    claimed_by: str = ""  # the job row's claim: the plan goes on only while the row still holds it
    v: int = VERSION
    kind: str = "plan"

    def to_json(self) -> str:
        return orjson.dumps({k: v for k, v in asdict(self).items() if v is not None}).decode()

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PlanMessage:
        check_row_keys(body.get("job_id"))
        try:
            return cls(
                job_id=str(body["job_id"]), blob=str(body["blob"]), etag=str(body["etag"]),
                collection=str(body.get("collection", "")), offset=int(body.get("offset", 0)),
                next_line=int(body.get("next_line", 1)), next_batch=int(body.get("next_batch", 1)),
                items_before=int(body.get("items_before", 0)),
                end=int(body["end"]) if body.get("end") is not None else None, format=str(body.get("format", "")),
                mode=str(body.get("mode", "create")), sign=str(body.get("sign", "")),
                sign_collection=str(body.get("sign_collection", "")), batch_size=int(body.get("batch_size", 0)),
                repair=str(body.get("repair", "")), claimed_by=str(body.get("claimed_by", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"malformed plan message: {error}") from None
