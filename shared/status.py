"""The status table: one job row and its batch rows per partition (PartitionKey = job id).

Rows are typed dataclasses; every change is a verb that reads the row, checks the state it may move
from, and writes with the row's ETag (If-Match). A duplicate or late delivery therefore can never
regress a row, and two workers racing on one row cannot both win.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

log = logging.getLogger(__name__)

JOB_ROW = "job"
MAX_TRANSACTION_OPS = 100  # the real service's limit (Azurite does not enforce it)
ETAG_RETRIES = 8


class BatchState(StrEnum):
    QUEUED = "Queued"
    SUBMITTING = "Submitting"  # POST in flight: the outcome is unknown until the row says Submitted
    SUBMITTED = "Submitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TIMED_OUT = "TimedOut"
    REJECTED = "Rejected"
    SPLIT = "Split"  # failed as a whole; its unresolved items went on in child batches
    SUPERSEDED = "Superseded"  # earlier copies of ids repeated under mode upsert: a later copy was sent instead

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_BATCH_STATES


TERMINAL_BATCH_STATES = frozenset(
    {
        BatchState.SUCCEEDED,
        BatchState.FAILED,
        BatchState.CANCELED,
        BatchState.TIMED_OUT,
        BatchState.REJECTED,
        BatchState.SPLIT,
        BatchState.SUPERSEDED,
    }
)


class JobState(StrEnum):
    ACCEPTED = "Accepted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    REJECTED = "Rejected"

    @property
    def is_terminal(self) -> bool:
        return self not in (JobState.ACCEPTED, JobState.RUNNING)


@dataclass
class JobRow:
    """The job's row: what was asked, and the roll-up of its batches."""

    job_id: str
    state: JobState = JobState.ACCEPTED
    collection: str = ""
    source: str = ""  # where the items came from, without any query string
    planned: bool = False
    item_count: int = 0
    batch_count: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    items_rejected: int = 0
    items_superseded: int = 0  # earlier copies of a repeated id under mode upsert (not errors)
    items_repaired: int = 0  # items sent with a bbox computed from their geometry (repair: ["bbox"])
    batches_by_state: str = "{}"
    error_code: str = ""
    error_message: str = ""
    created: datetime | None = None
    updated: datetime | None = None
    etag: str = field(default="", compare=False)

    @property
    def items_done(self) -> int:
        return self.items_succeeded + self.items_failed + self.items_rejected + self.items_superseded


@dataclass
class BatchRow:
    """One batch: the items of one POST (or rejected input items, never sent)."""

    job_id: str
    batch_id: str
    state: BatchState = BatchState.QUEUED
    collection: str = ""
    item_count: int = 0
    item_ids: str = "[]"  # JSON list; "" when the list lives in `item_ids_blob`
    item_ids_blob: str = ""
    payload_blob: str = ""  # the batch's items as sent (a FeatureCollection), for resends and isolation
    mode: str = "create"  # the job's: "upsert" replaces items that already exist
    action: str = "create"  # what this batch does: create (POST items), replace (PUT one), delete (DELETE one)
    sign: str = ""  # "planetary-computer": sign asset hrefs right before sending
    sign_collection: str = ""
    parent: str = ""
    depth: int = 0
    operation_id: str = ""
    operation_url: str = ""  # without query string
    attempts: int = 0
    submit_started: datetime | None = None
    submitted: datetime | None = None
    finished: datetime | None = None
    items_succeeded: int = 0
    items_failed: int = 0
    items_rejected: int = 0
    items_superseded: int = 0
    items_repaired: int = 0  # of this batch's items, how many got a bbox computed from their geometry
    failed_items: str = "{}"  # JSON {item id: error code}; "" when it lives in `failed_items_blob`
    failed_items_blob: str = ""
    rejected_items: str = "{}"  # JSON {item id, line or #position: reason}: input that was never sent
    rejected_items_blob: str = ""
    validated: bool = True  # False for upload batches until their submitter has checked them
    payload_start: int | None = None  # with payload_end: the batch is bytes [start, end) of an NDJSON upload
    payload_end: int | None = None
    first_line: int = 0  # number of the batch's first item in its upload: a line (NDJSON) or a feature (JSON)
    item_label: str = "line"
    error_code: str = ""
    error_message: str = ""
    logs: str = ""
    logs_blob: str = ""
    created: datetime | None = None
    updated: datetime | None = None
    etag: str = field(default="", compare=False)


