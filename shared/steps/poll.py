"""Polling one batch's operation: wait again (a delayed message), or record how it ended.

No sleeping: while the operation runs, the handler re-sends its poll message with a growing
visibility delay and returns. (Two waits, each short and bounded: a scout's, under a second once per
cold job, to time the polls it wakes, and a job's first polls on one instance, while one of them
takes the first look: `shared.steps.cold_start`.) At a terminal state it stores the logs (truncated
in the row, whole in the payload container), resolves partial failures, and settles the job.

Every path ends, bounded by time alone: the deadline holds whether the operation is still running or
cannot be read at all (5xx, 429, timeouts, 401/403). No count of failed reads gives up earlier: a 429
is the service pacing us (its Retry-After is the next delay), and a 5xx or a timeout says nothing
about the operation. An operation still running at the deadline is canceled first, so that it
cannot land items after their verdict. A batch that ends without a verdict from the service is
reconciled against the catalog: its items that are there count as succeeded, the rest as failed with
the reason. When the catalog cannot be read either, or the operation cannot be seen to stop, nothing
is guessed: the batch ends `Unconfirmed` (every item, with the reason), and the sweeper confirms it
once the catalog answers and the operation has ended (`shared.steps.verdicts`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from shared import telemetry
from shared.catalog import Operation, OperationRef, learnt_seconds, operation_end, operation_seconds
from shared.errors import AuthenticationError, NotFoundError, RejectedByServiceError, RetryableError
from shared.inputs.batch_items import row_item_ids
from shared.messages import PollMessage
from shared.redact import urls_without_queries
from shared.services import Services
from shared.steps.backoff import PollSchedule, next_poll_delay
from shared.steps.cold_start import (
    LOOKOUT,
    SCOUT,
    WAITING,
    defers_to_scout,
    hold_scout,
    learn,
    next_role,
    superseded_fallback,
    take_over,
    takes_first_look,
    wait_for_scout,
    wake_waiting,
)
from shared.steps.isolation import created_by_batch, resolve_failed_batch
from shared.steps.prune import start_prune_if_due
from shared.steps.rollup import settle_after_batch, settle_job
from shared.store import (
    BatchRow,
    BatchState,
    Outcome,
    end_batch,
    mark_running,
    predicted_seconds,
    record_batch,
)

log = logging.getLogger(__name__)


def poll_batch(message: PollMessage, *, services: Services, now: datetime) -> BatchRow | None:
    """Check the batch's operation once (or settle its job, when a redelivery finds the batch ended).

    A scout whose batch has ended wakes the batches that waited for it (`shared.steps.cold_start`): before
    its own end is written when it sees the operation end, and again (a no-op unless a crash came between)
    whenever its row is found ended. So does a lookout whose operation ended well before its prediction.
    """
    row = _poll_once(message, services=services, now=now)
    if message.role == SCOUT and row is not None and row.state.is_terminal:
        wake_waiting(row, services=services, now=now)
    return row


def _poll_once(message: PollMessage, *, services: Services, now: datetime) -> BatchRow | None:
    status = services.status
    row = status.get_batch(message.job_id, message.batch_id)
    if row is None:
        return None
    if superseded_fallback(message, row):
        return row
    if row.state.is_terminal:
        # The delivery that ended it may have died before settling the job or indexing it (upserts: harmless twice).
        record_batch(row, services=services)
        settle_job(row.job_id, status=status, now=now, read=services.payloads.read)
        return row
    looks_first = takes_first_look(message, row, services=services)
    try:
        return _look(row, message, services=services, now=now)
    finally:
        if looks_first and services.timings is not None:
            services.timings.end_first_look(row.job_id)


def _look(row: BatchRow, message: PollMessage, *, services: Services, now: datetime) -> BatchRow | None:
    """Wait for the job's scout, or read the operation once and act on what it says."""
    if defers_to_scout(message, row, services=services):
        waiting = wait_for_scout(row, message, services=services, now=now)
        if waiting is not None:
            return waiting
    try:
        operation = services.catalog.get_operation(OperationRef(row.operation_id, message.operation_url))
    except (RetryableError, AuthenticationError) as error:
        return poll_failed(row, message, error, services=services, now=now)
    except NotFoundError as error:
        return finish_batch(row, Outcome.every_item_failed(BatchState.FAILED, "OperationNotFound", error.message),
                            services=services, now=now)

    if not operation.is_terminal:
        if past_deadline(message, now):
            reason = f"operation {operation.id} still {operation.status} at its deadline {message.deadline}"
            return end_at_deadline(row, reason, services=services, now=now)
        return poll_again(row, replace(message, failures=0), operation, services=services, now=now)

    telemetry.operation_finished(row.collection, operation.status, seconds=operation_seconds(operation),
                                 ended=operation_end(operation), now=now)
    sooner = learn(row, message.role, learnt_seconds(operation), services=services)
    if message.role == SCOUT or (sooner and message.role == LOOKOUT):
        wake_waiting(row, services=services, now=now)  # before this batch's own end: the others' polls go out now
    try:
        logs = services.catalog.get_logs(row.collection, operation)
        outcome = _outcome(row, operation, services=services, now=now)
    except (RetryableError, AuthenticationError) as error:
        return poll_failed(row, message, error, services=services, now=now)
    logs = urls_without_queries(logs)  # service logs may echo signed asset hrefs
    return finish_batch(row, replace(outcome, logs=logs), services=services, now=now)


