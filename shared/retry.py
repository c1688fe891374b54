"""The retry planner: a new job `<JOB>-retry-N` with exactly the items of JOB that failed (and, if asked,
were rejected). `geocatalog-ingest retry` is its command line.

The items are read back from the payload blobs of the batches that settled them. A validator's
rejection, never sent, is read from the job's stored source (`JobRow.source_ref`: the blob, and the
version of it, that the job read) by its line, feature number or id. The new job keeps the collection,
mode and signing of the old one.

Idempotent: the retry's message is written to `retries/<retry id>.json` in the payload container (its
items beside it, `.items.json`) before it is sent, and that blob marks the retry as created. While that
retry job is unfinished, planning again returns its id and creates nothing. Once it has finished, the
next retry is `-retry-N+1` with what is still failed (items a finished retry ingested are left out);
when nothing is left, nothing is created.

Items left `Unconfirmed` (their outcome could not be read) are retried only once the catalog has been
asked about them (`catalog`): the ones it holds are not sent again; without an answer none is sent.

The suffix is `-retry-N`, not `.retry-N`: job ids are `[A-Za-z0-9_-]{1,64}` (`shared/ids.py`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from shared.batching import REJECTED_ROW_PREFIX, SUPERSEDED_ROW_PREFIX, feature_collection
from shared.errors import AuthenticationError, InvalidInputError, RetryableError
from shared.ids import suffixed_job_id
from shared.inputs.batch_items import batch_items
from shared.inputs.documents import FileKind, OverlongLine, bounded_lines, file_kind, open_chunks, parse_line, stream_json_items
from shared.inputs.geoparquet import GeoParquetReader, RangedFile
from shared.inputs.upload_items import read_lines, validate_lines
from shared.items import item_id_of
from shared.messages import JobOptions, job_envelope
from shared.services import Storage
from shared.settings import Settings
from shared.store import WHOLE_JOB, BatchRow, ItemOutcome, ItemState, JobRow, SourceKind, SourceRef, batch_outcomes, job_problems

RETRIES = "retries"
CatalogLookup = Callable[[str, list[str]], set[str]]  # (collection, ids) -> the ids the catalog holds
LOOKUP_CHUNK = 500  # ids per catalog search


RETRIED_STATES = (ItemState.FAILED, ItemState.UNCONFIRMED)


@dataclass(frozen=True)
class RetryRequest:
    """Which items of a finished job to retry: the failed and unconfirmed ones (of these codes, when any are
    given), and the rejected ones too with `include_rejected`."""

    job_id: str
    codes: frozenset[str] = frozenset()
    include_rejected: bool = False

    def wants(self, problem: ItemOutcome) -> bool:
        return (problem.state in RETRIED_STATES or self.include_rejected) and (not self.codes or problem.code in self.codes)


@dataclass
class RetryResult:
    """`job_id` is the retry job (new or still running), or "" when there was nothing to retry."""

    job_id: str = ""
    created: bool = False
    items: int = 0
    skipped: list[str] = field(default_factory=list)  # why some problems could not be retried


def retry_job_id(job_id: str, n: int) -> str:
    return suffixed_job_id(job_id, f"-retry-{n}")


def plan_retry(request: RetryRequest, *, storage: Storage, settings: Settings,
               catalog: CatalogLookup | None = None) -> RetryResult:
    """Start (or find) the retry of `request.job_id`'s failed items (and of its unconfirmed ones that
    `catalog` says are not in the catalog).

    Raises:
        InvalidInputError: there is no such job, or it has not finished yet.
    """
    job = storage.status.get_job(request.job_id)
    if job is None:
        raise InvalidInputError(f"no job {request.job_id!r}")
    if not job.state.is_terminal:
        raise InvalidInputError(f"job {job.job_id} is still {job.state}: retry it once it has finished")
    created = _existing_retries(storage, job.job_id)
    if created and (running := _unfinished_retry(storage, settings, job.job_id, created)):
        return RetryResult(running)
    problems = [p for p in job_problems(job, status=storage.status, read=storage.payloads.read) if request.wants(p)]
    skipped = [f"{p.item}: the whole job was {p.state} ({p.code}); resubmit its input" for p in problems if p.item == WHOLE_JOB]
    done = _succeeded_in_retries(storage, job.job_id, created)
    problems = [p for p in problems if p.item != WHOLE_JOB and not (p.item_id and p.item_id in done)]
    problems = _without_landed(problems, catalog, skipped)
    items = _items_of(storage, settings, job, problems, skipped)
    if not items:
        return RetryResult(skipped=skipped)
    new_id = retry_job_id(job.job_id, created + 1)
    message = _retry_message(storage, job, new_id, items)
    storage.payloads.put(f"{RETRIES}/{new_id}.json", message.encode())  # the marker: this retry exists
    storage.queues.send(settings.submit_queue, message)
    return RetryResult(new_id, created=True, items=len(items), skipped=skipped)


def _without_landed(problems: list[ItemOutcome], catalog: CatalogLookup | None, skipped: list[str]) -> list[ItemOutcome]:
    """`problems` less the Unconfirmed items the catalog holds; Unconfirmed items it cannot be asked about are skipped."""
    unconfirmed = [p for p in problems if p.state == ItemState.UNCONFIRMED]
    if not unconfirmed:
        return problems
    try:
        if catalog is None:
            raise InvalidInputError("no GeoCatalog is configured for this command")
        held = _held(catalog, unconfirmed)
    except (InvalidInputError, RetryableError, AuthenticationError) as error:
        skipped.extend(f"{p.item} ({p.batch_id}): Unconfirmed, and the catalog could not be checked ({error}); "
                       "retry again once it answers" for p in unconfirmed)
        return [p for p in problems if p.state != ItemState.UNCONFIRMED]
    skipped.extend(f"{p.item} ({p.batch_id}): Unconfirmed, and the catalog holds it: not sent again"
                   for p in unconfirmed if (p.collection, p.item_id) in held)
    return [p for p in problems if p.state != ItemState.UNCONFIRMED or (p.collection, p.item_id) not in held]


def _held(catalog: CatalogLookup, outcomes: Iterable[ItemOutcome]) -> set[tuple[str, str]]:
    """(collection, id) of the outcomes' items that the catalog holds, asked LOOKUP_CHUNK ids at a time."""
    by_collection: dict[str, list[str]] = {}
    for outcome in outcomes:
        if outcome.item_id:
            by_collection.setdefault(outcome.collection, []).append(outcome.item_id)
    held: set[tuple[str, str]] = set()
    for collection, ids in by_collection.items():
        for start in range(0, len(ids), LOOKUP_CHUNK):
            held |= {(collection, i) for i in catalog(collection, ids[start : start + LOOKUP_CHUNK])}
    return held


