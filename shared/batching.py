"""Splitting a job's items into batches: one POST each, bounded by item count and by bytes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

# Bytes a FeatureCollection wrapper adds around its features: {"type":"FeatureCollection","features":[...]}
ENVELOPE_BYTES = 48


def split(items: list[dict[str, Any]], *, max_items: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """Yield consecutive batches of at most `max_items` items and about `max_bytes` serialized bytes.

    An item larger than `max_bytes` on its own still goes, alone in its batch: the service decides.
    """
    batch: list[dict[str, Any]] = []
    size = ENVELOPE_BYTES
    for item in items:
        item_bytes = len(orjson.dumps(item)) + 1  # the comma
        if batch and (len(batch) >= max_items or size + item_bytes > max_bytes):
            yield batch
            batch, size = [], ENVELOPE_BYTES
        batch.append(item)
        size += item_bytes
    if batch:
        yield batch


def feature_collection(items: list[dict[str, Any]]) -> bytes:
    """The POST body for a batch."""
    return orjson.dumps({"type": "FeatureCollection", "features": items})


def batch_id(index: int) -> str:
    """Deterministic batch ids (job id + index make the row key): batch-000001, batch-000002, ..."""
    return f"batch-{index:06d}"


def child_batch_id(parent: str, index: int) -> str:
    """A batch split off a failed one to isolate bad items: batch-000003.1, batch-000003.2."""
    return f"{parent}.{index}"
