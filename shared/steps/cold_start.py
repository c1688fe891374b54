"""A collection's first operations, and any operations that prove its timing wrong: one batch learns, the others wait.

Polls are aimed at an operation's predicted end (`shared.steps.backoff`), from the collection's recent
operations (`shared.store.timing`: a fixed part plus seconds per item). A collection seen for the first
time has no such figure, its operations' counters may stay still until the end, and a poll message's
visibility delay cannot be shortened once it is sent. So while the figure is unknown, each instance
makes the first such batch a *scout*, polled at short steps from one second on, and every other one
*waits*: its row says so, and its poll message gets the long fallback delay (`POLL_MAX_DELAY_SECONDS`).
When the scout's operation ends its duration is recorded, and the scout wakes the waiting batches of its
job: each gets a poll timed at its own predicted end (at once when that end has passed). A cold job so
costs the scout's few polls and about one GET for every other batch, with a detection lag of about one
step.

A known figure can be wrong: the service slows down or speeds up, items grow. Two roles watch for it:

- *Slower*: the first batch whose poll, aimed at its predicted end, finds its operation still running
  becomes its job's scout on that instance (`claim_rescout`), and steps at RESCOUT_STEP_FRACTION.
  Batches of the job submitted after it (or in its second), polled meanwhile, wait for it (without a GET
  when their poll comes after the scout was chosen); when it ends the timing jumps to its speed (not a moving average)
  and it wakes them.
- *Faster*: the first batch of a job that each submit instance sends (again after each predicted
  length, for a long job) is a *lookout*: it looks once early (`backoff.lookout_first_delay`), and its
  job's other batches are recorded as waiting, their poll message at their own predicted end as the
  fallback. A lookout whose operation ended well before the prediction makes the timing jump and wakes
  them at once; one that ends about on time wakes nobody (their own polls come at the right moment).

The fallback poll still comes. It is dropped when the batch was woken meanwhile (its row no longer
waiting), and it is what polls a waiting batch whose scout died or was on another instance. A batch
waits at most once without a GET, so no batch waits for a scout forever. Whoever polls a waiting batch
from then on (a scout's wake, the submitter's check, or the batch's own fallback poll going on) first
takes its row out of waiting under its ETag, so exactly one of them does, however many scouts or
redeliveries try.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from shared.catalog import Operation
from shared.messages import PollMessage
from shared.services import Services
from shared.steps.backoff import MIN_DELAY, PollSchedule, first_poll_delay, lookout_first_delay
from shared.store import (
    LOOKOUT,
    SCOUT,
    WAITING,
    BatchRow,
    BatchState,
    mark_running,
    mark_waiting,
    mark_woken,
    predicted_seconds,
    record_timing,
)

log = logging.getLogger(__name__)

JUMP_FRACTION = 0.25  # a scout's or lookout's operation this far off its prediction moves the timing at once
JUMP_MIN_SECONDS = 1.0
SAME_BURST_SECONDS = MIN_DELAY  # batches submitted this close meet the same service: poll order between them is chance
FIRST_LOOK_SECONDS = 2.0  # a first look (one GET, a row write and a message) ends well within this
RESCOUT_SLACK_SECONDS = 5.0  # a scout's next poll may come this late (queue pickup, a busy instance)


def first_poll(row: BatchRow, *, services: Services) -> tuple[float, str]:
    """(delay, role) of a just-submitted batch's first poll: a scout, a lookout, or waiting (see the module docstring)."""
    schedule = PollSchedule.from_settings(services.settings)
    predicted = predicted_seconds(services.timings, row)
    if not schedule.predicted or services.timings is None:
        return first_poll_delay(predicted, schedule), ""
    if predicted is None:
        if services.timings.claim_scout(row.collection, row.action):
            return MIN_DELAY, SCOUT
        return schedule.cap, WAITING
    at_end = first_poll_delay(predicted, schedule)
    if not services.timings.claim_lookout(row.job_id, hold_seconds=predicted):
        return at_end, WAITING
    early = lookout_first_delay(predicted, schedule)
    return (early, LOOKOUT) if early is not None else (at_end, LOOKOUT)


def recheck_waiting(row: BatchRow, delay: float, role: str, *, services: Services,
                    now: datetime) -> tuple[float, str] | None:
    """A batch just recorded as waiting for the fallback delay: if the timing arrived meanwhile, poll it at its
    predicted end instead.

    Read fresh, after the row says "waiting": a scout that ended before this read has written the
    timing, and one that ends after it finds this row when it wakes its job's waiting batches. The
    row is then taken out of waiting under its ETag, so that it is polled by exactly one of the two:
    None means the scout woke it first (and sent its poll). A batch that waits with its own predicted
    end as the fallback (a lookout's job) needs no such check, nor one whose predicted end is the
    fallback delay anyway: it stays waiting, for its lookout to wake it sooner.
    """
    schedule = PollSchedule.from_settings(services.settings)
    if role != WAITING or services.timings is None or delay < schedule.cap:
        return delay, role
    predicted = predicted_seconds(services.timings, row, fresh=True)
    if predicted is None:
        return delay, role
    aimed = first_poll_delay(predicted, schedule)
    if aimed >= delay - MIN_DELAY:  # a long operation: the fallback is its predicted end; a lookout may wake it sooner
        return delay, role
    if mark_woken(services.status, row, now=now) is None:
        return None
    return aimed, ""


