"""The status table: one job row, its counter rows and its batch rows per partition (PartitionKey = job id).

Rows are typed dataclasses; every change is a verb that reads the row, checks the state it may move
from, and writes with the row's ETag (If-Match). A duplicate or late delivery therefore can never
regress a row, and two workers racing on one row cannot both win.

Counting is O(1) per batch change. A batch row and one of the job's counter rows (`counts-00` ..
`counts-15`, picked by the batch id) are written in one entity-group transaction, both under their
ETags: the counter moves by exactly the difference between the old and the new batch row, and only
together with the change that proved it. A redelivery that finds nothing to change writes nothing,
so it cannot count twice; a crash cannot split the two writes. A change that moves no counter (between
the active states, which share one) writes the batch row alone. Reading a job is one range query that
returns the job row and its counter rows together (`counts-*` sorts just before `job`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.errors import RetryableError
from shared.redact import redacted
from shared.store.source_ref import SourceRef
from shared.store.table_batch import MAX_TRANSACTION_OPS

log = logging.getLogger(__name__)

JOB_ROW = "job"
COUNTER_ROW_PREFIX = "counts-"
COUNTER_SHARDS = 16  # concurrent batches of one job rarely touch the same counter row
ETAG_RETRIES = 12
# Item counters a batch row carries and its job row sums up.
# Free text a row may hold, and how much of it is kept: every write redacts it (shared.redact) and cuts
# it to this length, under the table's 32K-character property limit, whoever composed it.
TEXT_LIMITS = {"source": 2_000, "error_code": 200, "error_message": 8_000, "logs": 30_000, "event_error": 2_000}
REDACTED_JSON = ("rejected_items", "failed_items", "source_ref")  # JSON: redacted, never cut (that would break the JSON)
TRUNCATED = " ...[truncated]"
ITEM_COUNTERS = ("items_succeeded", "items_failed", "items_rejected", "items_superseded", "items_repaired",
                 "items_unconfirmed",
                 "items_created", "items_replaced", "items_unchanged", "items_deleted")
PLANNED_ITEMS = "items_planned"  # items of top-level batches (not isolation children): the job's item count so far


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
    # Ended without a verdict: neither its operation nor the catalog could be read by its deadline. The sweeper
    # asks the catalog again and moves it to Succeeded or Failed (`transitions.confirm_batch`).
    UNCONFIRMED = "Unconfirmed"
    DRY_RUN = "DryRun"  # a dry run's batch: checked (and diffed) as a real run would, never sent

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
        BatchState.UNCONFIRMED,
        BatchState.DRY_RUN,
    }
)
ACTIVE_BATCH_STATES = (BatchState.SUBMITTING, BatchState.SUBMITTED, BatchState.RUNNING)  # claimed, not ended
# The active states share one counter: a batch moves between them (its POST answered, its operation seen
# Running) with a plain write of its row, and only claiming and ending it move a counter.
ACTIVE = "Active"


class JobState(StrEnum):
    ACCEPTED = "Accepted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    REJECTED = "Rejected"
    # Every batch ended, but some items' outcome could not be read: the sweeper settles them, then the job
    # moves to its true state (the one terminal state that changes again).
    UNCONFIRMED = "Unconfirmed"
    DRY_RUN = "DryRun"  # a dry run's end: its counts say what a real run would do

    @property
    def is_terminal(self) -> bool:
        return self not in (JobState.ACCEPTED, JobState.RUNNING)

    @property
    def is_final(self) -> bool:
        """Terminal and never changing again (an Unconfirmed job still moves once its items are confirmed)."""
        return self.is_terminal and self != JobState.UNCONFIRMED


class EventState(StrEnum):
    """The job-finished event of a job row (its outbox): "" while the job runs."""

    PENDING = "Pending"  # the job ended: its event is still to be published (claimed or not)
    PUBLISHED = "Published"
    UNSENT = "Unsent"  # no sink configured (neither JOB_EVENTS_TOPIC_ENDPOINT nor JOB_EVENTS_QUEUE): none sent


@dataclass
class JobRow:
    """The job's row: what was asked, and the roll-up of its batches."""

    job_id: str
    state: JobState = JobState.ACCEPTED
    collection: str = ""
    source: str = ""  # where the items came from, without any query string (for people)
    source_ref: str = ""  # the same as JSON, for programs (read it with `source_reference`); "" on older rows
    planned: bool = False
    item_count: int = 0
    batch_count: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    items_rejected: int = 0
    items_superseded: int = 0  # earlier copies of a repeated id under mode upsert (not errors)
    items_repaired: int = 0  # items sent with a bbox computed from their geometry (repair: ["bbox"])
    items_unconfirmed: int = 0  # sent, but whether they were ingested could not be read yet (batches Unconfirmed)
    items_created: int = 0  # of the succeeded items: created (POST), replaced (PUT), left unchanged (mode sync), deleted;
    items_replaced: int = 0  # in a dry run, what a real run would do
    items_unchanged: int = 0
    items_deleted: int = 0
    mode: str = "create"
    dry_run: bool = False
    delete_missing: bool = False  # mode sync: once every batch settled, delete what the source no longer has
    max_delete_fraction: float = 0.1
    prune: str = ""  # delete_missing's phase: "" (not yet), "listing", "deleting", "done" (delete batches made), "refused"
    prune_cursor: str = ""  # where the listing of the catalog goes on (a SearchCursor as JSON)
    prune_pages: int = 0  # catalog pages listed so far (each page's candidates in a blob of its own)
    prune_listed: int = 0  # catalog items listed
    prune_candidates: int = 0  # of those, the items the job's source did not have
    prune_pages_done: int = 0  # pages whose deletes (or DryRun rows) are made
    batches_by_state: str = "{}"
    batches_open: int = 0  # batches not yet in a terminal state
    error_code: str = ""
    error_message: str = ""
    fingerprint: str = ""  # hash of the message that planned the job: a different message with this id is a conflict
    claimed_by: str = ""  # queue message id that claimed the plan (its redeliveries and retries may continue it)
    created: datetime | None = None
    updated: datetime | None = None
    finished: datetime | None = None  # when the job reached its terminal state
    event_state: str = ""  # `EventState` of its job-finished event
    event_claimed_by: str = ""  # the publisher holding the event (until `event_claimed_until`)
    event_claimed_until: datetime | None = None
    event_attempts: int = 0
    event_error: str = ""  # why the last publish failed (redacted)
    etag: str = field(default="", compare=False)

    @property
    def items_done(self) -> int:
        return (self.items_succeeded + self.items_failed + self.items_rejected + self.items_superseded
                + self.items_unconfirmed)

    @property
    def source_reference(self) -> SourceRef | None:
        return SourceRef.from_json(self.source_ref)


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
    claimed_by: str = ""  # id of the queue message whose delivery moved the batch to Submitting
    poll_role: str = ""  # "scout" / "waiting" while its collection's timing is learnt (shared.steps.cold_start)
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
    items_unconfirmed: int = 0  # Unconfirmed: every item, until the sweeper confirms them
    items_created: int = 0  # of its succeeded items (or, in a dry run, planned): by what happened to them
    items_replaced: int = 0
    items_unchanged: int = 0
    items_deleted: int = 0
    sync_items: str = ""  # JSON {item id: "<c|r|u>:<content hash>"}: the diff (create, replace, unchanged); "" = not diffed
    sync_items_blob: str = ""
    failed_items: str = "{}"  # JSON {item id: error code}; "" when it lives in `failed_items_blob`
    failed_items_blob: str = ""
    rejected_items: str = "{}"  # JSON {item id, line or #position: reason}: input that was never sent
    rejected_items_blob: str = ""
    validated: bool = True  # False for upload batches until their submitter has checked them
    repair: str = ""  # opt-in repairs (comma-separated) the submitter applies to a not yet validated batch
    payload_start: int | None = None  # with payload_end: the batch is bytes [start, end) of an NDJSON upload
    payload_end: int | None = None
    payload_etag: str = ""  # the version of the upload that range belongs to (read only while it is current)
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
    """Reads and writes job, counter and batch rows in one table (azure-data-tables)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        # Told of every job row a write made terminal (its event pending): the job-finished publisher
        # (`shared.store.job_events`), wired by `shared.services`. It must not raise.
        self.on_job_ended: Callable[[JobRow, datetime], None] | None = None
        self._counters = CounterCache()
        self._last_written = threading.local()  # the counter rows this thread's last transaction wrote

    @property
    def table(self) -> TableClient:
        return self._table

    # ----- jobs -------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRow | None:
        """The job row with its counters summed from the counter rows (one range query)."""
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @job"
        entities = list(self._table.query_entities(query, parameters={"pk": job_id, "lo": COUNTER_ROW_PREFIX, "job": JOB_ROW}))
        job = next((e for e in entities if e["RowKey"] == JOB_ROW), None)
        if job is None:
            return None
        return _with_counts(_from_entity(JobRow, job), [e for e in entities if e["RowKey"] != JOB_ROW])

    def is_dry_run(self, job_id: str) -> bool | None:
        """The job row's `dry_run` (one point read of one column); None when there is no job row."""
        try:
            return bool(self._table.get_entity(job_id, JOB_ROW, select=["dry_run"]).get("dry_run"))
        except ResourceNotFoundError:
            return None

    def job_progress(self, job_id: str) -> JobRow | None:
        """`get_job` reading only the state, `planned` and the counters: what deciding whether to settle needs.

        The other fields of the row it returns are left at their defaults.
        """
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @job"
        entities = list(self._table.query_entities(query, parameters={"pk": job_id, "lo": COUNTER_ROW_PREFIX, "job": JOB_ROW},
                                                   select=_PROGRESS_COLUMNS))
        job = next((e for e in entities if e["RowKey"] == JOB_ROW), None)
        if job is None:
            return None
        present = {k: v for k, v in job.items() if v is not None}
        row = JobRow(job_id, state=JobState(present.get("state", JobState.ACCEPTED)), planned=bool(present.get("planned")),
                     item_count=int(present.get("item_count", 0)))
        return _with_counts(row, [e for e in entities if e["RowKey"] != JOB_ROW])

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
        for _ in range(ETAG_RETRIES):
            current = self.get_job(job_id)
            if current is None:
                return None
            changed = change(current)
            if changed is None:
                return None
            changed = replace(changed, updated=now)
            try:
                metadata = self._table.update_entity(_to_entity(changed, job_id, JOB_ROW), mode=UpdateMode.REPLACE,
                                                     etag=current.etag, match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError:
                _pause()
                continue
            return replace(changed, etag=metadata.get("etag", ""))
        raise RetryableError(f"job row {job_id} is contended", retry_after=1.0)

    def jobs(self) -> list[JobRow]:
        """Every job row (for the demo and operators; a full-table scan), with counters."""
        entities = self._table.query_entities("RowKey eq @job", parameters={"job": JOB_ROW})
        rows = [_from_entity(JobRow, e) for e in entities]
        return [row if row.state.is_final else (self.get_job(row.job_id) or row) for row in rows]

    def list_jobs(self, *, state: JobState | None = None, since: datetime | None = None) -> list[JobRow]:
        """Job rows with counters, newest first, optionally only in `state` and/or created at or after `since` (operators)."""
        query, parameters = "RowKey eq @job", {"job": JOB_ROW}
        if state is not None:
            query, parameters["state"] = query + " and state eq @state", str(state)
        if since is not None:
            query, parameters["since"] = query + " and created ge @since", since
        rows = [_from_entity(JobRow, e) for e in self._table.query_entities(query, parameters=parameters)]
        rows = [row if row.state.is_final else (self.get_job(row.job_id) or row) for row in rows]
        return sorted(rows, key=lambda r: r.created.timestamp() if r.created else 0.0, reverse=True)

    def open_jobs(self) -> list[JobRow]:
        """Job rows not yet in a terminal state (without their counters)."""
        query = "RowKey eq @job and ( state eq @accepted or state eq @running )"
        entities = self._table.query_entities(query, parameters={"job": JOB_ROW, "accepted": str(JobState.ACCEPTED),
                                                                 "running": str(JobState.RUNNING)})
        return [_from_entity(JobRow, e) for e in entities]

    def unconfirmed_jobs(self) -> list[JobRow]:
        """Job rows in state Unconfirmed (without their counters): the sweeper confirms their items."""
        entities = self._table.query_entities("RowKey eq @job and state eq @state",
                                              parameters={"job": JOB_ROW, "state": str(JobState.UNCONFIRMED)})
        return [_from_entity(JobRow, e) for e in entities]

    def pending_events(self, *, limit: int = 1000) -> list[JobRow]:
        """Job rows whose job-finished event is not yet published (at most `limit`, with counters)."""
        query = "RowKey eq @job and event_state eq @pending"
        entities = self._table.query_entities(query, parameters={"job": JOB_ROW, "pending": str(EventState.PENDING)},
                                              results_per_page=min(limit, 1000))
        rows = [_from_entity(JobRow, e) for e in itertools.islice(entities, limit)]
        return [self.get_job(row.job_id) or row for row in rows]

    def jobs_updated_since(self, since: datetime, *, max_rows: int) -> tuple[list[JobRow], bool]:
        """Job rows (without counters) changed at or after `since`: at most `max_rows`, and whether more matched."""
        query = "RowKey eq @job and updated ge @since"
        return self._bounded(JobRow, query, {"job": JOB_ROW, "since": since}, _RECENT_JOB_COLUMNS, max_rows)

    def batches_updated_since(self, since: datetime, *, max_rows: int) -> tuple[list[BatchRow], bool]:
        """Batch rows changed at or after `since` (counter rows have no `updated`): at most `max_rows`, and
        whether more matched. The figures' columns only (`failed_items` for the codes of failed items)."""
        query = "RowKey ne @job and updated ge @since"
        return self._bounded(BatchRow, query, {"job": JOB_ROW, "since": since}, _RECENT_BATCH_COLUMNS, max_rows)

    def _bounded(self, kind: type[Any], query: str, parameters: dict[str, Any], select: list[str],
                 max_rows: int) -> tuple[list[Any], bool]:
        pages = self._table.query_entities(query, parameters=parameters, select=["PartitionKey", "RowKey", *select],
                                           results_per_page=min(max(max_rows, 1), 1000))
        entities = list(itertools.islice(pages, max_rows + 1))
        return [_from_entity(kind, e) for e in entities[:max_rows]], len(entities) > max_rows

    # ----- batches ------------------------------------------------------------------------------

    def get_batch(self, job_id: str, batch_id: str) -> BatchRow | None:
        return self._get(BatchRow, job_id, batch_id)

    def create_batches(self, rows: Iterable[BatchRow], now: datetime) -> None:
        """Insert batch rows and count them; rows that already exist are left untouched (never regressed).

        Each transaction holds up to 99 rows plus the counter row they add to.
        """
        pending = [replace(row, created=now, updated=now) for row in rows]
        for start in range(0, len(pending), MAX_TRANSACTION_OPS - 1):
            chunk = pending[start : start + MAX_TRANSACTION_OPS - 1]
            if not self._create_counted(chunk):
                # Some row exists already (a redelivery): go row by row, skipping those.
                for row in chunk:
                    self._create_counted([row])

    def update_batch(
        self, job_id: str, batch_id: str, change: Callable[[BatchRow], BatchRow | None], now: datetime,
        *, current: BatchRow | None = None,
    ) -> BatchRow | None:
        """Apply `change` to the current batch row under its ETag, moving the job's counters with it.

        `current`: the row as the caller last read or wrote it (with its ETag), tried first to save a
        read. If it is stale the write fails on its ETag and the row is read again; and a change that
        finds nothing to do on it is checked once more on a fresh read.
        """
        known = current if current is not None and current.etag else None
        for _ in range(ETAG_RETRIES):
            row = known or self.get_batch(job_id, batch_id)
            if row is None:
                return None
            changed = change(row)
            if changed is None:
                if known is not None:
                    known = None
                    continue
                return None
            known = None
            changed = replace(changed, updated=now)
            entity = _to_entity(changed, job_id, batch_id)
            delta = count_delta(row, changed)
            try:
                etag = self._write_batch(entity, row.etag, delta)
            except (ResourceModifiedError, ResourceExistsError, TableTransactionError) as error:
                if isinstance(error, TableTransactionError) and error.status_code not in (409, 412):
                    raise
                _pause()
                continue
            return replace(changed, etag=etag)
        raise RetryableError(f"batch row {job_id}/{batch_id} is contended", retry_after=1.0)

    def batches(self, job_id: str, *, select: list[str] | None = None, where: str = "") -> list[BatchRow]:
        """Every batch row of a job, in RowKey order (`where`: an extra OData filter on the batch rows)."""
        query = "PartitionKey eq @pk and ( RowKey lt @lo or RowKey gt @job )" + (f" and ({where})" if where else "")
        entities = self._table.query_entities(query, parameters={"pk": job_id, "lo": COUNTER_ROW_PREFIX, "job": JOB_ROW},
                                              select=select and ["PartitionKey", "RowKey", *select])
        return [_from_entity(BatchRow, e) for e in entities]

    def child_batches(self, job_id: str, batch_id: str) -> list[BatchRow]:
        """The batches split off `batch_id` directly (`batch-000003.1`, `.2`; not grandchildren): one range query."""
        query = "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi"
        entities = self._table.query_entities(query, parameters={"pk": job_id, "lo": f"{batch_id}.", "hi": f"{batch_id}/"})
        return [row for row in (_from_entity(BatchRow, e) for e in entities) if row.parent == batch_id]

    def recount(self, job_id: str) -> dict[str, int]:
        """The job's counters recounted from its batch rows: the repair step, O(batches)."""
        totals: Counter[str] = Counter()
        for row in self.batches(job_id):
            totals.update(count_delta(None, row))
        return {k: v for k, v in totals.items() if v}

    def counters(self, job_id: str) -> dict[str, int]:
        """The job's counters as its counter rows hold them (summed over shards)."""
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @job"
        totals: Counter[str] = Counter()
        for entity in self._table.query_entities(query, parameters={"pk": job_id, "lo": COUNTER_ROW_PREFIX, "job": JOB_ROW}):
            totals.update(_counter_values(entity))
        return {k: v for k, v in totals.items() if v}

    # ----- plumbing -----------------------------------------------------------------------------

    def _create_counted(self, rows: list[BatchRow]) -> bool:
        """Create `rows` and add them to one counter row, atomically; False when a row already exists."""
        delta: Counter[str] = Counter()
        for row in rows:
            delta.update(count_delta(None, row))
        job_id = rows[0].job_id
        for _ in range(ETAG_RETRIES):
            if len(rows) == 1 and self.get_batch(job_id, rows[0].batch_id) is not None:
                return True
            creates = [("create", _to_entity(r, r.job_id, r.batch_id)) for r in rows]
            try:
                self._submit_counted(creates, job_id, counter_row_key(rows[0].batch_id), dict(delta))
                return True
            except TableTransactionError as error:
                if error.status_code not in (409, 412):
                    raise
                # 412: our copy of the counter row was stale (a submitter moved it): retry with it read
                # again. Only a 409 (an entity exists) may be a row created before, by a redelivery.
                if error.status_code == 409 and len(rows) > 1 and any(self.get_batch(job_id, r.batch_id) is not None
                                                                     for r in rows):
                    return False
                _pause()
        raise RetryableError(f"counters of job {job_id} are contended", retry_after=1.0)

    def _write_batch(self, entity: dict[str, Any], etag: str, delta: dict[str, int]) -> str:
        """Replace the batch row under `etag`, with its counter row when the counts move; the row's new ETag."""
        if not delta:
            self._last_written.counters = {}
            return self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                             match_condition=MatchConditions.IfNotModified).get("etag", "")
        update = ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified})
        key = counter_row_key(entity["RowKey"])
        return self._submit_counted([update], entity["PartitionKey"], key, delta)[0].get("etag", "")

    def _submit_counted(self, operations: list[tuple[Any, ...]], job_id: str, key: str,
                        delta: dict[str, int]) -> list[Any]:
        """Submit `operations` and the change of counter row `key` in one transaction, keeping the counter cache right.

        When only the counter row stopped the transaction (our copy of it was stale: another instance
        moved it since this one last wrote it), it is read again and the same `operations` are retried
        here: their own conditions held, so the caller need not read its rows again.
        """
        for attempt in range(ETAG_RETRIES):
            counter_op, values = self._counter_op(job_id, key, delta)
            try:
                answers = self._table.submit_transaction([*operations, counter_op])
            except TableTransactionError as error:
                self._counters.forget((job_id, key))  # perhaps our copy of it was stale: read it next time
                if not _only_counter_failed(error, len(operations)):
                    raise
                if attempt:
                    _pause()  # a second miss: writers racing for this very row, not just a stale copy
                continue
            self._counters.remember((job_id, key), values, answers[-1].get("etag", ""))
            self._last_written.counters = {(job_id, key): values}
            return answers
        raise RetryableError(f"counter row {key} of job {job_id} is contended", retry_after=1.0)

    def active_batches_in_shard(self, job_id: str, batch_id: str) -> int | None:
        """Batches claimed and not yet ended (Submitting, Submitted, Running) counted in `batch_id`'s
        counter row, as this thread's last write left it; None when that write did not touch it.

        Planning counts a chunk of new (Queued) batches in one counter row, but every later change of
        a batch moves its own row's counters: so each row's count of active batches is exact. When a
        job's last open batch ends no batch is active anywhere, so that write leaves its row at 0; an
        end that leaves more need not read the whole job to know it is not the last. (Exactly what
        this write left, not the process's cache: another thread may put an older copy there after
        this write.)
        """
        values = getattr(self._last_written, "counters", {}).get((job_id, counter_row_key(batch_id)))
        if values is None:
            return None
        return values.get(_ACTIVE_COUNTER, 0)

    def _counter_op(self, job_id: str, key: str, delta: dict[str, int]) -> tuple[tuple[Any, ...], dict[str, int]]:
        """The operation that adds `delta` to counter row `key` (created if missing), and the values it writes.

        The row is taken from the cache of counter rows this process wrote last, else read; the ETag
        condition makes a stale copy fail the transaction instead of miscounting.
        """
        cached = self._counters.get((job_id, key))
        if cached is None:
            try:
                entity = self._table.get_entity(job_id, key)
            except ResourceNotFoundError:
                return ("create", {"PartitionKey": job_id, "RowKey": key, **delta}), dict(delta)
            cached = (_counter_values(entity), entity.metadata["etag"])
        values = Counter(cached[0])
        values.update(delta)
        body = {"PartitionKey": job_id, "RowKey": key, **{k: int(v) for k, v in values.items()}}
        return ("update", body, {"mode": UpdateMode.REPLACE, "etag": cached[1],
                                 "match_condition": MatchConditions.IfNotModified}), dict(values)

    def _get(self, kind: type[Any], partition: str, row_key: str) -> Any:
        try:
            return _from_entity(kind, self._table.get_entity(partition, row_key))
        except ResourceNotFoundError:
            return None


