"""Planning a stored file of items in segments: the one reader behind uploads and `items_ref`.

A plan message (`PlanMessage`) names a blob version (path + ETag) and where to go on from. The file
is never held in memory:
- plain NDJSON: the planner reads lines from the stored blob and sends batch messages that point at
  byte ranges of it; it stops after `PLAN_SEGMENT_ITEMS` items and hands on to a continuation plan
  message, so no invocation runs long and a huge file spreads over many instances; it hands on sooner
  once the work queue holds `PLAN_AHEAD_BATCHES` messages (`work_queue_full`), so that retried batches
  are not queued behind the whole file; the continuation goes out before the last batches' messages, so
  the queue is not empty while the next segment is being planned;
- gzip and JSON (FeatureCollection or list streamed with ijson): not addressable by byte range, so
  batches are claim-checked as chunk blobs as the stream goes, in one invocation;
- STAC GeoParquet (`shared.inputs.geoparquet`): read row group by row group through ranged reads of the
  blob version, batches claim-checked as chunk blobs as the rows arrive; a segment ends at the end of
  the row group in which it passed `PLAN_SEGMENT_ITEMS` rows and hands on (the continuation's
  `next_line` is the next row number, `offset` its row group). A row that is not an item is one
  Rejected item labelled `row N`; every other row is validated by its submitter like an NDJSON line.
Neither the planner nor a submitter holds more than one batch. Items are validated by the submitter
of their batch (`uploads.check_upload_batch`), which records bad lines with their line numbers.
A line longer than MAX_LINE_BYTES is never read whole: the planner records it at once as a Rejected
item named by its line number (a row of its own, `rejected-line-…`) and goes on with the next line,
outside any batch. A JSON item over MAX_ITEM_BYTES or a stream past MAX_DECOMPRESSED_BYTES ends the
file there: the batches already planned go on, and the job row says which cap stopped it.
The chunk planner (`plan_item_stream`) is also how a search's pages become batches (`shared.steps.search_jobs`).

Plan messages travel on the app's work queue and carry the job row's claim (`claimed_by`): a segment
is planned only while the row still holds it, so a plan message cannot go on with another job.

Our identity refused (401/403) when the first segment checks the collection: nothing is sent, and the
file is planned all the same, every batch row born Failed (`AuthenticationFailed`) with its byte range
of that blob version (or its chunk blob), so that `retry` reads the items back from it; the job row
notes the refusal, which its later segments follow.

What if it dies mid-segment? Batch rows are created only if absent and a batch message is harmless
twice (the submitter checks the row), so the redelivered plan message simply plans the segment again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from shared.batching import ENVELOPE_BYTES, REJECTED_ROW_PREFIX, batch_id
from shared.errors import AuthenticationError, InvalidInputError, NotFoundError
from shared.ids import check_collection_id
from shared.inputs.documents import FileKind, OverlongLine, bounded_lines, file_kind, open_chunks, parse_line, stream_json_items
from shared.inputs.geoparquet import GeoParquetLimits, GeoParquetReader, RangedFile, UnreadableRow
from shared.items import MAX_DEPTH
from shared.limits import LimitExceeded, byte_cap
from shared.messages import BATCH_ID, BatchMessage, PlanMessage
from shared.services import Services
from shared.steps.planning import AUTH_FAILED, reject_job
from shared.steps.rollup import settle_job
from shared.store import BatchRow, BatchState, JobRow, brief, holds, mark_planned, note_on_job, note_progress

log = logging.getLogger(__name__)

# Batch rows written (one table transaction) and messages sent together, at most. Small enough that batches
# flow out steadily while the planner shares its instance with busy submitters (measured: with 100, the last
# 36 batches of a 10k-item upload waited 3 s for their group), large enough that a plan costs few transactions.
ROWS_PER_FLUSH = 16
PROGRESS_EVERY = 10 * ROWS_PER_FLUSH  # batches between two progress updates of the job row while planning
UNREADABLE = (InvalidInputError, gzip.BadGzipFile, zlib.error, EOFError)  # what a broken file raises mid-stream
LIMIT_EXCEEDED = "LimitExceeded"
INVALID_INPUT = "InvalidInput"


@dataclass(frozen=True)
class TooLarge:
    """An item recorded Rejected without a batch: over a cap (`reason` names it: "is longer than MAX_LINE_BYTES
    (16 MiB)"), or not readable as an item at all (a GeoParquet row rustac cannot convert: `code` InvalidInput)."""

    reason: str
    code: str = LIMIT_EXCEEDED
    label: str = ""  # what names it on its row ("" = "<item label> <position>"; a catalog's link names itself)


@dataclass
class _Pending:
    """Batches planned but not yet written: rows and messages go out together every ROWS_PER_FLUSH."""

    rows: list[BatchRow] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    unsent: str = ""  # why nothing is sent: the rows are born Failed (AuthenticationFailed), no message goes out


def kind_of(message: PlanMessage) -> FileKind:
    """The file's format: the message's `format` when set (items_ref), else the blob's name (uploads)."""
    kind = file_kind(f"file.{message.format}" if message.format else message.blob)
    assert kind is not None, "plan messages are sent only for supported formats"
    return kind


def plan_segment(message: PlanMessage, *, services: Services, now: datetime) -> JobRow | None:
    """Plan one segment of a stored file (all of it, for formats not addressable by byte range)."""
    status = services.status
    job = status.get_job(message.job_id)
    if job is None or job.planned or job.state.is_terminal:
        return job
    if not holds(job, message.claimed_by):
        log.error("plan message for job %s does not carry the job's claim; dropped", message.job_id)
        return job
    claimed_by = message.claimed_by
    kind = kind_of(message)
    collection = message.collection
    unsent = job.error_message if job.error_code == AUTH_FAILED else ""
    try:
        if message.next_batch == 1:
            message = _first_segment(message, services, kind)
            collection = message.collection
            unsent = _identity_refused(message, collection, services=services, now=now)
        if kind.parquet:
            done, next_message = _plan_parquet_segment(message, collection, services=services, now=now, unsent=unsent)
        elif kind.seekable:
            done, next_message = _plan_ndjson_segment(message, collection, services=services, now=now, unsent=unsent)
        else:
            done, next_message = _plan_stream(message, collection, services=services, now=now, gzipped=kind.gzipped,
                                              ndjson=kind.ndjson, unsent=unsent)
    except NotFoundError:
        return reject_job(message.job_id, f"collection {collection!r} does not exist in the GeoCatalog", 0,
                          claimed_by=claimed_by, services=services, now=now)
    except UNREADABLE as error:
        code = LIMIT_EXCEEDED if isinstance(error, LimitExceeded) else "InvalidInput"
        return reject_job(message.job_id, f"{message.blob}: {error}", 0, claimed_by=claimed_by, services=services, now=now,
                          code=code)
    if not done:
        if next_message is not None:  # None: the planner sent its continuation itself
            services.queues.send(services.settings.work_queue, next_message.to_json())
        return status.get_job(message.job_id)
    assert next_message is not None
    if next_message.items_before == 0:
        return reject_job(message.job_id, f"{message.blob}: the file has no items", 0, claimed_by=claimed_by,
                          services=services, now=now)
    mark_planned(status, message.job_id, collection=collection, item_count=next_message.items_before,
                 batch_count=next_message.next_batch - 1, now=now)
    return settle_job(message.job_id, status=status, now=now, read=services.payloads.read)


def _identity_refused(message: PlanMessage, collection: str, *, services: Services, now: datetime) -> str:
    """Check that the collection exists; "" when it does, else why our identity was refused (noted on the job).

    Raises:
        NotFoundError: it does not exist.
    """
    try:
        services.catalog.get_collection(collection)
    except AuthenticationError as error:
        reason = f"the GeoCatalog refused our identity: {error}; nothing was sent"
        log.error("job %s: %s", message.job_id, reason)
        note_on_job(services.status, message.job_id, code=AUTH_FAILED, note=reason, now=now)
        return brief(reason)
    return ""


def _born_failed(row: BatchRow, reason: str) -> BatchRow:
    """A planned batch that is never sent: Failed with all its items, its range or chunk kept for `retry`."""
    return replace(row, state=BatchState.FAILED, items_failed=row.item_count, error_code=AUTH_FAILED, error_message=reason)


def _first_segment(message: PlanMessage, services: Services, kind: FileKind) -> PlanMessage:
    """Settle what the first item tells: the collection (when not given) and whose SAS token signs.

    Raises:
        InvalidInputError: neither can be told.
    """
    first: Any = None
    if not message.collection or (message.sign and not message.sign_collection):
        first = _first_item(message, services, kind)
    named = first.get("collection") if isinstance(first, dict) else None
    named = named if isinstance(named, str) and named else ""
    collection = message.collection or named or services.settings.default_collection
    if not collection:
        raise InvalidInputError("no collection: set it in the message (or the upload's folder), in the items, or DEFAULT_COLLECTION")
    sign_collection = message.sign_collection
    if message.sign and not sign_collection:
        if not named:
            raise InvalidInputError("cannot tell which collection's SAS token signs the assets: set 'sign_collection'")
        sign_collection = check_collection_id(named)
    return replace(message, collection=check_collection_id(collection), sign_collection=sign_collection)


def _first_item(message: PlanMessage, services: Services, kind: FileKind) -> Any:
    """The file's first item (parsed), or None."""
    if kind.parquet:
        rows = parquet_reader(message, services).rows()
        return next((row for _, row in rows if not isinstance(row, UnreadableRow)), None)
    for _, item_bytes in _stream_lines(message, services, gzipped=kind.gzipped, ndjson=kind.ndjson):
        if isinstance(item_bytes, bytes):
            return parse_line(item_bytes, 0)
    return None


@dataclass
class _OpenBatch:
    start: int  # byte offset of its first line (plain NDJSON)
    first: int  # line number (NDJSON) or feature number (JSON) of its first item
    lines: list[bytes] = field(default_factory=list)  # kept only for chunked formats
    count: int = 0
    size: int = ENVELOPE_BYTES


def _plan_ndjson_segment(message: PlanMessage, collection: str, *, services: Services, now: datetime,
                         unsent: str = "") -> tuple[bool, PlanMessage | None]:
    """Batches are byte ranges of the stored file; hand on after PLAN_SEGMENT_ITEMS items, or sooner when the
    work queue is full (`work_queue_full`). A planner that hands on sends its continuation itself (None)."""
    settings = services.settings
    chunks = services.payloads.chunks(message.blob, etag=message.etag, offset=message.offset, end=message.end)
    stream = open_chunks(chunks, gzipped=False)
    pending = _Pending(unsent=unsent)
    offset, line_number, number, items = message.offset, message.next_line, message.next_batch, message.items_before
    segment_items = 0
    batch: _OpenBatch | None = None
    for line in bounded_lines(stream, settings.max_line_bytes):
        if isinstance(line, OverlongLine):
            if batch is not None:  # a batch is a byte range: it ends before the long line
                _add_batch(pending, message, collection, number, batch, payload=message.blob, end=offset)
                number, batch = number + 1, None
            reject_input(message, collection, f"line {line_number}", line.reason(settings.max_line_bytes), services=services, now=now)
            items, segment_items = items + 1, segment_items + 1
            offset, line_number = offset + line.size, line_number + 1
            continue
        if line.strip():
            if batch is not None and _is_full(batch, line, message, settings):
                _add_batch(pending, message, collection, number, batch, payload=message.blob, end=offset)
                number, batch = number + 1, None
                if segment_items >= settings.plan_segment_items or _ahead_full(pending, number - 1, services):
                    hand_on = replace(message, offset=offset, next_line=line_number, next_batch=number, items_before=items)
                    _flush(pending, services=services, now=now, job_id=message.job_id, items=items, batches=number - 1,
                           force=True, hand_on=hand_on)
                    return False, None
                _flush(pending, services=services, now=now, job_id=message.job_id, items=items, batches=number - 1)
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
                 gzipped: bool, ndjson: bool, unsent: str = "") -> tuple[bool, PlanMessage]:
    """Batches are chunk blobs written as the (decompressed) stream goes, in one invocation."""
    lines = _stream_lines(message, services, gzipped=gzipped, ndjson=ndjson)
    try:
        items, number = plan_item_stream(message, collection, lines, item_label="line" if ndjson else "feature",
                                         services=services, now=now, unsent=unsent)
    except StreamStopped as stopped:
        # Batches already went out: keep them, and say where the file stopped making sense.
        items, number = stopped.items, stopped.next_batch
        code = LIMIT_EXCEEDED if isinstance(stopped.error, LimitExceeded) else "UnreadableFile"
        note_on_job(services.status, message.job_id, code=code,
                    note=f"the file is unreadable after item {items}: {stopped.error}", now=now)
    return True, replace(message, next_batch=number, items_before=items)


