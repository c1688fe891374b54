"""Submitting one batch: POST it, record the operation, and schedule the first poll.

What if the process dies between the POST and the row write? The row then still says `Submitting`
(it is set, with `submit_started`, before the POST), and the message comes back. The batch is
POSTed again: the service accepts it (duplicates are not a synchronous 409) and the new operation
fails for the items the lost one already created, with `ItemAlreadyExistsInCollection`. The poll
step then looks the batch's items up: an item whose `_msft:ts` is not older than `submit_started`
was created by this batch, so it counts as succeeded, not failed. Nothing is lost or double-counted;
the cost is one extra operation in a rare crash.

What is POSTed comes from the row alone (its stored payload, or its byte range of an upload): the
batch message only names the batch. Only the delivery that moves a batch from `Queued` to `Submitting` POSTs it. The row records the
queue message that claimed it, so that message's own redelivery (after a crash, the host delivers
it again) may take over a `Submitting` batch, while any other copy of the batch message leaves it
alone. Retries on 429/5xx/timeouts are bounded by time (`SUBMIT_RETRY_SECONDS`, counted from the
first claim), honouring `Retry-After`, not by a number of attempts.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from shared import telemetry
from shared.batching import feature_collection
from shared.catalog import OperationRef
from shared.errors import AuthenticationError, InvalidInputError, RejectedByServiceError, RetryableError
from shared.inputs.batch_items import batch_items, row_item_ids
from shared.inputs.upload_items import is_byte_range
from shared.messages import BatchMessage, PollMessage
from shared.redact import redacted, url_without_query
from shared.services import Services
from shared.settings import Settings
from shared.steps.backoff import PollSchedule, exponential, first_poll_delay
from shared.steps.cold_start import first_poll, recheck_waiting
from shared.steps.fanout import batch_message
from shared.steps.isolation import created_by_batch
from shared.steps.planning import AUTH_FAILED
from shared.steps.poll import finish_batch
from shared.steps.rollup import settle_after_batch, settle_job
from shared.steps.sync import diff_batch, job_flags, mark_rejected_seen, needs_diff
from shared.steps.uploads import CheckedUpload, check_upload_batch
from shared.store import (
    BatchRow,
    BatchState,
    BlobChangedError,
    Outcome,
    claim_batch,
    mark_submitted,
    predicted_seconds,
    record_batch,
    requeue,
)

log = logging.getLogger(__name__)


def submit_batch(message: BatchMessage, *, message_id: str = "", services: Services, now: datetime) -> BatchRow | None:
    """POST the batch unless it was already claimed or submitted; returns its row as it ends up."""
    started = time.monotonic()
    status = services.status
    row = status.get_batch(message.job_id, message.batch_id)
    if row is None:
        log.error("batch %s/%s has no row; dropping its message", message.job_id, message.batch_id)
        return None
    if row.state in (BatchState.SUBMITTED, BatchState.RUNNING):
        send_poll(row, services=services, submitted=row.submitted or now, operation_url=_poll_url(row, services))
        return row
    if row.state.is_terminal:
        # The delivery that ended it may have died before settling the job or indexing it (upserts: harmless twice).
        record_batch(row, services=services)
        settle_job(row.job_id, status=status, now=now, read=services.payloads.read)
        return row
    upload = check_upload_batch(row, services=services) if not row.validated else None
    if upload is not None:
        mark_rejected_seen(row, upload, services=services)

    claimed = claim_batch(status, row, message_id=message_id, check=upload.check if upload is not None else None, now=now)
    if claimed is None:
        log.info("batch %s/%s is %s; this copy of its message leaves it alone", row.job_id, row.batch_id, row.state)
        return status.get_batch(row.job_id, row.batch_id)
    if claimed.state == BatchState.REJECTED:  # an upload batch with no valid item
        record_batch(claimed, services=services)
        settle_after_batch(claimed, row.job_id, status=status, now=now, read=services.payloads.read)
        return claimed
    try:
        if needs_diff(claimed, flags := job_flags(status, row.job_id)):
            diffed = diff_batch(claimed, dry_run=flags.dry_run, services=services, upload=upload, now=now)
            if not diffed.send:
                return diffed.row
            claimed = diffed.row or claimed
        operation = send(claimed, services=services, upload=upload)
    except RetryableError as error:
        return retry_later(claimed, message, error, services=services, now=now)
    except RejectedByServiceError as error:
        return finish_batch(claimed, Outcome.every_item_rejected(error.code, error.message), services=services, now=now)
    except BlobChangedError as error:  # a byte-range batch to send again, whose upload was overwritten since
        return upload_gone(claimed, message, str(error), services=services, now=now)
    except InvalidInputError as error:  # e.g. an asset href refused for signing, or the SAS API refuses its container
        return finish_batch(claimed, Outcome.every_item_rejected("InvalidInput", str(error)), services=services, now=now)
    except AuthenticationError as error:
        return identity_refused(claimed, error, services=services, now=now)

    # When the POST returned: the service had created the operation by then, so an end predicted from this
    # moment with the right length (`shared.steps.cold_start`) is not before the real one. `now` is the invocation's start.
    posted = now + timedelta(seconds=time.monotonic() - started)
    delay, role = first_poll(claimed, services=services)

    submitted = mark_submitted(status, claimed, operation_id=operation.id, operation_url=url_without_query(operation.url),
                               poll_role=role, submitted=posted, now=now)
    telemetry.batch_submitted(submitted)
    first = recheck_waiting(submitted, delay, role, services=services, now=now) if submitted is not None else None
    if submitted is not None and first is not None:
        send_poll(submitted, services=services, submitted=posted, operation_url=operation.url, delay=first[0], role=first[1])
    return submitted


def send(row: BatchRow, *, services: Services, upload: CheckedUpload | None = None) -> OperationRef:
    """The one request of a batch: POST its items, PUT its one item, or DELETE its one item.

    Unsigned batches POST the payload as stored, with no parse and no re-serialization, or an upload
    batch's items as the caller has just validated them (`upload`); a byte-range batch sent again is
    read and validated again (`shared.inputs.upload_items`). Asset hrefs are signed here, right before
    sending, so nothing stored holds a SAS token.
    """
    if row.action == "create" and not row.sign:
        if upload is not None:
            return services.catalog.create_items(row.collection, upload.payload)
        if not is_byte_range(row):
            return services.catalog.create_items(row.collection, services.payloads.read(row.payload_blob))
    items = upload.items if upload is not None else batch_items(services, row)
    if row.sign:
        items = services.signer.sign(items)
    if row.action == "replace":
        return services.catalog.replace_item(row.collection, items[0])
    if row.action == "delete":
        return services.catalog.delete_item(row.collection, items[0]["id"])
    return services.catalog.create_items(row.collection, feature_collection(items))


def retry_later(row: BatchRow, message: BatchMessage, error: RetryableError, *, services: Services, now: datetime) -> BatchRow | None:
    """Put the batch back to Queued and re-send its message with a delay, or fail it when its retry time is up."""
    settings = services.settings
    started = row.submit_started or now
    if (now - started).total_seconds() >= settings.submit_retry_seconds:
        reason = f"gave up after {row.attempts} attempts over {settings.submit_retry_seconds} s: {error}"
        return finish_batch(row, Outcome.every_item_failed(BatchState.FAILED, "RetriesExhausted", reason), services=services,
                            now=now)
    delay = retry_delay(error, row.attempts - 1, settings)
    code = f"Http{error.status}" if error.status else "Transient"
    requeued = requeue(services.status, row, code=code, message=str(error), now=now)
    if requeued is not None:
        body = batch_message(row.job_id, row.batch_id, attempt=message.attempt + 1)
        services.queues.send(settings.work_queue, body, delay_seconds=delay)
        log.warning("batch %s/%s: %s; retrying in %.0f s", row.job_id, row.batch_id, error, delay)
    return requeued


def identity_refused(row: BatchRow, error: AuthenticationError, *, services: Services, now: datetime) -> BatchRow | None:
    """End a batch whose request the GeoCatalog refused for our identity (401/403) at once, every item
    `AuthenticationFailed`, for `geocatalog-ingest retry` once the identity is fixed.

    Not retried like a 503: the token provider renews a token five minutes before it expires
    (`shared.catalog.auth`), so a rotation never sends a stale one, and a 401/403 means the identity lacks
    the role (or its new assignment has not propagated), which only an operator fixes, often later than any
    retry time. Retrying would repeat a refused call for every batch of every job, and a message that kept
    failing used to loop to the poison queue. A refused request created nothing, so after a first attempt the
    items are Failed; after earlier attempts (one may have landed with its answer lost) they are Unconfirmed,
    for the sweeper to confirm against the catalog once it answers.
    """
    reason = redacted(f"{error}; nothing of this attempt was sent: fix the identity's role on the GeoCatalog, then "
                      f"retry the job's failed items (geocatalog-ingest retry {row.job_id})")
    log.error("batch %s/%s: %s", row.job_id, row.batch_id, reason)
    if row.attempts <= 1:
        return finish_batch(row, Outcome.every_item_failed(BatchState.FAILED, AUTH_FAILED, reason), services=services, now=now)
    return finish_batch(row, Outcome.every_item_unconfirmed(AUTH_FAILED, reason), services=services, now=now)


def upload_gone(row: BatchRow, message: BatchMessage, reason: str, *, services: Services, now: datetime) -> BatchRow | None:
    """End a byte-range batch whose file was overwritten before it could be sent (again): its items are gone
    with that version (an upload's new version is ingested by a job of its own).

    Nothing was POSTed before this attempt: every item is rejected, as when the batch is first read
    (`uploads.check_upload_batch`). An earlier attempt may have been accepted with its answer lost (a
    timeout, or a crash before the row write): items the catalog holds from this batch succeeded, the
    rest failed with `UploadChanged`.
    """
    reason = f"{reason}: the file was overwritten after this batch was planned; an upload's new version has a job of its own"
    if row.attempts <= 1:
        return finish_batch(row, Outcome.every_item_rejected("UploadChanged", reason), services=services, now=now)
    ids = row_item_ids(services, row)
    try:
        landed = created_by_batch(row, ids, services=services)
    except RetryableError as error:
        return retry_later(row, message, error, services=services, now=now)
    failed = {item_id: "UploadChanged" for item_id in ids if item_id not in landed}
    outcome = Outcome(BatchState.FAILED if failed else BatchState.SUCCEEDED, succeeded=len(landed), failed=failed,
                      code="UploadChanged" if failed else "", message=reason if failed else "")
    return finish_batch(row, outcome, services=services, now=now)


def retry_delay(error: RetryableError, attempt: int, settings: Settings) -> float:
    """The server's Retry-After when given, else exponential backoff with jitter."""
    if error.retry_after is not None:
        return error.retry_after
    return exponential(attempt, base=settings.retry_base_delay_seconds, cap=settings.poll_max_delay_seconds)


def send_poll(row: BatchRow, *, services: Services, submitted: datetime, operation_url: str,
              delay: float | None = None, role: str = "") -> None:
    """The batch's first poll message, after `delay` (default: at the predicted end, else the initial delay)."""
    settings = services.settings
    deadline = submitted + timedelta(seconds=settings.poll_deadline_seconds)
    poll = PollMessage(row.job_id, row.batch_id, row.collection, operation_url, attempt=0, deadline=deadline.isoformat(),
                       role=role)
    if delay is None:
        delay = first_poll_delay(predicted_seconds(services.timings, row), PollSchedule.from_settings(settings))
    services.queues.send(settings.poll_queue, poll.to_json(), delay_seconds=delay)


def _poll_url(row: BatchRow, services: Services) -> str:
    return f"{row.operation_url}?api-version={services.settings.geocatalog_api_version}"