def catalog_lookup(search_ids: Callable[[str, list[str]], Iterable[dict[str, Any]]]) -> CatalogLookup:
    """A `CatalogLookup` over a client's `search_ids` (`GeoCatalogClient.search_ids`)."""
    return lambda collection, ids: {str(item.get("id")) for item in search_ids(collection, ids)}


def _unfinished_retry(storage: Storage, settings: Settings, job_id: str, created: int) -> str:
    """The latest retry's id while it has not finished, else ""; its message is sent again when the
    marker was written but the job never appeared (the message may be lost: sending twice is harmless)."""
    latest = retry_job_id(job_id, created)
    row = storage.status.get_job(latest)
    if row is None:
        storage.queues.send(settings.submit_queue, storage.payloads.read(_marker(storage, latest)).decode())
    return latest if row is None or not row.state.is_terminal else ""


def _retry_message(storage: Storage, job: JobRow, new_id: str, items: list[dict]) -> str:
    """The retry's job message: the old job's collection and the mode, action and signing its batches had."""
    unsent = (REJECTED_ROW_PREFIX, SUPERSEDED_ROW_PREFIX)  # rows of input never sent carry no mode or signing
    template = next((b for b in storage.status.batches(job.job_id) if not b.batch_id.startswith(unsent)), BatchRow(job.job_id, ""))
    options = JobOptions(collection=job.collection, mode=template.mode, sign=template.sign, sign_collection=template.sign_collection)
    body = job_envelope(new_id, options)
    if template.action == "delete":
        body["delete"] = {"ids": [item_id_of(i) for i in items]}
    else:
        body["items_ref"] = {"blob": storage.payloads.put(f"{RETRIES}/{new_id}.items.json", feature_collection(items))}
    return orjson.dumps(body).decode()


def _marker(storage: Storage, retry_id: str) -> str:
    return f"{storage.payloads.container}/{RETRIES}/{retry_id}.json"


def _existing_retries(storage: Storage, job_id: str) -> int:
    """How many retries of `job_id` were created (their marker blobs exist: -retry-1, -retry-2, ...)."""
    n = 0
    while True:
        try:
            storage.payloads.properties(_marker(storage, retry_job_id(job_id, n + 1)))
        except InvalidInputError:
            return n
        n += 1


def _succeeded_in_retries(storage: Storage, job_id: str, count: int) -> set[str]:
    done: set[str] = set()
    for n in range(1, count + 1):
        for row in storage.status.batches(retry_job_id(job_id, n)):
            done |= {o.item_id for o in batch_outcomes(row, read=storage.payloads.read) if o.state == ItemState.SUCCEEDED}
    return done


