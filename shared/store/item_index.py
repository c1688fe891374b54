"""What happened to each item: per-item outcomes of a settled batch, and the item index.

`batch_outcomes` reads one terminal batch row (and its overflow blobs) and says, item by item, how it
ended: Succeeded, Failed (the service's code), Rejected (the validator's or the service's reason),
Unconfirmed (its outcome could not be read yet; the batch's code says why), Superseded (an earlier
copy of an id repeated under upsert), or Resubmitted (a `Split` row's item that went on in a child
batch, whose own row settles it).

The item index answers "which jobs and batches handled item X?" in one lookup, without a table scan:
a second table (`ITEM_INDEX_TABLE`) with one entity per (item, job, batch), PartitionKey = collection,
RowKey = `<item id>|<job id>|<batch id>`. `record_batch` writes a batch's entities when it settles, as
entity-group transactions of at most 100 upserts (a batch's items share its collection, so one
partition), plus one upsert of the collection's marker row the first time an instance indexes that
collection, so the cost per batch is constant. Upserts
make a redelivered settlement rewrite the same entities. Items with no usable id (a rejected
"line 12") are not indexed; `failures` still lists them.

If the process dies between the batch's terminal row and the index write, the redelivered message
finds the row terminal and writes the index then (where it settles the job). The index is a view and
the status table the authority, so writing it never fails a handler: a storage error is logged and
that batch is missing from the index, while `failures` still reads the rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum, unique
from typing import TYPE_CHECKING, Any, Protocol

from azure.core.exceptions import AzureError
from azure.data.tables import UpdateMode

from shared.errors import InvalidInputError
from shared.ids import ITEM_ID
from shared.store.spill import read_spilled_json
from shared.store.status import BatchRow, BatchState, JobRow, JobState, StatusStore
from shared.store.table_batch import MAX_TRANSACTION_OPS, TableClient

if TYPE_CHECKING:
    from shared.store.payloads import PayloadStore

log = logging.getLogger(__name__)

MESSAGE_CHARS = 1000
COLLECTIONS_PARTITION = "~collections"  # not a collection id ([A-Za-z0-9._-]{3,32}): the marker rows
MAX_MARKED = 1024
WHOLE_JOB = "(whole job)"
INVALID_ITEM = "InvalidItem"  # the code of an item the validator rejected (its reason is the message)
WHOLE_BATCH_STATES = frozenset({BatchState.FAILED, BatchState.TIMED_OUT, BatchState.CANCELED})


@unique
class ItemState(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REJECTED = "Rejected"
    RESUBMITTED = "Resubmitted"  # a Split row's item that a child batch settles
    SUPERSEDED = "Superseded"  # an earlier copy of an id repeated under mode upsert: a later copy was sent
    UNCONFIRMED = "Unconfirmed"  # sent, but its outcome could not be read yet (the sweeper confirms it)


@dataclass(frozen=True)
class ItemOutcome:
    """How one batch settled one item. `item` is its id, or its label ("line 12", "#3") when it has none."""

    item: str
    job_id: str
    batch_id: str
    collection: str
    state: ItemState
    code: str = ""
    message: str = ""
    operation_id: str = ""
    submitted: datetime | None = None
    finished: datetime | None = None

    @property
    def item_id(self) -> str:
        """The item's id when the outcome names one ("" for a label); duplicates carry "#position"."""
        candidate = self.item.split("#", 1)[0]
        return candidate if ITEM_ID.match(candidate) else ""

    @property
    def is_problem(self) -> bool:
        return self.state in (ItemState.FAILED, ItemState.REJECTED, ItemState.UNCONFIRMED)

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "job_id": self.job_id, "batch_id": self.batch_id, "collection": self.collection,
                "state": str(self.state), "code": self.code, "message": self.message, "operation_id": self.operation_id,
                "submitted": _iso(self.submitted), "finished": _iso(self.finished)}


