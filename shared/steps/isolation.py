"""Partial failure: a failed operation must not sink the good items of its batch.

1. Ask the catalog which of the batch's items now exist with `_msft:ts` no older than the batch's
   first submission: those were created by this batch (the operation may have ingested the good
   ones, or a lost earlier POST did), so they succeeded. An item the service named as a duplicate
   counts as ours only when the batch was POSTed more than once. The comparison trusts the two
   clocks to agree; skew errs towards reporting an item as failed, never a failed one as ingested.
2. Items the service named in the error (`error.error.details`, or the single item of a one-item
   batch) failed with their own code.
3. In upsert (and sync) mode, items that already existed are replaced, each by its own PUT (a child batch).
4. The rest are unresolved. If the service told nothing apart, the batch is halved and each half
   resubmitted (bounded by ISOLATION_MAX_DEPTH); if it named the bad ones, the unresolved rest went
   down with them (an all-or-nothing batch) and is resubmitted as one child batch. A byte-range batch
   whose upload was overwritten since cannot be read again (`shared.inputs.upload_items`): its unresolved
   items fail with the operation's code, and the message says why they were not resubmitted.
The parent row ends `Split` with its own settled counts; children carry the rest.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from shared.batching import child_batch_id
from shared.catalog import Operation
from shared.errors import InvalidInputError
from shared.inputs.batch_items import batch_items, row_item_ids
from shared.items import item_id_of
from shared.services import Services
from shared.steps.fanout import BatchGroup, PlannedBatch, enqueue_batches
from shared.store import BatchRow, BatchState, Outcome

ALREADY_EXISTS = "ItemAlreadyExistsInCollection"


def resolve_failed_batch(row: BatchRow, operation: Operation, *, services: Services, now: datetime) -> Outcome:
    """Settle a failed batch item by item, splitting off child batches for what is still unknown.

    Raises:
        RetryableError: the catalog could not be asked (the poll is retried).
    """
    try:
        items, unreadable = batch_items(services, row), ""
    except InvalidInputError as error:  # a byte range of an upload overwritten since: known by id, never resent
        items, unreadable = [{"id": item_id} for item_id in row_item_ids(services, row)], str(error)
    ids = [item_id_of(item) for item in items]
    named = {e.item_id: e.code for e in operation.item_errors if e.item_id in ids}
    if len(ids) == 1 and not named:
        named = {ids[0]: operation.error_code or "OperationFailed"}
    landed = created_by_batch(row, ids, services=services)
    # A "duplicate" the service names is ours only if an earlier POST of this very batch may have
    # created it (a retried submit); on a first attempt it is a genuine duplicate and it failed.
    landed -= {i for i, code in named.items() if not (code == ALREADY_EXISTS and row.attempts > 1)}
    failed = {item_id: code for item_id, code in named.items() if item_id not in landed}
    # In upsert mode an item that already exists is replaced (PUT), not failed.
    replaces = row.mode in ("upsert", "sync") and not unreadable
    existing = [i for i in items if failed.get(item_id_of(i)) == ALREADY_EXISTS] if replaces else []
    for item in existing:
        del failed[item_id_of(item)]
    unresolved = [item for item in items
                  if item_id_of(item) not in landed and item_id_of(item) not in failed and item not in existing]
    message = f"{operation.error_code}: {operation.error_message}".strip(": ")

    groups: list[list[dict]] = []
    if unresolved and unreadable:
        message = f"{message}; {len(unresolved)} item(s) not resubmitted: {unreadable}"
    if unresolved and row.depth < services.settings.isolation_max_depth and not unreadable:
        nothing_told_apart = len(unresolved) == len(items)
        groups = _halves(unresolved) if nothing_told_apart else [unresolved]
    elif unresolved:
        failed.update(dict.fromkeys((item_id_of(i) for i in unresolved), operation.error_code or "OperationFailed"))

    if groups or existing:
        children = [PlannedBatch(child_batch_id(row.batch_id, n), group) for n, group in enumerate(groups, start=1)]
        replacements = [PlannedBatch(child_batch_id(row.batch_id, n), [item])
                        for n, item in enumerate(existing, start=len(children) + 1)]
        group = BatchGroup(row.job_id, row.collection, mode=row.mode, sign=row.sign, sign_collection=row.sign_collection,
                           parent=row.batch_id, depth=row.depth + 1)
        if children:
            enqueue_batches(group, children, services=services, now=now)
        if replacements:
            enqueue_batches(replace(group, action="replace"), replacements, services=services, now=now)
        note = (f"{message}; {len(unresolved)} item(s) resubmitted, {len(existing)} replaced, as "
                f"{', '.join(c.batch_id for c in children + replacements)}")
        return Outcome(BatchState.SPLIT, succeeded=len(landed), failed=failed, code=operation.error_code, message=note)
    state = BatchState.FAILED if failed else BatchState.SUCCEEDED
    return Outcome(state, succeeded=len(landed), failed=failed, code=operation.error_code if failed else "",
                   message=message if failed else "")


def created_by_batch(row: BatchRow, ids: list[str], *, services: Services) -> set[str]:
    """Ids among `ids` that the catalog holds with `_msft:ts` at or after the batch's first submission."""
    since = row.submit_started or datetime.min.replace(tzinfo=UTC)
    landed: set[str] = set()
    for start in range(0, len(ids), 500):
        for stored in services.catalog.search_ids(row.collection, ids[start : start + 500]):
            stamp = stored.get("_msft:ts")
            if stamp and datetime.fromisoformat(str(stamp)) >= since:
                landed.add(str(stored.get("id")))
    return landed


def _halves(items: list[dict]) -> list[list[dict]]:
    if len(items) == 1:
        return [items]
    middle = len(items) // 2
    return [items[:middle], items[middle:]]