def counter_row_key(batch_id: str) -> str:
    """The counter row (shard) that counts every change of `batch_id` after its creation (planning counts a
    chunk of new batches in the row of its first)."""
    return f"{COUNTER_ROW_PREFIX}{zlib.crc32(batch_id.encode()) % COUNTER_SHARDS:02d}"


class CounterCache:
    """The counter rows this process wrote last, with their ETags (bounded, least recently used out).

    Only an optimisation: a copy that another writer has since changed fails its ETag condition, is
    forgotten, and the row is read again.
    """

    def __init__(self, size: int = 4096) -> None:
        self._rows: OrderedDict[tuple[str, str], tuple[dict[str, int], str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[dict[str, int], str] | None:
        with self._lock:
            return self._rows.get(key)

    def remember(self, key: tuple[str, str], values: dict[str, int], etag: str) -> None:
        with self._lock:
            self._rows[key] = (values, etag)
            self._rows.move_to_end(key)
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._rows.pop(key, None)


def count_delta(before: BatchRow | None, after: BatchRow) -> dict[str, int]:
    """How the job's counters move when a batch row goes from `before` (None: new row) to `after`."""
    delta: Counter[str] = Counter()
    if before is None:
        if not after.parent:
            delta[PLANNED_ITEMS] += after.item_count
    else:
        delta[_state_counter(before.state)] -= 1
        for name in ITEM_COUNTERS:
            delta[name] -= getattr(before, name)
    delta[_state_counter(after.state)] += 1
    for name in ITEM_COUNTERS:
        delta[name] += getattr(after, name)
    return {k: v for k, v in delta.items() if v}


def state_group(state: BatchState) -> str:
    """How a job's counters (and `batches_by_state`) name a batch state: the active ones are one group."""
    return ACTIVE if state in ACTIVE_BATCH_STATES else str(state)


def _state_counter(state: BatchState) -> str:
    return f"n_{state_group(state)}"


_ACTIVE_COUNTER = f"n_{ACTIVE}"
_STATE_COUNTERS = sorted({_state_counter(s) for s in BatchState})
# Counter rows written before the active states shared a counter: read into it (the next write drops them).
_LEGACY_ACTIVE_COUNTERS = frozenset(f"n_{s}" for s in ACTIVE_BATCH_STATES)
_RECENT_JOB_COLUMNS = ["state", "collection", "item_count", *ITEM_COUNTERS, "error_code", "created", "updated", "finished",
                       "event_state"]
_RECENT_BATCH_COLUMNS = ["state", "collection", "parent", "item_count", *ITEM_COUNTERS, "error_code", "failed_items",
                         "created", "updated", "submit_started", "submitted", "finished"]
_PROGRESS_COLUMNS = ["RowKey", "state", "planned", "item_count", PLANNED_ITEMS, *ITEM_COUNTERS, *_STATE_COUNTERS,
                     *sorted(_LEGACY_ACTIVE_COUNTERS)]


def _counter_values(entity: Any) -> dict[str, int]:
    values: Counter[str] = Counter()
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey") and isinstance(value, int):
            values[_ACTIVE_COUNTER if name in _LEGACY_ACTIVE_COUNTERS else name] += int(value)
    return dict(values)


def _with_counts(job: JobRow, counter_entities: list[Any]) -> JobRow:
    """The job row with its progress taken from the counter rows (when it has batches at all)."""
    if not counter_entities:
        return job
    totals: Counter[str] = Counter()
    for entity in counter_entities:
        totals.update(_counter_values(entity))
    by_state = {name.removeprefix("n_"): totals[name] for name in _STATE_COUNTERS if totals[name]}
    open_batches = sum(n for group, n in by_state.items() if group == ACTIVE or not BatchState(group).is_terminal)
    counted = {name: totals[name] for name in ITEM_COUNTERS}
    return replace(job, **counted, item_count=max(job.item_count, totals[PLANNED_ITEMS]),
                   batches_by_state=_json_object(dict(sorted(by_state.items()))), batches_open=open_batches)


def _json_object(values: dict[str, int]) -> str:
    return "{" + ",".join(f'"{k}":{v}' for k, v in values.items()) + "}"


def _only_counter_failed(error: TableTransactionError, counter_index: int) -> bool:
    """Whether the transaction failed at its counter row (the last operation) on a stale or missing copy.

    The service names the failed operation by its index; operations run in order, so every one
    before it met its conditions.
    """
    return error.status_code in (409, 412) and getattr(error, "index", None) == counter_index


def _pause() -> None:
    """A short random pause before retrying a conflict, so racing writers fall out of step."""
    time.sleep(random.uniform(0.005, 0.05))


def _to_entity(row: Any, partition: str, row_key: str) -> dict[str, Any]:
    """The row's entity, without the properties that hold their default (every write replaces the whole
    entity, so an absent property reads back as its default): about half of a batch row's 40, which
    every read and write of it would otherwise carry. `state` is always written: queries filter on it."""
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row_key}
    for name, default in _written_fields(type(row)):
        value = getattr(row, name)
        if value is None or (value == default and name != "state"):
            continue
        entity[name] = str(value) if isinstance(value, StrEnum) else _stored_text(name, value)
    return entity


def _stored_text(name: str, value: Any) -> Any:
    if name in REDACTED_JSON:
        return redacted(value)
    limit = TEXT_LIMITS.get(name)
    if limit is None:
        return value
    value = redacted(value)
    return value if len(value) <= limit else value[: limit - len(TRUNCATED)] + TRUNCATED


@functools.cache
def _written_fields(kind: type[Any]) -> tuple[tuple[str, Any], ...]:
    """(name, default) of the fields a row stores as properties (the keys and ETag live elsewhere)."""
    return tuple((f.name, None if f.default is MISSING else f.default) for f in fields(kind)
                 if f.name not in ("etag", "job_id", "batch_id"))


def _from_entity(kind: type[Any], entity: Any) -> Any:
    known = {f.name: f for f in fields(kind)}
    values: dict[str, Any] = {"job_id": entity["PartitionKey"]}
    if "batch_id" in known:
        values["batch_id"] = entity["RowKey"]
    for name, value in entity.items():
        if name in known and name not in ("job_id", "batch_id", "etag") and value is not None:
            values[name] = value  # (a selected property the entity lacks may come back as null)
    row = kind(**values)
    if "state" in values:
        row.state = (BatchState if kind is BatchRow else JobState)(values["state"])
    for name in ("created", "updated", "submit_started", "submitted", "finished", "event_claimed_until"):
        value = getattr(row, name, None)
        if value is not None and not isinstance(value, datetime):
            setattr(row, name, datetime.fromisoformat(str(value)))
    row.etag = entity.metadata.get("etag", "")
    return row