SERVICE_ERRORS = (RetryableError, AuthenticationError, RejectedByServiceError)  # what a catalog call may raise


def past_deadline(message: PollMessage, now: datetime) -> bool:
    return now >= datetime.fromisoformat(message.deadline)


def end_at_deadline(row: BatchRow, reason: str, *, services: Services, now: datetime) -> BatchRow | None:
    """End a batch whose operation still runs at its deadline: cancel it, so that what the catalog holds
    is the verdict, and reconcile. If the operation cannot be seen to have stopped (the cancel failed,
    or it is still Canceling), its items may yet land: the batch ends Unconfirmed, and the sweeper
    reads the operation again before it asks the catalog (`shared.steps.verdicts`).
    """
    try:
        services.catalog.cancel_operation(row.operation_id)
    except SERVICE_ERRORS as error:
        reason = f"{reason}; canceling it failed: {error}"
    try:
        stopped = services.catalog.get_operation(row.operation_id)
    except SERVICE_ERRORS as error:
        reason = f"{reason}; reading it again failed: {error}"
        stopped = None
    if stopped is None or not stopped.is_terminal:
        if stopped is not None:
            reason = f"{reason}; still {stopped.status} after its cancel"
        log.warning("batch %s/%s: operation still running at its deadline: Unconfirmed", row.job_id, row.batch_id)
        return finish_batch(row, Outcome.every_item_unconfirmed("TimedOut", reason), services=services, now=now)
    return end_without_verdict(row, "TimedOut", f"{reason}; canceled", services=services, now=now)


def end_unpolled(row: BatchRow, reason: str, *, services: Services, now: datetime) -> BatchRow | None:
    """End a batch past its deadline that no poll ended (its poll messages were lost): its operation is read
    once; one still running is ended as at its deadline, any other batch is reconciled against the catalog."""
    try:
        operation = services.catalog.get_operation(row.operation_id) if row.operation_id else None
    except SERVICE_ERRORS:
        operation = None
    if operation is not None and not operation.is_terminal:
        return end_at_deadline(row, f"{reason}; operation {operation.id} still {operation.status}", services=services, now=now)
    return end_without_verdict(row, "TimedOut", reason, services=services, now=now)


def poll_failed(
    row: BatchRow, message: PollMessage, error: RetryableError | AuthenticationError, *, services: Services, now: datetime
) -> BatchRow | None:
    """The operation could not be read: poll again later (after the 429's Retry-After, else with backoff),
    until the deadline. A 401/403 is our identity's problem, not the operation's: it waits the same way.
    `failures` counts the reads that failed in a row, for the log only.
    """
    auth = isinstance(error, AuthenticationError)
    failures = message.failures + 1
    if past_deadline(message, now):
        reason = f"operation could not be read before its deadline {message.deadline} ({failures} reads in a row failed): {error}"
        return end_without_verdict(row, "TimedOut", reason, services=services, now=now)
    log.warning("batch %s/%s: reading its operation failed (%s); polling again", row.job_id, row.batch_id, error)
    retry_after = None if auth else error.retry_after
    return poll_again(row, replace(message, failures=failures), None, services=services, now=now, retry_after=retry_after)