def batch_outcomes(row: BatchRow, *, read: Callable[[str], bytes], children: dict[str, str] | None = None) -> list[ItemOutcome]:
    """Every item of a terminal batch row and how it ended (pure, given `read` for overflow blobs).

    Args:
        row: the batch row; a non-terminal row has no outcomes yet.
        read: reads a `container/path` blob (the row's `*_blob` fields).
        children: for a `Split` row, item id -> the direct child batch that took it on.
    """
    if not row.state.is_terminal:
        return []
    common = {"job_id": row.job_id, "batch_id": row.batch_id, "collection": row.collection,
              "operation_id": row.operation_id, "submitted": row.submitted, "finished": row.finished or row.updated}
    rejected = read_spilled_json(row, "rejected_items", read, {})
    failed = read_spilled_json(row, "failed_items", read, {})
    if row.state == BatchState.SUPERSEDED:  # its `rejected_items` map says which later copy replaced each
        return [ItemOutcome(str(key), state=ItemState.SUPERSEDED, message=str(reason)[:MESSAGE_CHARS], **common)
                for key, reason in rejected.items()]
    outcomes = [ItemOutcome(str(key), state=ItemState.REJECTED, code=INVALID_ITEM, message=str(reason)[:MESSAGE_CHARS], **common)
                for key, reason in rejected.items()]
    ids = [i for i in read_spilled_json(row, "item_ids", read, []) if i not in rejected]
    whole = _whole_batch_state(row, failed, rejected)
    message = row.error_message[:MESSAGE_CHARS]
    if whole is not None and not ids and not row.validated:  # never read (e.g. refused before sending): its items by range
        return [*outcomes, ItemOutcome(unread_label(row), state=whole, code=row.error_code, message=message, **common)]
    for item_id in ids:
        if whole is not None:
            outcomes.append(ItemOutcome(item_id, state=whole, code=row.error_code, message=message, **common))
        elif item_id in failed:
            outcomes.append(ItemOutcome(item_id, state=ItemState.FAILED, code=str(failed[item_id]), message=message, **common))
        elif children and item_id in children:
            outcomes.append(ItemOutcome(item_id, state=ItemState.RESUBMITTED, message=f"resubmitted in {children[item_id]}", **common))
        else:
            outcomes.append(ItemOutcome(item_id, state=ItemState.SUCCEEDED, **common))
    return outcomes


def unread_label(row: BatchRow) -> str:
    """How a batch whose items were never read is named: `100 lines from line 1` (its range or chunk)."""
    return f"{row.item_count} {row.item_label}s from {row.item_label} {row.first_line}"


def _whole_batch_state(row: BatchRow, failed: dict[str, Any], rejected: dict[str, Any]) -> ItemState | None:
    """A batch that ended as a whole (no per-item map): every item shares its code and message."""
    if row.state in WHOLE_BATCH_STATES and not failed and row.items_failed:
        return ItemState.FAILED
    if row.state == BatchState.REJECTED and row.items_rejected > len(rejected):
        return ItemState.REJECTED
    if row.state == BatchState.UNCONFIRMED:
        return ItemState.UNCONFIRMED
    return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ----- a job's problems (the `failures` listing) ---------------------------------------------------


def job_problems(job: JobRow, *, status: StatusStore, read: Callable[[str], bytes]) -> list[ItemOutcome]:
    """Every failed, rejected or unconfirmed item of a job, batch by batch (Split rows, overflow blobs and rejected rows
    included); a job refused before it had batches gives one `(whole job)` entry."""
    batches = status.batches(job.job_id)
    problems = [o for row in batches for o in batch_outcomes(row, read=read) if o.is_problem]
    if not batches and job.state in (JobState.FAILED, JobState.REJECTED):
        state = ItemState.REJECTED if job.state == JobState.REJECTED else ItemState.FAILED
        problems.append(ItemOutcome(WHOLE_JOB, job.job_id, "", job.collection, state, job.error_code,
                                    job.error_message[:MESSAGE_CHARS], finished=job.updated))
    return problems


# ----- the index ---------------------------------------------------------------------------------


