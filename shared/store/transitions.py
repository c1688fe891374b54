"""The state machine of job and batch rows: every change of a row after its creation is one verb here.

Each verb reads the row (or starts from the row in hand, with its ETag), checks that the change
applies, and writes it under the ETag (`StatusStore.update_job` / `update_batch`); a batch's counter
row moves in the same transaction. A verb returns the new row, or None when the change does not
apply (the row is not in a state it moves from, or a claim does not hold): then it wrote nothing.
So a redelivery or a late copy of a message never regresses a row and never counts twice. Steps
call these verbs and never `update_job` / `update_batch` themselves (a guard test checks it).

Jobs (`JobState`; `planned`: every batch row exists, so the roll-up may end the job):

    born Accepted (`create_job`: a message's first delivery, an upload, a conflict or poison job), or Running (planning)
    from             verb                to                                   called by
    any              mark_planned        Running, planned                     planning, segments, streamed_jobs
    not planned,     note_progress       Running (item and batch counts)      segments, while a file is planned
      not terminal
    not terminal     record_unsent       planned, AuthenticationFailed        planning.fail_unsent (its batches are
                                                                              born Failed; their roll-up ends it)
    not terminal,    mark_rejected       Rejected, planned                    planning.reject_job (for planning,
      its claimer's                                                           segments, uploads, streamed_jobs, handlers)
    not terminal,    give_up_claimed     Failed, or planned with GaveUp       planning.give_up_job (handlers: poison,
      its claimer's                      when it has batches                  last delivery)
    not planned, not give_up_stalled     the same                             sweeper
      terminal, unchanged since the cut-off
    not terminal     finish_empty        Succeeded, 0 items                   planning.finish_empty_search
    not terminal     end_job             Succeeded | PartiallySucceeded |     rollup.settle_job (the sweeper
      or Unconfirmed,                    Failed | Rejected | Unconfirmed      settles an Unconfirmed job again
      no open batch                      (Unconfirmed while any item is)      once its batches are confirmed)
    any              note_on_job         (error code and message)             segments, streamed_jobs, search_jobs
    any              record_source       (source)                             search_jobs, items_ref
    planned, not     mark_prune          prune "listed" (delete batches made) prune (delete_missing, once every
      terminal, no prune yet             | "refused" (DeleteRefused)          batch settled: `steps.prune`)

Every write above that makes a job terminal also sets `finished`, and the write that makes its verdict
final marks its job-finished event Pending (the outbox, in the same write; for a job that was Unconfirmed
first, the write that confirms it), then tells `StatusStore.on_job_ended`. The event's own verbs
(`shared.store.job_events` calls them; they never change the job's state or counts):

    event            verb                to                                   called by
    Pending, free    claim_event         Pending, held by a publisher until   job_events (after the ending
      or lease over                      a lease ends                         write; the sweeper)
    Pending, held    mark_published      Published                            job_events, once the sink took it
      by the caller
    Pending, held    release_event       Pending, free (why, in event_error)  job_events: the publish failed
      by the caller
    Pending          mark_unsent         Unsent                               job_events: no sink configured

Batches (`BatchState`; Submitting, Submitted and Running share one counter, "Active"):

    born Queued (fanout: planning, isolation's children; segments), or Rejected, Superseded or Failed
      (planning: `rejected_rows`, `superseded_rows`, `fail_unsent`; segments: `reject_input`)
    from             verb                to                                   called by
    Queued           claim_batch         Submitting (also Submitting -> Submitting for a redelivery of the
                                         message that claimed it); an upload batch not yet validated records
                                         `ItemsChecked` in the same write, or ends Rejected (no valid item,
                                         or `UploadChanged`)                  submit
    Submitting,      record_diff         Submitting, with its diff            sync (mode sync and dry runs: what
      not diffed                         (`sync_items`)                       each item needs, before acting on it)
    Submitting       mark_submitted      Submitted (its operation)            submit, once the POST answered
    Submitting       requeue             Queued (why, in error_*)             submit: a retryable error, our
                                                                              credential refused
    Submitting,      requeue_stale       Queued, unclaimed                    sweeper
      unchanged since the cut-off
    Submitted        mark_running        Running (a waiting batch's own       poll
                                         fallback poll: only while waiting,
                                         and no longer waiting)
    Submitted or     mark_woken          the same, no longer waiting          cold_start, poll (exactly one of a
      Running,                                                                scout's wake, the submitter's check
      waiting                                                                 and the batch's fallback poll
                                                                              takes it: that one polls it)
    Submitted or     mark_waiting        the same, waiting                    cold_start (its poll waits for a
      Running, not                                                            scout of its job)
      waiting
    not terminal     end_batch           `Outcome.state`: Succeeded | Failed  poll.finish_batch (for poll, submit,
                                         | Canceled | TimedOut | Rejected     sweeper, handlers, sync)
                                         | Split | DryRun | Unconfirmed (neither the
                                         operation nor the catalog answered)
    Unconfirmed      confirm_batch       Succeeded (every item in the         verdicts.confirm_unconfirmed
                                         catalog) | Failed (the absent ones,  (sweeper)
                                         `NotInCatalog`)

Long text goes through `shared.store.spill`: `end_batch` spills the failed items and the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from shared import telemetry
from shared.store.payloads import PayloadStore
from shared.store.source_ref import SourceRef
from shared.store.spill import MAX_INLINE_CHARS, Spilled, brief, spill_json, spill_text
from shared.store.status import BatchRow, BatchState, EventState, JobRow, JobState, StatusStore

# A batch's `poll_role` while its collection's timing is learnt or checked (steps.cold_start)
SCOUT, WAITING, LOOKOUT = "scout", "waiting", "lookout"
WAITING_STATES = (BatchState.SUBMITTED, BatchState.RUNNING)  # a batch may wait for a scout while its operation runs


def holds(job: JobRow, claimed_by: str) -> bool:
    """Whether `claimed_by` is the job's claimer (a row without one is held by no message)."""
    return bool(claimed_by) and job.claimed_by == claimed_by


