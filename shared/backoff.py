"""Delays: when to poll an operation again, and when to retry a submit."""

from __future__ import annotations

import random

from shared.geocatalog import Operation

JITTER = 0.2  # +-20 %, so batches submitted together do not poll in lockstep


def exponential(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """`min(base * 2**attempt, cap)` with +-20 % jitter, never below 1 s nor above `cap`."""
    delay = min(base * (2 ** min(attempt, 30)), cap)
    jittered = delay * (1 + JITTER * (2 * (rng or random).random() - 1))
    return max(1.0, min(jittered, cap))


def next_poll_delay(
    attempt: int,
    operation: Operation | None,
    *,
    base: float,
    cap: float,
    elapsed_seconds: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """How long to wait before polling again.

    The server's Retry-After wins when given. Otherwise exponential backoff, shortened when the
    operation's counters show progress: with k of n items done after t seconds, the rest should
    take about t*(n-k)/k, and there is no point sleeping much past that.
    """
    if retry_after is not None:
        return max(1.0, min(retry_after, cap))
    delay = exponential(attempt, base=base, cap=cap, rng=rng)
    if operation is not None and operation.total_items and operation.pending_items is not None:
        done = operation.total_items - operation.pending_items
        if 0 < done < operation.total_items and elapsed_seconds > 0:
            predicted = elapsed_seconds * (operation.total_items - done) / done
            delay = max(1.0, min(delay, predicted * 1.1))
    return delay
