"""How long a collection's operations take, by their item count: a moving line every instance reads.

An operation of n items is predicted to take `fixed_seconds + seconds_per_item * n`. The line is an
exponentially weighted least-squares fit of recent operations (`CollectionTiming`), so uneven batch
sizes each get their own prediction; while the sizes barely vary the fixed part cannot be told
apart and the line goes through the origin (seconds per item alone). A prediction proven wrong by a
scout (`shared.steps.cold_start`) is not averaged in slowly: the line is rescaled to the new speed at
once (`record(..., jump=True)`) and written at once.

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
from datetime import datetime

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.store.status import BatchRow

log = logging.getLogger(__name__)

PARTITION = "_timing"
REFRESH_SECONDS = 5.0
SCOUT_SECONDS = 300.0  # how long one scout of an unknown collection holds (see `shared.steps.cold_start`)
MAX_COPIES = 1024  # timing rows one instance keeps a copy of (collections x actions): memory stays bounded
ALPHA = 0.3  # weight of the newest sample: recent operations count most, one outlier does not dominate
SPREAD = 0.1  # sizes whose spread is below this fraction of their mean cannot tell a fixed part apart


@dataclass(frozen=True)
class CollectionTiming:
    """Exponentially weighted means of one collection's operations: item counts, seconds, and how they co-vary."""

    mean_items: float
    mean_seconds: float
    samples: int
    var_items: float = 0.0
    cov_items_seconds: float = 0.0

    @classmethod
    def first(cls, items: int, seconds: float) -> CollectionTiming:
        return cls(float(items), seconds, 1)

    @property
    def seconds_per_item(self) -> float:
        return self._line()[1]

    @property
    def fixed_seconds(self) -> float:
        return self._line()[0]

    def seconds_for(self, items: int) -> float:
        """The predicted length of an operation of `items` items."""
        fixed, per_item = self._line()
        return fixed + per_item * items

    def folded(self, items: int, seconds: float) -> CollectionTiming:
        """With one more operation weighted in (weight ALPHA; the older ones fade)."""
        dx, dy = items - self.mean_items, seconds - self.mean_seconds
        return CollectionTiming(self.mean_items + ALPHA * dx, self.mean_seconds + ALPHA * dy, self.samples + 1,
                                (1 - ALPHA) * (self.var_items + ALPHA * dx * dx),
                                (1 - ALPHA) * (self.cov_items_seconds + ALPHA * dx * dy))

    def jumped(self, items: int, seconds: float) -> CollectionTiming:
        """Moved to the speed one operation has just shown: every past operation counts as that much
        slower (or faster), then this one is weighted in as usual. The line keeps its shape."""
        predicted = self.seconds_for(items)
        factor = seconds / predicted if predicted > 0 else 1.0
        scaled = CollectionTiming(self.mean_items, self.mean_seconds * factor, self.samples, self.var_items,
                                  self.cov_items_seconds * factor)
        return scaled.folded(items, seconds)

    def _line(self) -> tuple[float, float]:
        """(fixed seconds, seconds per item): the least-squares line when sizes varied enough and it has
        no negative fixed part, else the line through the origin."""
        if self.var_items >= (SPREAD * self.mean_items) ** 2 and self.cov_items_seconds > 0:
            per_item = self.cov_items_seconds / self.var_items
            fixed = self.mean_seconds - per_item * self.mean_items
            if fixed >= 0:
                return fixed, per_item
        return 0.0, self.mean_seconds / self.mean_items if self.mean_items > 0 else 0.0


