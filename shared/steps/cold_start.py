"""A collection's first operations: learn how long they take from one, and wake the others when it ends.

Polls are aimed at an operation's predicted end (`shared.steps.backoff`), from the collection's recent
seconds per item (`shared.store.timing`). A collection seen for the first time has no such figure, its
operations' counters may stay still until the end, and a poll message's visibility delay cannot be
shortened once it is sent. So while the figure is unknown, each instance makes the first such batch
a *scout*, polled at short steps from one second on, and every other one *waits*: its row says so,
and its poll message gets the long fallback delay (`POLL_MAX_DELAY_SECONDS`). When the scout's
operation ends its duration is recorded, and the scout wakes the waiting batches of its job: each
gets a poll timed at its own predicted end (at once when that end has passed). A
cold job so costs the scout's few polls and about one GET for every other batch, with a detection
lag of about one step.

The fallback poll still comes. It is dropped when the batch was polled meanwhile (its row is no
longer Submitted), and it is what polls a waiting batch whose scout died or was in another job.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from shared.messages import PollMessage
from shared.services import Services
from shared.steps.backoff import MIN_DELAY, PollSchedule, first_poll_delay
from shared.store import SCOUT, WAITING, BatchRow, BatchState, mark_woken, seconds_per_item

log = logging.getLogger(__name__)


def first_poll(row: BatchRow, *, services: Services) -> tuple[float, str]:
    """(delay, role) of a just-submitted batch's first poll: at its predicted end, else as a scout or waiting."""
    schedule = PollSchedule.from_settings(services.settings)
    per_item = seconds_per_item(services.timings, row)
    if per_item is not None or not schedule.predicted or services.timings is None:
        return first_poll_delay(row.item_count, per_item, schedule), ""
    if services.timings.claim_scout(row.collection, row.action):
        return MIN_DELAY, SCOUT
    return schedule.cap, WAITING


def recheck_waiting(row: BatchRow, delay: float, role: str, *, services: Services,
                    now: datetime) -> tuple[float, str] | None:
    """A batch just recorded as waiting: if the timing arrived meanwhile, poll it at its predicted end instead.

    Read fresh, after the row says "waiting": a scout that ended before this read has written the
    timing, and one that ends after it finds this row when it wakes its job's waiting batches. The
    row is then taken out of waiting under its ETag, so that it is polled by exactly one of the two:
    None means the scout woke it first (and sent its poll).
    """
    if role != WAITING or services.timings is None:
        return delay, role
    per_item = services.timings.seconds_per_item(row.collection, row.action, fresh=True)
    if per_item is None:
        return delay, role
    if mark_woken(services.status, row, now=now) is None:
        return None
    return first_poll_delay(row.item_count, per_item, PollSchedule.from_settings(services.settings)), ""


def superseded_fallback(message: PollMessage, row: BatchRow) -> bool:
    """A waiting batch's fallback poll, after a woken poll has already polled the batch."""
    return message.role == WAITING and row.state != BatchState.SUBMITTED


def wake_waiting(scout: BatchRow, *, services: Services, now: datetime,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """The scout's operation has ended: poll each waiting batch of its job at its predicted end.

    Reads the job's batch rows that are still Submitted and waiting (once per scout, so once per cold
    collection and instance). A poll's delay is whole seconds, so each one is sent at the moment that
    makes its delay end at its batch's predicted end (`_send_offset`, within the next second: this
    waits at most a second in all, once per cold job); sent at once with whole-second delays, the
    polls of a second's ends would all come at its last moment, a burst the paced GETs never catch
    up with. Each batch is marked woken right before its poll is sent, so waking twice sends nothing
    twice. Returns how many were woken.
    """
    per_item = seconds_per_item(services.timings, scout)
    settings = services.settings
    where = f"state eq '{BatchState.SUBMITTED}' and poll_role eq '{WAITING}'"
    started = clock()
    woken = 0
    for offset, predicted_end, row in _in_send_order(services.status.batches(scout.job_id, where=where), per_item, now):
        if (wait := offset - (clock() - started)) > 0:
            sleep(wait)
        sent_at = now + timedelta(seconds=clock() - started)
        marked = mark_woken(services.status, row, now=sent_at)
        if marked is None:
            continue
        deadline = (row.submitted or now) + timedelta(seconds=settings.poll_deadline_seconds)
        poll = PollMessage(marked.job_id, marked.batch_id, marked.collection,
                           f"{marked.operation_url}?api-version={settings.geocatalog_api_version}",
                           attempt=1, deadline=deadline.isoformat())
        delay = _woken_delay((predicted_end - sent_at).total_seconds())
        services.queues.send(settings.poll_queue, poll.to_json(), delay_seconds=delay)
        woken += 1
    if woken:
        log.info("job %s: the scout %s taught %s's timing; woke %d waiting batch(es)",
                 scout.job_id, scout.batch_id, scout.collection, woken)
    return woken


def _in_send_order(rows: Iterable[BatchRow], per_item: float | None,
                   now: datetime) -> list[tuple[float, datetime, BatchRow]]:
    """(seconds after `now` to send its poll, predicted end, row) of each waiting batch, soonest first."""
    scheduled = []
    for row in rows:
        end = (row.submitted or now) + timedelta(seconds=(per_item or 0.0) * row.item_count)
        scheduled.append((_send_offset((end - now).total_seconds()), end, row))
    return sorted(scheduled, key=lambda entry: entry[0])


def _send_offset(until_predicted_end: float) -> float:
    """Seconds from the wake to sending a woken batch's poll: its end's fraction of a second (0 if past)."""
    if until_predicted_end <= 0:
        return 0.0
    return until_predicted_end - math.floor(until_predicted_end)


def _woken_delay(until_predicted_end: float) -> float:
    """A woken batch's poll delay, from the seconds until its predicted end (negative: past).

    The prediction counts from the moment its POST returned (the row's `submitted`), when the service
    had already created the operation: an end predicted in the past has come, and is polled at once.
    A future one is rounded up, as `shared.steps.backoff` rounds: the queue truncates delays to whole
    seconds, and a poll just before the end is a wasted GET followed by a step.
    """
    if until_predicted_end <= 0:
        return 0.0
    return max(MIN_DELAY, math.ceil(until_predicted_end))