def superseded_fallback(message: PollMessage, row: BatchRow) -> bool:
    """A waiting batch's fallback poll, after the batch was taken out of waiting (woken: its woken poll polls it)."""
    return message.role == WAITING and row.poll_role != WAITING


def take_over(row: BatchRow, operation: Operation | None, *, services: Services, now: datetime) -> BatchRow | None:
    """A waiting batch's fallback poll found its operation still running and polls it from now on: it takes the
    batch out of waiting under its ETag (marking it Running in the same write); None when a wake took it first."""
    if operation is not None and operation.status == "Running" and row.state == BatchState.SUBMITTED:
        return mark_running(services.status, row, now=now, waiting=True)
    return mark_woken(services.status, row, now=now)


def takes_first_look(message: PollMessage, row: BatchRow, *, services: Services) -> bool:
    """Whether this first poll takes its job's first look on this instance (its caller then calls
    `services.timings.end_first_look` once the poll is done); a first poll that finds another's look in
    flight waits for it (at most FIRST_LOOK_SECONDS) and returns False.

    A job's first polls come due within a second or so of each other, and an instance runs several at
    once: each one in flight when the first finds its operation still running would GET too, and then
    wait for the scout anyway. So one looks, and the others then wait for its scout without a GET
    (`defers_to_scout`), or look themselves when it found its operation ended.
    """
    if services.timings is None or not _first_poll(message, row):
        return False
    in_flight = services.timings.first_look(row.job_id, hold_seconds=FIRST_LOOK_SECONDS)
    if in_flight is None:
        return True
    in_flight.wait(FIRST_LOOK_SECONDS)
    return False


def _first_poll(message: PollMessage, row: BatchRow) -> bool:
    return message.attempt == 0 and message.role in ("", WAITING, LOOKOUT) and row.state == BatchState.SUBMITTED


def defers_to_scout(message: PollMessage, row: BatchRow, *, services: Services) -> bool:
    """Whether a batch's first poll, arriving while a scout of its job runs past its prediction on this
    instance, should wait for that scout without a GET: only a batch submitted after the scout, or in the
    same second (the slower service runs its operation too), and only once (its fallback poll GETs).

    A batch submitted well before the scout looks itself: its operation may have ended on time (the
    service slowed down after it, or a job's items grow). One submitted in the scout's second does
    not: which of the two polls first is chance (visibility delays are whole seconds, and queue pickup
    varies), and without this every batch that happened to poll before the scout paid a second GET.
    That includes the job's lookout: a slower service is what it looks for, and the scout has seen it.
    """
    if not _first_poll(message, row):
        return False
    scout = services.timings.rescout_of(row.job_id) if services.timings is not None else None
    if scout is None or scout.batch_id == row.batch_id:
        return False
    if scout.submitted is None or row.submitted is None:
        return True
    return row.submitted > scout.submitted - timedelta(seconds=SAME_BURST_SECONDS)


def next_role(row: BatchRow, message: PollMessage, operation: Operation | None, *, services: Services,
              elapsed_seconds: float) -> str:
    """The role of a running batch's next poll: a scout stays one; a batch found running at or past its
    predicted end becomes its job's scout on this instance, or waits for the one there is (WAITING)."""
    if message.role == SCOUT:
        return SCOUT
    predicted = predicted_seconds(services.timings, row)
    overdue = operation is not None and predicted is not None and elapsed_seconds >= predicted
    if not overdue or services.timings is None:
        return LOOKOUT if message.role == LOOKOUT else ""
    hold = services.settings.poll_max_delay_seconds  # until its first step is known (`hold_scout`)
    if services.timings.claim_rescout(row.job_id, row.batch_id, row.submitted, hold_seconds=hold):
        log.info("batch %s/%s still runs %.0f s after its predicted %.1f s: it scouts for its job",
                 row.job_id, row.batch_id, elapsed_seconds - predicted, predicted)
        return SCOUT
    return WAITING


def hold_scout(row: BatchRow, *, services: Services, next_poll_seconds: float) -> None:
    """A scout polls again: it holds its job's scouting on this instance until a little after that poll."""
    if services.timings is not None:
        services.timings.claim_rescout(row.job_id, row.batch_id, row.submitted,
                                       hold_seconds=next_poll_seconds + RESCOUT_SLACK_SECONDS)