def parquet_reader(message: PlanMessage, services: Services) -> GeoParquetReader:
    """The rows of the message's GeoParquet blob version, read through ranged reads (never whole).

    Raises:
        InvalidInputError: not STAC GeoParquet, over a GeoParquet cap, or the blob changed.
    """
    _, size = services.payloads.properties(message.blob)

    def read_range(start: int, end: int) -> bytes:
        return services.payloads.read(message.blob, start, end, etag=message.etag)

    limits = GeoParquetLimits(max_item_bytes=services.settings.max_item_bytes)
    return GeoParquetReader(RangedFile(read_range, size), limits=limits)


@dataclass
class _RowCursor:
    """Where a segment of GeoParquet rows stopped: the next row to read, and whether the file ended."""

    next_row: int
    ended: bool = False


def _plan_parquet_segment(message: PlanMessage, collection: str, *, services: Services, now: datetime,
                          unsent: str = "") -> tuple[bool, PlanMessage]:
    """Rows become chunk batches as their row groups arrive; hand on at a row-group end past PLAN_SEGMENT_ITEMS rows."""
    reader = parquet_reader(message, services)
    cursor = _RowCursor(message.next_line)
    settings = services.settings
    rows = _encoded_rows(reader, cursor, segment_items=settings.plan_segment_items, max_item_bytes=settings.max_item_bytes,
                         queue_full=lambda: work_queue_full(services),
                         check_every=(message.batch_size or settings.batch_max_items) * ROWS_PER_FLUSH)
    try:
        items, number = plan_item_stream(message, collection, rows, item_label="row", services=services, now=now,
                                         unsent=unsent)
    except StreamStopped as stopped:
        note_on_job(services.status, message.job_id, code="UnreadableFile",
                    note=f"the file is unreadable after row {stopped.items}: {stopped.error}", now=now)
        return True, replace(message, next_batch=stopped.next_batch, items_before=stopped.items)
    position = reader.position_of(cursor.next_row)
    return cursor.ended, replace(message, offset=position.row_group, next_line=cursor.next_row, next_batch=number,
                                 items_before=items)