class StatusStore:
    """Reads and writes job and batch rows in one table (azure-data-tables)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    # ----- jobs -------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRow | None:
        return self._get(JobRow, job_id, JOB_ROW)

    def create_job(self, row: JobRow, now: datetime) -> JobRow:
        """Insert the job row, or return the existing one (a redelivered message)."""
        existing = self.get_job(row.job_id)
        if existing is not None:
            return existing
        row = replace(row, created=now, updated=now)
        try:
            self._table.create_entity(_to_entity(row, row.job_id, JOB_ROW))
        except ResourceExistsError:
            pass
        found = self.get_job(row.job_id)
        assert found is not None
        return found

    def update_job(self, job_id: str, change: Callable[[JobRow], JobRow | None], now: datetime) -> JobRow | None:
        """Apply `change` to the current job row with optimistic concurrency, retrying on conflicts.

        `change` returns the new row, or None to leave the row as it is.
        """
        return self._update(lambda: self.get_job(job_id), change, now, job_id, JOB_ROW)

    # ----- batches ------------------------------------------------------------------------------

    def get_batch(self, job_id: str, batch_id: str) -> BatchRow | None:
        return self._get(BatchRow, job_id, batch_id)

    def create_batches(self, rows: Iterable[BatchRow], now: datetime) -> None:
        """Insert batch rows; rows that already exist are left untouched (never regressed)."""
        pending = [replace(row, created=now, updated=now) for row in rows]
        for start in range(0, len(pending), MAX_TRANSACTION_OPS):
            chunk = pending[start : start + MAX_TRANSACTION_OPS]
            operations = [("create", _to_entity(r, r.job_id, r.batch_id)) for r in chunk]
            try:
                self._table.submit_transaction(operations)
            except Exception:  # noqa: BLE001 - a transaction fails whole when any row exists; go row by row
                for row in chunk:
                    try:
                        self._table.create_entity(_to_entity(row, row.job_id, row.batch_id))
                    except ResourceExistsError:
                        continue

    def update_batch(
        self, job_id: str, batch_id: str, change: Callable[[BatchRow], BatchRow | None], now: datetime
    ) -> BatchRow | None:
        """Apply `change` to the current batch row with optimistic concurrency (see `update_job`)."""
        return self._update(lambda: self.get_batch(job_id, batch_id), change, now, job_id, batch_id)

    def batches(self, job_id: str) -> list[BatchRow]:
        """Every batch row of a job, in RowKey order."""
        query = "PartitionKey eq @pk and RowKey ne @job"
        entities = self._table.query_entities(query, parameters={"pk": job_id, "job": JOB_ROW})
        return [_from_entity(BatchRow, e) for e in entities]

    def jobs(self) -> list[JobRow]:
        """Every job row (for the demo and operators; a full-table scan)."""
        entities = self._table.query_entities("RowKey eq @job", parameters={"job": JOB_ROW})
        return [_from_entity(JobRow, e) for e in entities]

    # ----- plumbing -----------------------------------------------------------------------------

    def _get(self, kind: type[Any], partition: str, row_key: str) -> Any:
        try:
            return _from_entity(kind, self._table.get_entity(partition, row_key))
        except ResourceNotFoundError:
            return None

    def _update(self, read: Callable[[], Any], change: Callable[[Any], Any], now: datetime, pk: str, rk: str) -> Any:
        for _ in range(ETAG_RETRIES):
            current = read()
            if current is None:
                return None
            changed = change(current)
            if changed is None:
                return None
            changed = replace(changed, updated=now)
            try:
                metadata = self._table.update_entity(
                    _to_entity(changed, pk, rk),
                    mode=UpdateMode.REPLACE,
                    etag=current.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue
            return replace(changed, etag=metadata.get("etag", ""))
        raise ResourceModifiedError(f"row {pk}/{rk} kept changing under us")


def _to_entity(row: Any, partition: str, row_key: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row_key}
    for f in fields(row):
        if f.name in ("etag", "job_id", "batch_id"):
            continue
        value = getattr(row, f.name)
        if value is None:
            continue
        entity[f.name] = str(value) if isinstance(value, StrEnum) else value
    return entity


def _from_entity(kind: type[Any], entity: Any) -> Any:
    known = {f.name: f for f in fields(kind)}
    values: dict[str, Any] = {"job_id": entity["PartitionKey"]}
    if "batch_id" in known:
        values["batch_id"] = entity["RowKey"]
    for name, value in entity.items():
        if name in known and name not in ("job_id", "batch_id", "etag"):
            values[name] = value
    row = kind(**values)
    if "state" in values:
        row.state = (BatchState if kind is BatchRow else JobState)(values["state"])
    for name in ("created", "updated", "submit_started", "submitted", "finished"):
        value = getattr(row, name, None)
        if value is not None and not isinstance(value, datetime):
            setattr(row, name, datetime.fromisoformat(str(value)))
    row.etag = entity.metadata.get("etag", "")
    return row
