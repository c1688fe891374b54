"""Offline validation and normalization of STAC items, before anything is sent.

Policy (see README "Which items are accepted"):
- An item must be a GeoJSON Feature with an id of 1-64 chars of `[A-Za-z0-9-_.]`, a `geometry` key,
  `properties.datetime` (or `start_datetime` + `end_datetime`), and `assets` as an object; its
  `collection`, if set, must be the target collection unless the message asks to rewrite it.
- It must then pass the STAC 1.1.0 core Item schema that pystac ships, compiled once with
  fastjsonschema (tens of microseconds per item instead of ~10 ms with plain jsonschema).
  Items of any other version (1.0.0, 1.0.0-beta.x, 0.8/0.9) are checked on a copy that pystac has
  migrated to 1.1.0 (`Item.from_dict(migrate=True)`); pre-1.0 items are accepted when that copy is
  valid, and rejected with the schema's reason otherwise.
- The check copy gets `collection` and a `rel: collection` link (the 1.1.0 schema demands the link
  when the field is set), and loses its self/root/parent/collection links: the service replaces those
  on ingest, so a relative self link is no reason to refuse an item.
- What is sent is the user's item, unchanged apart from `collection`: migration is for checking only.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import warnings
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import pystac

from shared.geocatalog import ITEM_ID

STAC_VERSION = "1.1.0"
# RFC 3339 date-time; section 5.6 allows a space instead of "T" (real Planetary Computer items use it).
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
SERVICE_LINK_RELS = frozenset({"self", "root", "parent", "collection"})
SCHEMA_ROOT = f"https://schemas.stacspec.org/v{STAC_VERSION}/item-spec/json-schema/item.json"


@dataclass(frozen=True)
class RejectedItem:
    """An input item that will not be sent, and why. `item_id` is "" when it has none."""

    item_id: str
    reason: str
    position: int
    label: str = ""  # how to name it when it has no usable id, e.g. "line 12"


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

    formats = {"date-time": RFC3339, "iri": r"^[A-Za-z][A-Za-z0-9+.-]*:", "iri-reference": r"^"}
    return fastjsonschema.compile(store[SCHEMA_ROOT], handlers={"https": resolve}, formats=formats)


def item_problem(item: Any, collection_id: str, *, rewrite_collection: bool = True) -> str | None:
    """Why this item cannot be ingested into `collection_id`, or None when it can."""
    problem = _structural_problem(item, collection_id, rewrite_collection)
    if problem:
        return problem
    return _schema_problem(item, collection_id)


def _structural_problem(item: Any, collection_id: str, rewrite_collection: bool) -> str | None:
    if not isinstance(item, dict):
        return "not a JSON object"
    if item.get("type") != "Feature":
        return f"type is {str(item.get('type'))[:40]!r}, not 'Feature' (a STAC Item)"
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        return "has no id"
    if not ITEM_ID.match(item_id):
        return f"id must be 1-64 characters of [A-Za-z0-9-_.] (got {len(item_id)} characters)"
    if "geometry" not in item:
        return "has no geometry (it may be null, but must be present)"
    properties = item.get("properties")
    if not isinstance(properties, dict):
        return "has no properties object"
    if not properties.get("datetime") and not (properties.get("start_datetime") and properties.get("end_datetime")):
        return "has neither properties.datetime nor start_datetime and end_datetime"
    if item["geometry"] is not None and not isinstance(item.get("bbox"), list):
        return "has a geometry but no bbox"
    if not isinstance(item.get("assets"), dict):
        return "has no assets object"
    declared = item.get("collection")
    if declared not in (None, collection_id) and not rewrite_collection:
        return f"belongs to collection {str(declared)[:40]!r}, not {collection_id!r}"
    return None


def _schema_problem(item: dict[str, Any], collection_id: str) -> str | None:
    try:
        candidate = _check_copy(item, collection_id)
    except (pystac.STACError, KeyError, TypeError, ValueError) as error:
        return f"cannot be read as STAC {item.get('stac_version', '?')}: {str(error)[:200]}"
    try:
        _item_validator()(candidate)
    except fastjsonschema.JsonSchemaValueException as error:
        return f"fails the STAC {STAC_VERSION} Item schema: {str(error.message)[:300]}"
    return None


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


def validated(
    items: list[Any],
    collection_id: str,
    *,
    labels: list[str] | None = None,
    rewrite_collection: bool = True,
) -> tuple[list[dict[str, Any]], list[RejectedItem]]:
    """Split input items into (normalized valid items, rejected items with reasons).

    `labels` name the items in rejections (e.g. "line 12" for NDJSON); `rewrite_collection=False`
    refuses items that name another collection instead of moving them. A second item with an id
    already seen in the same job is rejected too: the service would fail it as a duplicate.
    """
    valid: list[dict[str, Any]] = []
    rejected: list[RejectedItem] = []
    seen: set[str] = set()
    for position, item in enumerate(items):
        label = labels[position] if labels else ""
        if hasattr(item, "error") and hasattr(item, "line"):  # an NDJSON line that is not JSON
            rejected.append(RejectedItem("", f"line {item.line} is not valid JSON: {item.error}", position, label))
            continue
        problem = item_problem(item, collection_id, rewrite_collection=rewrite_collection)
        item_id = item_id_of(item)
        if problem is None and item_id in seen:
            problem = "appears more than once in this job"
        if problem:
            rejected.append(RejectedItem(item_id, f"{label}: {problem}" if label else problem, position, label))
            continue
        seen.add(item_id)
        valid.append(normalize(item, collection_id))
    return valid, rejected
