"""Small helpers shared by tests (no fixtures here; see conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], *, timeout: float = 30.0, every: float = 0.05) -> T:
    """Call `probe` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def make_item(item_id: str, collection: str | None = None, **extra: Any) -> dict[str, Any]:
    """A small valid STAC 1.1.0 item (land-cover shaped)."""
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[-122.5, 47.5], [-122.0, 47.5], [-122.0, 48.0], [-122.5, 48.0], [-122.5, 47.5]]]},
        "bbox": [-122.5, 47.5, -122.0, 48.0],
        "properties": {"datetime": "2023-01-01T00:00:00Z", "start_datetime": "2023-01-01T00:00:00Z", "end_datetime": "2023-12-31T23:59:59Z"},
        "assets": {"data": {"href": f"https://example.blob.core.windows.net/lulc/{item_id}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}},
        "links": [],
    }
    if collection:
        item["collection"] = collection
    item.update(extra)
    return item


def make_collection(collection_id: str) -> dict[str, Any]:
    return {
        "type": "Collection", "stac_version": "1.1.0", "id": collection_id, "description": "test collection",
        "license": "CC-BY-4.0", "links": [],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
    }


def nested(depth: int) -> dict[str, Any]:
    """An object nested `depth` levels deep."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value
