"""What each queue trigger does with a message: decode, dispatch, and never lose track of it.

Every handler takes its collaborators (`services`) and the time (`now`) as arguments; function_app.py
only supplies them.

Two queues carry work, trusted differently:
- the submit queue (`SUBMIT_QUEUE`) is the users' inbox: whoever may send a job can write any bytes
  there. Its handler knows one shape, a job. Anything else (the app's own `kind`s included) is
  `Rejected` under the message's own id, `msg-<queue message id>`, never under a job id it names. A
  delivery's claim on a job is its own message id and content: a `claim` in a body is refused.
- the work queue (`WORK_QUEUE`) is the app's own: batch and plan messages, and delayed re-sends of job
  messages, which carry the claim of the delivery that claimed the job. Even there, a batch message
  only names its batch (what is POSTed comes from the row), and a plan or re-send goes on only while
  the job row still holds the claim it carries.

Only the delivery that claimed a job row changes it. On the last delivery the host will allow
(`MAX_DEQUEUE_COUNT`), a handler about to fail ends its own job or batch first, so the item never just
disappears. A poison copy has a new message id, so it proves no claim: the poison handler records the
message as a `Failed` row of its own, `poison-<hash of its bytes>`, and changes no job. An open job it
named was either ended by its last delivery (which gave up before raising) or is one whose deliveries
died without ending it; the sweeper gives those up once their row has not changed for longer than
planning may be retried. Poison copies of batch and poll messages (internal queues, written by the app
for that batch) still end their batch. No trigger reads the poison queues: the sweeper drains them
(`shared.steps.poison`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson

from shared import telemetry
from shared.catalog import POLL, WORK, calling_group
from shared.errors import InvalidInputError, RetryableError
from shared.ids import is_job_id
from shared.inputs.blob_events import blob_created_from_event
from shared.messages import BATCH_ID, BatchMessage, JobRequest, PlanMessage, PollMessage, decode_body, inbox_job
from shared.services import Services
from shared.steps.job_claims import CLAIM_KEY, JobClaim
from shared.steps.planning import give_up_job, plan_job, reject_job
from shared.steps.poison import drain_poison_queues, poison_row_id
from shared.steps.poll import finish_batch, poll_batch
from shared.steps.prune import PRUNE, prune_job, start_prune_if_due
from shared.steps.rollup import settle_job
from shared.steps.submit import retry_delay, submit_batch
from shared.steps.sweeper import SweepReport, sweep
from shared.steps.uploads import plan_upload_segment, start_upload_job, upload_claim, upload_job_id
from shared.store import BatchState, JobRow, Outcome, SourceKind, SourceRef, brief, fits_in_message

log = logging.getLogger(__name__)

JOB_RESEND = "job"  # the `kind` of a job message the app re-sends itself on the work queue
INTERNAL_POISON_QUEUES = ("work-poison", "poll-poison")  # poison queues of messages only the app writes


def handle_submit_message(body: bytes, *, message_id: str, dequeue_count: int, services: Services, now: datetime) -> None:
    """A message on the submit queue (the users' inbox): a job to plan, and nothing else."""
    own_id = f"msg-{message_id}"
    decoded: Any = None
    try:
        decoded = decode_body(body)
        request = inbox_job(decoded)
    except InvalidInputError as error:
        _reject_unreadable(own_id, message_id, str(error), named=_given_job_id(decoded), services=services, now=now)
        return
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up_job(own_id, f"{type(error).__name__}: {error}", claimed_by=message_id, services=services, now=now)
        raise
    claim = JobClaim.of_delivery(decoded, message_id)
    telemetry.tag(job_id=request.job_id or own_id)
    plan_or_retry(decoded, request, request.job_id or own_id, claim, dequeue_count=dequeue_count, services=services, now=now)


def handle_work_message(body: bytes, *, message_id: str, dequeue_count: int, services: Services, now: datetime) -> None:
    """A message on the work queue, which only the app writes: a batch to POST, a segment to plan, a job to plan again."""
    try:
        decoded = decode_body(body)
        kind = decoded.get("kind") if isinstance(decoded, dict) else None
        message: BatchMessage | PlanMessage | None = None
        if kind == "batch":
            message = BatchMessage.from_json(decoded)
        elif kind == "plan":
            message = PlanMessage.from_json(decoded)
        claim = JobClaim.carried(decoded) if kind == JOB_RESEND else None
        prune = kind == PRUNE and is_job_id(decoded.get("job_id"))
        if message is None and not prune and (claim is None or not is_job_id(decoded.get("job_id"))):
            raise InvalidInputError(f"not a batch, plan, prune or job re-send with its job_id and claim (kind {str(kind)[:40]!r})")
    except InvalidInputError as error:
        log.error("unreadable work message dropped: %s", error)  # only this app writes the work queue
        return
    with calling_group(WORK):
        if prune:  # the job row says whether its delete phase is due: the message only names the job
            prune_job(decoded["job_id"], services=services, now=now)
        elif isinstance(message, BatchMessage):
            _submit(message, message_id, dequeue_count=dequeue_count, services=services, now=now)
        elif isinstance(message, PlanMessage):
            _plan_segment(message, dequeue_count=dequeue_count, services=services, now=now)
        elif claim is not None:
            _plan_again(decoded, decoded["job_id"], claim, dequeue_count=dequeue_count, services=services, now=now)


def plan_or_retry(decoded: Any, request: JobRequest, job_id: str, claim: JobClaim, *, dequeue_count: int,
                  services: Services, now: datetime) -> None:
    """Plan the job as `claim`; after a transient error, send it again later (`retry_job_later`)."""
    try:
        try:
            start_prune_if_due(plan_job(request, job_id=job_id, claim=claim, services=services, now=now), services=services)
        except RetryableError as error:
            retry_job_later(decoded, job_id, claim, error, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up_job(job_id, f"{type(error).__name__}: {error}", claimed_by=claim.message_id,
                        fingerprint=claim.fingerprint, services=services, now=now)
        raise


def retry_job_later(decoded: Any, job_id: str, claim: JobClaim, error: RetryableError, *, services: Services,
                    now: datetime) -> None:
    """Re-send a job message on the work queue with a delay (its job id and claim pinned), or give the job up
    when its retry time is up."""
    settings = services.settings
    envelope = decoded if isinstance(decoded, dict) and decoded.get("v") == 1 else {}
    attempt = _int(envelope.get("attempt"))
    first = _time(envelope.get("first_attempt")) or now
    if (now - first).total_seconds() >= settings.submit_retry_seconds:
        give_up_job(job_id, f"gave up planning after {attempt + 1} attempts over {settings.submit_retry_seconds} s: {error}",
                    claimed_by=claim.message_id, fingerprint=claim.fingerprint, services=services, now=now)
        return
    pinned = {"kind": JOB_RESEND, "job_id": job_id, "attempt": attempt + 1, "first_attempt": first.isoformat(),
              CLAIM_KEY: claim.to_json()}
    retry = {**decoded, **pinned} if envelope else {"v": 1, **pinned, "items": decoded}
    body = orjson.dumps(retry).decode()
    if not fits_in_message(body):  # only inline items can make it too big: claim-check them
        blob = services.payloads.put(f"{job_id}/job-items.json", orjson.dumps(retry.pop("items")))
        body = orjson.dumps({**retry, "items_ref": {"blob": blob}}).decode()
    delay = retry_delay(error, attempt, settings)
    log.warning("job %s: %s; planning again in %.0f s", job_id, error, delay)
    services.queues.send(settings.work_queue, body, delay_seconds=delay)


def handle_blob_event(body: bytes, *, dequeue_count: int, services: Services, now: datetime) -> None:
    """A BlobCreated event from the drop container: start that blob version's job."""
    try:
        blob = blob_created_from_event(decode_body(body))
    except InvalidInputError as error:
        log.error("unreadable blob event dropped: %s", error)
        return
    if blob is None:
        return
    telemetry.tag(job_id=upload_job_id(blob))
    try:
        plan = start_upload_job(blob, services=services, now=now)
        if plan is not None:
            plan_upload(plan, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up_job(upload_job_id(blob), f"{type(error).__name__}: {error}", claimed_by=upload_claim(blob),
                        services=services, now=now)
        raise


def plan_upload(plan: PlanMessage, *, services: Services, now: datetime) -> None:
    """Plan one segment of a stored file; on a transient error, send it as a plan message for later."""
    try:
        plan_upload_segment(plan, services=services, now=now)
        # Its batches may all have settled before the file was planned: then its delete phase starts here.
        start_prune_if_due(settle_job(plan.job_id, status=services.status, now=now, read=services.payloads.read),
                           services=services)
    except RetryableError as error:  # the segment is planned again from its start: rows are idempotent
        delay = retry_delay(error, 0, services.settings)
        log.warning("upload job %s: %s; planning the segment again in %.0f s", plan.job_id, error, delay)
        services.queues.send(services.settings.work_queue, plan.to_json(), delay_seconds=delay)


def handle_poll_message(body: bytes, *, dequeue_count: int, services: Services, now: datetime) -> None:
    """A message on the poll queue: check one operation."""
    try:
        message = PollMessage.from_json(decode_body(body))
    except InvalidInputError as error:
        log.error("unreadable poll message dropped: %s", error)  # only this app writes poll messages
        return
    telemetry.tag(job_id=message.job_id, batch_id=message.batch_id)
    try:
        with calling_group(POLL):
            poll_batch(message, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up_batch(message.job_id, message.batch_id, f"{type(error).__name__}: {error}", services=services, now=now)
        raise


def handle_sweep(*, services: Services, now: datetime) -> SweepReport:
    """The timer's pass: the poison queues' messages first (they may end batches), then the open jobs
    (see `shared.steps.poison` and `shared.steps.sweeper`)."""
    drained = drain_poison_queues(handle_poison_message, services=services, now=now)
    report = sweep(services=services, now=now)
    report.poison = drained
    return report


def handle_poison_message(body: bytes, *, queue: str, services: Services, now: datetime) -> None:
    """A message the host gave up on, as the sweeper drains it: record it as a row of its own (see the module docstring).

    Never fails on the message's content (the sweeper would try it again, then delete it unrecorded). Only
    storage itself being unavailable raises, so that the next sweep tries again.
    """
    telemetry.poison_message(queue)
    reason = f"message moved to {queue} after repeated failures"
    try:
        decoded = decode_body(body)
    except (InvalidInputError, ValueError):
        decoded = None
    if queue in INTERNAL_POISON_QUEUES and isinstance(decoded, dict) and decoded.get("kind") in ("batch", "poll") \
            and _names_a_batch(decoded):
        give_up_batch(decoded["job_id"], decoded["batch_id"], reason, services=services, now=now)
        return
    named = _named_job(decoded)
    if named:
        reason += f"; it named job {named}, which this copy cannot prove it claimed (that job is left as it is)"
    poison_id = poison_row_id(body)
    give_up_job(poison_id, reason, claimed_by=poison_id, services=services, now=now)


def give_up_batch(job_id: str, batch_id: str, reason: str, *, services: Services, now: datetime) -> None:
    """End a batch (Failed) whose message failed for good, unless it already ended."""
    reason = brief(reason)
    row = services.status.get_batch(job_id, batch_id)
    if row is None:
        log.error("message for unknown batch %s/%s dropped: %s", job_id, batch_id, reason)
    elif not row.state.is_terminal:
        log.error("batch %s/%s failed for good: %s", row.job_id, row.batch_id, reason)
        outcome = Outcome.every_item_failed(BatchState.FAILED, row.error_code or "GaveUp",
                                            f"{row.error_message} | {reason}".strip(" |"))
        finish_batch(row, outcome, services=services, now=now)


def _submit(message: BatchMessage, message_id: str, *, dequeue_count: int, services: Services, now: datetime) -> None:
    telemetry.tag(job_id=message.job_id, batch_id=message.batch_id)
    try:
        submit_batch(message, message_id=message_id, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count:
            give_up_batch(message.job_id, message.batch_id, f"{type(error).__name__}: {error}", services=services, now=now)
        raise


def _plan_segment(plan: PlanMessage, *, dequeue_count: int, services: Services, now: datetime) -> None:
    telemetry.tag(job_id=plan.job_id)
    try:
        plan_upload(plan, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - record it on the last delivery, then let the host retry/poison
        if dequeue_count >= services.settings.max_dequeue_count and is_job_id(plan.job_id):
            give_up_job(plan.job_id, f"{type(error).__name__}: {error}", claimed_by=plan.claimed_by, services=services, now=now)
        raise


def _plan_again(decoded: dict[str, Any], job_id: str, claim: JobClaim, *, dequeue_count: int, services: Services,
                now: datetime) -> None:
    """A job message the app re-sent after a transient error: it acts only as the claim it carries."""
    telemetry.tag(job_id=job_id)
    try:
        request = JobRequest.from_json(decoded)
    except InvalidInputError as error:
        reject_job(job_id, str(error), 0, claimed_by=claim.message_id, services=services, now=now)
        return
    plan_or_retry(decoded, request, job_id, claim, dequeue_count=dequeue_count, services=services, now=now)


def _reject_unreadable(own_id: str, message_id: str, reason: str, *, named: str, services: Services, now: datetime) -> None:
    """A submit-queue message that is not a job: Rejected under its own id (never under a job id it names)."""
    if named:
        reason = f"{reason} (it named job_id {named}: a message that is not a job is recorded under its own id)"
    services.status.create_job(JobRow(job_id=own_id, source="inline", source_ref=SourceRef(SourceKind.INLINE).to_json(),
                                      claimed_by=message_id), now)
    reject_job(own_id, reason, 0, claimed_by=message_id, services=services, now=now)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _named_job(decoded: Any) -> str:
    """The job a message names (its `job_id`, or an event's blob version's job), for the record only."""
    try:
        blob = blob_created_from_event(decoded)
    except (InvalidInputError, AttributeError, TypeError, ValueError):
        blob = None
    return upload_job_id(blob) if blob is not None else _given_job_id(decoded)


def _names_a_batch(decoded: dict[str, Any]) -> bool:
    batch_id = decoded.get("batch_id")
    return is_job_id(decoded.get("job_id")) and isinstance(batch_id, str) and BATCH_ID.match(batch_id) is not None


def _given_job_id(decoded: Any) -> str:
    given = decoded.get("job_id") if isinstance(decoded, dict) else None
    return given if is_job_id(given) else ""
