"""The poll and retry schedules (their correctness; their speed is bench/poll_lag.py's)."""

from __future__ import annotations

import random

from shared.catalog.client import Operation
from shared.steps.backoff import PollSchedule, exponential, first_poll_delay, next_poll_delay

PRODUCTION = PollSchedule()  # the settings' defaults: 5 s, 60 s cap, steps of max(2 s, 10 %)
BACKOFF = PollSchedule(predicted=False)


def test_exponential_grows_then_caps_with_bounded_jitter() -> None:
    rng = random.Random(4)
    delays = [exponential(n, base=5, cap=60, rng=rng) for n in range(8)]
    assert 4 <= delays[0] <= 6 and 8 <= delays[1] <= 12 and 16 <= delays[2] <= 24
    assert all(d <= 60 for d in delays) and delays[-1] >= 48


def test_server_retry_after_wins_but_is_capped() -> None:
    for schedule in (PRODUCTION, BACKOFF):
        assert next_poll_delay(0, None, schedule=schedule, elapsed_seconds=0, retry_after=17) == 17
        assert next_poll_delay(0, None, schedule=schedule, elapsed_seconds=0, retry_after=600) == 60
        assert next_poll_delay(0, None, schedule=schedule, elapsed_seconds=3, predicted_seconds=90,
                               retry_after=2) == 2


def test_counters_shorten_the_wait_when_the_end_is_near() -> None:
    nearly_done = Operation(id="o", status="Running", total_items=100, pending_items=10)
    plain = next_poll_delay(5, None, schedule=BACKOFF, elapsed_seconds=90, rng=random.Random(1))
    predicted = next_poll_delay(5, nearly_done, schedule=BACKOFF, elapsed_seconds=90, rng=random.Random(1))
    assert plain >= 48 and predicted <= 11  # 90 s for 90 items -> about 10 s for the last 10


def test_moving_counters_aim_at_the_extrapolated_end_even_when_it_is_far() -> None:
    quarter = Operation(id="o", status="Running", total_items=100, pending_items=75)
    assert next_poll_delay(0, quarter, schedule=PRODUCTION, elapsed_seconds=5) == 15  # 25 in 5 s -> 75 in 15 s
    assert next_poll_delay(0, quarter, schedule=PRODUCTION, elapsed_seconds=50) == 60  # capped
    still = Operation(id="o", status="Running", total_items=100, pending_items=100)  # not moving: no extrapolation
    assert next_poll_delay(0, still, schedule=PRODUCTION, elapsed_seconds=5, predicted_seconds=10) == 5


def test_counters_that_have_barely_moved_are_trusted_only_as_far_as_the_time_already_seen() -> None:
    barely = Operation(id="o", status="Running", total_items=234, pending_items=230)  # 4 done: 1 s says 57 s left
    assert next_poll_delay(0, barely, schedule=PRODUCTION, elapsed_seconds=1) == 2  # min step: look again soon
    assert next_poll_delay(1, barely, schedule=PRODUCTION, elapsed_seconds=7) == 7  # at most the time seen again
    tenth = Operation(id="o", status="Running", total_items=234, pending_items=210)  # 24 done: aimed at
    assert next_poll_delay(2, tenth, schedule=PRODUCTION, elapsed_seconds=6) == 53  # 6 s * 210 / 24 = 52.5 s


def test_never_below_one_second() -> None:
    assert next_poll_delay(0, None, schedule=PollSchedule(initial=0), elapsed_seconds=0) >= 1
    assert first_poll_delay(0.0, PRODUCTION) == 1
    assert next_poll_delay(0, None, schedule=PollSchedule(min_step=0), elapsed_seconds=0,
                           predicted_seconds=0.0) == 1


def test_first_poll_at_the_predicted_end_rounded_up_to_whole_seconds() -> None:
    assert first_poll_delay(47, PRODUCTION) == 47
    assert first_poll_delay(12.1, PRODUCTION) == 13  # 12.1 s: a poll at 12 s would find it running
    assert first_poll_delay(500, PRODUCTION) == 60  # never past the cap


def test_first_poll_without_a_prediction_or_when_predictions_are_off_waits_the_initial_delay() -> None:
    assert first_poll_delay(None, PRODUCTION) == 5
    assert first_poll_delay(47, BACKOFF) == 5


def test_after_the_predicted_end_polls_step_at_a_tenth_of_the_elapsed_time_but_at_least_two_seconds() -> None:
    late = {"schedule": PRODUCTION, "predicted_seconds": 10}  # predicted end: 10 s
    assert next_poll_delay(1, None, elapsed_seconds=11, **late) == 2
    assert next_poll_delay(1, None, elapsed_seconds=40, **late) == 4
    assert next_poll_delay(1, None, elapsed_seconds=123, **late) == 13
    assert next_poll_delay(9, None, elapsed_seconds=5000, **late) == 60  # capped, never doubling past it


def test_a_poll_before_the_predicted_end_waits_for_it() -> None:
    # e.g. a batch polled cold, whose collection's first operation has since finished and taught the timing
    assert next_poll_delay(1, None, schedule=PRODUCTION, elapsed_seconds=5, predicted_seconds=47) == 42


def test_without_anything_to_predict_from_it_falls_back_to_doubling() -> None:
    rng = random.Random(2)
    delays = [next_poll_delay(n, None, schedule=PRODUCTION, elapsed_seconds=5 * 2**n, rng=rng) for n in range(5)]
    assert 4 <= delays[0] <= 6 and 32 <= delays[3] <= 48 and 48 <= delays[4] <= 60


def test_backoff_schedule_ignores_the_timing() -> None:
    rng = random.Random(3)
    assert 16 <= next_poll_delay(2, None, schedule=BACKOFF, elapsed_seconds=15, predicted_seconds=10,
                                 rng=rng) <= 24


def test_the_step_schedule_detects_any_end_within_its_fraction_and_a_few_gets() -> None:
    """Walk the schedule against operations that end later than predicted: lag and GETs stay bounded."""
    for predicted, actual in ((12, 12), (12, 20), (47, 60), (1, 60)):
        t, gets = first_poll_delay(predicted, PRODUCTION), 1
        while t < actual:
            t += next_poll_delay(gets, None, schedule=PRODUCTION, elapsed_seconds=t,
                                 predicted_seconds=predicted)
            gets += 1
        assert t - actual <= max(2.0, 0.1 * actual + 1)  # +1: whole seconds
        assert gets <= 3 if predicted == actual else gets <= 30


def test_counters_are_extrapolated_over_the_operations_own_age() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    # created 5 s ago by the service's clock, though we started submitting 8 s ago (a slow POST)
    quarter = Operation(id="o", status="Running", creation_time="2026-01-01T00:00:05Z", total_items=100, pending_items=75)
    assert next_poll_delay(0, quarter, schedule=PRODUCTION, elapsed_seconds=8, now=now) == 15
    # a service clock behind ours never makes the operation older than our own measure
    skewed = Operation(id="o", status="Running", creation_time="2026-01-01T00:00:00Z", total_items=100, pending_items=75)
    assert next_poll_delay(0, skewed, schedule=PRODUCTION, elapsed_seconds=8, now=now) == 24
    unparsable = Operation(id="o", status="Running", creation_time="soon", total_items=100, pending_items=75)
    assert next_poll_delay(0, unparsable, schedule=PRODUCTION, elapsed_seconds=8, now=now) == 24
