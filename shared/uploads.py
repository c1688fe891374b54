"""Uploads: a BlobCreated event starts a job, and the file is fanned out into batches as a stream.

Production trigger: Event Grid delivers the storage account's `Microsoft.Storage.BlobCreated` events
for the drop container to the `DROP_EVENTS_QUEUE` storage queue, and a queue-triggered function
reads them (see README "Uploads"). Not the polling blob trigger (unsupported on Flex Consumption,
may miss or replay blobs) and not the Event Grid-sourced blob trigger either: in Python that binding
hands the function the whole blob, where this planner must stream it.

One job per blob version: the job id is derived from the blob's path and ETag, so a redelivered or
duplicated event finds its job, and a new upload (new ETag) makes a new one.

Streaming fan-out:
- plain NDJSON: the planner reads lines from the stored blob and sends batch messages that point at
  byte ranges of it; it stops after `PLAN_SEGMENT_ITEMS` items and hands on to a continuation plan
  message, so no invocation runs long and a huge file spreads over many instances;
- gzip and JSON (FeatureCollection streamed with ijson): not addressable by byte range, so batches
  are claim-checked as chunk blobs as the stream goes, in one invocation.
Neither the planner nor a submitter holds more than one batch. Items are validated by the submitter
of their batch (`prepare_upload_batch`), which records bad lines with their line numbers.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from shared.batching import ENVELOPE_BYTES, batch_id, feature_collection
from shared.blob_events import BlobCreated
from shared.documents import file_kind, ndjson_items, open_chunks, parse_line, stream_json_items
from shared.errors import InvalidInputError, NotFoundError
from shared.fanout import MAX_INLINE_IDS_CHARS, ids_field
from shared.geocatalog import COLLECTION_ID, check_collection_id
from shared.item_index import record_batch
from shared.items import item_id_of, validated
from shared.messages import BatchMessage, PlanMessage
from shared.planning import reject_job, rejection_key
from shared.rollup import settle_job
from shared.services import Services
from shared.status import BatchRow, BatchState, JobRow, JobState

log = logging.getLogger(__name__)

ROWS_PER_FLUSH = 100  # batch rows written (one table transaction) and messages sent together
UNREADABLE = (InvalidInputError, gzip.BadGzipFile, zlib.error, EOFError)  # what a broken file raises mid-stream


def upload_job_id(blob: BlobCreated) -> str:
    """One job per blob version."""
    return "upload-" + hashlib.sha256(f"{blob.ref}@{blob.etag.strip(chr(34))}".encode()).hexdigest()[:32]


def collection_from_path(path: str) -> str:
    """`<collection>/<file>` -> collection (when it is a valid collection id), else ""."""
    first, sep, _ = path.partition("/")
    return first if sep and COLLECTION_ID.match(first) else ""


def start_upload_job(blob: BlobCreated, *, services: Services, now: datetime) -> JobRow | None:
    """Create the job for an uploaded blob version and send its first plan message (idempotent)."""
    settings = services.settings
    if blob.container != settings.drop_container:
        log.info("ignoring BlobCreated for %s: not the drop container", blob.container)
        return None
    job_id = upload_job_id(blob)
    job = services.status.create_job(JobRow(job_id=job_id, source=f"{blob.ref}@{blob.etag}"), now)
    if job.planned or job.state.is_terminal:
        return job  # a duplicate event
    kind = file_kind(blob.path)
    if kind is None:
        name = blob.path.rsplit("/", 1)[-1]
        reason = f"unsupported file type {name!r}: use .json, .ndjson or .jsonl (optionally .gz)"
        return reject_job(job_id, reason, 0, services=services, now=now)
    size = blob.size if blob.size is not None else services.payloads.properties(blob.ref)[1]
    if size > settings.max_upload_bytes:
        reason = f"file of {size} bytes is larger than MAX_UPLOAD_BYTES ({settings.max_upload_bytes})"
        return reject_job(job_id, reason, 0, services=services, now=now)
    plan = PlanMessage(job_id, blob.ref, blob.etag, collection_from_path(blob.path))
    services.queues.send(settings.submit_queue, plan.to_json())
    return job


@dataclass
class _Pending:
    """Batches planned but not yet written: rows and messages go out together every ROWS_PER_FLUSH."""

    rows: list[BatchRow] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def plan_upload_segment(message: PlanMessage, *, services: Services, now: datetime) -> JobRow | None:
    """Plan one segment of an uploaded file (all of it, for formats not addressable by byte range)."""
    status = services.status
    job = status.get_job(message.job_id)
    if job is None or job.planned or job.state.is_terminal:
        return job
    kind = file_kind(message.blob)
    assert kind is not None
    try:
        collection = message.collection or _collection_of_first_item(message, services, kind.ndjson, kind.gzipped)
        collection = check_collection_id(collection)
        if message.next_batch == 1:
            services.catalog.get_collection(collection)
        if kind.seekable:
            done, next_message = _plan_ndjson_segment(message, collection, services=services, now=now)
        else:
            done, next_message = _plan_stream(message, collection, services=services, now=now, gzipped=kind.gzipped, ndjson=kind.ndjson)
    except NotFoundError:
        return reject_job(message.job_id, f"collection {collection!r} does not exist in the GeoCatalog", 0, services=services, now=now)
    except UNREADABLE as error:
        return reject_job(message.job_id, f"{message.blob}: {error}", 0, services=services, now=now)
    if not done:
        services.queues.send(services.settings.submit_queue, next_message.to_json())
        return status.get_job(message.job_id)
    if next_message.items_before == 0:
        return reject_job(message.job_id, f"{message.blob}: the file has no items", 0, services=services, now=now)

    def mark_planned(row: JobRow) -> JobRow:
        return replace(row, planned=True, state=JobState.RUNNING, collection=collection,
                       item_count=next_message.items_before, batch_count=next_message.next_batch - 1)

    status.update_job(message.job_id, mark_planned, now)
    return settle_job(message.job_id, status=status, now=now)


@dataclass
class _OpenBatch:
    start: int  # byte offset of its first line (plain NDJSON)
    first: int  # line number (NDJSON) or feature number (JSON) of its first item
    lines: list[bytes] = field(default_factory=list)  # kept only for chunked formats
    count: int = 0
    size: int = ENVELOPE_BYTES


def _plan_ndjson_segment(message: PlanMessage, collection: str, *, services: Services, now: datetime) -> tuple[bool, PlanMessage]:
    """Batches are byte ranges of the stored file; hand on after PLAN_SEGMENT_ITEMS items."""
    settings = services.settings
    stream = open_chunks(services.payloads.chunks(message.blob, etag=message.etag, offset=message.offset), gzipped=False)
    pending = _Pending()
    offset, line_number, number, items = message.offset, message.next_line, message.next_batch, message.items_before
    segment_items = 0
    batch: _OpenBatch | None = None
    for line in iter(stream.readline, b""):
        if line.strip():
            if batch is not None and _is_full(batch, line, settings):
                _add_batch(pending, message, collection, number, batch, payload=message.blob, end=offset)
                number, batch = number + 1, None
                _flush(pending, services=services, now=now, job_id=message.job_id, items=items, batches=number - 1,
                       force=segment_items >= settings.plan_segment_items)
                if segment_items >= settings.plan_segment_items:
                    return False, replace(message, offset=offset, next_line=line_number, next_batch=number, items_before=items)
            batch = batch or _OpenBatch(start=offset, first=line_number)
            batch.count, batch.size = batch.count + 1, batch.size + len(line)
            items, segment_items = items + 1, segment_items + 1
        offset, line_number = offset + len(line), line_number + 1
    if batch is not None:
        _add_batch(pending, message, collection, number, batch, payload=message.blob, end=offset)
        number += 1
    _flush(pending, services=services, now=now, job_id=message.job_id, items=items, batches=number - 1, force=True)
    return True, replace(message, offset=offset, next_line=line_number, next_batch=number, items_before=items)


def _plan_stream(message: PlanMessage, collection: str, *, services: Services, now: datetime,
                 gzipped: bool, ndjson: bool) -> tuple[bool, PlanMessage]:
    """Batches are chunk blobs written as the (decompressed) stream goes, in one invocation."""
    settings = services.settings
    pending = _Pending()
    number, items = 1, 0
    batch: _OpenBatch | None = None
    try:
        for position, item_bytes in _stream_lines(message, services, gzipped=gzipped, ndjson=ndjson):
            if batch is not None and _is_full(batch, item_bytes, settings):
                _add_chunk(pending, message, collection, number, batch, ndjson=ndjson, services=services)
                number, batch = number + 1, None
                _flush(pending, services=services, now=now, job_id=message.job_id, items=items, batches=number - 1)
            batch = batch or _OpenBatch(start=0, first=position)
            batch.lines.append(item_bytes)
            batch.count, batch.size, items = batch.count + 1, batch.size + len(item_bytes), items + 1
    except UNREADABLE as error:
        if items == 0:
            raise
        # Batches already went out: keep them, and say where the file stopped making sense.
        _note_on_job(message.job_id, f"the file is unreadable after item {items}: {error}", services=services, now=now)
    if batch is not None:
        _add_chunk(pending, message, collection, number, batch, ndjson=ndjson, services=services)
        number += 1
    _flush(pending, services=services, now=now, job_id=message.job_id, items=items, batches=number - 1, force=True)
    return True, replace(message, next_batch=number, items_before=items)


def _is_full(batch: _OpenBatch, item_bytes: bytes, settings: Any) -> bool:
    return batch.count >= settings.batch_max_items or batch.size + len(item_bytes) > settings.batch_max_bytes


def _stream_lines(message: PlanMessage, services: Services, *, gzipped: bool, ndjson: bool) -> Iterator[tuple[int, bytes]]:
    """(line number for NDJSON / feature number for JSON, one item's JSON bytes) for every item, streaming."""

    def open_stream():
        return open_chunks(services.payloads.chunks(message.blob, etag=message.etag), gzipped=gzipped)

    if ndjson:
        for number, line in enumerate(open_stream(), start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")
        return
    for number, item in enumerate(stream_json_items(open_stream), start=1):
        yield number, orjson.dumps(item)


def _collection_of_first_item(message: PlanMessage, services: Services, ndjson: bool, gzipped: bool) -> str:
    """No collection in the path: take the first item's (later items must agree), else the default."""
    for _, item_bytes in _stream_lines(message, services, gzipped=gzipped, ndjson=ndjson):
        item = parse_line(item_bytes, 0)
        named = item.get("collection") if isinstance(item, dict) else None
        if isinstance(named, str) and named:
            return named
        break
    if services.settings.default_collection:
        return services.settings.default_collection
    raise InvalidInputError("no collection: upload to <container>/<collection>/<file>, set it in the items, or set DEFAULT_COLLECTION")


def _add_batch(pending: _Pending, message: PlanMessage, collection: str, number: int, batch: _OpenBatch,
               *, payload: str, end: int | None, item_label: str = "line") -> None:
    row_id = batch_id(number)
    ranged = end is not None
    pending.rows.append(BatchRow(
        job_id=message.job_id, batch_id=row_id, state=BatchState.QUEUED, collection=collection, item_count=batch.count,
        item_ids="", payload_blob=payload, payload_start=batch.start if ranged else None, payload_end=end,
        first_line=batch.first, item_label=item_label, validated=False,
    ))
    pending.messages.append(BatchMessage(message.job_id, row_id, collection, payload_blob=payload).to_json())


def _add_chunk(pending: _Pending, message: PlanMessage, collection: str, number: int, batch: _OpenBatch,
               *, ndjson: bool, services: Services) -> None:
    """Claim-check one batch of a stream as an NDJSON chunk (one item per line)."""
    blob = services.payloads.put(f"{message.job_id}/{batch_id(number)}.chunk.ndjson", b"\n".join(batch.lines) + b"\n")
    _add_batch(pending, message, collection, number, batch, payload=blob, end=None, item_label="line" if ndjson else "feature")


def _flush(pending: _Pending, *, services: Services, now: datetime, job_id: str, items: int, batches: int,
           force: bool = False) -> None:
    """Write pending rows, send their messages, and show progress on the job row."""
    if not pending.rows or (len(pending.rows) < ROWS_PER_FLUSH and not force):
        return
    services.status.create_batches(pending.rows, now)
    for body in pending.messages:
        services.queues.send(services.settings.submit_queue, body)
    pending.rows.clear()
    pending.messages.clear()

    def progress(row: JobRow) -> JobRow | None:
        if row.planned or row.state.is_terminal:
            return None
        return replace(row, state=JobState.RUNNING, item_count=max(row.item_count, items), batch_count=max(row.batch_count, batches))

    services.status.update_job(job_id, progress, now)


def _note_on_job(job_id: str, note: str, *, services: Services, now: datetime) -> None:
    services.status.update_job(job_id, lambda row: replace(row, error_code="UnreadableFile", error_message=note[:2000]), now)


def prepare_upload_batch(row: BatchRow, *, services: Services, now: datetime) -> BatchRow | None:
    """Validate an upload batch's items and claim-check the valid ones, like planning does for messages.

    Bad lines are recorded with their line numbers; a batch with no valid item ends Rejected.
    """
    data = services.payloads.read(row.payload_blob, row.payload_start, row.payload_end)
    if row.payload_start is None and row.item_label == "line":
        lines = [(row.first_line + n, item) for n, (_, item) in enumerate(ndjson_items(data))]  # a chunk: one item per line
    else:
        lines = ndjson_items(data, first_line=row.first_line or 1)
    labels = [f"{row.item_label} {number}" for number, _ in lines]
    raw = [item for _, item in lines]
    valid, rejected = validated(raw, row.collection, labels=labels)
    reasons = {rejection_key(r): r.reason for r in rejected}
    name = f"{row.job_id}/{row.batch_id}.json"
    payload = services.payloads.put(name, feature_collection(valid)) if valid else ""
    ids, ids_blob = ids_field(services, row.job_id, row.batch_id, [item_id_of(i) for i in valid])
    rejected_text, rejected_blob = orjson.dumps(reasons).decode(), ""
    if len(rejected_text) > MAX_INLINE_IDS_CHARS:
        rejected_text, rejected_blob = "", services.payloads.put(f"{name}.rejected.json", rejected_text.encode())

    def checked(current: BatchRow) -> BatchRow | None:
        if current.validated or current.state != BatchState.QUEUED:
            return None
        common = {"validated": True, "item_ids": ids, "item_ids_blob": ids_blob, "item_count": len(valid),
                  "items_rejected": len(rejected), "rejected_items": rejected_text, "rejected_items_blob": rejected_blob}
        if not valid:
            return replace(current, state=BatchState.REJECTED, finished=now, error_code="InvalidItem",
                           error_message=f"all {len(rejected)} item(s) failed validation", payload_blob="", **common)
        return replace(current, payload_blob=payload, payload_start=None, payload_end=None, **common)

    updated = services.status.update_batch(row.job_id, row.batch_id, checked, now)
    if updated is not None and updated.state == BatchState.REJECTED:
        record_batch(updated, services=services)
        settle_job(row.job_id, status=services.status, now=now)
    return updated or services.status.get_batch(row.job_id, row.batch_id)

