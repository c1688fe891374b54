"""delete_missing: once every batch of a sync job has settled, delete the catalog items its source no
longer has.

Every settled batch of a sync job marked its items as seen by the job (`shared.store.record_sync_state`),
whatever became of them (a rejected item is still in the source). The catalog is listed page by page
(ids only kept), and for each page the sync state says which ids the job did not see (one bounded query
per 14 ids): those are the candidates, written to a blob per page so that memory holds one page. Then:

- above `max_delete_fraction` of the items listed, nothing is deleted: the job records `DeleteRefused`
  (and ends Rejected, or DryRun); so too when planning noted that it stopped early (the job row's
  `error_code`: GaveUp, a bound reached): items never read must not be deleted;
- a dry run records each page of candidates as one `DryRun` row (`pruned-NNNNNN`, items_deleted);
- else each candidate becomes a delete batch `prune-<item id>` (one DELETE each, as any delete job).

Idempotent: batch ids are fixed by item id or page, rows are created only if absent, and the phase is
recorded on the job row (`mark_prune`) once, after its rows exist. A prune message is sent by whoever
settles the job's last batch (and by the sweeper while the phase is due); copies are harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

import orjson

from shared.ids import is_item_id
from shared.services import Services
from shared.steps.fanout import BatchGroup, PlannedBatch, enqueue_batches
from shared.steps.rollup import PRUNE_LISTED, PRUNE_REFUSED, awaits_prune, settle_job
from shared.store import BatchRow, BatchState, JobRow, SyncStates, mark_prune, record_batches, spill_json

log = logging.getLogger(__name__)

PRUNE = "prune"  # the work queue message's kind
PAGE_ITEMS = 1000  # catalog items listed per page
REFUSED = "DeleteRefused"


def prune_message(job_id: str) -> str:
    return orjson.dumps({"v": 1, "kind": PRUNE, "job_id": job_id}).decode()


def start_prune_if_due(job: JobRow | None, *, services: Services) -> None:
    """Send the job's prune message when its delete phase is due (after its last batch settled)."""
    if awaits_prune(job):
        assert job is not None
        services.queues.send(services.settings.work_queue, prune_message(job.job_id))


def prune_job(job_id: str, *, services: Services, now: datetime) -> JobRow | None:
    """Run the delete phase of `job_id` if it is due (the row decides, not the message); settle the job."""
    status = services.status
    job = status.get_job(job_id)
    if not awaits_prune(job):
        return settle_job(job_id, status=status, now=now, read=services.payloads.read)
    assert job is not None
    if job.error_code:  # planning stopped early (GaveUp, a bound, a refused credential): the source was not read whole
        reason = f"the source was not read to its end ({job.error_code}: {job.error_message}): nothing deleted"
        mark_prune(status, job_id, prune=PRUNE_REFUSED, code=REFUSED, reason=reason, now=now)
        return settle_job(job_id, status=status, now=now, read=services.payloads.read)
    listed, pages = 0, []
    for number, ids in enumerate(_catalog_pages(job.collection, services=services), start=1):
        listed += len(ids)
        missing = _not_seen(job, ids, services=services)
        if missing:
            pages.append((number, len(missing), spill_json(services.payloads, job_id, f"pruned-{number:06d}", "item_ids", missing)))
    candidates = sum(count for _, count, _ in pages)
    if candidates and candidates > job.max_delete_fraction * listed:
        reason = (f"delete_missing would delete {candidates} of the collection's {listed} items, more than "
                  f"max_delete_fraction {job.max_delete_fraction}: nothing deleted (raise max_delete_fraction to allow it)")
        log.warning("job %s: %s", job_id, reason)
        mark_prune(status, job_id, prune=PRUNE_REFUSED, code=REFUSED, reason=reason, now=now)
    else:
        for number, count, ids_field in pages:
            _delete_page(job, number, count, ids_field.columns(), services=services, now=now)
        log.info("job %s: %d of %d catalog items to delete", job_id, candidates, listed)
        mark_prune(status, job_id, prune=PRUNE_LISTED, now=now)
    return settle_job(job_id, status=status, now=now, read=services.payloads.read)


def _catalog_pages(collection: str, *, services: Services) -> Iterator[list[str]]:
    """The ids the catalog holds in `collection`, a page at a time."""
    params = {"collections": [collection], "limit": PAGE_ITEMS, "fields": {"include": ["id"], "exclude": []}}
    for features, _ in services.catalog.search_pages(params):
        yield [str(f.get("id")) for f in features if isinstance(f, dict) and is_item_id(f.get("id"))]


def _not_seen(job: JobRow, ids: list[str], *, services: Services) -> list[str]:
    known = SyncStates(services.items.table).read(job.collection, ids)
    seen = {item_id for item_id, entry in known.items() if (entry.dry_seen if job.dry_run else entry.seen) == job.job_id}
    return [item_id for item_id in ids if item_id not in seen]


def _delete_page(job: JobRow, number: int, count: int, ids_columns: dict[str, str], *, services: Services,
                 now: datetime) -> None:
    if job.dry_run:
        row = BatchRow(job_id=job.job_id, batch_id=f"pruned-{number:06d}", state=BatchState.DRY_RUN,
                       collection=job.collection, item_count=count, items_deleted=count, mode="sync", action="delete",
                       error_message="dry run: nothing sent", finished=now, **ids_columns)
        services.status.create_batches([row], now)
        record_batches([row], services=services, now=now)
        return
    ids = orjson.loads(services.payloads.read(ids_columns["item_ids_blob"])) if ids_columns["item_ids_blob"] \
        else orjson.loads(ids_columns["item_ids"])
    group = BatchGroup(job.job_id, job.collection, mode="sync", action="delete")
    enqueue_batches(group, [PlannedBatch(f"prune-{item_id}", [{"id": item_id}]) for item_id in ids], services=services, now=now)
