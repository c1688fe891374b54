"""The poll and retry schedules."""

from __future__ import annotations

import random

from shared.backoff import exponential, next_poll_delay
from shared.geocatalog import Operation


def test_exponential_grows_then_caps_with_bounded_jitter() -> None:
    rng = random.Random(4)
    delays = [exponential(n, base=5, cap=60, rng=rng) for n in range(8)]
    assert 4 <= delays[0] <= 6 and 8 <= delays[1] <= 12 and 16 <= delays[2] <= 24
    assert all(d <= 60 for d in delays) and delays[-1] >= 48


def test_server_retry_after_wins_but_is_capped() -> None:
    assert next_poll_delay(0, None, base=5, cap=60, elapsed_seconds=0, retry_after=17) == 17
    assert next_poll_delay(0, None, base=5, cap=60, elapsed_seconds=0, retry_after=600) == 60


def test_counters_shorten_the_wait_when_the_end_is_near() -> None:
    nearly_done = Operation(id="o", status="Running", total_items=100, pending_items=10)
    plain = next_poll_delay(5, None, base=5, cap=60, elapsed_seconds=90, rng=random.Random(1))
    predicted = next_poll_delay(5, nearly_done, base=5, cap=60, elapsed_seconds=90, rng=random.Random(1))
    assert plain >= 48 and predicted <= 11  # 90 s for 90 items -> about 10 s for the last 10


def test_never_below_one_second() -> None:
    assert next_poll_delay(0, None, base=0, cap=60, elapsed_seconds=0) >= 1
