"""An upload batch's items: its lines of the uploaded file, validated.

An upload batch stands for lines of the file: a byte range of one version of a plain NDJSON upload
(`payload_blob` with `payload_start`, `payload_end` and `payload_etag`), or a chunk blob the planner
cut from a gzip or JSON upload. Its submitter reads and validates them once
(`uploads.check_upload_batch`) and POSTs the valid items from memory.

A byte-range batch keeps no copy of them: what needs its items again (a retry after a 429 or 5xx,
signing, isolating a failed operation, the CLI's `retry`) reads the same range of the same version
and validates it again. That gives the same items: validation is a pure function of those bytes and
the row's collection, mode and repairs. Once the upload is overwritten or deleted, that version is
gone and reading it raises `BlobChangedError` (an `InvalidInputError`), which the callers turn into
a clear verdict. Copying each batch into a payload blob instead would cost a write of the whole batch
(about 290 KB for 100 NAIP items) on every batch, for the rare one that is sent twice.
"""

from __future__ import annotations

from typing import Any

from shared.inputs.documents import ndjson_items
from shared.items import Validation, valid_id_of, validate_job
from shared.store import BatchRow, PayloadStore

NAMED_BY_ID = ("feature", "result", "item")  # JSON features, search results and catalog items: their id names them


def is_byte_range(row: BatchRow) -> bool:
    """Whether the row's items are a byte range of an upload (and not a payload blob of their own)."""
    return row.payload_start is not None


def read_lines(row: BatchRow, payloads: PayloadStore) -> bytes:
    """The batch's lines, as stored: its range of the upload version it was planned from, or its chunk blob.

    Raises:
        BlobChangedError: the upload is no longer that version.
        InvalidInputError: the blob does not exist.
    """
    return payloads.read(row.payload_blob, row.payload_start, row.payload_end, etag=row.payload_etag)


def validate_lines(row: BatchRow, data: bytes) -> Validation:
    """The batch's lines, parsed and validated as the row says (collection, mode, repairs).

    NDJSON items are named by their line number and GeoParquet rows by their row number (`row N`); items of a
    JSON document, a search or a static catalog by their id (as in a message), else by their position
    (`result N`, `item N`).
    """
    if not is_byte_range(row) and row.item_label == "line":
        lines = [(row.first_line + n, item) for n, (_, item) in enumerate(ndjson_items(data))]  # a chunk: one item per line
    else:
        lines = ndjson_items(data, first_line=row.first_line or 1)
    labels = [valid_id_of(item) if row.item_label in NAMED_BY_ID and valid_id_of(item) else f"{row.item_label} {number}"
              for number, item in lines]
    return validate_job([item for _, item in lines], row.collection, labels=labels, mode=row.mode,
                        repair=frozenset(filter(None, row.repair.split(","))))


def range_items(row: BatchRow, payloads: PayloadStore) -> list[dict[str, Any]]:
    """The items a validated byte-range batch sends, read and validated again (see the module docstring).

    Raises:
        BlobChangedError: the upload is no longer the version the batch was planned from.
        InvalidInputError: the upload does not exist any more.
    """
    return validate_lines(row, read_lines(row, payloads)).valid