def _encoded_rows(reader: GeoParquetReader, cursor: _RowCursor, *, segment_items: int, max_item_bytes: int,
                  queue_full: Callable[[], bool], check_every: int) -> Iterator[tuple[int, bytes | TooLarge]]:
    """(row number, the row's item as JSON, or why it is no item) from `cursor.next_row`, up to the end of the
    row group in which `segment_items` rows were passed, or at which the work queue was full (`work_queue_full`,
    asked at a row-group end once `check_every` more rows were taken); `cursor` says where it stopped."""
    cap = byte_cap("MAX_ITEM_BYTES", max_item_bytes)
    last_rows = reader.last_rows
    taken, next_check = 0, check_every
    for number, row in reader.rows(reader.position_of(cursor.next_row)):
        cursor.next_row, taken = number + 1, taken + 1
        if isinstance(row, UnreadableRow):
            yield number, TooLarge(row.error, code=INVALID_INPUT)
        else:
            data = _encoded(row)
            yield number, data if len(data) <= max_item_bytes else TooLarge(f"is larger than {cap}")
        if number in last_rows and taken >= min(segment_items, next_check):
            if taken >= segment_items or queue_full():
                break
            next_check = taken + check_every
    cursor.ended = cursor.next_row > reader.row_count


class StreamStopped(Exception):
    """A stream of items broke (or went past a cap) after some of its batches went out."""

    def __init__(self, error: Exception, items: int, next_batch: int) -> None:
        super().__init__(str(error))
        self.error, self.items, self.next_batch = error, items, next_batch