# ----- jobs -------------------------------------------------------------------------------------


def _update_job(status: StatusStore, job_id: str, change: Callable[[JobRow], JobRow | None],
                now: datetime) -> JobRow | None:
    """`status.update_job`, and the job-finished outbox: the write that makes the job terminal sets
    `finished`; the write that makes its verdict final marks its event Pending (the same write, unless the job
    was Unconfirmed first: its event waits for the truth); once written, `status.on_job_ended` is told."""
    ended = False

    def outboxed(row: JobRow) -> JobRow | None:
        nonlocal ended
        changed = change(row)
        if changed is None:
            return None
        if changed.state.is_terminal and not row.state.is_terminal:
            changed = replace(changed, finished=now)
        ended = changed.state.is_final and not row.state.is_final
        return replace(changed, event_state=EventState.PENDING) if ended else changed

    written = status.update_job(job_id, outboxed, now)
    if written is not None and ended:
        telemetry.job_ended(written)  # its items by final status, counted once per job
    if written is not None and ended and status.on_job_ended is not None:
        status.on_job_ended(written, now)
    return written


def mark_planned(status: StatusStore, job_id: str, *, collection: str, item_count: int, batch_count: int,
                 now: datetime) -> JobRow | None:
    """Every batch row of the job exists: Running and planned, with its item and batch counts."""

    def planned(row: JobRow) -> JobRow:
        return replace(row, planned=True, state=JobState.RUNNING, collection=collection, item_count=item_count,
                       batch_count=batch_count)

    return _update_job(status, job_id, planned, now)


def note_progress(status: StatusStore, job_id: str, *, items: int, batches: int, now: datetime) -> JobRow | None:
    """A job still being planned shows how far it got (counts never go back)."""

    def progress(row: JobRow) -> JobRow | None:
        if row.planned or row.state.is_terminal:
            return None
        return replace(row, state=JobState.RUNNING, item_count=max(row.item_count, items),
                       batch_count=max(row.batch_count, batches))

    return _update_job(status, job_id, progress, now)


def record_unsent(status: StatusStore, job_id: str, *, collection: str, item_count: int, batch_count: int,
                  code: str, reason: str, now: datetime) -> JobRow | None:
    """Planned without sending: its items are in batch rows born Failed, whose roll-up ends the job."""

    def unsent(row: JobRow) -> JobRow | None:
        if row.state.is_terminal:
            return None
        return replace(row, planned=True, collection=collection, item_count=item_count, batch_count=batch_count,
                       error_code=code, error_message=brief(reason))

    return _update_job(status, job_id, unsent, now)


def mark_rejected(status: StatusStore, job_id: str, *, claimed_by: str, item_count: int, code: str, reason: str,
               now: datetime) -> JobRow | None:
    """Rejected before any batch was made (its items count as rejected); only by the job's claimer."""

    def reject(row: JobRow) -> JobRow | None:
        if row.state.is_terminal or not holds(row, claimed_by):
            return None
        return replace(row, state=JobState.REJECTED, planned=True, item_count=item_count, items_rejected=item_count,
                       error_code=code, error_message=brief(reason))

    return _update_job(status, job_id, reject, now)