@dataclass(frozen=True)
class Rescout:
    """A batch scouting for its job after a wrong prediction (`shared.steps.cold_start`), and when it was submitted."""

    batch_id: str
    submitted: datetime | None


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
        self._lookouts: dict[str, float] = {}  # job id -> when this instance may pick another early looker
        self._rescouts: dict[str, tuple[Rescout, float]] = {}  # job id -> (its scout, held until)
        self._first_looks: dict[str, tuple[threading.Event, float]] = {}  # job id -> (set when done, held until)
        self._lock = threading.Lock()

    def get(self, collection: str, action: str = "create", *, fresh: bool = False) -> CollectionTiming | None:
        """The collection's figure (`fresh`: read from the table now, unless this instance holds newer samples)."""
        return self._copy(_row_key(collection, action), fresh=fresh).timing

    def seconds_per_item(self, collection: str, action: str = "create", *, fresh: bool = False) -> float | None:
        timing = self.get(collection, action, fresh=fresh)
        return timing.seconds_per_item if timing else None

    def predict(self, collection: str, items: int, action: str = "create", *, fresh: bool = False) -> float | None:
        """Seconds an operation of `items` items of the collection should take; None when unknown."""
        timing = self.get(collection, action, fresh=fresh)
        return timing.seconds_for(items) if timing else None

    def claim_scout(self, collection: str, action: str = "create") -> bool:
        """Whether a batch of a collection with no known timing should be its scout: one at a time per instance."""
        return self._claim(self._scouts, _row_key(collection, action), SCOUT_SECONDS)

    def claim_lookout(self, job_id: str, hold_seconds: float) -> bool:
        """Whether a just-submitted batch of a job should look early at its operation: one per job and instance
        for `hold_seconds` (its predicted length), so that a long job gets a new one now and then."""
        return self._claim(self._lookouts, job_id, hold_seconds)

    def claim_rescout(self, job_id: str, batch_id: str, submitted: datetime | None, *, hold_seconds: float) -> bool:
        """Whether a batch whose operation runs past its prediction becomes its job's scout on this instance
        (True again for the scout itself, which holds it on with each poll); batches submitted after it
        wait for it. Held until `end_rescout`, or for `hold_seconds` (its next poll, which may go to
        another instance and end there)."""
        with self._lock:
            now = self._clock()
            holder = self._rescouts.get(job_id)
            if holder is not None and holder[1] > now and holder[0].batch_id != batch_id:
                return False
            if len(self._rescouts) >= MAX_COPIES:
                self._rescouts.clear()
            self._rescouts[job_id] = (Rescout(batch_id, submitted), now + hold_seconds)
            return True

    def rescout_of(self, job_id: str) -> Rescout | None:
        """The batch scouting for its job's slowed operations on this instance, if any."""
        with self._lock:
            holder = self._rescouts.get(job_id)
            return holder[0] if holder is not None and holder[1] > self._clock() else None

    def end_rescout(self, job_id: str) -> None:
        with self._lock:
            self._rescouts.pop(job_id, None)

    def first_look(self, job_id: str, *, hold_seconds: float) -> threading.Event | None:
        """None for the poll that takes its job's first look on this instance (it calls `end_first_look` when
        done); for the others while it is held (`hold_seconds`), the event that look sets when done."""
        with self._lock:
            now = self._clock()
            held = self._first_looks.get(job_id)
            if held is not None and held[1] > now:
                return held[0]
            if len(self._first_looks) >= MAX_COPIES:
                self._first_looks.clear()
            self._first_looks[job_id] = (threading.Event(), now + hold_seconds)
            return None

    def end_first_look(self, job_id: str) -> None:
        with self._lock:
            held = self._first_looks.get(job_id)
        if held is not None:
            held[0].set()

    def _claim(self, claims: dict[str, float], key: str, hold_seconds: float) -> bool:
        with self._lock:
            now = self._clock()
            if claims.get(key, float("-inf")) > now:
                return False
            if len(claims) >= MAX_COPIES:
                claims.clear()
            claims[key] = now + hold_seconds
            return True

    def record(self, collection: str, seconds: float | None, items: int, action: str = "create", *,
               jump: bool = False) -> CollectionTiming | None:
        """Fold an operation of `items` items that took `seconds` into the collection's line (best effort).

        `jump`: the operation proved the prediction wrong; the line moves to its speed at once and is
        written at once, whatever the refresh period.
        """
        if seconds is None or items <= 0:
            return None
        key = _row_key(collection, action)
        copy = self._copy(key)
        with self._lock:
            current = copy.timing
            if current is None:
                copy.timing = CollectionTiming.first(items, seconds)
            else:
                copy.timing = current.jumped(items, seconds) if jump else current.folded(items, seconds)
            copy.dirty = True
            due = jump or copy.written_at is None or self._clock() - copy.written_at >= self._refresh
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
        if "mean_items" not in entity:  # a row of the per-item average alone: a line through the origin
            return CollectionTiming(1.0, float(entity["seconds_per_item"]), int(entity["samples"]))
        return CollectionTiming(float(entity["mean_items"]), float(entity["mean_seconds"]), int(entity["samples"]),
                                float(entity.get("var_items", 0.0)), float(entity.get("cov_items_seconds", 0.0)))

    def _write(self, key: str, copy: _Copy) -> None:
        with self._lock:
            timing, copy.dirty, copy.written_at = copy.timing, False, self._clock()
        if timing is None:
            return
        entity = {"PartitionKey": PARTITION, "RowKey": key, "seconds_per_item": timing.seconds_per_item,
                  "fixed_seconds": timing.fixed_seconds, "samples": timing.samples, "mean_items": timing.mean_items,
                  "mean_seconds": timing.mean_seconds, "var_items": timing.var_items,
                  "cov_items_seconds": timing.cov_items_seconds}
        try:
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except HttpResponseError as error:
            log.warning("could not record the timing %s: %s", key, error.reason)


def seconds_per_item(timings: OperationTimings | None, row: BatchRow) -> float | None:
    """Recent seconds per item of the batch's collection and action; None when unknown (or not kept)."""
    return timings.seconds_per_item(row.collection, row.action) if timings is not None else None


def predicted_seconds(timings: OperationTimings | None, row: BatchRow, *, fresh: bool = False) -> float | None:
    """How long the batch's operation should take, from its own item count; None when unknown (or not kept)."""
    return timings.predict(row.collection, row.item_count, row.action, fresh=fresh) if timings is not None else None


def record_timing(timings: OperationTimings | None, row: BatchRow, seconds: float | None, *, jump: bool = False) -> None:
    """Fold the batch's operation (`seconds` long, None when unknown) into its collection's timing, when timings are
    kept (`jump`: move the timing to this operation's speed at once)."""
    if timings is not None:
        timings.record(row.collection, seconds, row.item_count, row.action, jump=jump)


def _row_key(collection: str, action: str) -> str:
    return f"{action}:{collection}"
