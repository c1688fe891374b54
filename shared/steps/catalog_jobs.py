"""Planning a static-catalog job: the items under a `catalog.json` / `collection.json` become batches as the walk finds them.

`catalog: {"url": …}` is fetched through the guarded fetch path (`SourceFetcher.read`: allowlist, public
addresses, size and time per request); `catalog: {"blob": …}` is read from a container that
ITEMS_REF_CONTAINERS allows, and its links may not leave the folder of the root document
(`static_catalog.walk_catalog` resolves every href and keeps it inside the root's origin and folder).

The walk (breadth-first, each document visited once, so a cycle of links ends) is bounded by the caps of
a search: SEARCH_MAX_PAGES documents, SEARCH_MAX_ITEMS items, SOURCE_MAX_SECONDS in all, and
`CatalogLimits.max_depth` link levels. Each item has its relative asset hrefs made absolute against its
own document's URL (a blob's URL for a blob catalog), is serialized and claim-checked into chunk batches by
the chunk planner (`segments.plan_item_stream`), and is validated by its submitter like any upload item
(named by its id, else `item N`). A link that cannot be followed (unreachable, not STAC, outside the root,
past a bound) is one Rejected item labelled with the link (its query string removed).

The walk is planned as a streamed job, like a search's results (`streamed_jobs.plan_stream_as_job`): the
collection is the message's, else the first item's, else DEFAULT_COLLECTION (links found before the first
item are held until it comes, at most HELD_BEFORE_FIRST_ITEM of them); our identity refused (401/403) by
the collection check: every item the walk reads goes into chunk batches born Failed (`AuthenticationFailed`),
never sent, so that `retry` reads them back.

What if it dies mid-walk? The redelivered job message walks again: batch rows are created only if absent
and a chunk is rewritten under the same name, so an unchanged catalog plans the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from shared.errors import InvalidInputError
from shared.inputs.static_catalog import CatalogItem, CatalogLimits, UnreachableLink, absolute_asset_hrefs, shown, walk_catalog
from shared.limits import LimitExceeded, byte_cap
from shared.messages import CatalogRef, JobRequest
from shared.services import Services
from shared.settings import Settings
from shared.steps.items_ref import checked_blob
from shared.steps.planning import reject_job
from shared.steps.segments import TooLarge
from shared.steps.streamed_jobs import plan_stream_as_job
from shared.store import JobRow

UNREACHABLE_LINK = "UnreachableLink"
CATALOG_STOPPED = "CatalogStopped"

Entry = CatalogItem | UnreachableLink


def catalog_limits(settings: Settings) -> CatalogLimits:
    """The walk's bounds, from the caps every source has."""
    return CatalogLimits(max_documents=settings.search_max_pages, max_items=settings.search_max_items,
                         max_seconds=settings.source_max_seconds, max_document_bytes=settings.max_item_bytes)


def plan_catalog(request: JobRequest, job: JobRow, *, services: Services, now: datetime) -> JobRow:
    """Walk a (create or upsert) catalog job's catalog into batches and return its row.

    Raises:
        RetryableError: the root, the GeoCatalog or storage is briefly unavailable (redelivered).
    """
    assert request.catalog is not None
    return plan_stream_as_job(request, job, _CatalogWalk(request.catalog, services), services=services, now=now)


@dataclass
class _CatalogWalk:
    """A static catalog's walk as a job's stream (`streamed_jobs.ItemStream`)."""

    ref: CatalogRef
    services: Services
    stopped: list[str] = field(default_factory=list)  # the walk's own reports of where it stopped
    noun: str = "walk"
    item_label: str = "item"
    stopped_code: str = CATALOG_STOPPED

    def open(self) -> Iterator[tuple[int, bytes | TooLarge]]:
        settings = self.services.settings
        walk = walk_catalog(_root(self.ref, settings), _fetch(self.ref, self.services), limits=catalog_limits(settings))
        return _encoded(walk, _asset_base(self.ref, self.services), max_item_bytes=settings.max_item_bytes, stopped=self.stopped)

    def without_items(self, job: JobRow, *, services: Services, now: datetime) -> JobRow:
        return reject_job(job.job_id, f"the catalog {_shown(self.ref)} has no items", 0, claimed_by=job.claimed_by,
                          services=services, now=now)

    def notes(self) -> list[str]:
        return self.stopped

    def planned(self, job_id: str, *, services: Services, now: datetime) -> None:
        """Nothing to record: the root is the job row's source already."""


def _root(ref: CatalogRef, settings: Settings) -> str:
    """The root href the walk starts from: the URL, or the checked blob name."""
    if ref.url:
        return ref.url
    try:
        return checked_blob(ref.blob, settings.readable_containers)
    except InvalidInputError as error:
        raise InvalidInputError(str(error).replace("items_ref.blob", "catalog.blob")) from None


def _fetch(ref: CatalogRef, services: Services):
    """How the walk reads a document: through the guarded fetch path, or from an allowed container."""
    max_bytes = services.settings.max_item_bytes
    if ref.url:
        def fetch_url(url: str) -> bytes:
            return services.sources.read(url, max_bytes=max_bytes)
        return fetch_url

    def fetch_blob(name: str) -> bytes:
        checked_blob(name, services.settings.readable_containers)
        data = services.payloads.read(name, 0, max_bytes + 1)  # one request; a larger blob shows by its length
        if len(data) > max_bytes:
            raise LimitExceeded(f"the document is larger than {byte_cap('MAX_ITEM_BYTES', max_bytes)}")
        return data
    return fetch_blob


def _asset_base(ref: CatalogRef, services: Services):
    """An item document's href -> the URL its relative asset hrefs are relative to."""
    if ref.url:
        return lambda href: href
    return services.payloads.url


def _encoded(entries: Iterator[Entry], asset_base, *, max_item_bytes: int,
             stopped: list[str]) -> Iterator[tuple[int, bytes | TooLarge]]:
    """(position, the item's JSON) for each item; a TooLarge labelled with the link for each link not followed."""
    cap = byte_cap("MAX_ITEM_BYTES", max_item_bytes)
    for position, entry in enumerate(entries, start=1):
        if isinstance(entry, UnreachableLink):
            if entry.error.startswith("not visited: the walk stopped"):
                stopped.append(f"{entry.error} ({entry.label})")
            yield position, TooLarge(entry.error, code=UNREACHABLE_LINK, label=entry.label)
            continue
        try:
            data = orjson.dumps(absolute_asset_hrefs(entry.item, asset_base(entry.href)))
        except orjson.JSONEncodeError as error:
            yield position, TooLarge(f"cannot be serialized: {error}", code="InvalidInput", label=shown(entry.href))
            continue
        yield position, (data if len(data) <= max_item_bytes else TooLarge(f"is larger than {cap}", label=shown(entry.href)))


def _shown(ref: CatalogRef) -> str:
    return shown(ref.url) if ref.url else repr(ref.blob[:200])

