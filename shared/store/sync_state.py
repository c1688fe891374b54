"""The sync state: what a `mode: "sync"` job needs to know of each item between runs, kept in the item
index table, one partition per collection (`sync~<collection>`), RowKey = item id.

- `hash`: the content hash of the item as it was last sent (`shared.steps.sync.content_hash`), written
  only once the catalog confirmed it (its batch Succeeded). A sync compares what it would send with
  this, never with the catalog's copy (the service rewrites asset hrefs).
- `seen` / `dry_seen`: the last sync job (real / dry run) whose source had the item; `delete_missing`
  deletes catalog items that its job did not see.

Reads are point reads (PartitionKey + RowKey), READERS at a time: the one read whose cost stays flat
as a collection grows. A filter of `RowKey eq a or RowKey eq b ...` is not: Table storage serves it as
a scan of the partition ("Design for querying", learn.microsoft.com: such `or` filters are not range
queries), and Azurite scans the whole table. Writes are merges of up to 100 entities per transaction
(one partition).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.data.tables import UpdateMode

from shared.store.table_batch import MAX_TRANSACTION_OPS, TableClient

PARTITION_PREFIX = "sync~"  # "~" is not in a collection id: no clash with the index's own partitions
_COLUMNS = ["RowKey", "hash", "seen", "dry_seen"]
CONFIRM_ATTEMPTS = 3
READERS = 16  # point reads of one read in flight at once


@functools.cache
def _readers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="sync-state")


@dataclass(frozen=True)
class SyncEntry:
    """One item's sync state ("" = not known)."""

    hash: str = ""
    seen: str = ""
    dry_seen: str = ""


def partition(collection: str) -> str:
    return f"{PARTITION_PREFIX}{collection}"


class SyncStates:
    """Reads and writes the sync state (azure-data-tables); `operations` counts table requests."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self.operations = 0

    def read(self, collection: str, ids: Iterable[str]) -> dict[str, SyncEntry]:
        """The entries of `ids` that exist: one point read each, READERS at a time."""
        wanted = sorted(set(ids))
        found: dict[str, SyncEntry] = {}
        for item_id, entry in zip(wanted, _readers().map(lambda key: self._read_one(collection, key), wanted), strict=True):
            if entry is not None:
                found[item_id] = entry
        self.operations += len(wanted)
        return found

    def _read_one(self, collection: str, item_id: str) -> SyncEntry | None:
        try:
            e = self._table.get_entity(partition(collection), item_id, select=_COLUMNS)
        except ResourceNotFoundError:
            return None
        return SyncEntry(e.get("hash") or "", e.get("seen") or "", e.get("dry_seen") or "")

    def confirm(self, collection: str, hashes: dict[str, str], *, job_id: str) -> None:
        """Items the catalog now holds as sent with these hashes, by a source of `job_id`.

        Written after its batch ended (the job may end meanwhile), so a transient storage error is retried
        here at once: a hash lost until the message's redelivery costs the next sync a needless PUT.
        """
        entities = [{"RowKey": item_id, "hash": digest, "seen": job_id} for item_id, digest in hashes.items()]
        for attempt in range(CONFIRM_ATTEMPTS):
            try:
                self._merge(collection, entities)
                return
            except (ServiceRequestError, ServiceResponseError):
                if attempt == CONFIRM_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def mark_seen(self, collection: str, ids: Iterable[str], *, job_id: str, dry_run: bool) -> None:
        """Items the source of `job_id` has (whatever became of them)."""
        column = "dry_seen" if dry_run else "seen"
        self._merge(collection, [{"RowKey": item_id, column: job_id} for item_id in dict.fromkeys(ids)])

    def forget(self, collection: str, ids: Iterable[str]) -> None:
        """Items deleted from the catalog (an entity already gone is no error)."""
        for item_id in ids:
            self._table.delete_entity(partition(collection), item_id)
            self.operations += 1

    def _merge(self, collection: str, entities: list[dict[str, Any]]) -> None:
        for start in range(0, len(entities), MAX_TRANSACTION_OPS):
            chunk = entities[start : start + MAX_TRANSACTION_OPS]
            self._table.submit_transaction([("upsert", {"PartitionKey": partition(collection), **e}, {"mode": UpdateMode.MERGE})
                                            for e in chunk])
            self.operations += 1
