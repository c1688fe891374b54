"""Splitting a job's items into batches: one POST each, bounded by item count and by bytes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

# Bytes a FeatureCollection wrapper adds around its features: {"type":"FeatureCollection","features":[...]}
ENVELOPE_BYTES = 48


FC_PREFIX = b'{"type":"FeatureCollection","features":['
FC_SUFFIX = b"]}"


@dataclass(frozen=True)
class SerializedBatch:
    """A batch's items and its POST body, serialized once."""

    items: list[dict[str, Any]]
    body: bytes


def split_serialized(items: list[dict[str, Any]], *, max_items: int, max_bytes: int) -> Iterator[SerializedBatch]:
    """Yield consecutive batches of at most `max_items` items and about `max_bytes` serialized bytes,
    each with its FeatureCollection body, built from the one serialization that measured the items.

    An item larger than `max_bytes` on its own still goes, alone in its batch: the service decides.
    """
    batch: list[dict[str, Any]] = []
    parts: list[bytes] = []
    size = ENVELOPE_BYTES
    for item in items:
        encoded = orjson.dumps(item)
        if batch and (len(batch) >= max_items or size + len(encoded) + 1 > max_bytes):
            yield SerializedBatch(batch, FC_PREFIX + b",".join(parts) + FC_SUFFIX)
            batch, parts, size = [], [], ENVELOPE_BYTES
        batch.append(item)
        parts.append(encoded)
        size += len(encoded) + 1  # and the comma
    if batch:
        yield SerializedBatch(batch, FC_PREFIX + b",".join(parts) + FC_SUFFIX)


def split(items: list[dict[str, Any]], *, max_items: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """`split_serialized`, items only."""
    for batch in split_serialized(items, max_items=max_items, max_bytes=max_bytes):
        yield batch.items


def feature_collection(items: list[dict[str, Any]]) -> bytes:
    """The POST body for a batch."""
    return orjson.dumps({"type": "FeatureCollection", "features": items})


REJECTED_ROW_PREFIX = "rejected-"  # rows of input items that were rejected, never sent: rejected-000001
SUPERSEDED_ROW_PREFIX = "superseded-"  # such a row once a later copy of its ids was sent instead (mode upsert)


def batch_id(index: int) -> str:
    """Deterministic batch ids (job id + index make the row key): batch-000001, batch-000002, ..."""
    return f"batch-{index:06d}"


def child_batch_id(parent: str, index: int) -> str:
    """A batch split off a failed one to isolate bad items: batch-000003.1, batch-000003.2."""
    return f"{parent}.{index}"
