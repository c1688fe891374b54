"""Offline validation and normalization of STAC items, before anything is sent.

Policy (see docs/messages.md, "Which items are accepted"):
- An item must be at most MAX_DEPTH levels deep and MAX_ITEM_BYTES serialized (checked first, so one
  pathological item is rejected and never breaks the serialization of its batch).
- It must be a GeoJSON Feature with an id of 1-64 chars of `[A-Za-z0-9-_.]`, a `geometry` key,
  `properties.datetime` (or `start_datetime` + `end_datetime`), and `assets` as an object; its
  `collection`, if set, must be the target collection unless the message asks to rewrite it.
- It must then pass the STAC 1.1.0 core Item schema that pystac ships, compiled once with
  jsonschema-rs (a compiled Rust validator: about 4x faster than fastjsonschema on real NAIP items,
  and tens of microseconds per item instead of ~10 ms with plain jsonschema).
  Items of any other version (1.0.0, 1.0.0-beta.x, 0.8/0.9) are checked on a copy that pystac has
  migrated to 1.1.0 (`Item.from_dict(migrate=True)`); pre-1.0 items are accepted when that copy is
  valid, and rejected with the schema's reason otherwise.
- The check copy gets `collection` and a `rel: collection` link (the 1.1.0 schema demands the link
  when the field is set), and loses its self/root/parent/collection links: the service replaces those
  on ingest, so a relative self link is no reason to refuse an item.
- What is sent is the user's item, unchanged apart from `collection`: migration is for checking only.
  The one exception is opt-in: with `repair: ["bbox"]`, an item with a geometry and no bbox gets the box
  computed from its geometry (`shared/repair.py`).
- Under `mode: "upsert"` an id repeated within one job keeps its last valid copy; the earlier copies are
  `superseded`, not errors. Under `create` a repeated id is rejected.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import orjson
import pystac

from shared.ids import is_item_id, item_id_problem
from shared.repair import GeometryError, bbox_of

_UNSAFE_HREF = re.compile(r"[\x00-\x1f\x7f-\x9f\\@]")

STAC_VERSION = "1.1.0"
# RFC 3339 date-time; section 5.6 allows a space instead of "T" (real Planetary Computer items use it).
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
SERVICE_LINK_RELS = frozenset({"self", "root", "parent", "collection"})
SCHEMA_ROOT = f"https://schemas.stacspec.org/v{STAC_VERSION}/item-spec/json-schema/item.json"
MAX_DEPTH = 100  # nesting levels; orjson refuses to serialize beyond 254, real items use under 20
MAX_ITEM_BYTES = 8 * 1024 * 1024  # one item alone must fit in one POST
REPAIR_BBOX_HINT = 'send with repair: ["bbox"] to compute it from the geometry'


@dataclass(frozen=True)
class RejectedItem:
    """An input item that will not be sent, and why. `item_id` is "" when it has none."""

    item_id: str
    reason: str
    position: int
    label: str = ""  # how to name it when it has no usable id, e.g. "line 12"
    superseded: bool = False  # upsert: a later copy of the same id replaces it (not an error)


@dataclass
class Validation:
    """A job's items, checked: what to send, what was refused, and which were repaired on the way."""

    valid: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[RejectedItem] = field(default_factory=list)
    superseded: list[RejectedItem] = field(default_factory=list)
    repaired_ids: set[str] = field(default_factory=set)