def plan_item_stream(message: PlanMessage, collection: str, items: Iterator[tuple[int, bytes | TooLarge]], *,
                     item_label: str, services: Services, now: datetime, unsent: str = "") -> tuple[int, int]:
    """Claim-check `items` ((position, JSON bytes or TooLarge)) as chunk batches as they come, holding one
    batch; returns (items read, next batch number). An item TooLarge is recorded Rejected at once.
    `unsent`: why nothing may be sent (the batch rows are born Failed, and no message goes out).

    Raises:
        InvalidInputError (and the other UNREADABLE errors): the stream broke before its first item.
        StreamStopped: it broke after batches went out (they were all written and sent first).
    """
    pending = _Pending(unsent=unsent)
    number, count = message.next_batch, message.items_before
    batch: _OpenBatch | None = None
    try:
        for position, item_bytes in items:
            count += 1
            if isinstance(item_bytes, TooLarge):
                if batch is not None:  # a chunk numbers its items from its first: it holds consecutive ones only
                    _add_chunk(pending, message, collection, number, batch, item_label=item_label, services=services)
                    number, batch = number + 1, None
                reject_input(message, collection, item_bytes.label or f"{item_label} {position}", item_bytes.reason,
                             services=services, now=now, code=item_bytes.code)
                continue
            if batch is not None and _is_full(batch, item_bytes, message, services.settings):
                _add_chunk(pending, message, collection, number, batch, item_label=item_label, services=services)
                number, batch = number + 1, None
                _flush(pending, services=services, now=now, job_id=message.job_id, items=count, batches=number - 1)
            batch = batch or _OpenBatch(start=0, first=position)
            batch.lines.append(item_bytes)
            batch.count, batch.size = batch.count + 1, batch.size + len(item_bytes)
    except UNREADABLE as error:
        if count == message.items_before:
            raise
        stopped: StreamStopped | None = StreamStopped(error, count, number)
    else:
        stopped = None
    if batch is not None:
        _add_chunk(pending, message, collection, number, batch, item_label=item_label, services=services)
        number += 1
    _flush(pending, services=services, now=now, job_id=message.job_id, items=count, batches=number - 1, force=True)
    if stopped is not None:
        stopped.next_batch = number
        raise stopped
    return count, number


