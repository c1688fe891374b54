"""The sync state: what a `mode: "sync"` job needs to know of each item between runs, kept in the item
index table, one partition per collection (`sync~<collection>`), RowKey = item id.

- `hash`: the content hash of the item as it was last sent (`shared.steps.sync.content_hash`), written
  only once the catalog confirmed it (its batch Succeeded). A sync compares what it would send with
  this, never with the catalog's copy (the service rewrites asset hrefs).
- `seen` / `dry_seen`: the last sync job (real / dry run) whose source had the item; `delete_missing`
  deletes catalog items that its job did not see.

Reads are bounded: one query per IDS_PER_QUERY ids (a Table filter allows 15 comparisons), never a
scan of the partition. Writes are merges of up to 100 entities per transaction (one partition).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.data.tables import UpdateMode

from shared.store.table_batch import MAX_TRANSACTION_OPS, TableClient

PARTITION_PREFIX = "sync~"  # "~" is not in a collection id: no clash with the index's own partitions
IDS_PER_QUERY = 14  # + the PartitionKey comparison: the 15 a Table filter allows
_COLUMNS = ["RowKey", "hash", "seen", "dry_seen"]
CONFIRM_ATTEMPTS = 3
READERS = 8  # queries of one read in flight at once (a batch of 100 ids is 8 queries)


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
        """The entries of `ids` that exist: one bounded query per IDS_PER_QUERY ids, up to READERS at a time."""
        wanted = sorted(set(ids))
        chunks = [wanted[start : start + IDS_PER_QUERY] for start in range(0, len(wanted), IDS_PER_QUERY)]
        found: dict[str, SyncEntry] = {}
        for entries in _readers().map(lambda chunk: self._read_chunk(collection, chunk), chunks):
            found.update(entries)
        self.operations += len(chunks)
        return found

    def _read_chunk(self, collection: str, chunk: list[str]) -> dict[str, SyncEntry]:
        keys = " or ".join(f"RowKey eq @k{n}" for n in range(len(chunk)))
        parameters: dict[str, Any] = {"pk": partition(collection), **{f"k{n}": key for n, key in enumerate(chunk)}}
        entities = self._table.query_entities(f"PartitionKey eq @pk and ( {keys} )", parameters=parameters, select=_COLUMNS)
        return {e["RowKey"]: SyncEntry(e.get("hash") or "", e.get("seen") or "", e.get("dry_seen") or "") for e in entities}

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