def give_up_claimed(status: StatusStore, job_id: str, *, claimed_by: str, reason: str, now: datetime) -> JobRow | None:
    """Its claimer cannot plan the job (`GaveUp`): see `_given_up`."""

    def give_up(row: JobRow) -> JobRow | None:
        if row.state.is_terminal or not holds(row, claimed_by):
            return None
        return _given_up(row, reason)

    return _update_job(status, job_id, give_up, now)


def give_up_stalled(status: StatusStore, job_id: str, *, older_than: datetime, reason: str,
                    now: datetime) -> JobRow | None:
    """A job whose planning stopped (not planned, unchanged since before `older_than`) is given up."""

    def give_up(row: JobRow) -> JobRow | None:
        if row.planned or row.state.is_terminal or row.updated is None or row.updated > older_than:
            return None
        return _given_up(row, reason)

    return _update_job(status, job_id, give_up, now)


def _given_up(row: JobRow, reason: str) -> JobRow:
    """The job row once its planning has stopped for good: Failed, or, when batches exist (they carry the
    items), planned with the reason, so that their roll-up ends it."""
    if row.planned or row.batch_count:
        return replace(row, planned=True, error_code="GaveUp", error_message=reason)
    return replace(row, state=JobState.FAILED, planned=True, error_code="GaveUp", error_message=reason)


def finish_empty(status: StatusStore, job_id: str, *, code: str, message: str, now: datetime) -> JobRow | None:
    """Nothing to do is not an error: Succeeded with 0 items, saying why (`code` when a bound stopped it)."""

    def finish(row: JobRow) -> JobRow | None:
        if row.state.is_terminal:
            return None
        return replace(row, state=JobState.SUCCEEDED, planned=True, item_count=0, error_code=code, error_message=message)

    return _update_job(status, job_id, finish, now)


def end_job(status: StatusStore, job_id: str, *, state: JobState, code: str, message: str,
            now: datetime) -> JobRow | None:
    """The job's state once no batch of it is open: final (a final job row never changes again), or
    Unconfirmed while some items' outcome is unknown, settled again when they are confirmed."""

    def end(row: JobRow) -> JobRow | None:
        if row.state.is_final or row.batches_open:
            return None
        ended = replace(row, state=state, error_code=code, error_message=brief(message))
        return None if ended == row else ended

    return _update_job(status, job_id, end, now)


def note_on_job(status: StatusStore, job_id: str, *, code: str, note: str, now: datetime) -> JobRow | None:
    """Say on the job row why its input ended early (its batches go on)."""
    return _update_job(status, job_id, lambda row: replace(row, error_code=code, error_message=brief(note)), now)


def mark_prune(status: StatusStore, job_id: str, *, prune: str, code: str = "", reason: str = "",
               now: datetime) -> JobRow | None:
    """delete_missing's phase is over: its delete batches exist ("listed"), or the deletes were refused
    ("refused", saying why); None when a phase was already recorded."""

    def pruned(row: JobRow) -> JobRow | None:
        if row.state.is_terminal or not row.planned or row.prune:
            return None
        if code:
            return replace(row, prune=prune, error_code=code, error_message=brief(reason))
        return replace(row, prune=prune)

    return _update_job(status, job_id, pruned, now)


def record_source(status: StatusStore, job_id: str, *, source: str | None = None, source_ref: SourceRef | None = None,
                  now: datetime) -> JobRow | None:
    """Where the items actually came from (a redirect took the request elsewhere; the blob and version read);
    None, and nothing written, when the row already says so."""

    def recorded(row: JobRow) -> JobRow | None:
        changed = replace(row, source=row.source if source is None else source,
                          source_ref=row.source_ref if source_ref is None else source_ref.to_json())
        return None if changed == row else changed

    return _update_job(status, job_id, recorded, now)


# ----- job-finished events (the outbox on the job row) -------------------------------------------


def claim_event(status: StatusStore, job_id: str, *, claimed_by: str, until: datetime, now: datetime) -> JobRow | None:
    """Hold the job's Pending event for `claimed_by` until `until` (free, or its last holder's lease is over)."""

    def claim(row: JobRow) -> JobRow | None:
        if row.event_state != EventState.PENDING:
            return None
        if row.event_claimed_by and row.event_claimed_until is not None and row.event_claimed_until > now:
            return None
        return replace(row, event_claimed_by=claimed_by, event_claimed_until=until, event_attempts=row.event_attempts + 1)

    return status.update_job(job_id, claim, now)


