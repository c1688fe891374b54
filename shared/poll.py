"""Polling one batch's operation: wait again (a delayed message), or record how it ended.

No sleeping: while the operation runs, the handler re-sends its poll message with a growing
visibility delay and returns. At a terminal state it stores the logs (truncated in the row, whole
in the payload container), resolves partial failures, and rolls the job up.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

import orjson

from shared.backoff import next_poll_delay
from shared.errors import NotFoundError, RetryableError
from shared.fanout import row_item_ids
from shared.geocatalog import Operation, OperationRef
from shared.isolation import Outcome, resolve_failed_batch
from shared.messages import PollMessage
from shared.redact import urls_without_queries
from shared.rollup import rollup_job
from shared.services import Services
from shared.status import BatchRow, BatchState

log = logging.getLogger(__name__)


def poll_batch(message: PollMessage, *, services: Services, now: datetime) -> BatchRow | None:
    """Check the batch's operation once.

    Raises:
        AuthenticationError: the GeoCatalog refused our identity (retried by the host, then poisoned).
    """
    status = services.status
    row = status.get_batch(message.job_id, message.batch_id)
    if row is None or row.state.is_terminal:
        return row
    try:
        operation = services.catalog.get_operation(OperationRef(row.operation_id, message.operation_url))
    except RetryableError as error:
        return poll_again(row, message, None, services=services, now=now, retry_after=error.retry_after)
    except NotFoundError as error:
        return end_batch(row, BatchState.FAILED, services=services, now=now, code="OperationNotFound",
                         message=error.message, failed_items=row.item_count)

    if not operation.is_terminal:
        if now >= datetime.fromisoformat(message.deadline):
            reason = f"operation {operation.id} still {operation.status} at its deadline {message.deadline}"
            return end_batch(row, BatchState.TIMED_OUT, services=services, now=now, code="TimedOut",
                             message=reason, failed_items=row.item_count)
        return poll_again(row, message, operation, services=services, now=now)

    try:
        logs = services.catalog.get_logs(row.collection, operation)
        outcome = _outcome(row, operation, services=services, now=now)
    except RetryableError as error:
        return poll_again(row, message, operation, services=services, now=now, retry_after=error.retry_after)
    logs = urls_without_queries(logs)  # service logs may echo signed asset hrefs
    logs_blob = services.payloads.put(f"{row.job_id}/{row.batch_id}.logs.txt", logs.encode())
    limit = services.settings.log_truncate_chars
    return end_batch(row, outcome.state, services=services, now=now, code=outcome.code, message=outcome.message,
                     succeeded_items=outcome.succeeded, failed_items=len(outcome.failed),
                     failed_map=outcome.failed, logs=logs[:limit], logs_blob=logs_blob)


def _outcome(row: BatchRow, operation: Operation, *, services: Services, now: datetime) -> Outcome:
    clean_success = operation.status == "Succeeded" and not operation.failed_items
    if clean_success:
        return Outcome(BatchState.SUCCEEDED, row.item_count, {}, "", "")
    message = f"{operation.error_code}: {operation.error_message}".strip(": ")
    if operation.status == "Canceled":
        failed = dict.fromkeys(row_item_ids(services, row), "OperationCanceled")
        return Outcome(BatchState.CANCELED, 0, failed, "OperationCanceled", f"operation {operation.id} was canceled")
    if row.action != "create":  # one item, one PUT or DELETE: its failure is that item's, recorded, not retried
        code = operation.error_code or "OperationFailed"
        return Outcome(BatchState.FAILED, 0, dict.fromkeys(row_item_ids(services, row), code), code, message)
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
    """Mark the batch Running (once) and re-send the poll message with the next delay."""
    settings = services.settings
    elapsed = (now - row.submitted).total_seconds() if row.submitted else 0.0
    delay = next_poll_delay(message.attempt, operation, base=settings.poll_initial_delay_seconds,
                            cap=settings.poll_max_delay_seconds, elapsed_seconds=elapsed, retry_after=retry_after)
    if operation is not None and operation.status == "Running" and row.state == BatchState.SUBMITTED:
        row = services.status.update_batch(
            row.job_id, row.batch_id, lambda r: replace(r, state=BatchState.RUNNING) if r.state == BatchState.SUBMITTED else None, now
        ) or row
    services.queues.send(settings.poll_queue, replace(message, attempt=message.attempt + 1).to_json(), delay_seconds=delay)
    return row


def end_batch(
    row: BatchRow,
    state: BatchState,
    *,
    services: Services,
    now: datetime,
    code: str = "",
    message: str = "",
    succeeded_items: int = 0,
    failed_items: int = 0,
    failed_map: dict[str, str] | None = None,
    logs: str = "",
    logs_blob: str = "",
) -> BatchRow | None:
    """Write the batch's terminal row (unless another delivery already did) and roll the job up."""
    failed_text = orjson.dumps(failed_map or {}).decode()
    failed_blob = ""
    if len(failed_text) > 30_000:
        failed_blob = services.payloads.put(f"{row.job_id}/{row.batch_id}.failed.json", failed_text.encode())
        failed_text = ""

    def end(current: BatchRow) -> BatchRow | None:
        if current.state.is_terminal:
            return None
        return replace(current, state=state, finished=now, error_code=code, error_message=message[:2000],
                       items_succeeded=succeeded_items, items_failed=failed_items, failed_items=failed_text,
                       failed_items_blob=failed_blob, logs=logs, logs_blob=logs_blob)

    ended = services.status.update_batch(row.job_id, row.batch_id, end, now)
    rollup_job(row.job_id, status=services.status, now=now)
    return ended
