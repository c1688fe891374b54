"""How long a collection's operations take: seconds per item, a moving average every instance reads.

One row per collection and action in the status table (PartitionKey `_timing`, RowKey
`<action>:<collection>`, e.g. `create:naip`): a one-item PUT or DELETE costs about what a 100-item
POST does, so their figures must not mix. The prefix also keeps a collection named `job` apart
from job rows. It is O(1) whatever the job's size, and cheaper still with each instance's copy of the rows
(see `OperationTimings`): about one read and one write per collection every few seconds.

The write is a plain upsert, not an ETag-conditional one: two batches ending at once may each fold
their sample into the same old average, and one sample is then lost. For a moving average that is
harmless, and it means a batch's end never waits on, retries for, or fails because of this row.
A storage error here is logged and ignored for the same reason: the timing only makes polls
better aimed, it is never needed for correctness.

The duration is the service's own (`finishTime - creationTime` of the operation), not our time of
detection: otherwise a late poll would make the next prediction later, and so on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.store.status import BatchRow

log = logging.getLogger(__name__)

PARTITION = "_timing"
REFRESH_SECONDS = 5.0
SCOUT_SECONDS = 300.0  # how long one scout of an unknown collection holds (see `shared.steps.cold_start`)
MAX_COPIES = 1024  # timing rows one instance keeps a copy of (collections x actions): memory stays bounded
ALPHA = 0.3  # weight of the newest sample: recent operations count most, one outlier does not dominate


@dataclass(frozen=True)
class CollectionTiming:
    """The moving average of one collection's operations."""

    seconds_per_item: float
    samples: int


@dataclass
class _Copy:
    """This instance's copy of one timing row."""

    timing: CollectionTiming | None
    read_at: float
    written_at: float | None = None  # None: this instance has not written the row yet
    dirty: bool = False  # holds samples the row does not have yet


class OperationTimings:
    """Reads and updates the `_timing` rows (one per collection) of the status table.

    Each instance keeps a copy of the rows it uses, re-read when older than `refresh_seconds`, and
    writes its own samples at most once per `refresh_seconds` (its first sample at once, so a cold
    collection is learnt everywhere quickly). A figure that is a few seconds old aims a poll just as
    well, and it saves a read and a write per finished batch.
    """

    def __init__(self, table: TableClient, *, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._table = table
        self._refresh = refresh_seconds
        self._clock = clock
        self._copies: dict[str, _Copy] = {}
        self._scouts: dict[str, float] = {}  # row key -> when this instance may send another scout
        self._lock = threading.Lock()

    def get(self, collection: str, action: str = "create", *, fresh: bool = False) -> CollectionTiming | None:
        """The collection's figure (`fresh`: read from the table now, unless this instance holds newer samples)."""
        return self._copy(_row_key(collection, action), fresh=fresh).timing

    def seconds_per_item(self, collection: str, action: str = "create", *, fresh: bool = False) -> float | None:
        timing = self.get(collection, action, fresh=fresh)
        return timing.seconds_per_item if timing else None

    def claim_scout(self, collection: str, action: str = "create") -> bool:
        """Whether a batch of a collection with no known timing should be its scout: one at a time per instance."""
        key = _row_key(collection, action)
        with self._lock:
            now = self._clock()
            if self._scouts.get(key, float("-inf")) > now:
                return False
            if len(self._scouts) >= MAX_COPIES:
                self._scouts.clear()
            self._scouts[key] = now + SCOUT_SECONDS
            return True

    def record(self, collection: str, seconds: float | None, items: int, action: str = "create") -> CollectionTiming | None:
        """Fold an operation of `items` items that took `seconds` into the collection's average (best effort)."""
        if seconds is None or items <= 0:
            return None
        sample = seconds / items
        key = _row_key(collection, action)
        copy = self._copy(key)
        with self._lock:
            current = copy.timing
            copy.timing = (CollectionTiming(sample, 1) if current is None else
                           CollectionTiming(current.seconds_per_item + ALPHA * (sample - current.seconds_per_item),
                                            current.samples + 1))
            copy.dirty = True
            due = copy.written_at is None or self._clock() - copy.written_at >= self._refresh
            timing = copy.timing
        if due:
            self._write(key, copy)
        return timing

    def _copy(self, key: str, *, fresh: bool = False) -> _Copy:
        """This instance's copy of the row, read again when it is older than the refresh period (and all
        written), or now when `fresh`.

        One thread reads a stale copy again; the others, arriving meanwhile (a dozen batches end at
        once), go on with the copy they have rather than each reading the same row.
        """
        with self._lock:
            copy = self._copies.get(key)
            if copy is not None and (copy.dirty or (not fresh and self._clock() - copy.read_at < self._refresh)):
                return copy
            if copy is not None:
                copy.read_at = self._clock()  # this thread refreshes it
        timing = self._read(key)  # outside the lock: a storage call
        with self._lock:
            current = self._copies.get(key)
            if current is not None and (current.dirty or (current is not copy and not fresh)):
                return current  # another thread refreshed (or folded into) it meanwhile
            if len(self._copies) >= MAX_COPIES:
                self._copies.clear()
            refreshed = self._copies[key] = _Copy(timing, read_at=self._clock(),
                                                  written_at=copy.written_at if copy else None)
            return refreshed

    def _read(self, key: str) -> CollectionTiming | None:
        try:
            entity = self._table.get_entity(PARTITION, key)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as error:
            log.warning("could not read the timing %s: %s", key, error.reason)
            return None
        return CollectionTiming(float(entity["seconds_per_item"]), int(entity["samples"]))

    def _write(self, key: str, copy: _Copy) -> None:
        with self._lock:
            timing, copy.dirty, copy.written_at = copy.timing, False, self._clock()
        if timing is None:
            return
        entity = {"PartitionKey": PARTITION, "RowKey": key, "seconds_per_item": timing.seconds_per_item,
                  "samples": timing.samples}
        try:
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except HttpResponseError as error:
            log.warning("could not record the timing %s: %s", key, error.reason)


def seconds_per_item(timings: OperationTimings | None, row: BatchRow) -> float | None:
    """Recent seconds per item of the batch's collection and action; None when unknown (or not kept)."""
    return timings.seconds_per_item(row.collection, row.action) if timings is not None else None


def record_timing(timings: OperationTimings | None, row: BatchRow, seconds: float | None) -> None:
    """Fold the batch's operation (`seconds` long, None when unknown) into its collection's timing, when timings are kept."""
    if timings is not None:
        timings.record(row.collection, seconds, row.item_count, row.action)


def _row_key(collection: str, action: str) -> str:
    return f"{action}:{collection}"