def _items_of(storage: Storage, settings: Settings, job: JobRow, problems: list[ItemOutcome], skipped: list[str]) -> list[dict]:
    """The items themselves: from the payload of the batch that settled each, else from the job's stored source."""
    found: list[tuple[ItemOutcome, dict | None]] = []
    by_batch: dict[str, list[ItemOutcome]] = {}
    for problem in problems:
        by_batch.setdefault(problem.batch_id, []).append(problem)
    for batch_id, outcomes in by_batch.items():
        row = storage.status.get_batch(job.job_id, batch_id)
        if row is None:
            continue
        try:
            if not row.validated and row.payload_blob:  # never read (refused before sending): every item of its range
                found.extend((outcomes[0], item) for item in validate_lines(row, read_lines(row, storage.payloads)).valid)
                continue
            sent = {item_id_of(i): i for i in batch_items(storage, row)} if (row.payload_blob or row.action == "delete") else {}
        except InvalidInputError as error:  # a byte range of an upload overwritten or deleted since: those items are gone
            skipped.extend(f"{outcome.item} ({batch_id}): {error}" for outcome in outcomes)
            continue
        found.extend((outcome, sent.get(outcome.item)) for outcome in outcomes)
    unsent = {outcome.item for outcome, item in found if item is None}
    from_source = source_items(storage, settings, job, unsent) if unsent else {}
    items: list[dict] = []
    for outcome, item in found:
        item = item if item is not None else from_source.get(outcome.item)
        if item is None:
            skipped.append(f"{outcome.item} ({outcome.batch_id}): not stored (an inline job's rejected input); "
                           "resubmit it from your file")
            continue
        items.append(item)
    return items


def source_items(storage: Storage, settings: Settings, job: JobRow, keys: set[str]) -> dict[str, dict]:
    """The items named by `keys` (a label: `line N`, `feature N`, `#P`; else an item id) in what the job read
    from a stored file, numbered as its planner numbered them. Streamed within the read caps; names not
    found, a job with nothing stored (inline items, a search) or a file gone or overwritten since: left out."""
    ref = job.source_reference or source_ref_from_display_text(job.source)
    kind = _document_kind(ref) if ref is not None else None
    if ref is None or not ref.blob or kind is None:
        return {}
    by_label: dict[str, dict] = {}
    by_id: dict[str, dict] = {}
    ids = {key.split("#", 1)[0] for key in keys}
    try:
        for labels, item in _labelled_items(storage, settings, ref, kind):
            if not isinstance(item, dict):
                continue
            for label in labels:
                if label in keys:
                    by_label.setdefault(label, item)
            if isinstance(item.get("id"), str) and item["id"] in ids:
                by_id.setdefault(item["id"], item)
    except (InvalidInputError, OSError, EOFError, zlib.error):  # gone, changed, over a cap, or not what its name says
        pass
    found = {key: by_label.get(key) or by_id.get(key.split("#", 1)[0]) for key in keys}
    return {key: item for key, item in found.items() if item is not None}


def _labelled_items(storage: Storage, settings: Settings, ref: SourceRef, kind: FileKind) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(labels, item) of the stored file: `line N` for NDJSON, `row N` for GeoParquet, `feature N` and `#N-1` for
    a JSON document."""
    ranged = kind.seekable
    etag = ref.etag or storage.payloads.properties(ref.blob)[0]
    if kind.parquet:
        size = storage.payloads.properties(ref.blob)[1]
        reader = GeoParquetReader(RangedFile(lambda start, end: storage.payloads.read(ref.blob, start, end, etag=etag), size))
        for number, row in reader.rows():
            yield (f"row {number}",), row
        return

    def open_stream() -> IO[bytes]:
        chunks = storage.payloads.chunks(ref.blob, etag=etag, offset=(ref.start or 0) if ranged else 0,
                                         end=ref.end if ranged else None)
        return open_chunks(chunks, gzipped=kind.gzipped, max_bytes=settings.max_decompressed_bytes)

    if kind.ndjson:
        for number, line in enumerate(bounded_lines(open_stream(), settings.max_line_bytes), start=1):
            if not isinstance(line, OverlongLine) and line.strip():
                yield (f"line {number}",), parse_line(line, number)
        return
    for number, item in enumerate(stream_json_items(open_stream, max_item_bytes=settings.max_item_bytes), start=1):
        yield (f"feature {number}", f"#{number - 1}"), item


def _document_kind(ref: SourceRef) -> FileKind | None:
    """The format the job's planner read the file as: recorded, else from the name (a byte range: plain NDJSON)."""
    if ref.format:
        return file_kind(f"file.{ref.format}")
    if ref.start is not None:
        return FileKind(ndjson=True, gzipped=False)
    return file_kind(ref.blob)


def source_ref_from_display_text(source: str) -> SourceRef | None:
    """A row written before rows kept `source_ref`: its reference, read back from the text `source` shows
    (`container/path`, `container/path[start:end]`, or an upload's `container/path@etag`); None for
    anything else (inline, a URL, a search)."""
    ref, _, etag = source.partition("@")
    path, bracket, span = ref.partition("[")
    if "/" not in path or "://" in path or " " in path:
        return None
    start, end = None, None
    if bracket and span.endswith("]"):
        first, _, last = span[:-1].partition(":")
        start = int(first) if first.isdigit() else 0
        end = int(last) if last.isdigit() else None
    return SourceRef(SourceKind.BLOB, blob=path, etag=etag if "/" not in etag else "", start=start, end=end)
