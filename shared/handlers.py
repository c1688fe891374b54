"""What each queue trigger does with a message: decode, dispatch, and never lose track of it.

Every handler takes its collaborators (`services`) and the time (`now`) as arguments; function_app.py
only supplies them. On the last delivery the host will allow (`MAX_DEQUEUE_COUNT`), a handler that is
about to fail records the failure on the job or batch row first, so the item never just disappears.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from shared.blob_events import blob_created_from_event
from shared.errors import InvalidInputError, RetryableError
from shared.ids import is_job_id
from shared.job_claims import CLAIM_KEY, JobClaim
from shared.messages import BatchMessage, JobRequest, PlanMessage, PollMessage, decode_body
from shared.pacing import POLL, calling_group
from shared.planning import plan_job, reject_job
from shared.poll import end_batch, poll_batch
from shared.queues import fits_in_message
from shared.rollup import settle_job
from shared.services import Services
from shared.status import BatchState, JobRow, JobState
from shared.submit import retry_delay, submit_batch
from shared.sweeper import SweepReport, sweep
from shared.uploads import plan_upload_segment, start_upload_job, upload_job_id

log = logging.getLogger(__name__)

BATCH_KEY = re.compile(r"\A[A-Za-z0-9._-]{1,128}\Z")  # our batch ids (batch-000001.2, rejected-000001): a safe RowKey


def handle_submit_message(body: bytes, *, message_id: str, dequeue_count: int, services: Services, now: datetime) -> None:
    """A message on the submit queue: a job to plan, or one of our own batch messages to POST."""
    try:
        decoded = decode_body(body)
    except InvalidInputError as error:
        _reject_unreadable(f"msg-{message_id}", str(error), services=services, now=now)
        return
    try:
        if isinstance(decoded, dict) and decoded.get("kind") in ("batch", "plan"):
            _handle_own_message(decoded, message_id=message_id, services=services, now=now)
            return
        job_id = _job_id(decoded, message_id)
        try:
            request = JobRequest.from_json(decoded)
        except InvalidInputError as error:
            _reject_unreadable(job_id, str(error), services=services, now=now)
            return
        claim = JobClaim.of(decoded, message_id)
        try:
            plan_job(request, job_id=job_id, claim=claim, services=services, now=now)
        except RetryableError as error:
            retry_job_later(decoded, job_id, claim, error, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up(decoded, message_id, f"{type(error).__name__}: {error}", services=services, now=now)
        raise


def _handle_own_message(decoded: dict[str, Any], *, message_id: str, services: Services, now: datetime) -> None:
    """A batch or plan message: only this app writes them, and each stands for a row; one that cannot
    (malformed, or naming ids no row can have) is forged or corrupt, and is dropped with a log line."""
    try:
        message = BatchMessage.from_json(decoded) if decoded.get("kind") == "batch" else PlanMessage.from_json(decoded)
    except InvalidInputError as error:
        log.error("unreadable %s message dropped: %s", str(decoded.get("kind")), error)
        return
    if isinstance(message, BatchMessage):
        submit_batch(message, message_id=message_id, services=services, now=now)
    else:
        plan_upload(message, services=services, now=now)


def retry_job_later(decoded: Any, job_id: str, claim: JobClaim, error: RetryableError, *, services: Services,
                    now: datetime) -> None:
    """Re-send a job message with a delay (its job id and claim pinned), or fail the job when its retry time is up."""
    settings = services.settings
    envelope = decoded if isinstance(decoded, dict) and decoded.get("v") == 1 else {}
    attempt = _int(envelope.get("attempt"))
    first = _time(envelope.get("first_attempt")) or now
    if (now - first).total_seconds() >= settings.submit_retry_seconds:
        give_up(decoded, "", f"gave up planning after {attempt + 1} attempts over {settings.submit_retry_seconds} s: {error}",
                services=services, now=now, job_id=job_id)
        return
    pinned = {"job_id": job_id, "attempt": attempt + 1, "first_attempt": first.isoformat(), CLAIM_KEY: claim.to_json()}
    retry = {**decoded, **pinned} if envelope else {"v": 1, **pinned, "items": decoded}
    body = orjson.dumps(retry).decode()
    if not fits_in_message(body):  # only inline items can make it too big: claim-check them
        blob = services.payloads.put(f"{job_id}/job-items.json", orjson.dumps(retry.pop("items")))
        body = orjson.dumps({**retry, "items_ref": {"blob": blob}}).decode()
    delay = retry_delay(error, attempt, settings)
    log.warning("job %s: %s; planning again in %.0f s", job_id, error, delay)
    services.queues.send(settings.submit_queue, body, delay_seconds=delay)


def handle_blob_event(body: bytes, *, dequeue_count: int, services: Services, now: datetime) -> None:
    """A BlobCreated event from the drop container: start that blob version's job."""
    try:
        blob = blob_created_from_event(decode_body(body))
    except InvalidInputError as error:
        log.error("unreadable blob event dropped: %s", error)
        return
    if blob is None:
        return
    try:
        plan = start_upload_job(blob, services=services, now=now)
        if plan is not None:
            plan_upload(plan, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up(None, "", f"{type(error).__name__}: {error}", services=services, now=now, job_id=upload_job_id(blob))
        raise


def plan_upload(plan: PlanMessage, *, services: Services, now: datetime) -> None:
    """Plan one segment of a stored file; on a transient error, send it as a plan message for later."""
    try:
        plan_upload_segment(plan, services=services, now=now)
    except RetryableError as error:  # the segment is planned again from its start: rows are idempotent
        delay = retry_delay(error, 0, services.settings)
        log.warning("upload job %s: %s; planning the segment again in %.0f s", plan.job_id, error, delay)
        services.queues.send(services.settings.submit_queue, plan.to_json(), delay_seconds=delay)


def handle_poll_message(body: bytes, *, dequeue_count: int, services: Services, now: datetime) -> None:
    """A message on the poll queue: check one operation."""
    try:
        decoded = decode_body(body)
        message = PollMessage.from_json(decoded)
    except InvalidInputError as error:
        log.error("unreadable poll message dropped: %s", error)  # only this app writes poll messages
        return
    try:
        with calling_group(POLL):
            poll_batch(message, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up(decoded, "", f"{type(error).__name__}: {error}", services=services, now=now)
        raise


def handle_sweep(*, services: Services, now: datetime) -> SweepReport:
    """The timer's pass over open jobs (see `shared.sweeper`)."""
    return sweep(services=services, now=now)


def handle_poison_message(body: bytes, *, queue: str, services: Services, now: datetime) -> None:
    """A message the host gave up on: make sure its job or batch ends in a terminal row.

    Never fails on the message's content (a failure here would move it to a poison-of-poison queue that
    nothing reads): a job id that cannot be a table key is replaced by one derived from the raw bytes.
    Only storage itself being unavailable raises, so that the host retries.
    """
    reason = f"message moved to {queue} after repeated failures"
    try:
        decoded = decode_body(body)
    except (InvalidInputError, ValueError):
        decoded = None
    # The poison copy has a new message id, so a job is found only through its own `job_id`,
    # or for a blob event through the blob version it names.
    blob = _blob_of(decoded)
    job_id = upload_job_id(blob) if blob else _given_job_id(decoded) or _orphan_job_id(body)
    if isinstance(decoded, dict) and decoded.get("kind") in ("batch", "poll") and not _names_a_batch(decoded):
        decoded = None  # keys no row can have: record it under the derived job id instead
    give_up(decoded, "", reason, services=services, now=now, job_id=job_id)


def give_up(decoded: Any, message_id: str, reason: str, *, services: Services, now: datetime, job_id: str = "") -> None:
    """End the batch (Failed) or job (Failed) a message stands for, unless it already ended."""
    reason = reason[:1500]
    if isinstance(decoded, dict) and decoded.get("kind") in ("batch", "poll"):
        row = services.status.get_batch(str(decoded.get("job_id")), str(decoded.get("batch_id")))
        if row is None:
            log.error("message for unknown batch %s/%s dropped: %s", decoded.get("job_id"), decoded.get("batch_id"), reason)
        elif not row.state.is_terminal:
            log.error("batch %s/%s failed for good: %s", row.job_id, row.batch_id, reason)
            code = row.error_code or "GaveUp"
            end_batch(row, BatchState.FAILED, services=services, now=now, code=code,
                      message=f"{row.error_message} | {reason}".strip(" |"), failed_items=row.item_count)
        return
    if not job_id:
        job_id = _job_id(decoded, message_id) if message_id else _given_job_id(decoded) or _orphan_job_id(decoded)
    services.status.create_job(JobRow(job_id=job_id), now)

    def fail(row: JobRow) -> JobRow | None:
        if row.state.is_terminal:
            return None
        if row.planned or row.batch_count:  # batches exist and carry the items; the roll-up ends the job
            return replace(row, planned=True, error_code="GaveUp", error_message=reason)
        return replace(row, state=JobState.FAILED, planned=True, error_code="GaveUp", error_message=reason)

    log.error("job %s could not be processed: %s", job_id, reason)
    services.status.update_job(job_id, fail, now)
    settle_job(job_id, status=services.status, now=now)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _blob_of(decoded: Any) -> Any:
    try:
        return blob_created_from_event(decoded)
    except (InvalidInputError, AttributeError, TypeError, ValueError):
        return None


def _names_a_batch(decoded: dict[str, Any]) -> bool:
    batch_id = decoded.get("batch_id")
    return is_job_id(decoded.get("job_id")) and isinstance(batch_id, str) and BATCH_KEY.match(batch_id) is not None


def _reject_unreadable(job_id: str, reason: str, *, services: Services, now: datetime) -> None:
    services.status.create_job(JobRow(job_id=job_id, source="inline"), now)
    reject_job(job_id, reason, 0, services=services, now=now)


def _job_id(decoded: Any, message_id: str) -> str:
    """The client's idempotency key when valid, else the queue message id (stable across redeliveries)."""
    return _given_job_id(decoded) or f"msg-{message_id}"


def _given_job_id(decoded: Any) -> str:
    given = decoded.get("job_id") if isinstance(decoded, dict) else None
    return given if is_job_id(given) else ""


def _orphan_job_id(body: Any) -> str:
    """A job id for a message without a usable one, derived from its raw bytes (stable across deliveries)."""
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes):
        try:
            body = orjson.dumps(body)
        except orjson.JSONEncodeError:
            body = b"unserializable"
    return "poison-" + hashlib.sha256(body).hexdigest()[:24]