def mark_published(status: StatusStore, job_id: str, *, claimed_by: str, now: datetime) -> JobRow | None:
    """The sink took the event that `claimed_by` holds: Published."""

    def published(row: JobRow) -> JobRow | None:
        if row.event_state != EventState.PENDING or row.event_claimed_by != claimed_by:
            return None
        return replace(row, event_state=EventState.PUBLISHED, event_claimed_by="", event_claimed_until=None,
                       event_error="")

    return status.update_job(job_id, published, now)


def release_event(status: StatusStore, job_id: str, *, claimed_by: str, reason: str, now: datetime) -> JobRow | None:
    """Publishing failed: the event stays Pending, free for the next try, saying why."""

    def release(row: JobRow) -> JobRow | None:
        if row.event_state != EventState.PENDING or row.event_claimed_by != claimed_by:
            return None
        return replace(row, event_claimed_by="", event_claimed_until=None, event_error=brief(reason))

    return status.update_job(job_id, release, now)


def mark_unsent(status: StatusStore, job_id: str, *, now: datetime) -> JobRow | None:
    """No sink is configured: the event is not published, and the row says so."""

    def unsent(row: JobRow) -> JobRow | None:
        if row.event_state != EventState.PENDING:
            return None
        return replace(row, event_state=EventState.UNSENT, event_claimed_by="", event_claimed_until=None)

    return status.update_job(job_id, unsent, now)


# ----- batches ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemsChecked:
    """What validating an upload batch found, recorded with its claim: ends it Rejected when nothing is valid."""

    valid: int
    rejected: int
    superseded: int
    repaired: int
    item_ids: Spilled
    rejected_items: Spilled  # {line or id: reason}, redacted
    payload_blob: str  # where the valid items are (the byte range's upload, or a chunk's own blob)


@dataclass(frozen=True)
class UploadChanged:
    """The upload was overwritten before the batch was read: it ends Rejected, its items gone with that version."""

    reason: str


UploadCheck = ItemsChecked | UploadChanged


def claim_batch(status: StatusStore, row: BatchRow, *, message_id: str, check: UploadCheck | None = None,
                now: datetime) -> BatchRow | None:
    """Queued -> Submitting (a Submitting batch only for a redelivery of the message that claimed it).

    An upload batch not yet validated records `check` in the same write, or ends Rejected there.
    """

    def claim(current: BatchRow) -> BatchRow | None:
        if check is not None and not current.validated:
            checked = _record_check(current, check, now)
            if checked is None or checked.state.is_terminal:
                return checked
            current = checked
        redelivered = current.state == BatchState.SUBMITTING and message_id and current.claimed_by == message_id
        if current.state != BatchState.QUEUED and not redelivered:
            return None
        return replace(current, state=BatchState.SUBMITTING, attempts=current.attempts + 1, claimed_by=message_id,
                       submit_started=current.submit_started or now)

    return status.update_batch(row.job_id, row.batch_id, claim, now, current=row)


def _record_check(current: BatchRow, check: UploadCheck, now: datetime) -> BatchRow | None:
    if current.validated or current.state != BatchState.QUEUED:
        return None
    if isinstance(check, UploadChanged):
        return replace(current, state=BatchState.REJECTED, finished=now, validated=True, error_code="UploadChanged",
                       error_message=check.reason, items_rejected=current.item_count, item_count=0, payload_blob="")
    common = {"validated": True, **check.item_ids.columns(), "item_count": check.valid, "items_rejected": check.rejected,
              "items_superseded": check.superseded, "items_repaired": check.repaired, **check.rejected_items.columns()}
    if not check.valid:
        return replace(current, state=BatchState.REJECTED, finished=now, error_code="InvalidItem",
                       error_message=f"all {check.rejected} item(s) failed validation", payload_blob="", **common)
    return replace(current, payload_blob=check.payload_blob, **common)


def mark_submitted(status: StatusStore, row: BatchRow, *, operation_id: str, operation_url: str, poll_role: str,
                   submitted: datetime, now: datetime) -> BatchRow | None:
    """Submitting -> Submitted: the POST answered with its operation (`operation_url` without its query)."""

    def mark(current: BatchRow) -> BatchRow | None:
        if current.state != BatchState.SUBMITTING:
            return None
        return replace(current, state=BatchState.SUBMITTED, operation_id=operation_id, poll_role=poll_role,
                       operation_url=operation_url, submitted=submitted, error_code="", error_message="")

    return status.update_batch(row.job_id, row.batch_id, mark, now, current=row)


