"""Sync and dry runs, batch by batch: what each item needs, decided before anything is sent.

Every source's items reach the submit step as batches, validated and repaired, so the diff is made
there, per batch, on the items exactly as they would be sent (before signing):

- `content_hash`: a hash of the item's canonical JSON (sorted keys);
- the catalog is asked which of the batch's ids it holds (one ids search), so an item deleted by hand
  is created again and one added by hand is seen;
- its items (and, before the claim, the ids an upload batch's check rejected) are marked seen by the job before anything else, so
  `delete_missing` (`shared.steps.prune`, once every batch has ended) never deletes what the source has;
- for those it holds, the hash recorded when the catalog last confirmed the item (`SyncStates`, point
  reads) says whether it changed. The catalog's own copy is never compared: the
  service rewrites asset hrefs.

The diff (`sync_items`: `{id: "<c|r|u>:<hash>"}`, create / replace / unchanged) is written on the
Submitting row before it is acted on (`record_diff`), so a redelivery acts on the same diff and counts
nothing twice. Then: every item new, the batch is POSTed as usual; every item unchanged, it ends
Succeeded with no call; otherwise it ends `Split`, counting its unchanged items, and child batches carry
the rest (one POST of the new items, one PUT per changed item). A dry run records the same diff and ends
the batch `DryRun` with what a real run would do, sending nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson

from shared.batching import child_batch_id
from shared.inputs.batch_items import batch_items
from shared.items import item_id_of
from shared.services import Services
from shared.steps.fanout import BatchGroup, PlannedBatch, enqueue_batches
from shared.steps.poll import finish_batch
from shared.steps.uploads import CheckedUpload
from shared.store import (
    BatchRow,
    BatchState,
    Outcome,
    Planned,
    StatusStore,
    SyncStates,
    read_spilled_json,
    record_diff,
    spill_json,
)

CREATE, REPLACE, UNCHANGED = "c", "r", "u"
_LETTER = {"create": CREATE, "replace": REPLACE}


@dataclass(frozen=True)
class JobFlags:
    """What the submit step needs of a batch's job row: whether it is a dry run."""

    dry_run: bool = False


class _FlagCache:
    """Job flags never change once the row exists: each instance reads them once per job (bounded, LRU)."""

    def __init__(self, size: int = 4096) -> None:
        self._flags: OrderedDict[tuple[str, str], JobFlags] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, status: StatusStore, job_id: str) -> JobFlags:
        key = (status.table.table_name, job_id)
        with self._lock:
            if key in self._flags:
                return self._flags[key]
        dry_run = status.is_dry_run(job_id)
        if dry_run is None:
            return JobFlags()  # not cached: a batch row without its job row is not expected to stay so
        flags = JobFlags(dry_run=dry_run)
        with self._lock:
            self._flags[key] = flags
            while len(self._flags) > self._size:
                self._flags.popitem(last=False)
        return flags


_cache = _FlagCache()


def job_flags(status: StatusStore, job_id: str) -> JobFlags:
    return _cache.get(status, job_id)


def needs_diff(row: BatchRow, flags: JobFlags) -> bool:
    """A sync's batch (other than a delete), or any batch of a dry run."""
    return flags.dry_run or (row.mode == "sync" and row.action != "delete")


@dataclass(frozen=True)
class Diffed:
    """A claimed batch after its diff: `send` it as usual, or it was handled here (`row` as it ended up)."""

    row: BatchRow | None
    send: bool = False


def content_hash(item: dict[str, Any]) -> str:
    """The hash of an item's canonical JSON (keys sorted): equal for equal content, whatever the key order."""
    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def diff_items(row: BatchRow, items: list[dict[str, Any]], *, services: Services) -> dict[str, str]:
    """`{id: "<c|r|u>:<hash>"}` for the batch's items. Mode create needs no read (everything is created);
    upsert asks the catalog which ids exist (replaced); sync also compares the recorded hashes."""
    hashes = {item_id_of(item): content_hash(item) for item in items}
    if row.mode == "create":
        return {item_id: f"{CREATE}:{digest}" for item_id, digest in hashes.items()}
    ids = list(hashes)
    present = {str(stored.get("id")) for stored in services.catalog.search_ids(row.collection, ids)}
    known = SyncStates(services.items.table).read(row.collection, [i for i in ids if i in present]) if row.mode == "sync" else {}
    diff = {}
    for item_id, digest in hashes.items():
        if item_id not in present:
            letter = CREATE
        elif item_id in known and known[item_id].hash == digest:
            letter = UNCHANGED
        else:
            letter = REPLACE
        diff[item_id] = f"{letter}:{digest}"
    return diff