def wait_for_scout(row: BatchRow, message: PollMessage, *, services: Services, now: datetime) -> BatchRow | None:
    """Record the batch as waiting for its job's scout and send its fallback poll; None when the row could
    not wait (it changed meanwhile: the caller polls it as usual).

    After the row says "waiting", the scout is looked up again: one that ended in between may have
    looked for waiting rows before this one was, so the batch is then woken here (once, under its ETag).
    """
    settings = services.settings
    waiting = row if row.poll_role == WAITING else mark_waiting(services.status, row, now=now)
    if waiting is None:
        return None
    fallback = replace(message, attempt=message.attempt + 1, role=WAITING)
    services.queues.send(settings.poll_queue, fallback.to_json(), delay_seconds=settings.poll_max_delay_seconds)
    if services.timings is not None and services.timings.rescout_of(row.job_id) is None:
        woken = mark_woken(services.status, waiting, now=now)
        if woken is not None:
            end = (woken.submitted or now) + timedelta(seconds=predicted_seconds(services.timings, woken) or 0.0)
            _send_woken(woken, services=services, delay=_woken_delay((end - now).total_seconds()), now=now)
            return woken
    return waiting


def learn(row: BatchRow, role: str, seconds: float | None, *, services: Services) -> bool:
    """Record the batch's operation (`seconds` long) in its collection's timing; True when it ended well before
    its prediction.

    A scout's or lookout's operation well off its prediction moves the timing to its speed at once:
    those roles exist to check the prediction. Other batches' operations are averaged in.
    """
    predicted = predicted_seconds(services.timings, row)
    off = (seconds is not None and predicted is not None
           and abs(seconds - predicted) > max(JUMP_MIN_SECONDS, JUMP_FRACTION * predicted))
    if off:
        log.info("batch %s/%s took %.1f s where %.1f s were predicted", row.job_id, row.batch_id, seconds, predicted)
    record_timing(services.timings, row, seconds, jump=off and role in (SCOUT, LOOKOUT))
    return off and seconds < predicted


def wake_waiting(scout: BatchRow, *, services: Services, now: datetime,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """The scout's (or an early lookout's) operation has ended: poll each waiting batch of its job at its predicted end.

    Reads the job's batch rows that still wait (Submitted or Running; once per scout). A poll's delay
    is whole seconds, so each one is sent at the moment that makes its delay end at its batch's
    predicted end (`_send_offset`, within the next second: this waits at most a second in all, once
    per scout); sent at once with whole-second delays, the polls of a second's ends would all come at
    its last moment, a burst the paced GETs never catch up with. Each batch is marked woken right
    before its poll is sent, so waking twice sends nothing twice. Returns how many were woken.
    """
    if services.timings is not None:
        held = services.timings.rescout_of(scout.job_id)
        if held is not None and held.batch_id == scout.batch_id:
            services.timings.end_rescout(scout.job_id)  # before the read: a batch deferring after it polls itself
    where = f"(state eq '{BatchState.SUBMITTED}' or state eq '{BatchState.RUNNING}') and poll_role eq '{WAITING}'"
    rows = services.status.batches(scout.job_id, where=where)
    started = clock()
    woken = 0
    for offset, predicted_end, row in _in_send_order(rows, lambda r: predicted_seconds(services.timings, r), now):
        if (wait := offset - (clock() - started)) > 0:
            sleep(wait)
        sent_at = now + timedelta(seconds=clock() - started)
        marked = mark_woken(services.status, row, now=sent_at)
        if marked is None:
            continue
        _send_woken(marked, services=services, delay=_woken_delay((predicted_end - sent_at).total_seconds()), now=now)
        woken += 1
    if woken:
        log.info("job %s: the scout %s taught %s's timing; woke %d waiting batch(es)",
                 scout.job_id, scout.batch_id, scout.collection, woken)
    return woken


def _send_woken(row: BatchRow, *, services: Services, delay: float, now: datetime) -> None:
    settings = services.settings
    deadline = (row.submitted or now) + timedelta(seconds=settings.poll_deadline_seconds)
    poll = PollMessage(row.job_id, row.batch_id, row.collection,
                       f"{row.operation_url}?api-version={settings.geocatalog_api_version}",
                       attempt=1, deadline=deadline.isoformat())
    services.queues.send(settings.poll_queue, poll.to_json(), delay_seconds=delay)


def _in_send_order(rows: Iterable[BatchRow], predict: Callable[[BatchRow], float | None],
                   now: datetime) -> list[tuple[float, datetime, BatchRow]]:
    """(seconds after `now` to send its poll, predicted end, row) of each waiting batch, soonest first."""
    scheduled = []
    for row in rows:
        end = (row.submitted or now) + timedelta(seconds=predict(row) or 0.0)
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
