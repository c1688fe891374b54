"""Planning a search job: its results become batches page by page, as they arrive.

A search never collects its results: each page's new items are serialized and claim-checked into
chunk batches by the same chunk planner as a gzip or JSON upload (`segments.plan_item_stream`), so
one worker holds one page and one batch whatever `max_items` is. Each batch is validated by its
submitter (`uploads.check_upload_batch`), which names an item by its id, else `result N`.

The results are planned as a streamed job (`streamed_jobs.plan_stream_as_job`: the collection, the
collection check, a 401/403 while planning, a stream that breaks): the collection is the message's, else
the first result's, else DEFAULT_COLLECTION (as for an upload); results that name another collection are
moved to it. A result already seen on an earlier
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

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import orjson

from shared.inputs.search import BoundedSearch, SearchBounds, SearchPage
from shared.items import item_id_of
from shared.limits import Deadline, LimitExceeded, byte_cap
from shared.messages import JobRequest, Search
from shared.redact import url_without_query
from shared.services import Services
from shared.steps.planning import finish_empty_search, is_catalog_search, reject_job
from shared.steps.segments import LIMIT_EXCEEDED, TooLarge
from shared.steps.streamed_jobs import plan_stream_as_job
from shared.store import JobRow, SourceKind, SourceRef, note_on_job, record_source

SEARCH_STOPPED = "SearchStopped"


def plan_search(request: JobRequest, job: JobRow, *, services: Services, now: datetime) -> JobRow:
    """Stream a (create or upsert) search job's results into batches and return its row.

    Raises:
        RetryableError: the source, the GeoCatalog or storage is briefly unavailable (redelivered).
    """
    search = request.search
    assert search is not None
    settings = services.settings
    if search.max_items > settings.search_max_items:
        return reject_job(job.job_id, f"search max_items {search.max_items} is more than SEARCH_MAX_ITEMS ({settings.search_max_items})",
                          0, claimed_by=job.claimed_by, services=services, now=now, code=LIMIT_EXCEEDED)
    bounded = BoundedSearch(page_source(search, request, services), SearchBounds.of(settings, search.max_items))
    return plan_stream_as_job(request, job, _SearchResults(search, request, bounded, settings.max_item_bytes),
                              services=services, now=now)


@dataclass
class _SearchResults:
    """A search's results as a job's stream (`streamed_jobs.ItemStream`)."""

    search: Search
    request: JobRequest
    bounded: BoundedSearch
    max_item_bytes: int
    noun: str = "search"
    item_label: str = "result"
    stopped_code: str = SEARCH_STOPPED

    def open(self) -> Iterator[tuple[int, bytes | TooLarge]]:
        return encoded_results(self.bounded, max_item_bytes=self.max_item_bytes)

    def without_items(self, job: JobRow, *, services: Services, now: datetime) -> JobRow:
        return finish_empty_search(job.job_id, services=services, now=now, stopped=self.bounded.stopped)

    def notes(self) -> list[str]:
        repeated = self.bounded.repeated
        return [self.bounded.stopped, f"{repeated} results repeated an id already read and were skipped" if repeated else ""]

    def planned(self, job_id: str, *, services: Services, now: datetime) -> None:
        _record_source(job_id, self.search, self.bounded, self.request, services=services, now=now)


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


def _record_source(job_id: str, search: Search, bounded: BoundedSearch, request: JobRequest, *,
                   services: Services, now: datetime) -> None:
    """The row shows the hosts actually used, when redirects took the search elsewhere."""
    if bounded.source and search.url and bounded.source != url_without_query(search.url):
        source = f"{'delete ' if request.is_delete else ''}search {bounded.source}"
        record_source(services.status, job_id, source=source, source_ref=SourceRef(SourceKind.SEARCH, url=bounded.source), now=now)
