"""What the emulated service refuses in an item, as the real one reports it: `StacValidationFailed`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

ITEM_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
COLLECTION_ID = re.compile(r"^[A-Za-z0-9._-]{3,32}$")


def item_problem(item: Any, collection_id: str) -> str | None:
    """Return why the service would refuse this item for `collection_id`, or None if it is fine."""
    if not isinstance(item, dict) or item.get("type") != "Feature":
        return "is not a STAC Item (type must be 'Feature')"
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        return "has no id"
    if not ITEM_ID.match(item_id):
        return f"id '{item_id[:80]}' must be 1-64 characters of [A-Za-z0-9-_.]"
    if "geometry" not in item:
        return f"item '{item_id}' has no geometry"
    properties = item.get("properties")
    if not isinstance(properties, dict):
        return f"item '{item_id}' has no properties"
    has_range = properties.get("start_datetime") and properties.get("end_datetime")
    if not properties.get("datetime") and not has_range:
        return f"item '{item_id}' has no datetime (nor start_datetime and end_datetime)"
    if item.get("collection") not in (None, collection_id):
        return (
            f"item '{item_id}' has collection '{item.get('collection')}' "
            f"but was posted to collection '{collection_id}'"
        )
    if not isinstance(item.get("assets", {}), dict):
        return f"item '{item_id}' has assets that are not an object"
    return None


def unsigned_asset(item: dict[str, Any]) -> str | None:
    """Return the key of an http(s) asset whose href carries no SAS query string, if any."""
    for key, asset in (item.get("assets") or {}).items():
        href = asset.get("href", "") if isinstance(asset, dict) else ""
        try:
            parts = urlsplit(href) if isinstance(href, str) else None
        except ValueError:  # e.g. "http://[x": no one could read it
            return str(key)
        if parts is not None and parts.scheme in ("http", "https") and not parts.query:
            return str(key)
    return None