class ItemIndex:
    """Reads and writes the item index table (azure-data-tables)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self.operations = 0  # table requests sent by `record` (the benchmark reads it)
        self._marked: set[str] = set()  # collections whose marker row this instance has written (a marker is never removed)

    @property
    def table(self) -> TableClient:
        return self._table

    def record(self, collection: str, outcomes: Iterable[ItemOutcome]) -> None:
        """Upsert one entity per indexed outcome, in transactions of at most 100, and the collection's marker."""
        entities = [_to_entity(o) for o in outcomes if o.item_id]
        if not entities or not collection:
            return
        for start in range(0, len(entities), MAX_TRANSACTION_OPS):
            chunk = entities[start : start + MAX_TRANSACTION_OPS]
            self._table.upsert_entities(chunk)
            self.operations += 1
        if collection not in self._marked:
            self._table.upsert_entity({"PartitionKey": COLLECTIONS_PARTITION, "RowKey": collection}, mode=UpdateMode.REPLACE)
            self.operations += 1
            if len(self._marked) >= MAX_MARKED:
                self._marked.clear()
            self._marked.add(collection)

    def lookup(self, item_id: str, collection: str | None = None) -> list[ItemOutcome]:
        """Every job and batch that handled `item_id` (in `collection`, else in every indexed one), oldest first."""
        found: list[ItemOutcome] = []
        for name in [collection] if collection else self.collections():
            query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
            entities = self._table.query_entities(query, parameters={"pk": name, "lo": f"{item_id}|", "hi": f"{item_id}}}"})
            found.extend(_from_entity(e) for e in entities)
        return sorted(found, key=_order)

    def collections(self) -> list[str]:
        """Collections that have indexed items (one small partition of marker rows)."""
        entities = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": COLLECTIONS_PARTITION}, select=["RowKey"])
        return [e["RowKey"] for e in entities]


class IndexedStore(Protocol):
    """The parts of the store that indexing a batch reads and writes (the app's `Services` and the CLI's `Storage` both have them)."""

    status: StatusStore
    payloads: PayloadStore
    items: ItemIndex


def record_batch(row: BatchRow | None, *, services: IndexedStore) -> None:
    """Index the items of a batch that just reached a terminal state (a None or non-terminal row: nothing)."""
    if row is None or not row.state.is_terminal:
        return
    try:
        children: dict[str, str] = {}
        if row.state == BatchState.SPLIT:
            for child in services.status.child_batches(row.job_id, row.batch_id):
                children.update(dict.fromkeys(read_spilled_json(child, "item_ids", services.payloads.read, []), child.batch_id))
        services.items.record(row.collection, batch_outcomes(row, read=services.payloads.read, children=children))
    except (AzureError, InvalidInputError) as error:
        log.warning("item index not written for batch %s/%s: %s", row.job_id, row.batch_id, error)


def record_batches(rows: Iterable[BatchRow], *, services: IndexedStore, now: datetime) -> None:
    """Index rows that were born terminal (planning's `rejected-NNNNNN` rows), as settled at `now`."""
    for row in rows:
        record_batch(replace(row, finished=row.finished or now), services=services)


def _row_key(outcome: ItemOutcome) -> str:
    return f"{outcome.item_id}|{outcome.job_id}|{outcome.batch_id}"


def _to_entity(outcome: ItemOutcome) -> dict[str, Any]:
    """Only what the keys do not already say, and no empty values: most entities are a clean success,
    and the storage cost of a 100-entity transaction grows with their size."""
    entity: dict[str, Any] = {"PartitionKey": outcome.collection, "RowKey": _row_key(outcome), "state": str(outcome.state)}
    optional = {"item": outcome.item if outcome.item != outcome.item_id else "", "code": outcome.code,
                "message": outcome.message, "operation_id": outcome.operation_id,
                "submitted": outcome.submitted, "finished": outcome.finished}
    entity.update({name: value for name, value in optional.items() if value})
    return entity


def _from_entity(entity: Any) -> ItemOutcome:
    item_id, job_id, batch_id = entity["RowKey"].split("|")  # ids and batch ids never hold a "|"
    outcome = ItemOutcome(item=entity.get("item") or item_id, job_id=job_id, batch_id=batch_id,
                          collection=entity["PartitionKey"], state=ItemState(entity["state"]), code=entity.get("code", ""),
                          message=entity.get("message", ""), operation_id=entity.get("operation_id", ""))
    times = {name: entity.get(name) for name in ("submitted", "finished")}
    times = {k: v if isinstance(v, datetime) or v is None else datetime.fromisoformat(str(v)) for k, v in times.items()}
    return replace(outcome, **times)


def _order(outcome: ItemOutcome) -> tuple[Any, ...]:
    when = outcome.finished or outcome.submitted
    return (when is None, when.timestamp() if when else 0.0, outcome.job_id, outcome.batch_id)