def requeue(status: StatusStore, row: BatchRow, *, code: str, message: str, now: datetime) -> BatchRow | None:
    """Submitting -> Queued, saying why: its message comes again (a retryable error, our credential refused)."""

    def back(current: BatchRow) -> BatchRow | None:
        if current.state != BatchState.SUBMITTING:
            return None
        return replace(current, state=BatchState.QUEUED, error_code=code, error_message=brief(message))

    return status.update_batch(row.job_id, row.batch_id, back, now, current=row)


def requeue_stale(status: StatusStore, job_id: str, batch_id: str, *, older_than: datetime,
                  now: datetime) -> BatchRow | None:
    """Submitting and unchanged since before `older_than` (its submitter is long gone) -> Queued, unclaimed."""

    def back(current: BatchRow) -> BatchRow | None:
        if current.state != BatchState.SUBMITTING or current.updated is None or current.updated > older_than:
            return None
        return replace(current, state=BatchState.QUEUED, claimed_by="", error_code="Requeued",
                       error_message="swept: its submitter stopped while it was Submitting")

    return status.update_batch(job_id, batch_id, back, now)


def record_diff(status: StatusStore, row: BatchRow, *, sync_items: Spilled, now: datetime) -> BatchRow | None:
    """Submitting, not yet diffed -> the same, with its diff (`sync_items`: what each item needs); a
    redelivery acts on the diff recorded, never on a new one."""

    def record(current: BatchRow) -> BatchRow | None:
        if current.state != BatchState.SUBMITTING or current.sync_items or current.sync_items_blob:
            return None
        return replace(current, **sync_items.columns())

    return status.update_batch(row.job_id, row.batch_id, record, now, current=row)


def mark_running(status: StatusStore, row: BatchRow, *, now: datetime, waiting: bool = False) -> BatchRow | None:
    """Submitted -> Running: its operation was seen running. `waiting`: seen by a waiting batch's fallback
    poll, which goes on only if the batch still waits, and takes it out of waiting in the same write."""

    def running(current: BatchRow) -> BatchRow | None:
        if current.state != BatchState.SUBMITTED or (waiting and current.poll_role != WAITING):
            return None
        return replace(current, state=BatchState.RUNNING, poll_role="" if waiting else current.poll_role)

    return status.update_batch(row.job_id, row.batch_id, running, now, current=row)


def mark_woken(status: StatusStore, row: BatchRow, *, now: datetime) -> BatchRow | None:
    """A batch waiting for a scout (`poll_role` WAITING, Submitted or Running) is no longer waiting: whoever
    makes this change (a scout's wake, or the batch's own fallback poll) polls it from now on."""

    def woken(current: BatchRow) -> BatchRow | None:
        if current.state not in WAITING_STATES or current.poll_role != WAITING:
            return None
        return replace(current, poll_role="")

    return status.update_batch(row.job_id, row.batch_id, woken, now, current=row)


def mark_waiting(status: StatusStore, row: BatchRow, *, now: datetime) -> BatchRow | None:
    """A Submitted or Running batch waits for a scout of its job (`poll_role` WAITING): the scout's wake polls it."""

    def waiting(current: BatchRow) -> BatchRow | None:
        if current.state not in WAITING_STATES or current.poll_role == WAITING:
            return None
        return replace(current, poll_role=WAITING)

    return status.update_batch(row.job_id, row.batch_id, waiting, now, current=row)


class EveryItem(StrEnum):
    """A batch that ended as a whole: every one of its items failed, was rejected, or is unconfirmed, with
    the batch's code."""

    FAILED = "failed"
    REJECTED = "rejected"
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True)
class Planned:
    """What a batch's items would need: created, replaced, left unchanged, deleted."""

    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class Outcome:
    """How a batch ended: its state, items that succeeded (count), items that failed (id -> code), its
    code and message, and the operation's logs. `every_item`: no item told apart (none was sent, or the
    operation is gone), so every item of the row failed or was rejected."""

    state: BatchState
    _: KW_ONLY
    succeeded: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    code: str = ""
    message: str = ""
    every_item: EveryItem | None = None
    logs: str = ""
    unchanged: int = 0  # of `succeeded`: items a sync left alone (no call)
    planned: Planned | None = None  # a dry run's batch (state DryRun): what a real run would do

    @classmethod
    def every_item_failed(cls, state: BatchState, code: str, message: str) -> Outcome:
        return cls(state, code=code, message=message, every_item=EveryItem.FAILED)

    @classmethod
    def every_item_rejected(cls, code: str, message: str) -> Outcome:
        return cls(BatchState.REJECTED, code=code, message=message, every_item=EveryItem.REJECTED)

    @classmethod
    def every_item_unconfirmed(cls, code: str, message: str) -> Outcome:
        """No verdict could be read (`code` says why: e.g. TimedOut): nothing is claimed about any item."""
        return cls(BatchState.UNCONFIRMED, code=code, message=message, every_item=EveryItem.UNCONFIRMED)


