"""Confirming batches that ended `Unconfirmed`: what the catalog holds decides, once it answers again.

A batch ends Unconfirmed when, at its deadline, neither its operation nor the catalog could be read
(`shared.steps.poll.end_without_verdict`), or its operation still ran and could not be seen to stop
when canceled (`shared.steps.poll.end_at_deadline`): its items were sent, and nothing tells whether
they landed. The sweeper looks at such batches on every pass (`confirm_unconfirmed_jobs`): while the
operation still runs it waits (for at most another deadline); then items the batch created (for a
delete: items gone) are Succeeded, the rest Failed with `NotInCatalog`, and the job is settled again,
from `Unconfirmed` to its true state.

Bounded: at most CONFIRM_BATCHES_PER_PASS batches per pass (each one `POST /stac/search` per 500 ids),
and a pass stops asking at the first batch the catalog does not answer for: it is still down, and the
next pass tries again. A crash between confirming a batch and settling its job is healed by the next
pass, which settles every Unconfirmed job before confirming anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import AuthenticationError, RetryableError
from shared.inputs.batch_items import row_item_ids
from shared.services import Services
from shared.steps.poll import SERVICE_ERRORS, settled_in_catalog
from shared.steps.rollup import settle_job
from shared.store import BatchRow, BatchState, JobRow, confirm_batch, record_batch

log = logging.getLogger(__name__)

CONFIRM_BATCHES_PER_PASS = 100
UNCONFIRMED_FILTER = f"state eq '{BatchState.UNCONFIRMED}'"


@dataclass
class ConfirmPass:
    """One sweeper pass's budget and what it found: batches confirmed, and whether the catalog is still unreadable."""

    confirmed: int = 0
    asked: int = 0
    catalog_down: bool = False

    @property
    def may_ask(self) -> bool:
        return not self.catalog_down and self.asked < CONFIRM_BATCHES_PER_PASS


def confirm_in_catalog(row: BatchRow, progress: ConfirmPass, *, services: Services, now: datetime) -> BatchRow | None:
    """Confirm one Unconfirmed batch against the catalog (when the pass may still ask); its new row, or None."""
    if row.state != BatchState.UNCONFIRMED or not progress.may_ask:
        return None
    progress.asked += 1
    if operation_still_runs(row, services=services, now=now):
        log.warning("batch %s/%s stays Unconfirmed: its operation still runs", row.job_id, row.batch_id)
        return None
    ids = row_item_ids(services, row)
    try:
        landed = settled_in_catalog(row, ids, services=services)
    except (RetryableError, AuthenticationError) as error:
        progress.catalog_down = True
        log.warning("batch %s/%s stays Unconfirmed: the catalog still cannot be read (%s)", row.job_id, row.batch_id, error)
        return None
    confirmed = confirm_batch(services.status, row, landed=landed, ids=ids, payloads=services.payloads, now=now)
    if confirmed is not None:
        progress.confirmed += 1
        record_batch(confirmed, services=services)
        log.warning("batch %s/%s confirmed %s: %d of %d items in the catalog", row.job_id, row.batch_id, confirmed.state,
                    len(landed), len(ids))
    return confirmed


def operation_still_runs(row: BatchRow, *, services: Services, now: datetime) -> bool:
    """Whether the batch's operation is still Pending or Running, so its items may yet land: then the catalog
    cannot decide. Patience ends a deadline after the batch ended; from then on, and whenever the operation
    cannot be read, the catalog decides."""
    patience = timedelta(seconds=services.settings.poll_deadline_seconds)
    if not row.operation_id or (row.finished is not None and now >= row.finished + patience):
        return False
    try:
        return not services.catalog.get_operation(row.operation_id).is_terminal
    except SERVICE_ERRORS:
        return False


def confirm_unconfirmed_jobs(progress: ConfirmPass, *, services: Services, now: datetime) -> list[JobRow]:
    """Settle every Unconfirmed job again after confirming its Unconfirmed batches; the jobs that moved on."""
    moved: list[JobRow] = []
    for job in services.status.unconfirmed_jobs():
        for row in services.status.batches(job.job_id, where=UNCONFIRMED_FILTER):
            confirm_in_catalog(row, progress, services=services, now=now)
        settled = settle_job(job.job_id, status=services.status, now=now, read=services.payloads.read)
        if settled is not None and settled.state.is_final:
            moved.append(settled)
    return moved
