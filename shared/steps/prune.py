"""delete_missing: once every batch of a sync job has settled, delete the catalog items its source no
longer has.

Every settled batch of a sync job marked its items as seen by the job (`shared.store.record_sync_state`),
whatever became of them (a rejected item is still in the source). The phase then runs one catalog page
per invocation, chained by prune messages on the work queue, so a collection of any size fits in the
function timeout and memory holds one page:

1. listing: each invocation lists one page of the catalog's ids (from the cursor the job row keeps), asks
   the sync state which of them the job did not see (point reads), writes those candidates to the page's
   blob and records the page on the job row (`record_prune_page`: counts and the next cursor);
2. once the listing has ended: above `max_delete_fraction` of the items listed, nothing is deleted: the job
   records `DeleteRefused` (and ends Rejected, or DryRun); so too when planning noted that it stopped
   early (the job row's `error_code`: GaveUp, a bound reached): items never read must not be deleted;
3. deleting: each invocation makes one page's deletes: a delete batch `prune-<item id>` per candidate (one
   DELETE each, as any delete job), or in a dry run one `DryRun` row for the page (`pruned-NNNNNN`).

Idempotent: the job row decides what is due (the message only names the job), each page is recorded
under the row's ETag only by the delivery that found the row at that page, page blobs and batch ids are
fixed by page and item id, and batch rows are created only if absent. A prune message is sent by each
invocation for the next page, by whoever settles the job's last batch, and by the sweeper while the
phase is due; copies are harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime

import orjson

from shared.catalog import SearchCursor
from shared.errors import InvalidInputError
from shared.ids import is_item_id
from shared.services import Services
from shared.steps.fanout import BatchGroup, PlannedBatch, enqueue_batches
from shared.steps.rollup import awaits_prune, settle_job
from shared.store import (
    PRUNE_DELETING,
    BatchRow,
    BatchState,
    JobRow,
    SyncStates,
    record_batches,
    record_prune_deletes,
    record_prune_page,
    refuse_prune,
    start_prune_deletes,
)

log = logging.getLogger(__name__)

PRUNE = "prune"  # the work queue message's kind
PAGE_ITEMS = 1000  # catalog items listed per page (and so per invocation)
REFUSED = "DeleteRefused"
MAX_CURSOR_CHARS = 16_000  # a table property holds 32K characters


def prune_message(job_id: str) -> str:
    return orjson.dumps({"v": 1, "kind": PRUNE, "job_id": job_id}).decode()


def start_prune_if_due(job: JobRow | None, *, services: Services) -> None:
    """Send the job's prune message when its delete phase is due and no delete batch of it is running
    (while they run, the phase's own chain of messages carries it)."""
    if awaits_prune(job) and job is not None and not job.batches_open:
        services.queues.send(services.settings.work_queue, prune_message(job.job_id))


def prune_job(job_id: str, *, services: Services, now: datetime) -> JobRow | None:
    """Take the next step of `job_id`'s delete phase if one is due (the row decides, not the message);
    settle the job once the phase is over."""
    status = services.status
    job = status.get_job(job_id)
    if not awaits_prune(job):
        return settle_job(job_id, status=status, now=now, read=services.payloads.read)
    assert job is not None
    if job.error_code and job.prune != PRUNE_DELETING:  # planning stopped early: the source was not read whole
        reason = f"the source was not read to its end ({job.error_code}: {job.error_message}): nothing deleted"
        refuse_prune(status, job_id, code=REFUSED, reason=reason, now=now)
    elif job.prune == PRUNE_DELETING:
        _delete_page(job, services=services, now=now)
    elif job.prune_pages == 0 or job.prune_cursor:
        _list_page(job, services=services, now=now)
    else:
        _decide(job, services=services, now=now)
    return settle_job(job_id, status=status, now=now, read=services.payloads.read)


def _list_page(job: JobRow, *, services: Services, now: datetime) -> None:
    """List the catalog page the job row's cursor names; store the ids its source did not have."""
    cursor = SearchCursor.from_json(job.prune_cursor) if job.prune_cursor else None
    params = {"collections": [job.collection], "limit": PAGE_ITEMS, "fields": {"include": ["id"], "exclude": []}}
    features, after = services.catalog.search_page(params, after=cursor)
    ids = [str(f.get("id")) for f in features if isinstance(f, dict) and is_item_id(f.get("id"))]
    missing = _not_seen(job, ids, services=services)
    services.payloads.put(_page_blob(job.job_id, job.prune_pages), orjson.dumps(missing))
    next_cursor = after.to_json() if after is not None else ""
    if len(next_cursor) > MAX_CURSOR_CHARS:
        reason = f"the catalog's next-page link is longer than {MAX_CURSOR_CHARS} characters: nothing deleted"
        refuse_prune(services.status, job.job_id, code=REFUSED, reason=reason, now=now)
        return
    recorded = record_prune_page(services.status, job.job_id, page=job.prune_pages, listed=len(ids),
                                 candidates=len(missing), cursor=next_cursor, now=now)
    if recorded is not None and recorded.prune_cursor:
        _next(job, services=services)
    elif recorded is not None:
        _decide(recorded, services=services, now=now)  # a few reads more: no need for another invocation


def _decide(job: JobRow, *, services: Services, now: datetime) -> None:
    """The listing has ended: refuse the deletes above the job's fraction, else start them."""
    if job.prune_candidates and job.prune_candidates > job.max_delete_fraction * job.prune_listed:
        reason = (f"delete_missing would delete {job.prune_candidates} of the collection's {job.prune_listed} items, more "
                  f"than max_delete_fraction {job.max_delete_fraction}: nothing deleted (raise max_delete_fraction to allow it)")
        log.warning("job %s: %s", job.job_id, reason)
        refuse_prune(services.status, job.job_id, code=REFUSED, reason=reason, now=now)
        return
    log.info("job %s: %d of %d catalog items to delete", job.job_id, job.prune_candidates, job.prune_listed)
    deleting = start_prune_deletes(services.status, job.job_id, now=now)
    if deleting is not None and deleting.prune == PRUNE_DELETING:
        _delete_page(deleting, services=services, now=now)


def _delete_page(job: JobRow, *, services: Services, now: datetime) -> None:
    """Make the deletes of the next listed page (or its DryRun row)."""
    page = job.prune_pages_done
    ids = _page_ids(job, page, services=services)
    if ids and job.dry_run:
        _record_dry_page(job, page, ids, services=services, now=now)
    elif ids:
        group = BatchGroup(job.job_id, job.collection, mode="sync", action="delete")
        enqueue_batches(group, [PlannedBatch(f"prune-{item_id}", [{"id": item_id}]) for item_id in ids], services=services,
                        now=now)
    ended = record_prune_deletes(services.status, job.job_id, page=page, now=now)
    if ended is not None and ended.prune == PRUNE_DELETING:
        _next(job, services=services)


def _record_dry_page(job: JobRow, page: int, ids: list[str], *, services: Services, now: datetime) -> None:
    ids_blob = f"{services.payloads.container}/{_page_blob(job.job_id, page)}"
    row = BatchRow(job_id=job.job_id, batch_id=f"pruned-{page + 1:06d}", state=BatchState.DRY_RUN,
                   collection=job.collection, item_count=len(ids), items_deleted=len(ids), mode="sync", action="delete",
                   error_message="dry run: nothing sent", finished=now, item_ids_blob=ids_blob)
    services.status.create_batches([row], now)
    record_batches([row], services=services, now=now)


def _next(job: JobRow, *, services: Services) -> None:
    services.queues.send(services.settings.work_queue, prune_message(job.job_id))


def _page_blob(job_id: str, page: int) -> str:
    return f"{job_id}/prune-{page:06d}.json"


def _page_ids(job: JobRow, page: int, *, services: Services) -> list[str]:
    try:
        return orjson.loads(services.payloads.read(f"{services.payloads.container}/{_page_blob(job.job_id, page)}"))
    except InvalidInputError:  # only if the payload lifecycle removed it: that page is skipped, never guessed
        log.warning("job %s: the candidates of catalog page %d are gone: none of them deleted", job.job_id, page)
        return []


def _not_seen(job: JobRow, ids: list[str], *, services: Services) -> list[str]:
    known = SyncStates(services.items.table).read(job.collection, ids)
    seen = {item_id for item_id, entry in known.items() if (entry.dry_seen if job.dry_run else entry.seen) == job.job_id}
    return [item_id for item_id in ids if item_id not in seen]
