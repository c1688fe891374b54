"""Planning a job whose items come as a stream: a search's results (`search_jobs`), a static catalog's walk
(`catalog_jobs`). Each source says how to open its stream and how it speaks of it (`ItemStream`); the rest
is one shape, `plan_stream_as_job`:

1. Read up to the first item (entries refused before it, e.g. an unreachable link, are held: at most
   HELD_BEFORE_FIRST_ITEM of them). A source with no entry at all ends as the source says
   (`ItemStream.without_items`). The source refused or spoiled before any entry: the job is Rejected
   (`LimitExceeded` for a request cut at its deadline); our identity refused by the source itself (the
   target catalog's own search) has read nothing: the job is recorded as such (`planning.fail_unsent`).
2. The collection is the message's, else the first item's, else DEFAULT_COLLECTION; the collection is
   checked in the GeoCatalog (Rejected if it does not exist). Our identity refused (401/403) by that
   check: the stream is read all the same into chunk batches born Failed (`AuthenticationFailed`), never
   sent, so that `retry` reads them back from their chunks (`segments.plan_item_stream`'s `unsent`).
3. The stream is claim-checked into chunk batches as it comes (`segments.plan_item_stream`). A stream
   that breaks after its first item keeps what it gave; the job row says why it stopped (the source's
   code, or `LimitExceeded`), with whatever the source noted about its end (`ItemStream.notes`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import orjson

from shared.errors import AuthenticationError, InvalidInputError, NotFoundError
from shared.ids import check_collection_id
from shared.limits import LimitExceeded
from shared.messages import JobRequest, PlanMessage
from shared.services import Services
from shared.steps.planning import AUTH_FAILED, fail_unsent, reject_job, resolve_sign_collection
from shared.steps.rollup import settle_job
from shared.steps.segments import LIMIT_EXCEEDED, StreamStopped, TooLarge, plan_item_stream
from shared.store import JobRow, brief, mark_planned, note_on_job

log = logging.getLogger(__name__)

HELD_BEFORE_FIRST_ITEM = 1000

Encoded = tuple[int, bytes | TooLarge]  # (position, the item's JSON, or why it is refused unread)


class ItemStream(Protocol):
    """A source of items for `plan_stream_as_job`."""

    noun: str  # how the job row names the reading: "the {noun} stopped after N items: ..."
    item_label: str  # how an item without an id is named: "{item_label} N"
    stopped_code: str  # the job row's code when the stream ended early

    def open(self) -> Iterator[Encoded]:
        """The stream (lazily read).

        Raises:
            InvalidInputError: the source refuses or is spoiled (also when read, before its first entry).
            AuthenticationError: the source refused our identity.
            RetryableError: the source is briefly unavailable.
        """
        ...

    def without_items(self, job: JobRow, *, services: Services, now: datetime) -> JobRow:
        """The verdict of a stream that had no entry at all."""
        ...

    def notes(self) -> list[str]:
        """What the source noted about how the stream ended (read once it has ended)."""
        ...

    def planned(self, job_id: str, *, services: Services, now: datetime) -> None:
        """Called once the stream is planned (e.g. to record where it actually came from)."""
        ...


def plan_stream_as_job(request: JobRequest, job: JobRow, stream: ItemStream, *, services: Services, now: datetime) -> JobRow:
    """Plan `stream` as `job`'s items (see the module's doc) and return the job's row.

    Raises:
        RetryableError: the source, the GeoCatalog or storage is briefly unavailable (redelivered).
    """
    job_id, collection = job.job_id, request.collection or ""
    try:
        entries = stream.open()
        held, first_item = _until_first_item(entries)
    except AuthenticationError as error:  # the source is the GeoCatalog itself: nothing was read
        return fail_unsent(job_id, request, collection, [], f"the GeoCatalog refused our identity: {error}",
                           claimed_by=job.claimed_by, services=services, now=now)
    except InvalidInputError as error:
        return _reject_input(job, error, services=services, now=now)
    if not held:
        return stream.without_items(job, services=services, now=now)
    unsent, sign_collection = "", ""
    try:
        collection = _collection(request, first_item, services.settings.default_collection)
        sign_collection = resolve_sign_collection(request, [first_item]) if request.sign else ""
        services.catalog.get_collection(collection)
    except AuthenticationError as error:
        # The stream is read all the same, into batches born Failed, for `retry`.
        unsent = brief(f"the GeoCatalog refused our identity: {error}; nothing was sent")
        note_on_job(services.status, job_id, code=AUTH_FAILED, note=unsent, now=now)
    except NotFoundError:
        return reject_job(job_id, f"collection {collection!r} does not exist in the GeoCatalog", 0,
                          claimed_by=job.claimed_by, services=services, now=now)
    except InvalidInputError as error:
        return _reject_input(job, error, services=services, now=now)
    plan = PlanMessage(job_id, "", "", collection, mode=request.mode, sign=request.sign or "", sign_collection=sign_collection,
                       batch_size=request.batch_size or 0, repair=",".join(sorted(request.repair)), claimed_by=job.claimed_by)
    code, broke = stream.stopped_code, ""
    try:
        count, next_batch = plan_item_stream(plan, collection, _chained(held, entries), item_label=stream.item_label,
                                             services=services, now=now, unsent=unsent)
    except StreamStopped as stopped:
        count, next_batch = stopped.items, stopped.next_batch
        broke = f"the {stream.noun} stopped after {count} items: {stopped.error}"
        code = LIMIT_EXCEEDED if isinstance(stopped.error, LimitExceeded) else code
    note = "; ".join(filter(None, [broke, *stream.notes()]))
    if unsent:  # the row keeps saying why nothing was sent
        code, note = AUTH_FAILED, "; ".join(filter(None, [unsent, note]))
    if note:
        note_on_job(services.status, job_id, code=code, note=note, now=now)
    stream.planned(job_id, services=services, now=now)
    mark_planned(services.status, job_id, collection=collection, item_count=count, batch_count=next_batch - 1, now=now)
    log.info("planned %s job %s: %d items, %d batches%s", stream.noun, job_id, count, next_batch - 1,
             f" ({note})" if note else "")
    return settle_job(job_id, status=services.status, now=now, read=services.payloads.read) or job


def _until_first_item(entries: Iterator[Encoded]) -> tuple[list[Encoded], dict[str, Any]]:
    """The entries up to and with the first item (at most HELD_BEFORE_FIRST_ITEM refused ones before it),
    and that item ({} when there is none so far)."""
    held: list[Encoded] = []
    for entry in entries:
        held.append(entry)
        if isinstance(entry[1], bytes):
            first = orjson.loads(entry[1])
            return held, first if isinstance(first, dict) else {}
        if len(held) >= HELD_BEFORE_FIRST_ITEM:
            break
    return held, {}


def _chained(held: list[Encoded], entries: Iterator[Encoded]) -> Iterator[Encoded]:
    yield from held
    yield from entries


def _collection(request: JobRequest, first: dict[str, Any], default: str) -> str:
    """The message's collection, else the first item's, else DEFAULT_COLLECTION.

    Raises:
        InvalidInputError: none is given, or the id is malformed.
    """
    named = first.get("collection")
    collection = request.collection or (named if isinstance(named, str) else "") or default
    if not collection:
        raise InvalidInputError("no collection: set 'collection' in the message, in the items, or DEFAULT_COLLECTION")
    return check_collection_id(collection)


def _reject_input(job: JobRow, error: InvalidInputError, *, services: Services, now: datetime) -> JobRow:
    code = LIMIT_EXCEEDED if isinstance(error, LimitExceeded) else "InvalidInput"
    return reject_job(job.job_id, str(error), 0, claimed_by=job.claimed_by, services=services, now=now, code=code)