def end_batch(status: StatusStore, row: BatchRow, outcome: Outcome, *, payloads: PayloadStore, now: datetime,
              logs_inline_chars: int = MAX_INLINE_CHARS) -> BatchRow | None:
    """Any state not terminal -> `outcome.state`, with its counts; None when the batch had already ended.

    The failed items and the logs spill to blobs (`shared.store.spill`; the row keeps the logs' first
    `logs_inline_chars` characters) before the row is written.
    """
    failed = spill_json(payloads, row.job_id, row.batch_id, "failed_items", outcome.failed)
    logs = spill_text(payloads, row.job_id, row.batch_id, "logs", outcome.logs, limit=logs_inline_chars, keep_head=True)

    def end(current: BatchRow) -> BatchRow | None:
        if current.state.is_terminal:
            return None
        ended = replace(current, state=outcome.state, finished=now, error_code=outcome.code,
                        error_message=brief(outcome.message), **failed.columns(), **logs.columns())
        if outcome.every_item == EveryItem.REJECTED:
            return replace(ended, items_rejected=current.items_rejected + current.item_count)
        if outcome.every_item == EveryItem.UNCONFIRMED:
            return replace(ended, items_succeeded=0, items_failed=0, items_unconfirmed=current.item_count)
        if outcome.planned is not None:
            planned = outcome.planned
            return replace(ended, items_created=planned.created, items_replaced=planned.replaced,
                           items_unchanged=planned.unchanged, items_deleted=planned.deleted)
        failed_count = current.item_count if outcome.every_item == EveryItem.FAILED else len(outcome.failed)
        return _by_action(replace(ended, items_succeeded=outcome.succeeded, items_failed=failed_count), outcome.unchanged)

    return status.update_batch(row.job_id, row.batch_id, end, now, current=row)


NOT_IN_CATALOG = "NotInCatalog"  # an Unconfirmed batch's item that the catalog does not hold once it answers


def confirm_batch(status: StatusStore, row: BatchRow, *, landed: set[str], ids: list[str], payloads: PayloadStore,
                  now: datetime) -> BatchRow | None:
    """Unconfirmed -> Succeeded, or Failed with the items not `landed` (`NotInCatalog`), as the catalog now says;
    None when the batch is no longer Unconfirmed (another sweep confirmed it)."""
    failed = {item_id: NOT_IN_CATALOG for item_id in ids if item_id not in landed}
    spilled = spill_json(payloads, row.job_id, row.batch_id, "failed_items", failed)
    was = f"{row.error_code}: {row.error_message}".strip(": ")

    def confirm(current: BatchRow) -> BatchRow | None:
        if current.state != BatchState.UNCONFIRMED:
            return None
        if not failed:
            return replace(current, state=BatchState.SUCCEEDED, items_unconfirmed=0, items_succeeded=current.item_count,
                           items_failed=0, error_code="", error_message=brief(f"confirmed in the catalog after: {was}"))
        message = f"{len(failed)} item(s) not in the catalog once it answered again, after: {was}"
        return replace(current, state=BatchState.FAILED, items_unconfirmed=0, items_succeeded=current.item_count - len(failed),
                       items_failed=len(failed), error_code=NOT_IN_CATALOG, error_message=brief(message), finished=now,
                       **spilled.columns())

    return status.update_batch(row.job_id, row.batch_id, confirm, now, current=row)


def _by_action(row: BatchRow, unchanged: int) -> BatchRow:
    """The succeeded items by what happened to them: its action's (created, replaced, deleted) or unchanged."""
    done = row.items_succeeded - unchanged
    return replace(row, items_unchanged=unchanged, items_created=done if row.action == "create" else 0,
                   items_replaced=done if row.action == "replace" else 0, items_deleted=done if row.action == "delete" else 0)