def _warm_pystac_extension_hooks() -> None:
    """Load pystac's extension hooks once, at import, while the import lock is held.

    pystac 1.15 `RegisteredExtensionHooks._discover()` sets its "discovered" flag *before* it loads the
    hooks: threads that migrate an item at the same time on a cold worker see an empty hook table (no
    extension migration, so a valid pre-1.0 item fails with "stac_extensions[0] must be iri"), or a
    table that changes under them ("dictionary changed size during iteration"). The Functions worker
    runs sync functions in a thread pool, so this happens in Azure. Migrating one pre-1.0 item here
    runs the discovery to its end before any worker thread can use pystac through this module.
    """
    old = {"type": "Feature", "stac_version": "0.9.0", "id": "warm-up", "geometry": None, "assets": {}, "links": [],
           "properties": {"datetime": "2020-01-01T00:00:00Z"}, "stac_extensions": ["eo"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pystac.Item.from_dict(old, migrate=True, preserve_dict=False)


_warm_pystac_extension_hooks()


@functools.cache
def _schema_store() -> dict[str, Any]:
    """The schemas pystac ships, by their canonical URI (pystac's own local cache needs jsonschema)."""
    files = importlib.resources.files("pystac.validation.jsonschemas")
    spec = f"https://schemas.stacspec.org/v{STAC_VERSION}/"
    store = {
        f"https://geojson.org/schema/{name}.json": json.loads(files.joinpath(f"geojson/{name}.json").read_text())
        for name in ("Feature", "Geometry")
    }
    for path in files.joinpath(f"stac-spec/v{STAC_VERSION}").iterdir():
        name = path.name.removesuffix(".json")
        folder = "item" if name not in ("catalog", "collection") else name
        store[f"{spec}{folder}-spec/json-schema/{path.name}"] = json.loads(path.read_text())
    return store


@functools.cache
def _item_validator() -> Any:
    store = _schema_store()

    def resolve(uri: str) -> Any:
        if uri in store:
            return store[uri]
        raise LookupError(f"schema {uri} is not available offline")

    date_time, iri = re.compile(RFC3339), re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
    formats = {"date-time": lambda v: bool(date_time.match(v)), "iri": lambda v: bool(iri.match(v)),
               "iri-reference": lambda _: True}
    return jsonschema_rs.validator_for(store[SCHEMA_ROOT], retriever=resolve, validate_formats=True, formats=formats)


def item_problem(item: Any, collection_id: str, *, rewrite_collection: bool = True) -> str | None:
    """Why this item cannot be ingested into `collection_id`, or None when it can."""
    problem = _structural_problem(item, collection_id, rewrite_collection)
    if problem:
        return problem
    return _schema_problem(item, collection_id)


def repaired(item: Any, repair: frozenset[str] | set[str]) -> tuple[Any, bool]:
    """(the item with the asked-for repairs applied, whether anything changed); the input is never modified."""
    if "bbox" not in repair or not isinstance(item, dict) or "bbox" in item or not isinstance(item.get("geometry"), dict):
        return item, False
    try:
        box = bbox_of(item["geometry"])
    except GeometryError:
        return item, False  # the schema check then names what is wrong with the geometry
    return {**item, "bbox": box}, True


def _structural_problem(item: Any, collection_id: str, rewrite_collection: bool) -> str | None:
    if not isinstance(item, dict):
        return "not a JSON object"
    problem = _shape_problem(item)
    if problem:
        return problem
    if item.get("type") != "Feature":
        return f"type is {str(item.get('type'))[:40]!r}, not 'Feature' (a STAC Item)"
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        return "has no id"
    problem = item_id_problem(item_id)
    if problem:
        return f"id {item_id[:40]!r}{'...' if len(item_id) > 40 else ''} {problem}"
    if "geometry" not in item:
        return "has no geometry (it may be null, but must be present)"
    properties = item.get("properties")
    if not isinstance(properties, dict):
        return "has no properties object"
    if not properties.get("datetime") and not (properties.get("start_datetime") and properties.get("end_datetime")):
        return "has neither properties.datetime nor start_datetime and end_datetime"
    if item["geometry"] is not None and not isinstance(item.get("bbox"), list):
        return f"has a geometry but no bbox; {REPAIR_BBOX_HINT}" if "bbox" not in item else "has a geometry but its bbox is not an array"
    if not isinstance(item.get("assets"), dict):
        return "has no assets object"
    problem = _asset_href_problem(item["assets"])
    if problem:
        return problem
    declared = item.get("collection")
    if declared not in (None, collection_id) and not rewrite_collection:
        return f"belongs to collection {str(declared)[:40]!r}, not {collection_id!r}"
    return None


def href_problem(href: str) -> str | None:
    """Why an href may not be signed or sent (a backslash, `@` or a control character: URL parsers disagree
    about which host such an href names), or None."""
    bad = _UNSAFE_HREF.search(href)
    if bad is None:
        return None
    return f"has {bad.group()!r} at position {bad.start() + 1} (no backslashes, '@' or control characters)"


def _asset_href_problem(assets: dict[str, Any]) -> str | None:
    for key, asset in assets.items():
        href = asset.get("href") if isinstance(asset, dict) else None
        problem = href_problem(href) if isinstance(href, str) else None
        if problem:
            return f"asset {str(key)[:40]!r}: the href {problem}"
    return None


def _shape_problem(item: dict[str, Any]) -> str | None:
    """Too deep or too big to serialize and send: checked before anything else serializes the item.

    Serializing is the check: orjson refuses past 254 levels without recursing in Python, and the
    depth of what it wrote is read off its brackets (`json_depth`), several times faster than
    walking the item.
    """
    try:
        data = orjson.dumps(item)
    except orjson.JSONEncodeError as error:
        if "Recursion" in str(error):
            return f"is nested more than {MAX_DEPTH} levels deep"
        return f"cannot be serialized as JSON: {str(error)[:100]}"
    if len(data) > MAX_ITEM_BYTES:
        return f"is {len(data)} bytes serialized, more than {MAX_ITEM_BYTES}"
    if _brackets_may_exceed(data, MAX_DEPTH + 1) and json_depth(data) > MAX_DEPTH + 1:  # + 1: the item's own object
        return f"is nested more than {MAX_DEPTH} levels deep"
    return None


def _brackets_may_exceed(data: bytes, depth: int) -> bool:
    """False when there are too few opening brackets at all to nest `depth` deep: the common case (a
    NAIP item has 37), counted in C, where reading the depth off them costs tens of microseconds."""
    return data.count(b"[") + data.count(b"{") > depth


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = b"[{"


def json_depth(data: bytes) -> int:
    """How deep arrays and objects nest in serialized JSON (brackets inside strings do not count)."""
    if b'\\"' in data:  # an escaped quote: find the strings properly
        outside = _JSON_STRING.sub(b"", data)
    else:  # split on quotes: every other piece is a string (several times faster)
        outside = b"".join(data.split(b'"')[::2])
    level = deepest = 0
    for bracket in outside.translate(None, _NOT_BRACKETS):
        if bracket in _OPENING:
            level += 1
            if level > deepest:
                deepest = level
        else:
            level -= 1
    return deepest


def _schema_problem(item: dict[str, Any], collection_id: str) -> str | None:
    try:
        candidate = _check_copy(item, collection_id)
    except (pystac.STACError, KeyError, TypeError, ValueError) as error:
        return f"cannot be read as STAC {item.get('stac_version', '?')}: {str(error)[:200]}"
    validator = _item_validator()
    if validator.is_valid(candidate):
        return None
    error = next(iter(validator.iter_errors(candidate)))
    where = ".".join(str(part) for part in error.instance_path) or "the item"
    return f"fails the STAC {STAC_VERSION} Item schema at {where}: {str(error.message)[:300]}"


def _check_copy(item: dict[str, Any], collection_id: str) -> dict[str, Any]:
    if item.get("stac_version") in (STAC_VERSION, "1.0.0"):
        # 1.1.0 changed nothing that makes a valid 1.0.0 core item invalid; skipping pystac's
        # migration here keeps the common case at tens of microseconds.
        candidate = {**item, "stac_version": STAC_VERSION}
    else:
        with warnings.catch_warnings():  # pystac's extension warnings are about the copy, not for our logs
            warnings.simplefilter("ignore")
            migrated = pystac.Item.from_dict(copy.deepcopy(item), migrate=True, preserve_dict=False)
            candidate = migrated.to_dict(include_self_link=False, transform_hrefs=False)
    candidate["collection"] = collection_id
    # The service replaces the structural links on ingest, so a relative `self` link (common in
    # static catalogs, and valid in 1.0.0) is no reason to refuse an item.
    links = [
        link
        for link in candidate.get("links") or []
        if not (isinstance(link, dict) and link.get("rel") in SERVICE_LINK_RELS)
    ]
    candidate["links"] = [*links, {"rel": "collection", "href": f"./{collection_id}"}]
    return candidate


def normalize(item: dict[str, Any], collection_id: str) -> dict[str, Any]:
    """The item as it will be sent: the user's dict with `collection` set (a shallow copy)."""
    if item.get("collection") == collection_id:
        return item
    return {**item, "collection": collection_id}


def items_from_document(document: Any) -> list[Any]:
    """The items of an Item, a FeatureCollection or a list of items."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
        return features if isinstance(features, list) else []
    return [document]


def item_id_of(item: Any) -> str:
    item_id = item.get("id") if isinstance(item, dict) else None
    return item_id if isinstance(item_id, str) else ""


def valid_id_of(item: Any) -> str:
    """The item's id when it follows the id rule, else "": an id that breaks the rule (40,000 characters,
    control characters) never becomes a key or a table property; the rejection names its position instead."""
    item_id = item_id_of(item)
    return item_id if is_item_id(item_id) else ""


def validated(
    items: list[Any],
    collection_id: str,
    *,
    labels: list[str] | None = None,
    rewrite_collection: bool = True,
) -> tuple[list[dict[str, Any]], list[RejectedItem]]:
    """Split input items into (normalized valid items, rejected items with reasons); see `validate_job`."""
    result = validate_job(items, collection_id, labels=labels, rewrite_collection=rewrite_collection)
    return result.valid, result.rejected


def validate_job(
    items: list[Any],
    collection_id: str,
    *,
    labels: list[str] | None = None,
    rewrite_collection: bool = True,
    mode: str = "create",
    repair: frozenset[str] | set[str] = frozenset(),
) -> Validation:
    """Check a job's input items.

    `labels` name the items in rejections (e.g. "line 12" for NDJSON); `rewrite_collection=False`
    refuses items that name another collection instead of moving them; `repair` applies opt-in repairs
    before the check. An id seen twice in one job: under `create` the later copy is rejected (the
    service would fail it as a duplicate); under `upsert` the last valid copy is sent and the earlier
    ones are recorded as superseded.
    """
    result = Validation()
    checked: list[tuple[int, dict[str, Any], bool]] = []  # (position, normalized item, repaired)
    for position, item in enumerate(items):
        label = labels[position] if labels else ""
        if hasattr(item, "error") and hasattr(item, "line"):  # an NDJSON line that is not JSON
            result.rejected.append(RejectedItem("", f"line {item.line} is not valid JSON: {item.error}", position, label))
            continue
        item, fixed = repaired(item, repair)
        problem = item_problem(item, collection_id, rewrite_collection=rewrite_collection)
        if problem:
            result.rejected.append(RejectedItem(valid_id_of(item), f"{label}: {problem}" if label else problem, position, label))
            continue
        checked.append((position, normalize(item, collection_id), fixed))
    last = {item["id"]: position for position, item, _ in checked}
    sent: set[str] = set()
    for position, item, fixed in checked:
        item_id, label = item["id"], labels[position] if labels else ""
        if mode in ("upsert", "sync") and position != last[item_id]:
            reason = f"superseded by a later copy ({labels[last[item_id]] if labels else f'#{last[item_id]}'}) under mode upsert"
            result.superseded.append(RejectedItem(item_id, f"{label}: {reason}" if label else reason, position, label, superseded=True))
            continue
        if item_id in sent:
            problem = "appears more than once in this job"
            result.rejected.append(RejectedItem(item_id, f"{label}: {problem}" if label else problem, position, label))
            continue
        sent.add(item_id)
        result.valid.append(item)
        if fixed:
            result.repaired_ids.add(item_id)
    result.rejected.sort(key=lambda rejected: rejected.position)
    return result