def end_without_verdict(row: BatchRow, code: str, reason: str, *, services: Services, now: datetime) -> BatchRow | None:
    """End a batch whose operation gave no verdict: reconcile its items against the catalog.

    Items the batch created (or replaced) count as succeeded, deleted ones for a delete; the rest
    fail with `code`. If the catalog cannot be asked either, the batch ends Unconfirmed (`code` and
    the reasons kept), for the sweeper to confirm.
    """
    ids = row_item_ids(services, row)
    try:
        settled = settled_in_catalog(row, ids, services=services)
    except (RetryableError, AuthenticationError) as error:
        reason = f"{reason}; the catalog could not be checked either: {error}"
        log.warning("batch %s/%s ended without a verdict (%s) and the catalog cannot be read: Unconfirmed",
                    row.job_id, row.batch_id, code)
        return finish_batch(row, Outcome.every_item_unconfirmed(code, reason), services=services, now=now)
    failed = {item_id: code for item_id in ids if item_id not in settled}
    state = BatchState.TIMED_OUT if failed else BatchState.SUCCEEDED
    log.warning("batch %s/%s ended without a verdict (%s): %d of %d items found settled in the catalog",
                row.job_id, row.batch_id, code, len(settled), len(ids))
    outcome = Outcome(state, succeeded=len(ids) - len(failed), failed=failed, code=code if failed else "", message=reason)
    return finish_batch(row, outcome, services=services, now=now)


def settled_in_catalog(row: BatchRow, ids: list[str], *, services: Services) -> set[str]:
    """Ids of `ids` the batch settled as the catalog shows: created (or replaced) by it, or gone for a delete.

    Raises:
        RetryableError, AuthenticationError: the catalog could not be read.
    """
    if row.action == "delete":
        present = {str(item.get("id")) for item in services.catalog.search_ids(row.collection, ids)}
        return set(ids) - present
    return created_by_batch(row, ids, services=services)


def _outcome(row: BatchRow, operation: Operation, *, services: Services, now: datetime) -> Outcome:
    clean_success = operation.status == "Succeeded" and not operation.failed_items
    if clean_success:
        return Outcome(BatchState.SUCCEEDED, succeeded=row.item_count)
    message = f"{operation.error_code}: {operation.error_message}".strip(": ")
    if operation.status == "Canceled":
        failed = dict.fromkeys(row_item_ids(services, row), "OperationCanceled")
        return Outcome(BatchState.CANCELED, failed=failed, code="OperationCanceled",
                       message=f"operation {operation.id} was canceled")
    if row.action != "create":  # one item, one PUT or DELETE: its failure is that item's, recorded, not retried
        code = operation.error_code or "OperationFailed"
        return Outcome(BatchState.FAILED, failed=dict.fromkeys(row_item_ids(services, row), code), code=code, message=message)
    return resolve_failed_batch(row, operation, services=services, now=now)


def poll_again(
    row: BatchRow,
    message: PollMessage,
    operation: Operation | None,
    *,
    services: Services,
    now: datetime,
    retry_after: float | None = None,
) -> BatchRow | None:
    """Mark the batch Running (once) and re-send the poll message with the next delay (or let it wait for its
    job's scout: `shared.steps.cold_start`)."""
    settings = services.settings
    elapsed = (now - row.submitted).total_seconds() if row.submitted else 0.0
    role = next_role(row, message, operation, services=services, elapsed_seconds=elapsed)
    if role == WAITING:
        waiting = wait_for_scout(row, message, services=services, now=now)
        if waiting is not None:
            return waiting
        role = ""
    if message.role == WAITING:  # a waiting batch's fallback poll goes on only if it takes the batch out of waiting
        taken = take_over(row, operation, services=services, now=now)
        if taken is None:
            return None  # woken meanwhile: the woken poll polls it
        row = taken
    elif operation is not None and operation.status == "Running" and row.state == BatchState.SUBMITTED:
        row = mark_running(services.status, row, now=now) or row
    delay = next_poll_delay(message.attempt, operation, schedule=PollSchedule.from_settings(settings),
                            elapsed_seconds=elapsed, retry_after=retry_after, now=now,
                            predicted_seconds=predicted_seconds(services.timings, row), scout=role == SCOUT)
    if role == SCOUT:
        hold_scout(row, services=services, next_poll_seconds=delay)
    # A waiting batch's fallback poll that goes on is this batch's poll from now on: it must not look like a fallback.
    again = replace(message, attempt=message.attempt + 1, role=role)
    services.queues.send(settings.poll_queue, again.to_json(), delay_seconds=delay)
    return row


def finish_batch(row: BatchRow, outcome: Outcome, *, services: Services, now: datetime) -> BatchRow | None:
    """End the batch as `outcome` says (unless another delivery already did: then None), index its items and
    roll the job up. The one way a step ends a batch (`shared.store.end_batch`)."""
    ended = end_batch(services.status, row, outcome, payloads=services.payloads, now=now,
                      logs_inline_chars=services.settings.log_truncate_chars)
    telemetry.batch_settled(ended, now)
    record_batch(ended, services=services)
    settled = settle_after_batch(ended, row.job_id, status=services.status, now=now, read=services.payloads.read)
    start_prune_if_due(settled, services=services)
    return ended
