"""Job-finished events: one CloudEvents 1.0 event per job that reaches a terminal state (docs/events.md).

An outbox on the job row: the write that ends the job marks its event Pending (`transitions._update_job`).
Publishing then claims it under the row's ETag (`claim_event`, for a lease), sends it, and marks it
Published. So a redelivery or a second settle, which finds the job terminal, never publishes again; a
failed publish releases the claim (the sweeper tries again) and never touches the job's state or counts;
a crash between the send and the mark leaves the claim to run out, and the sweeper sends the event again
with the same id (consumers dedupe on `id`, which derives from the source and the job id alone).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.redact import redacted
from shared.store.status import EventState, JobRow, StatusStore
from shared.store.transitions import claim_event, mark_published, mark_unsent, release_event

log = logging.getLogger(__name__)

JOB_FINISHED = "GeoCatalogIngest.JobFinished"
EVENT_ID_NAMESPACE = uuid.UUID("6f1c3f0e-2b4f-5d55-9a43-3c0f8b7a9d21")  # fixed: ids stay the same across versions
CLAIM_SECONDS = 300  # a publisher's hold on an event; past it, a crash's event is sent again by the sweeper


class EventPublisher(Protocol):
    """Where events go (`shared.event_publishers`): raises when the sink did not take the event."""

    def publish(self, event: dict[str, Any]) -> None: ...


def event_source(account: str, status_table: str) -> str:
    """The events' `source`: stable for one app (its storage account and status table, where job ids are unique)."""
    return f"urn:geocatalog-ingest:{account or 'unknown'}:{status_table}"


def event_id(source: str, job_id: str) -> str:
    """The same for every send of one job's event (a retry, the sweeper after a crash): consumers dedupe on it."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{source}|{job_id}"))


def job_finished_event(job: JobRow, *, source: str) -> dict[str, Any]:
    """The job's event as CloudEvents 1.0 structured JSON; its data only what the row holds, text redacted."""
    finished = job.finished or job.updated
    duration = (finished - job.created).total_seconds() if finished and job.created else None
    error = {"code": job.error_code, "message": redacted(job.error_message)} if job.error_code or job.error_message else None
    data = {
        "job_id": job.job_id,
        "state": str(job.state),
        "collection": job.collection,
        "counts": {"items": job.item_count, "batches": job.batch_count, "succeeded": job.items_succeeded,
                   "failed": job.items_failed, "rejected": job.items_rejected, "superseded": job.items_superseded,
                   "repaired": job.items_repaired},
        "created": _iso(job.created),
        "finished": _iso(finished),
        "duration_seconds": round(max(duration, 0.0), 3) if duration is not None else None,
        "error": error,
    }
    return {"specversion": "1.0", "type": JOB_FINISHED, "source": source, "id": event_id(source, job.job_id),
            "subject": job.job_id, "time": _iso(finished), "datacontenttype": "application/json", "data": data}


class JobEvents:
    """Publishes the job-finished events of one status table (`publisher` None: no sink, rows say Unsent)."""

    def __init__(self, status: StatusStore, publisher: EventPublisher | None, *, source: str,
                 claim_seconds: float = CLAIM_SECONDS) -> None:
        self._status = status
        self._publisher = publisher
        self._source = source
        self._claim = timedelta(seconds=claim_seconds)

    @property
    def source(self) -> str:
        return self._source

    def job_ended(self, job: JobRow, now: datetime) -> None:
        """Publish the event of a job that a write just ended; never raises (the sweeper retries a failure)."""
        try:
            self.publish(job.job_id, now)
        except Exception as error:  # noqa: BLE001 - the job's verdict stands; the event stays Pending
            log.warning("job %s: its job-finished event is left pending: %s", job.job_id, redacted(str(error)))

    def publish(self, job_id: str, now: datetime) -> EventState | None:
        """Publish the job's Pending event unless someone else holds it; its state after, None if not ours.

        Raises whatever the sink raised, after releasing the claim (the event stays Pending).
        """
        if self._publisher is None:
            unsent = mark_unsent(self._status, job_id, now=now)
            return EventState.UNSENT if unsent is not None else None
        holder = f"publisher-{uuid.uuid4().hex}"
        claimed = claim_event(self._status, job_id, claimed_by=holder, until=now + self._claim, now=now)
        if claimed is None:
            return None
        try:
            self._publisher.publish(job_finished_event(claimed, source=self._source))
        except Exception as error:
            release_event(self._status, job_id, claimed_by=holder, reason=f"{type(error).__name__}: {error}", now=now)
            raise
        published = mark_published(self._status, job_id, claimed_by=holder, now=now)
        return EventState.PUBLISHED if published is not None else None

    def publish_pending(self, now: datetime, *, limit: int = 1000) -> int:
        """The sweeper's pass: publish every Pending event not held by a live claim; how many went out."""
        sent = 0
        for job in self._status.pending_events(limit=limit):
            try:
                sent += self.publish(job.job_id, now) == EventState.PUBLISHED
            except Exception as error:  # noqa: BLE001 - one sink failure must not stop the sweep
                log.warning("job %s: publishing its job-finished event failed again: %s", job.job_id,
                            redacted(str(error)))
        return sent


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
