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

The collection is the message's, else the first item's, else DEFAULT_COLLECTION. Links found before the
first item are held until it comes (at most HELD_BEFORE_FIRST_ITEM of them).

What if it dies mid-walk? The redelivered job message walks again: batch rows are created only if absent
and a chunk is rewritten under the same name, so an unchanged catalog plans the same batches.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import datetime

import orjson

from shared.errors import AuthenticationError, InvalidInputError, NotFoundError
from shared.ids import check_collection_id
from shared.inputs.static_catalog import CatalogItem, CatalogLimits, UnreachableLink, absolute_asset_hrefs, shown, walk_catalog
from shared.limits import LimitExceeded, byte_cap
from shared.messages import CatalogRef, JobRequest, PlanMessage
from shared.services import Services
from shared.settings import Settings
from shared.steps.items_ref import checked_blob
from shared.steps.planning import fail_unsent, reject_job, resolve_sign_collection
from shared.steps.rollup import settle_job
from shared.steps.segments import LIMIT_EXCEEDED, StreamStopped, TooLarge, plan_item_stream
from shared.store import JobRow, mark_planned, note_on_job

log = logging.getLogger(__name__)

HELD_BEFORE_FIRST_ITEM = 1000
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
    ref = request.catalog
    assert ref is not None
    job_id = job.job_id
    collection = request.collection or ""
    try:
        walk = walk_catalog(_root(ref, services.settings), _fetch(ref, services), limits=catalog_limits(services.settings))
        held, first = _until_first_item(walk)
        first_item = first.item if first is not None else {}
        collection = _collection(request, first_item, services.settings.default_collection)
        sign_collection = resolve_sign_collection(request, [first_item]) if request.sign else ""
        services.catalog.get_collection(collection)
    except AuthenticationError as error:
        return fail_unsent(job_id, request, collection, [], f"the GeoCatalog refused our identity: {error}",
                           claimed_by=job.claimed_by, services=services, now=now)
    except NotFoundError:
        return reject_job(job_id, f"collection {collection!r} does not exist in the GeoCatalog", 0,
                          claimed_by=job.claimed_by, services=services, now=now)
    except InvalidInputError as error:
        code = LIMIT_EXCEEDED if isinstance(error, LimitExceeded) else "InvalidInput"
        return reject_job(job_id, str(error), 0, claimed_by=job.claimed_by, services=services, now=now, code=code)
    plan = PlanMessage(job_id, "", "", collection, mode=request.mode, sign=request.sign or "", sign_collection=sign_collection,
                       batch_size=request.batch_size or 0, repair=",".join(sorted(request.repair)), claimed_by=job.claimed_by)
    entries = itertools.chain(held, [first] if first is not None else [], walk)
    stopped: list[str] = []
    encoded = _encoded(entries, _asset_base(ref, services), max_item_bytes=services.settings.max_item_bytes, stopped=stopped)
    try:
        count, next_batch = plan_item_stream(plan, collection, encoded, item_label="item", services=services, now=now)
    except StreamStopped as error:
        count, next_batch = error.items, error.next_batch
        stopped.append(f"the walk stopped after {count} items: {error.error}")
    if count == 0:
        return reject_job(job_id, f"the catalog {_shown(ref)} has no items", 0, claimed_by=job.claimed_by,
                          services=services, now=now)
    if stopped:
        note_on_job(services.status, job_id, code=CATALOG_STOPPED, note="; ".join(stopped), now=now)
    mark_planned(services.status, job_id, collection=collection, item_count=count, batch_count=next_batch - 1, now=now)
    log.info("planned catalog job %s: %d items, %d batches", job_id, count, next_batch - 1)
    return settle_job(job_id, status=services.status, now=now, read=services.payloads.read) or job


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


def _until_first_item(walk: Iterator[Entry]) -> tuple[list[UnreachableLink], CatalogItem | None]:
    """The links reported before the first item (bounded), and that item (None: the walk has none so far)."""
    held: list[UnreachableLink] = []
    for entry in walk:
        if isinstance(entry, CatalogItem):
            return held, entry
        held.append(entry)
        if len(held) >= HELD_BEFORE_FIRST_ITEM:
            break
    return held, None


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


def _collection(request: JobRequest, first: dict, default: str) -> str:
    """The message's collection, else the first item's, else DEFAULT_COLLECTION.

    Raises:
        InvalidInputError: none is given, or the id is malformed.
    """
    named = first.get("collection")
    collection = request.collection or (named if isinstance(named, str) else "") or default
    if not collection:
        raise InvalidInputError("no collection: set 'collection' in the message, in the items, or DEFAULT_COLLECTION")
    return check_collection_id(collection)


def _shown(ref: CatalogRef) -> str:
    return shown(ref.url) if ref.url else repr(ref.blob[:200])

