"""How long a collection's operations take: seconds per item, a moving average every instance reads.

One row per collection and action in the status table (PartitionKey `_timing`, RowKey
`<action>:<collection>`, e.g. `create:naip`): a one-item PUT or DELETE costs about what a 100-item
POST does, so their figures must not mix. The prefix also keeps a collection named `job` apart
from job rows. It is O(1) whatever the job's size: a point read when a poll is scheduled, and one
read plus one write when a batch ends.

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
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.geocatalog import Operation
from shared.status import BatchRow

log = logging.getLogger(__name__)

PARTITION = "_timing"
ALPHA = 0.3  # weight of the newest sample: recent operations count most, one outlier does not dominate


@dataclass(frozen=True)
class CollectionTiming:
    """The moving average of one collection's operations."""

    seconds_per_item: float
    samples: int


class OperationTimings:
    """Reads and updates the `_timing` rows (one per collection) of the status table."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, collection: str, action: str = "create") -> CollectionTiming | None:
        try:
            entity = self._table.get_entity(PARTITION, _row_key(collection, action))
        except ResourceNotFoundError:
            return None
        except HttpResponseError as error:
            log.warning("could not read the timing of %s: %s", collection, error.reason)
            return None
        return CollectionTiming(float(entity["seconds_per_item"]), int(entity["samples"]))

    def seconds_per_item(self, collection: str, action: str = "create") -> float | None:
        timing = self.get(collection, action)
        return timing.seconds_per_item if timing else None

    def record(self, collection: str, operation: Operation, items: int, action: str = "create") -> CollectionTiming | None:
        """Fold a finished operation of `items` items into the collection's average (best effort)."""
        seconds = operation_seconds(operation) if operation.status in ("Succeeded", "Failed") else None
        if seconds is None or items <= 0:
            return None
        sample = seconds / items
        current = self.get(collection, action)
        timing = (CollectionTiming(sample, 1) if current is None else
                  CollectionTiming(current.seconds_per_item + ALPHA * (sample - current.seconds_per_item),
                                   current.samples + 1))
        entity = {"PartitionKey": PARTITION, "RowKey": _row_key(collection, action),
                  "seconds_per_item": timing.seconds_per_item, "samples": timing.samples}
        try:
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except HttpResponseError as error:
            log.warning("could not record the timing of %s: %s", collection, error.reason)
            return None
        return timing


def seconds_per_item(timings: OperationTimings | None, row: BatchRow) -> float | None:
    """Recent seconds per item of the batch's collection and action; None when unknown (or not kept)."""
    return timings.seconds_per_item(row.collection, row.action) if timings is not None else None


def record_timing(timings: OperationTimings | None, row: BatchRow, operation: Operation) -> None:
    """Fold the batch's finished operation into its collection's timing, when timings are kept."""
    if timings is not None:
        timings.record(row.collection, operation, row.item_count, row.action)


def operation_seconds(operation: Operation) -> float | None:
    """The operation's duration by the service's clock, from creation to finish; None when unknown."""
    raw = operation.raw
    started = raw.get("creationTime") or next(iter(operation.history), {}).get("timestamp")
    finished = raw.get("finishTime") or (operation.history[-1].get("timestamp") if operation.is_terminal and
                                          operation.history else None)
    if not started or not finished:
        return None
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _row_key(collection: str, action: str) -> str:
    return f"{action}:{collection}"
