"""The sweeper: a timer-triggered pass that settles what no message will settle any more.

Messages drive the pipeline, and each handler settles what it touches, so this is the safety net for
a message that was lost or whose last delivery died at the wrong moment:
- a job that is planned and has no open batch, but whose final write was lost, is finished;
- a batch past its poll deadline (plus a grace period) is ended: its operation is read once (one still
  running is canceled, as at a poll's deadline), and its items reconciled against the catalog;
- a batch left `Queued` or `Submitting` with no change for `SWEEP_STALE_SECONDS` gets its message
  again (a `Submitting` one first goes back to `Queued`: its claimer is long gone, since that is far
  past the function timeout);
- a batch that ended `Unconfirmed` (neither its operation nor the catalog could be read, or its
  operation ran on past its cancel) is confirmed against the catalog once it answers and the operation
  has ended, and its job settled again (`shared.steps.verdicts`);
- a job not yet planned whose row has not changed for `SUBMIT_RETRY_SECONDS + SWEEP_STALE_SECONDS`
  (longer than its planning may be retried) is given up (`GaveUp`): the deliveries that claimed it died
  without ending it (e.g. the last one timed out, and its message went to a poison queue, whose
  handler may not change a job it cannot prove it claimed).
- a job-finished event still Pending and not held by a live claim (its publish failed, or its
  publisher died between sending and marking it) is published again, with the same event id.
Cost: one query for the open jobs, and per open job one query for its open batches; one query for the
Unconfirmed jobs, and per such job one for its Unconfirmed batches (their catalog checks are bounded per pass);
one query for the Pending events (at most 1000 a pass). Before each pass the timer drains the poison
queues (`shared.steps.poison`): one receive per poison queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared import telemetry
from shared.services import Services
from shared.steps.fanout import batch_message
from shared.steps.poison import PoisonPass
from shared.steps.poll import end_unpolled
from shared.steps.prune import start_prune_if_due
from shared.steps.rollup import settle_job
from shared.steps.verdicts import ConfirmPass, confirm_in_catalog, confirm_unconfirmed_jobs
from shared.store import BatchRow, BatchState, JobRow, give_up_stalled, requeue_stale

log = logging.getLogger(__name__)

OPEN_BATCH_FILTER = " or ".join(f"state eq '{s}'" for s in (BatchState.QUEUED, BatchState.SUBMITTING,
                                                            BatchState.SUBMITTED, BatchState.RUNNING,
                                                            BatchState.UNCONFIRMED))


@dataclass
class SweepReport:
    jobs_checked: int = 0
    jobs_finished: int = 0
    batches_timed_out: int = 0
    batches_resent: int = 0
    plannings_given_up: int = 0
    batches_confirmed: int = 0
    confirm: ConfirmPass = field(default_factory=ConfirmPass, repr=False)
    events_published: int = 0
    poison: PoisonPass = field(default_factory=PoisonPass)  # the poison queues, drained before (handlers.handle_sweep)


def sweep(*, services: Services, now: datetime) -> SweepReport:
    """One pass over every open job."""
    report = SweepReport()
    report_queue_ages(services=services, now=now)
    for job in services.status.open_jobs():
        report.jobs_checked += 1
        settled = settle_job(job.job_id, status=services.status, now=now, read=services.payloads.read)
        if settled is not None and settled.state.is_terminal:
            report.jobs_finished += 1
            telemetry.job_swept(job)
            continue
        start_prune_if_due(settled, services=services)  # a prune message lost with its sender's process
        if _give_up_stopped_planning(job, services=services, now=now):
            report.plannings_given_up += 1
            settled = settle_job(job.job_id, status=services.status, now=now, read=services.payloads.read)
            if settled is not None and settled.state.is_terminal:
                report.jobs_finished += 1
                telemetry.job_swept(job)
                continue
        timed_out = report.batches_timed_out
        for row in services.status.batches(job.job_id, where=OPEN_BATCH_FILTER):
            _sweep_batch(row, report, services=services, now=now)
        if report.batches_timed_out > timed_out and _has_ended(job, services=services):
            telemetry.job_swept(job)  # its last open batch, timed out here, ended it
    report.jobs_finished += len(confirm_unconfirmed_jobs(report.confirm, services=services, now=now))
    report.batches_confirmed = report.confirm.confirmed
    if services.events is not None:
        report.events_published = services.events.publish_pending(now)
    if (report.jobs_finished or report.batches_timed_out or report.batches_resent or report.plannings_given_up
            or report.batches_confirmed):
        log.warning("sweeper: %s", report)
    return report


def report_queue_ages(*, services: Services, now: datetime) -> None:
    """The age of each queue's oldest visible message (the queue.oldest_age gauge): is anything not being read?"""
    settings = services.settings
    for queue in (settings.submit_queue, settings.work_queue, settings.poll_queue, settings.drop_events_queue):
        try:
            inserted = services.queues.oldest_inserted(queue)
        except Exception as error:  # noqa: BLE001 - a gauge must never stop the sweep
            log.warning("sweeper: could not peek at queue %s: %s", queue, error)
            continue
        telemetry.queue_oldest_age(queue, (now - inserted).total_seconds() if inserted is not None else 0.0)


def _has_ended(job: JobRow, *, services: Services) -> bool:
    progress = services.status.job_progress(job.job_id)
    return progress is not None and progress.state.is_terminal


def _sweep_batch(row: BatchRow, report: SweepReport, *, services: Services, now: datetime) -> None:
    settings = services.settings
    if row.state == BatchState.UNCONFIRMED:  # a job with other batches still open
        confirm_in_catalog(row, report.confirm, services=services, now=now)
        return
    if row.state in (BatchState.SUBMITTED, BatchState.RUNNING):
        grace = timedelta(seconds=settings.poll_deadline_seconds + 2 * settings.poll_max_delay_seconds)
        if row.submitted is not None and now >= row.submitted + grace:
            reason = f"swept: no poll ended this batch by its deadline ({settings.poll_deadline_seconds} s after submission)"
            end_unpolled(row, reason, services=services, now=now)
            report.batches_timed_out += 1
        return
    stale = timedelta(seconds=settings.sweep_stale_seconds)
    if row.updated is None or now < row.updated + stale:
        return
    if row.state == BatchState.SUBMITTING:
        back = requeue_stale(services.status, row.job_id, row.batch_id, older_than=now - stale, now=now)
        if back is None:
            return
        row = back
    services.queues.send(settings.work_queue, batch_message(row.job_id, row.batch_id))
    report.batches_resent += 1


def _give_up_stopped_planning(job: JobRow, *, services: Services, now: datetime) -> bool:
    """End a job whose planning stopped without ending it (see the module docstring); whether it did."""
    settings = services.settings
    older_than = now - timedelta(seconds=settings.submit_retry_seconds + settings.sweep_stale_seconds)
    if job.planned or job.updated is None or job.updated > older_than:
        return False
    reason = f"swept: its planning stopped (no change for {settings.submit_retry_seconds + settings.sweep_stale_seconds} s)"
    return give_up_stalled(services.status, job.job_id, older_than=older_than, reason=reason, now=now) is not None
