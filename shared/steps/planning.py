"""Planning a job: load its items, validate them, split them into batches and fan those out.

Idempotent: the job id is fixed before anything is written (the message's `job_id`, else the queue
message id, which stays the same across redeliveries), rows are created only if absent, and a job
already planned only has its still-Queued batches re-sent.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from shared.batching import REJECTED_ROW_PREFIX, SUPERSEDED_ROW_PREFIX, batch_id, feature_collection, split, split_serialized
from shared.catalog import GeoCatalogClient
from shared.errors import AuthenticationError, InvalidInputError, NotFoundError
from shared.ids import check_collection_id, item_id_problem
from shared.items import RejectedItem, item_id_of, validate_job
from shared.messages import JobRequest
from shared.redact import url_without_query
from shared.services import Services
from shared.steps.fanout import BatchGroup, PlannedBatch, batch_message, enqueue_batches, payload_name
from shared.steps.items_ref import plan_message_for
from shared.steps.job_claims import JobClaim, conflict_job_id, describe_refusal, owns
from shared.steps.rollup import settle_job
from shared.store import (
    MAX_INLINE_CHARS,
    BatchRow,
    BatchState,
    JobRow,
    JobState,
    SourceKind,
    SourceRef,
    brief,
    finish_empty,
    give_up_claimed,
    mark_planned,
    mark_rejected,
    record_batches,
    record_unsent,
    spill_json,
)

log = logging.getLogger(__name__)

MAX_REASONS_CHARS = MAX_INLINE_CHARS  # a rejected row's reasons stay inline: rows are cut to fit
AUTH_FAILED = "AuthenticationFailed"


def plan_job(request: JobRequest, *, job_id: str, claim: JobClaim, services: Services, now: datetime) -> JobRow:
    """Plan `request` as job `job_id` (claimed by `claim`) and return its row.

    Raises:
        RetryableError: the GeoCatalog or storage is briefly unavailable (the message is redelivered).
    """
    status = services.status
    job = status.get_job(job_id) or status.create_job(JobRow(
        job_id=job_id, state=JobState.RUNNING, source=describe_source(request), source_ref=source_ref_of(request).to_json(),
        collection=request.collection or "", fingerprint=claim.fingerprint, claimed_by=claim.message_id,
        mode=request.mode, dry_run=request.dry_run, delete_missing=request.delete_missing,
        max_delete_fraction=request.max_delete_fraction), now)
    if not owns(job, claim):
        return refuse_message(job, claim, request, services=services, now=now)
    claimed_by = claim.message_id
    if job.planned and not job.state.is_terminal:
        resend_queued_batches(job, services=services)
        return settle_job(job_id, status=status, now=now, read=services.payloads.read) or job
    if job.state.is_terminal:
        return job
    if request.items_ref is not None:
        return _hand_to_segment_planner(request, job, services=services, now=now)
    if request.search is not None:
        from shared.steps.search_jobs import plan_search  # it builds on this module's job verdicts

        return plan_search(request, job, services=services, now=now)
    if request.catalog is not None:
        from shared.steps.catalog_jobs import plan_catalog  # it builds on this module's job verdicts

        return plan_catalog(request, job, services=services, now=now)
    items: list[Any] = []
    collection = request.collection or ""
    try:
        items, labels = load_items(request, job_id=job_id, services=services, now=now)
        collection = resolve_collection(request, items, services.settings.default_collection)
        sign_collection = resolve_sign_collection(request, items) if request.sign else ""
        services.catalog.get_collection(collection)
    except AuthenticationError as error:
        return fail_unsent(job_id, request, collection, items, f"the GeoCatalog refused our identity: {error}",
                           claimed_by=claimed_by, services=services, now=now)
    except NotFoundError:
        return reject_job(job_id, f"collection {collection!r} does not exist in the GeoCatalog", len(items),
                          claimed_by=claimed_by, services=services, now=now)
    except InvalidInputError as error:
        return reject_job(job_id, str(error), len(items), claimed_by=claimed_by, services=services, now=now)
    if not items and request.delete_search:
        return finish_empty_search(job_id, services=services, now=now)
    if not items:
        return reject_job(job_id, "the job has no items", 0, claimed_by=claimed_by, services=services, now=now)

    superseded: list[RejectedItem] = []
    if request.is_delete:
        batches, rejected = _delete_batches(items)
        action = "delete"
    else:
        checked = validate_job(items, collection, labels=labels, mode=request.mode, repair=request.repair)
        rejected, superseded = checked.rejected, checked.superseded
        settings = services.settings
        groups = split_serialized(checked.valid, max_items=request.batch_size or settings.batch_max_items,
                                  max_bytes=settings.batch_max_bytes)
        batches = [PlannedBatch(batch_id(n), group.items, body=group.body,
                                repaired=sum(item["id"] in checked.repaired_ids for item in group.items))
                   for n, group in enumerate(groups, start=1)]
        action = "create"
    settled = [replace(row, mode=request.mode)
               for row in rejected_rows(job_id, collection, rejected) + superseded_rows(job_id, collection, superseded)]
    status.create_batches(settled, now)
    record_batches(settled, services=services, now=now)
    group = BatchGroup(job_id, collection, mode=request.mode, action=action, sign=request.sign or "",
                       sign_collection=sign_collection)
    enqueue_batches(group, batches, services=services, now=now)

    mark_planned(status, job_id, collection=collection, item_count=len(items), batch_count=len(batches), now=now)
    log.info("planned job %s: %d items, %d batches, %d rejected", job_id, len(items), len(batches), len(rejected))
    return settle_job(job_id, status=status, now=now, read=services.payloads.read) or job


def refuse_message(job: JobRow, claim: JobClaim, request: JobRequest, *, services: Services, now: datetime) -> JobRow:
    """A message for a job id that another message holds: a no-op, or a Rejected conflict job of its own."""
    reason = describe_refusal(job, claim)
    if reason is None:
        return job
    conflict = services.status.create_job(JobRow(job_id=conflict_job_id(claim), source=describe_source(request),
                                                 source_ref=source_ref_of(request).to_json(),
                                                 claimed_by=claim.message_id, fingerprint=claim.fingerprint), now)
    return reject_job(conflict.job_id, reason, 0, claimed_by=claim.message_id, services=services, now=now,
                      code="JobIdConflict")


def fail_unsent(job_id: str, request: JobRequest, collection: str, items: list[Any], reason: str, *,
                claimed_by: str, services: Services, now: datetime) -> JobRow:
    """Our identity was refused while planning: record the items that were read as Failed
    (`AuthenticationFailed`), each batch with its payload, so that `retry` can send them later."""
    groups = split(items, max_items=services.settings.batch_max_items, max_bytes=services.settings.batch_max_bytes)
    rows = []
    for number, group in enumerate(groups, start=1):
        ids = [item_id_of(item) for item in group]
        payload = services.payloads.put(payload_name(job_id, batch_id(number)), feature_collection(group))
        ids_field = spill_json(services.payloads, job_id, batch_id(number), "item_ids", ids)
        rows.append(BatchRow(job_id=job_id, batch_id=batch_id(number), state=BatchState.FAILED, collection=collection,
                             item_count=len(group), **ids_field.columns(), payload_blob=payload,
                             items_failed=len(group), error_code=AUTH_FAILED, error_message=brief(reason),
                             mode=request.mode, sign=request.sign or ""))
    services.status.create_batches(rows, now)
    log.error("job %s: %s; %d item(s) recorded as failed", job_id, reason, len(items))
    record_unsent(services.status, job_id, collection=collection, item_count=len(items), batch_count=len(rows),
                  code=AUTH_FAILED, reason=reason, now=now)
    if not rows:
        return reject_job(job_id, reason, 0, claimed_by=claimed_by, services=services, now=now, code=AUTH_FAILED)
    return settle_job(job_id, status=services.status, now=now, read=services.payloads.read) or services.status.get_job(job_id)  # type: ignore[return-value]


def _hand_to_segment_planner(request: JobRequest, job: JobRow, *, services: Services, now: datetime) -> JobRow:
    """`items_ref` jobs are read like uploads: checked here, then planned in segments (`shared.steps.segments`)."""
    if job.batch_count:
        return job  # a segment already reported progress: the chain of plan messages carries on without us
    try:
        plan = plan_message_for(request, job_id=job.job_id, services=services, now=now)
    except InvalidInputError as error:
        return reject_job(job.job_id, str(error), 0, claimed_by=job.claimed_by, services=services, now=now)
    services.queues.send(services.settings.work_queue, replace(plan, claimed_by=job.claimed_by).to_json())
    return job


def load_items(request: JobRequest, *, job_id: str, services: Services, now: datetime) -> tuple[list[Any], list[str] | None]:
    """The job's raw items (inline, or ids to delete, given or found by a search); `items_ref` is
    planned in segments and a search to copy streams into batches (`shared.steps.search_jobs`)."""
    if request.items is not None:
        return request.items, None
    if request.delete_ids is not None:
        return [{"id": item_id} for item_id in request.delete_ids], None
    from shared.steps.search_jobs import ids_found  # it builds on this module's job verdicts

    return [{"id": item_id} for item_id in ids_found(request, job_id=job_id, services=services, now=now)], None


def is_catalog_search(url: str, catalog: GeoCatalogClient) -> bool:
    """No URL, or the target catalog's own /search: read with the catalog's credential (and nowhere else)."""
    if not url:
        return True
    parts, own = urlsplit(url), urlsplit(catalog.endpoint)
    return (parts.scheme, parts.netloc) == (own.scheme, own.netloc) and parts.path.rstrip("/") in ("/stac/search", "/api/search")


def resolve_collection(request: JobRequest, items: list[Any], default: str) -> str:
    """The message's collection, else the one all items name, else the default setting.

    Raises:
        InvalidInputError: none can be found, items disagree, or the id is malformed.
    """
    if request.collection:
        return check_collection_id(request.collection)
    named = {item.get("collection") for item in items if isinstance(item, dict) and item.get("collection")}
    if len(named) > 1:
        raise InvalidInputError(f"items name {len(named)} different collections; set 'collection' in the message")
    if named:
        return check_collection_id(str(named.pop()))
    if default:
        return check_collection_id(default)
    raise InvalidInputError("no collection: set 'collection' in the message, in the items, or DEFAULT_COLLECTION")


def resolve_sign_collection(request: JobRequest, items: list[Any]) -> str:
    """Whose SAS token signs the assets: `sign_collection`, else the one collection searched, else the
    one collection the items came from.

    Raises:
        InvalidInputError: it cannot be told.
    """
    if request.sign_collection:
        return check_collection_id(request.sign_collection)
    searched = (request.search.params.get("collections") if request.search else None) or []
    if isinstance(searched, list) and len(searched) == 1:
        return check_collection_id(str(searched[0]))
    named = {item.get("collection") for item in items if isinstance(item, dict) and item.get("collection")}
    if len(named) == 1:
        return check_collection_id(str(named.pop()))
    raise InvalidInputError("cannot tell which collection's SAS token signs the assets: set 'sign_collection'")


def _delete_batches(items: list[Any]) -> tuple[list[PlannedBatch], list[RejectedItem]]:
    """One batch per item id (each DELETE is its own operation); malformed ids are rejected."""
    batches: list[PlannedBatch] = []
    rejected: list[RejectedItem] = []
    seen: set[str] = set()
    for position, item in enumerate(items):
        item_id = item_id_of(item)
        problem = item_id_problem(item_id)
        if problem or item_id in seen:
            reason = "appears more than once" if item_id in seen else f"id {problem}"
            rejected.append(RejectedItem(item_id if not problem else "", reason, position))
            continue
        seen.add(item_id)
        batches.append(PlannedBatch(batch_id(len(batches) + 1), [{"id": item_id}]))
    return batches, rejected


def reject_job(job_id: str, reason: str, item_count: int, *, claimed_by: str, services: Services, now: datetime,
               code: str = "InvalidInput") -> JobRow:
    """Finish a job as Rejected before any batch was made; its items count as rejected.

    Only its claimer may (`claimed_by`, checked against the row); anyone else leaves it as it is.
    """
    log.warning("job %s rejected: %s", job_id, reason)
    rejected = mark_rejected(services.status, job_id, claimed_by=claimed_by, item_count=item_count, code=code,
                             reason=reason, now=now)
    return rejected or services.status.get_job(job_id)  # type: ignore[return-value]


def give_up_job(job_id: str, reason: str, *, claimed_by: str, services: Services, now: datetime,
                fingerprint: str = "") -> JobRow | None:
    """End a job that its claimer cannot plan (`GaveUp`); creates the row, held by `claimed_by`, when there is none.

    A row that `claimed_by` does not hold is left as it is: only the delivery that claimed a job ends it.
    """
    reason = brief(reason)
    services.status.create_job(JobRow(job_id=job_id, claimed_by=claimed_by, fingerprint=fingerprint), now)
    log.error("job %s could not be processed: %s", job_id, reason)
    give_up_claimed(services.status, job_id, claimed_by=claimed_by, reason=reason, now=now)
    return settle_job(job_id, status=services.status, now=now, read=services.payloads.read)


def finish_empty_search(job_id: str, *, services: Services, now: datetime, stopped: str = "") -> JobRow:
    """A search that matched nothing: nothing to do is not an error, so the job succeeds with 0 items and
    says so (and, when a bound ended it early, which one: `stopped`)."""
    log.info("job %s: the search matched no items %s", job_id, stopped)
    finished = finish_empty(services.status, job_id, code="SearchStopped" if stopped else "",
                            message=f"the search brought no item: {stopped}" if stopped else "the search matched no items",
                            now=now)
    return finished or services.status.get_job(job_id)  # type: ignore[return-value]


def superseded_rows(job_id: str, collection: str, superseded: list[RejectedItem]) -> list[BatchRow]:
    """Rows of the earlier copies of ids repeated under upsert: `Superseded`, each `{id#position: by which copy}`."""
    return [
        replace(row, batch_id=row.batch_id.replace(REJECTED_ROW_PREFIX, SUPERSEDED_ROW_PREFIX), state=BatchState.SUPERSEDED,
                items_rejected=0, items_superseded=row.item_count, error_code="",
                error_message=f"{row.item_count} earlier copies replaced by a later copy of the same id (mode upsert)")
        for row in rejected_rows(job_id, collection, superseded)
    ]


def rejected_rows(job_id: str, collection: str, rejected: list[RejectedItem]) -> list[BatchRow]:
    """Rows of rejected input items, each with `{id or #position: reason}`, chunked to fit a table property."""
    rows: list[BatchRow] = []
    chunk: dict[str, str] = {}
    size = 2
    for item in rejected:
        key = rejection_key(item)
        if key in chunk:
            key = f"{key}#{item.position}"
        entry = len(orjson.dumps({key: item.reason}))
        if chunk and size + entry > MAX_REASONS_CHARS:
            rows.append(_rejected_row(job_id, collection, len(rows) + 1, chunk))
            chunk, size = {}, 2
        chunk[key] = item.reason
        size += entry
    if chunk:
        rows.append(_rejected_row(job_id, collection, len(rows) + 1, chunk))
    return rows


def _rejected_row(job_id: str, collection: str, index: int, reasons: dict[str, str]) -> BatchRow:
    return BatchRow(
        job_id=job_id, batch_id=f"{REJECTED_ROW_PREFIX}{index:06d}", state=BatchState.REJECTED, collection=collection,
        item_count=len(reasons), item_ids=orjson.dumps(list(reasons)).decode(), items_rejected=len(reasons),
        rejected_items=orjson.dumps(reasons).decode(), error_code="InvalidItem",
        error_message=f"{len(reasons)} item(s) failed validation; reasons per item in rejected_items",
    )


def rejection_key(item: RejectedItem) -> str:
    """How a rejected item is named in a row: its label (e.g. "line 12"), else its id, else its position."""
    return item.label or item.item_id or f"#{item.position}"


def resend_queued_batches(job: JobRow, *, services: Services) -> None:
    """Re-send the messages of batches still Queued (a crash may have lost them; duplicates are harmless)."""
    queued = [row for row in services.status.batches(job.job_id) if row.state == BatchState.QUEUED]
    services.queues.send_many(services.settings.work_queue, [batch_message(job.job_id, row.batch_id) for row in queued])


def describe_source(request: JobRequest) -> str:
    search = request.search or request.delete_search
    if search is not None:
        return f"{'delete ' if request.is_delete else ''}search {url_without_query(search.url) if search.url else 'the target catalog'}"
    if request.delete_ids is not None:
        return "delete ids"
    if request.catalog is not None:
        return f"catalog {url_without_query(request.catalog.url) if request.catalog.url else request.catalog.blob[:300]}"
    if request.items_ref is None:
        return "inline"
    if request.items_ref.url:
        return url_without_query(request.items_ref.url)
    ref = request.items_ref
    return ref.blob if ref.start is None else f"{ref.blob}[{ref.start}:{ref.end if ref.end is not None else ''}]"


def source_ref_of(request: JobRequest) -> SourceRef:
    """The row's reference to the job's items; a blob's is completed once it is checked (`shared.steps.items_ref`)."""
    search = request.search or request.delete_search
    if search is not None:
        return SourceRef(SourceKind.SEARCH, url=url_without_query(search.url) if search.url else "")
    if request.catalog is not None:
        return SourceRef(SourceKind.CATALOG, url=url_without_query(request.catalog.url) or request.catalog.blob[:1024])
    if request.items_ref is None:
        return SourceRef(SourceKind.INLINE)
    if request.items_ref.url:
        return SourceRef(SourceKind.URL, url=url_without_query(request.items_ref.url))
    return SourceRef(SourceKind.BLOB, start=request.items_ref.start, end=request.items_ref.end)
