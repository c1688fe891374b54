"""The items a batch row stands for, read back from where its row says they are.

A sent batch's items are its payload blob (a FeatureCollection), or its byte range of an upload read
and validated again (`shared.inputs.upload_items`); a delete batch's are its item ids. Used by the
steps that send or isolate a batch and by the retry planner (`shared.retry`).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from shared.inputs.upload_items import is_byte_range, range_items
from shared.store import BatchRow, PayloadStore, read_spilled_json


class HoldsPayloads(Protocol):
    """Anything with the payload store: the workers' services or the CLI's storage."""

    @property
    def payloads(self) -> PayloadStore: ...


def batch_items(services: HoldsPayloads, row: BatchRow) -> list[dict[str, Any]]:
    """The items a batch row stands for, from its payload blob, or read and validated again from its byte
    range of an upload; delete batches: `{"id": ...}` stubs.

    Raises:
        InvalidInputError: the blob is gone (`BlobChangedError`: the upload is no longer the batch's version).
    """
    if row.action == "delete":
        return [{"id": item_id} for item_id in row_item_ids(services, row)]
    if is_byte_range(row):
        return range_items(row, services.payloads)
    return orjson.loads(services.payloads.read(row.payload_blob))["features"]


def row_item_ids(services: HoldsPayloads, row: BatchRow) -> list[str]:
    """The item ids a batch row stands for (inline, or from its blob)."""
    return read_spilled_json(row, "item_ids", services.payloads.read, [])