def _is_full(batch: _OpenBatch, item_bytes: bytes, message: PlanMessage, settings: Any) -> bool:
    max_items = message.batch_size or settings.batch_max_items
    return batch.count >= max_items or batch.size + len(item_bytes) > settings.batch_max_bytes


def _stream_lines(message: PlanMessage, services: Services, *, gzipped: bool,
                  ndjson: bool) -> Iterator[tuple[int, bytes | TooLarge]]:
    """(line number for NDJSON / feature number for JSON, one item's JSON bytes) for every item, streaming."""
    ranged = ndjson and not gzipped  # plain NDJSON may be a byte range [offset, end) of the blob

    def open_stream():
        chunks = services.payloads.chunks(message.blob, etag=message.etag, offset=message.offset if ranged else 0,
                                          end=message.end if ranged else None)
        return open_chunks(chunks, gzipped=gzipped, max_bytes=services.settings.max_decompressed_bytes)

    settings = services.settings
    if ndjson:
        lines = bounded_lines(open_stream(), settings.max_line_bytes)
        for number, line in enumerate(lines, start=message.next_line if ranged else 1):
            if isinstance(line, OverlongLine):
                yield number, TooLarge(line.reason(settings.max_line_bytes))
            elif line.strip():
                yield number, line.rstrip(b"\r\n")
        return
    for number, item in enumerate(stream_json_items(open_stream, max_item_bytes=settings.max_item_bytes), start=1):
        yield number, _encoded(item)


def _encoded(item: Any) -> bytes:
    """The item's JSON; for one nested too deep for orjson (over 254 levels), a stand-in under the same id
    that validation then rejects for its depth, so that one bad item never sinks the file."""
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        nested: list[Any] = []
        for _ in range(MAX_DEPTH + 1):
            nested = [nested]
        item_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        return orjson.dumps({"type": "Feature", "id": item_id, "properties": {"nested": nested}})


def _add_batch(pending: _Pending, message: PlanMessage, collection: str, number: int, batch: _OpenBatch,
               *, payload: str, end: int | None, item_label: str = "line") -> None:
    row_id = batch_id(number)
    ranged = end is not None
    pending.rows.append(BatchRow(
        job_id=message.job_id, batch_id=row_id, state=BatchState.QUEUED, collection=collection, item_count=batch.count,
        item_ids="", payload_blob=payload, payload_start=batch.start if ranged else None, payload_end=end,
        payload_etag=message.etag if ranged else "",
        first_line=batch.first, item_label=item_label, validated=False,
        mode=message.mode, sign=message.sign, sign_collection=message.sign_collection, repair=message.repair,
    ))
    pending.messages.append(BatchMessage(message.job_id, row_id).to_json())


