"""Delays: when to poll an operation again, and when to retry a submit.

Polling aims at the moment the operation ends, not at a fixed rhythm. Three sources say when that
is, best first:

1. the service's `Retry-After`, when it sends one;
2. the operation's own counters, when they move while it runs: with k of n items done after t
   seconds, the rest should take about t*(n-k)/k. While fewer than a tenth of the items are done
   that figure is mostly the counters' rounding (4 of 234 items after 1 s says 57 s, where 3 s
   later 14 of them say 46 s), so it is trusted only as far as the time already seen: the
   next poll comes after at most that time again, and a few polls earn a figure worth aiming at;
3. the length predicted for the batch's size from the collection's recently finished operations
   (`shared.store.timing`), so the first poll lands at the predicted end.

Once the predicted end has passed, the operation is polled at short steps, a fraction of the time
since submission (at least `min_step`): the detection lag stays a bounded fraction of the
operation's length, and the number of GETs grows only with the log of how wrong the prediction was.

With nothing to predict from (a collection's first operations, on a service whose counters stay
still) one batch scouts at short steps and teaches the rest (`shared.steps.cold_start`); a poll that
still knows nothing falls back to doubling from `initial`. The same scout takes over when a
prediction proves wrong: it steps at RESCOUT_STEP_FRACTION while the others wait, and one batch per
job looks early (`lookout_first_delay`) to see a speed-up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime

from shared.catalog import Operation
from shared.settings import Settings

JITTER = 0.2  # +-20 %, so batches submitted together do not poll in lockstep
TRUSTED_FRACTION = 0.1  # counters extrapolated from fewer done items than this are mostly rounding
MIN_DELAY = 1.0  # queue visibility delays are whole seconds
RESCOUT_STEP_FRACTION = 0.15  # a scout past a wrong prediction: lag within 15 %, few GETs, the others wait for it
LOOKOUT_FRACTION = 1 / 16  # a lookout's early look, as a fraction of the predicted length


@dataclass(frozen=True)
class PollSchedule:
    """The poll settings (see docs/configuration.md)."""

    initial: float = 5.0
    cap: float = 60.0
    step_fraction: float = 0.1
    min_step: float = 2.0
    predicted: bool = True  # False: the plain doubling schedule, whatever is known

    @classmethod
    def from_settings(cls, settings: Settings) -> PollSchedule:
        return cls(initial=settings.poll_initial_delay_seconds, cap=settings.poll_max_delay_seconds,
                   step_fraction=settings.poll_step_fraction, min_step=settings.poll_min_step_seconds,
                   predicted=settings.poll_schedule == "predicted")


def exponential(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """`min(base * 2**attempt, cap)` with +-20 % jitter, never below 1 s nor above `cap`."""
    delay = min(base * (2 ** min(attempt, 30)), cap)
    jittered = delay * (1 + JITTER * (2 * (rng or random).random() - 1))
    return max(MIN_DELAY, min(jittered, cap))


def first_poll_delay(predicted_seconds: float | None, schedule: PollSchedule) -> float:
    """When to poll a just-submitted operation predicted to take `predicted_seconds`: at its end, else `initial`."""
    if not schedule.predicted or predicted_seconds is None:
        return max(MIN_DELAY, min(schedule.initial, schedule.cap))
    return _bounded(predicted_seconds, schedule)


def lookout_first_delay(predicted_seconds: float, schedule: PollSchedule) -> float | None:
    """When a lookout (`shared.steps.cold_start`) looks early: at a sixteenth of the predicted length, which
    sees a service 16 times faster at once; None when that is shorter than `min_step` (32 s predicted at
    the production settings): a speed-up then costs at most the predicted length, and no GET."""
    early = LOOKOUT_FRACTION * predicted_seconds
    return _bounded(early, schedule) if early >= schedule.min_step else None


def next_poll_delay(
    attempt: int,
    operation: Operation | None,
    *,
    schedule: PollSchedule,
    elapsed_seconds: float,
    predicted_seconds: float | None = None,
    retry_after: float | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
    scout: bool = False,
) -> float:
    """How long to wait before polling an operation that is still running (see the module docstring).

    `elapsed_seconds` is the time since submission, `predicted_seconds` the batch's predicted length
    (None when unknown). With `now`, the counters are extrapolated over the operation's own age (see
    `operation_age`). A `scout` (`shared.steps.cold_start`) with nothing to predict from polls at short
    steps rather than doubling, and one past its predicted end at RESCOUT_STEP_FRACTION steps.
    """
    if retry_after is not None:
        return max(MIN_DELAY, min(retry_after, schedule.cap))
    age = operation_age(operation, now, elapsed_seconds)
    remaining = remaining_by_counters(operation, age)
    if not schedule.predicted:
        delay = exponential(attempt, base=schedule.initial, cap=schedule.cap, rng=rng)
        return delay if remaining is None else max(MIN_DELAY, min(delay, remaining * 1.1))
    if remaining is not None:
        if not _enough_done(operation):
            remaining = min(remaining, max(schedule.min_step, age))
        return _bounded(remaining, schedule)
    step = max(schedule.min_step, schedule.step_fraction * elapsed_seconds)
    if predicted_seconds is None:
        return _bounded(step, schedule) if scout else exponential(attempt, base=schedule.initial, cap=schedule.cap, rng=rng)
    until_predicted_end = predicted_seconds - elapsed_seconds
    if scout and until_predicted_end <= 0:
        step = max(schedule.min_step, RESCOUT_STEP_FRACTION * elapsed_seconds)
    return _bounded(max(step, until_predicted_end), schedule)


def operation_age(operation: Operation | None, now: datetime | None, elapsed_seconds: float) -> float:
    """Seconds since the service created the operation, never more than `elapsed_seconds`.

    `elapsed_seconds` counts from when our POST returned (`BatchRow.submitted`), a little after the
    service created the operation; a row written by an older version counted from before its POST,
    which can take seconds for a big batch and would stretch every extrapolation. The service's
    clock may be off from ours: the smaller of the two figures errs towards polling early, which
    the counters then correct, rather than late.
    """
    if operation is None or now is None or not operation.creation_time:
        return elapsed_seconds
    try:
        age = (now - datetime.fromisoformat(operation.creation_time)).total_seconds()
    except (TypeError, ValueError):
        return elapsed_seconds
    return max(0.0, min(age, elapsed_seconds))


def remaining_by_counters(operation: Operation | None, elapsed_seconds: float) -> float | None:
    """Seconds left, extrapolated from the operation's counters; None unless they have moved."""
    if operation is None or not operation.total_items or operation.pending_items is None or elapsed_seconds <= 0:
        return None
    done = operation.total_items - operation.pending_items
    if not 0 < done < operation.total_items:
        return None
    return elapsed_seconds * (operation.total_items - done) / done


def _enough_done(operation: Operation | None) -> bool:
    """Whether the operation's counters have moved far enough for their extrapolation to be aimed at."""
    if operation is None or not operation.total_items or operation.pending_items is None:
        return False
    return operation.total_items - operation.pending_items >= TRUSTED_FRACTION * operation.total_items


def _bounded(seconds: float, schedule: PollSchedule) -> float:
    # Rounded up: the queue takes whole seconds and truncates, and a poll just before the end is a wasted GET.
    return float(min(max(MIN_DELAY, math.ceil(seconds)), schedule.cap))
