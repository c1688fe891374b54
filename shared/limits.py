"""Caps on what one message may make a worker read: the error that names the cap, and wall-time deadlines.

Every bound on a read (line length, decompressed bytes, bytes per item, search pages and items, time
per request and per source) is a setting; exceeding one raises `LimitExceeded`, whose text names the
setting and its value (e.g. "line 3 is longer than MAX_LINE_BYTES (16 MiB)"). It is an
`InvalidInputError`: the job or the item ends Rejected with that reason, never retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.errors import InvalidInputError

Clock = Callable[[], float]


class LimitExceeded(InvalidInputError):
    """A read went past one of the caps; the message names the setting."""


def describe_bytes(count: int) -> str:
    """`count` as people say it: 16 MiB, 1.5 GiB, 300 bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            value = count / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} bytes"


def byte_cap(setting: str, value: int) -> str:
    """How a byte cap is named in a reason: `MAX_LINE_BYTES (16 MiB)`."""
    return f"{setting} ({describe_bytes(value)})"


@dataclass
class Deadline:
    """A total wall-time budget (monotonic clock), named after the setting that sets it.

    Args:
        seconds: the budget, from now.
        setting: the setting's name, for the reason given when it runs out.
        clock: a monotonic clock (tests may pass their own).
    """

    seconds: float
    setting: str
    clock: Clock = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def remaining(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, what: str) -> None:
        """Raises LimitExceeded once the budget is spent: `what` took longer than SETTING (N s)."""
        if self.expired():
            raise LimitExceeded(f"{what} took longer than {self.describe()}")

    def describe(self) -> str:
        return f"{self.setting} ({self.seconds:g} s)"


def sooner(*deadlines: Deadline | None) -> Deadline | None:
    """The deadline with the least time left (None when there is none)."""
    present = [d for d in deadlines if d is not None]
    return min(present, key=Deadline.remaining) if present else None