def _add_chunk(pending: _Pending, message: PlanMessage, collection: str, number: int, batch: _OpenBatch,
               *, item_label: str, services: Services) -> None:
    """Claim-check one batch of a stream as an NDJSON chunk (one item per line)."""
    blob = services.payloads.put(f"{message.job_id}/{batch_id(number)}.chunk.ndjson", b"\n".join(batch.lines) + b"\n")
    _add_batch(pending, message, collection, number, batch, payload=blob, end=None, item_label=item_label)


def reject_input(message: PlanMessage, collection: str, label: str, reason: str, *, services: Services, now: datetime,
                 code: str = LIMIT_EXCEEDED) -> None:
    """Record one input item refused unread (over a cap, unreadable, an unreachable link) as a Rejected row of
    its own, named by `label`."""
    services.status.create_batches([BatchRow(
        job_id=message.job_id, batch_id=rejected_input_row_id(label), state=BatchState.REJECTED, collection=collection,
        item_count=1, item_ids=orjson.dumps([label]).decode(), items_rejected=1,
        rejected_items=orjson.dumps({label: reason}).decode(),
        error_code=code, error_message=f"{label} {reason}"[:1000], mode=message.mode, validated=True,
    )], now)


def rejected_input_row_id(label: str) -> str:
    """`rejected-line-7` for a label that makes a row key; a digest of it for one that does not (a link)."""
    row_id = f"{REJECTED_ROW_PREFIX}{label.replace(' ', '-')}"
    if BATCH_ID.match(row_id):
        return row_id
    return f"{REJECTED_ROW_PREFIX}link-{hashlib.sha256(label.encode()).hexdigest()[:24]}"


def flush_due(pending: int, *, written: int) -> bool:
    """Whether `pending` planned batches go out now, after `written` went out before (1, 1, 2, 4, ... 16)."""
    return pending >= min(ROWS_PER_FLUSH, max(1, written))


def _ahead_full(pending: _Pending, batches: int, services: Services) -> bool:
    """Whether the batches pending would go out now and, with them, the work queue would be full."""
    due = flush_due(len(pending.rows), written=batches - len(pending.rows))
    return due and work_queue_full(services, adding=len(pending.rows))


def work_queue_full(services: Services, *, adding: int = 0) -> bool:
    """Whether the work queue holds PLAN_AHEAD_BATCHES messages or more: then an NDJSON planner hands on.

    Why: a batch retried after a 429/5xx is re-sent to the work queue with a delay, and the queue hands out
    messages by the time they become visible, so the retry waits behind every batch message already queued.
    A planner that queued a whole segment (50,000 items) put every retry of it behind the rest, and a job's
    retries all ended together at its end. Handing on here puts the continuation behind what is queued: the
    next batches are planned when the queue has drained to it, and so behind the retries that came due
    meanwhile. Delayed and in-flight messages count too (one request, no peek), which only makes it hand on sooner.
    """
    held = services.queues.approximate_count(services.settings.work_queue)
    return held + adding >= services.settings.plan_ahead_batches


def _flush(pending: _Pending, *, services: Services, now: datetime, job_id: str, items: int, batches: int,
           force: bool = False, hand_on: PlanMessage | None = None) -> None:
    """Write pending rows, send their messages, and show progress on the job row.

    The first batch goes out alone, then 1, 2, 4 ... up to ROWS_PER_FLUSH at a time: the first POST of a
    big file never waits for the rest of its plan, and a big plan still costs few transactions.
    `hand_on`, the continuation, goes out after the rows and before their messages: when it is taken, those
    batches still wait behind it, so the queue is not empty while the next segment is being planned. (A crash
    between the two: the plan message comes back and sends the segment's messages again, rows being kept.)
    """
    due = bool(pending.rows) and (force or flush_due(len(pending.rows), written=batches - len(pending.rows)))
    if due:
        services.status.create_batches([_born_failed(row, pending.unsent) for row in pending.rows] if pending.unsent
                                       else pending.rows, now)
    if hand_on is not None:
        services.queues.send(services.settings.work_queue, hand_on.to_json())
    if not due:
        return
    if not pending.unsent:
        services.queues.send_many(services.settings.work_queue, pending.messages)
    written_before = batches - len(pending.rows)
    pending.rows.clear()
    pending.messages.clear()
    if written_before and written_before // PROGRESS_EVERY == batches // PROGRESS_EVERY and not force:
        return  # the counters show the items planned so far; the job row itself is updated now and then
    note_progress(services.status, job_id, items=items, batches=batches, now=now)