def diff_batch(row: BatchRow, *, dry_run: bool, services: Services, upload: CheckedUpload | None, now: datetime) -> Diffed:
    """Diff a claimed (Submitting) batch, record the diff, and act on it (see the module's docstring).

    Raises:
        RetryableError: the catalog or storage could not be read (the caller retries the batch later).
    """
    if row.action == "delete":  # only a dry run gets here: a delete job's items would each be deleted
        planned = Planned(deleted=row.item_count)
        return Diffed(finish_batch(row, Outcome(BatchState.DRY_RUN, planned=planned, message=_DRY), services=services, now=now))
    items: list[dict[str, Any]] | None = None
    diff: dict[str, str] = read_spilled_json(row, "sync_items", services.payloads.read, {})
    if not diff:
        items = upload.items if upload is not None else batch_items(services, row)
        diff = diff_items(row, items, services=services)
        if row.mode == "sync":  # before the batch can end: delete_missing must never miss an item its source has
            SyncStates(services.items.table).mark_seen(row.collection, diff, job_id=row.job_id, dry_run=dry_run)
        recorded = record_diff(services.status, row, now=now,
                               sync_items=spill_json(services.payloads, row.job_id, row.batch_id, "sync_items", diff))
        if recorded is None:  # another delivery took the batch on
            return Diffed(services.status.get_batch(row.job_id, row.batch_id))
        row = recorded
    counts = Counter(value[:1] for value in diff.values())
    if dry_run:
        planned = Planned(created=counts[CREATE], replaced=counts[REPLACE], unchanged=counts[UNCHANGED])
        return Diffed(finish_batch(row, Outcome(BatchState.DRY_RUN, planned=planned, message=_DRY), services=services, now=now))
    if counts[_LETTER.get(row.action, CREATE)] == len(diff):
        return Diffed(row, send=True)
    unchanged = counts[UNCHANGED]
    if unchanged == len(diff):
        outcome = Outcome(BatchState.SUCCEEDED, succeeded=unchanged, unchanged=unchanged, message="unchanged since the last sync")
        return Diffed(finish_batch(row, outcome, services=services, now=now))
    children = _children(row, items if items is not None else batch_items(services, row), diff, services=services, now=now)
    note = (f"sync: {unchanged} unchanged, {counts[CREATE]} to create, {counts[REPLACE]} to replace, as "
            f"{', '.join(children)}")
    outcome = Outcome(BatchState.SPLIT, succeeded=unchanged, unchanged=unchanged, message=note)
    return Diffed(finish_batch(row, outcome, services=services, now=now))


_DRY = "dry run: nothing sent"


def mark_rejected_seen(row: BatchRow, upload: CheckedUpload, *, services: Services) -> None:
    """A sync's upload batch: the ids its check rejected are still the source's. Marked before the claim
    records the check (which may end the batch), so delete_missing never deletes them."""
    if row.mode == "sync" and upload.rejected_ids:
        dry_run = job_flags(services.status, row.job_id).dry_run
        SyncStates(services.items.table).mark_seen(row.collection, upload.rejected_ids, job_id=row.job_id, dry_run=dry_run)


def _children(row: BatchRow, items: list[dict[str, Any]], diff: dict[str, str], *, services: Services,
              now: datetime) -> list[str]:
    """The batches that carry a mixed batch's work: one POST of its new items, one PUT per changed item."""
    new = [item for item in items if diff.get(item_id_of(item), "")[:1] == CREATE]
    changed = [item for item in items if diff.get(item_id_of(item), "")[:1] == REPLACE]
    group = BatchGroup(row.job_id, row.collection, mode=row.mode, sign=row.sign, sign_collection=row.sign_collection,
                       parent=row.batch_id, depth=row.depth + 1)
    creates = [PlannedBatch(child_batch_id(row.batch_id, 1), new, sync_items={item_id_of(i): diff[item_id_of(i)] for i in new})] \
        if new else []
    replaces = [PlannedBatch(child_batch_id(row.batch_id, n), [item], sync_items={item_id_of(item): diff[item_id_of(item)]})
                for n, item in enumerate(changed, start=len(creates) + 1)]
    if creates:
        enqueue_batches(group, creates, services=services, now=now)
    if replaces:
        enqueue_batches(replace(group, action="replace"), replaces, services=services, now=now)
    return [batch.batch_id for batch in creates + replaces]
