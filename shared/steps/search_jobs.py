"""Planning a search job: its results become batches page by page, as they arrive.

A search never collects its results: each page's new items are serialized and claim-checked into
chunk batches by the same chunk planner as a gzip or JSON upload (`segments.plan_item_stream`), so
one worker holds one page and one batch whatever `max_items` is. Each batch is validated by its
submitter (`uploads.check_upload_batch`), which names an item by its id, else `result N`.

The collection is the message's, else the first result's, else DEFAULT_COLLECTION (as for an
upload); results that name another collection are moved to it. A result already seen on an earlier
page is skipped. A result serialized larger than MAX_ITEM_BYTES is recorded Rejected unread.

The search ends at `max_items`, at its last page, or at the first bound (`sources.BoundedSearch`:
SEARCH_MAX_PAGES, SEARCH_MAX_EMPTY_PAGES, SEARCH_MAX_IDLE_SECONDS, SOURCE_MAX_SECONDS); a page the
source spoils (not JSON, `features` not a list, a request past SOURCE_REQUEST_SECONDS) ends it too.
The items already got are ingested, and the job row says why it stopped (error_code `SearchStopped`,
or `LimitExceeded` for a request cut at its deadline). Spoiled before any item: the job is Rejected.

Our identity refused (401/403) by the collection check after the first result was read: the results are
read all the same into chunk batches born Failed (`AuthenticationFailed`), never sent, so that `retry`
reads them back from their chunks (`segments.plan_item_stream`'s `unsent`). A search of the target
catalog itself that is refused has read nothing: the job is recorded as such (`planning.fail_unsent`).

What if it dies mid-search? The redelivered job message runs the search again: batch rows are created
only if absent and a chunk is rewritten under the same name, so a repeatable search plans the same
batches; a batch already validated or sent keeps what it had.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson

from shared.errors import AuthenticationError, InvalidInputError, NotFoundError
from shared.ids import check_collection_id
from shared.inputs.search import BoundedSearch, SearchBounds, SearchPage
from shared.items import item_id_of
from shared.limits import Deadline, LimitExceeded, byte_cap
from shared.messages import JobRequest, PlanMessage, Search
from shared.redact import url_without_query
from shared.services import Services
from shared.steps.planning import AUTH_FAILED, fail_unsent, finish_empty_search, is_catalog_search, reject_job, resolve_sign_collection
from shared.steps.rollup import settle_job
from shared.steps.segments import LIMIT_EXCEEDED, StreamStopped, TooLarge, plan_item_stream
from shared.store import JobRow, SourceKind, SourceRef, brief, mark_planned, note_on_job, record_source

log = logging.getLogger(__name__)

SEARCH_STOPPED = "SearchStopped"


def plan_search(request: JobRequest, job: JobRow, *, services: Services, now: datetime) -> JobRow:
    """Stream a (create or upsert) search job's results into batches and return its row.

    Raises:
        RetryableError: the source, the GeoCatalog or storage is briefly unavailable (redelivered).
    """
    search = request.search
    assert search is not None
    settings = services.settings
    job_id = job.job_id
    if search.max_items > settings.search_max_items:
        return reject_job(job_id, f"search max_items {search.max_items} is more than SEARCH_MAX_ITEMS ({settings.search_max_items})",
                          0, claimed_by=job.claimed_by, services=services, now=now, code=LIMIT_EXCEEDED)
    bounded = BoundedSearch(page_source(search, request, services), SearchBounds.of(settings, search.max_items))
    results = encoded_results(bounded, max_item_bytes=settings.max_item_bytes)
    collection = request.collection or ""
    first, unsent = None, ""
    try:
        first = next(results, None)
        if first is None:
            return _finish_without_items(job_id, bounded, services=services, now=now)
        first_item = orjson.loads(first[1]) if isinstance(first[1], bytes) else {}
        collection = _collection(request, first_item, settings.default_collection)
        sign_collection = resolve_sign_collection(request, [first_item]) if request.sign else ""
        services.catalog.get_collection(collection)
    except AuthenticationError as error:
        reason = f"the GeoCatalog refused our identity: {error}"
        if first is None:  # the search itself was refused: nothing was read
            return fail_unsent(job_id, request, collection, [], reason, claimed_by=job.claimed_by, services=services, now=now)
        # The collection check was refused: the results are read all the same, into batches born Failed, for `retry`.
        unsent = brief(f"{reason}; nothing was sent")
        note_on_job(services.status, job_id, code=AUTH_FAILED, note=unsent, now=now)
    except NotFoundError:
        return reject_job(job_id, f"collection {collection!r} does not exist in the GeoCatalog", 0,
                          claimed_by=job.claimed_by, services=services, now=now)
    except InvalidInputError as error:
        code = LIMIT_EXCEEDED if isinstance(error, LimitExceeded) else "InvalidInput"
        return reject_job(job_id, str(error), 0, claimed_by=job.claimed_by, services=services, now=now, code=code)
    plan = PlanMessage(job_id, "", "", collection, mode=request.mode, sign=request.sign or "", sign_collection=sign_collection,
                       batch_size=request.batch_size or 0, repair=",".join(sorted(request.repair)), claimed_by=job.claimed_by)
    note, code = "", SEARCH_STOPPED
    try:
        count, next_batch = plan_item_stream(plan, collection, itertools.chain([first], results), item_label="result",
                                             services=services, now=now, unsent=unsent)
    except StreamStopped as stopped:
        count, next_batch = stopped.items, stopped.next_batch
        note = f"the search stopped after {count} items: {stopped.error}"
        code = LIMIT_EXCEEDED if isinstance(stopped.error, LimitExceeded) else SEARCH_STOPPED
    note = note or bounded.stopped
    if bounded.repeated:
        note = "; ".join(filter(None, [note, f"{bounded.repeated} results repeated an id already read and were skipped"]))
    if note:
        note_on_job(services.status, job_id, code=code, note=note, now=now)
    _record_source(job_id, search, bounded, request, services=services, now=now)
    mark_planned(services.status, job_id, collection=collection, item_count=count, batch_count=next_batch - 1, now=now)
    log.info("planned search job %s: %d items, %d batches%s", job_id, count, next_batch - 1, f" ({note})" if note else "")
    return settle_job(job_id, status=services.status, now=now, read=services.payloads.read) or job


def page_source(search: Search, request: JobRequest, services: Services):
    """The search's pages: the target catalog's own search (with its token), else a guarded source."""
    if is_catalog_search(search.url, services.catalog):
        def catalog_pages(_deadline: Deadline) -> Iterator[SearchPage]:  # the client's own timeout bounds each page
            params = search.params
            if request.is_delete and request.collection and "collections" not in params:
                params = {**params, "collections": [request.collection]}  # delete only from the job's collection
            for found, has_next in services.catalog.search_pages(params, url=search.url, method=search.method):
                # Copies drop what the service stamped on the originals (it stamps the copies afresh).
                yield SearchPage([{k: v for k, v in item.items() if not k.startswith("_msft:")} if isinstance(item, dict)
                                  else item for item in found], has_next=has_next)
        return catalog_pages

    def source_pages(deadline: Deadline) -> Iterator[SearchPage]:
        return services.sources.search_pages(search.url, search.params, method=search.method, deadline=deadline)
    return source_pages


def ids_found(request: JobRequest, *, job_id: str, services: Services, now: datetime) -> list[str]:
    """The ids a delete search finds (only ids are kept), bounded like any search.

    Raises:
        InvalidInputError: the search is refused or spoiled, or asks more than SEARCH_MAX_ITEMS.
        RetryableError: a transient failure.
    """
    search = request.delete_search
    assert search is not None
    settings = services.settings
    if search.max_items > settings.search_max_items:
        raise LimitExceeded(f"search max_items {search.max_items} is more than SEARCH_MAX_ITEMS ({settings.search_max_items})")
    bounded = BoundedSearch(page_source(search, request, services), SearchBounds.of(settings, search.max_items))
    ids = [item_id_of(item) for item in bounded]
    if bounded.stopped:
        note_on_job(services.status, job_id, code=SEARCH_STOPPED, note=bounded.stopped, now=now)
    _record_source(job_id, search, bounded, request, services=services, now=now)
    return ids


def encoded_results(results: BoundedSearch, *, max_item_bytes: int) -> Iterator[tuple[int, bytes | TooLarge]]:
    """(position, the result's JSON) for each result; TooLarge past `max_item_bytes`."""
    cap = byte_cap("MAX_ITEM_BYTES", max_item_bytes)
    for position, item in enumerate(results, start=1):
        try:
            data = orjson.dumps(item)
        except orjson.JSONEncodeError as error:
            yield position, TooLarge(f"cannot be serialized: {error}")
            continue
        yield position, (data if len(data) <= max_item_bytes else TooLarge(f"is larger than {cap}"))


def _collection(request: JobRequest, first: Any, default: str) -> str:
    """The message's collection, else the first result's, else the default setting.

    Raises:
        InvalidInputError: none is given, or the id is malformed.
    """
    named = first.get("collection") if isinstance(first, dict) else None
    collection = request.collection or (named if isinstance(named, str) else "") or default
    if not collection:
        raise InvalidInputError("no collection: set 'collection' in the message, in the items, or DEFAULT_COLLECTION")
    return check_collection_id(collection)


def _finish_without_items(job_id: str, bounded: BoundedSearch, *, services: Services, now: datetime) -> JobRow:
    return finish_empty_search(job_id, services=services, now=now, stopped=bounded.stopped)


def _record_source(job_id: str, search: Search, bounded: BoundedSearch, request: JobRequest, *,
                   services: Services, now: datetime) -> None:
    """The row shows the hosts actually used, when redirects took the search elsewhere."""
    if bounded.source and search.url and bounded.source != url_without_query(search.url):
        source = f"{'delete ' if request.is_delete else ''}search {bounded.source}"
        record_source(services.status, job_id, source=source, source_ref=SourceRef(SourceKind.SEARCH, url=bounded.source), now=now)
