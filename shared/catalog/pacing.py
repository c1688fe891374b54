"""Pacing GeoCatalog calls, so that all instances together stay under one limit.

The GeoCatalog allows about 50 calls/s per subscription; beyond that it answers 429, and every 429
is a wasted call. `GEOCATALOG_MAX_CALLS_PER_SECOND` is the limit of the whole app. Each instance
takes a share of it per calling group: `limit x part / GEOCATALOG_MAX_INSTANCES`, where the
setting is the Flex plan's `maximumInstanceCount` (the infrastructure writes one from the other).
The parts (`SHARES`) are because Flex scales `submit` (planning jobs), `work` (POSTing batches,
planning segments) and `poll`, the functions that call the GeoCatalog, in groups of their own, each up to that count
(`blob_created` makes one call per upload and counts with submit). So each process keeps one pacer
per group (`GroupPacer`), and a call takes its slot from the pacer of the function making it
(`calling_group`). However many instances run, their sum stays under the limit; and a process that
hosts several functions (the local host, Core Tools, a Premium plan instance) gets each one's share,
as separate Flex instances would.

Why a per-instance share rather than a token bucket in storage (`bench/pacing.py`: three local
instances in separate processes, one Azurite, an emulator allowing 5 calls/s, 120 one-item batches):

- The share costs nothing per call: no storage transaction, no added latency, no contention. It
  did its job: 0 429s paced, against 912 unpaced (4.8 accepted calls/s, for every 429 wasted).
  Paced at the full 4/s (three processes each taking a third), the same job drew 0 429s
  against 650, at 3.9 accepted calls/s against 3.7 unpaced: the 429s bought nothing. (As it ships,
  each local process paces its submit and its poll calls at a sixth each: 0 429s at 3.0 calls/s.)
- A shared bucket costs at least a read and an ETag-conditional write of one table row per call
  (a round trip to the storage account on the path of every GeoCatalog request), and more under
  contention: 12 callers taking tokens at the same 4/s from one row measured 21 storage
  transactions and a median 0.5-1.2 s of storage time per call against Azurite (5 ETag conflicts per
  call, and an empty bucket must be re-read). Leasing tokens in blocks cuts that, but a block held
  by a busy-then-idle instance is the share's waste again. And an outage of that row stops all calls.
- What the share gives up: while fewer instances run than the maximum, they use less than the
  limit. For this app that is cheap to fix where it belongs: keep `maximumInstanceCount` small
  (one instance near its CPU limit already makes about 50 calls/s), and set the setting to match.

Within its share each instance adapts (AIMD): a 429 halves its rate (at most once a second,
since the calls already in flight answer for the same overload), and every second without one adds
back a quarter of the share. So a limit shared with other clients of the subscription, or a setting
that is too high, costs a few 429s and not a storm, and a burst of 429s costs at most four seconds
of slower calls. (Adding back per success instead, as this did first, is slowest exactly when the
rate is lowest: at the 5 % floor a 10k-item job under a 429 burst every 20 s never recovered. A
tenth of the share per second, as this did next, made each burst cost up to ten seconds: a burst
in the last tenth of a 100,000-item job, about 8 s at full pace, slowed that tenth by half.)

Calls wait their turn by sleeping briefly in the calling thread: slots are handed out at the
current rate (one every `1/rate` seconds), never in bursts.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from shared.settings import Settings

SUBMIT, WORK, POLL = "submit", "work", "poll"  # the calling groups: Flex scales each function in its own group
CALLING_GROUPS = (SUBMIT, WORK, POLL)
# Each group's part of the limit, by the calls it makes: a job's planning reads its collection once, while
# every batch is one POST (work) and at least one GET (poll). The parts add up to 1, so however many
# instances each group scales to, all of them together stay under the limit.
SHARES = {SUBMIT: 0.1, WORK: 0.45, POLL: 0.45}
DECREASE = 0.5  # multiplicative decrease on a 429
RECOVERY = 0.25  # additive increase: this fraction of the share per second without a 429
FLOOR = 0.05  # never below this fraction of the share
DECREASE_INTERVAL = 1.0  # seconds: one decrease per burst of 429s

_group: contextvars.ContextVar[str] = contextvars.ContextVar("geocatalog_calling_group", default=SUBMIT)


@contextmanager
def calling_group(name: str) -> Iterator[None]:
    """GeoCatalog calls made inside take their slots from `name`'s pacer (see `GroupPacer`)."""
    token = _group.set(name)
    try:
        yield
    finally:
        _group.reset(token)


class Pacer:
    """Hands out call slots at an adaptive rate, at most `calls_per_second`; 0 means unpaced.

    Args:
        calls_per_second: this instance's share of the limit.
        clock: monotonic seconds (injected in tests).
        sleep: waits that many seconds (injected in tests).
    """

    def __init__(self, calls_per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ceiling = calls_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._last_decrease = float("-inf")
        self._rate_at_decrease = calls_per_second
        self.throttled_calls = 0

    @property
    def paced(self) -> bool:
        return self.ceiling > 0

    @property
    def rate(self) -> float:
        with self._lock:
            return self._current_rate(self._clock())

    def rates(self) -> dict[str, float]:
        """The current rate under the calling group's name ({} when unpaced), as `GroupPacer.rates` gives it."""
        return {_group.get(): self.rate} if self.paced else {}

    def acquire(self) -> float:
        """Wait for this call's slot; returns the seconds waited."""
        if not self.paced:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1 / self._current_rate(now)
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait

    def throttled(self) -> None:
        """The service answered 429: halve the rate (once per burst)."""
        with self._lock:
            self.throttled_calls += 1
            now = self._clock()
            if not self.paced or now - self._last_decrease < DECREASE_INTERVAL:
                return
            self._rate_at_decrease = max(self.ceiling * FLOOR, self._current_rate(now) * DECREASE)
            self._last_decrease = now

    def _current_rate(self, now: float) -> float:
        """The rate after the last decrease, grown back by `RECOVERY` of the share per second since."""
        calm = max(0.0, now - self._last_decrease)
        return min(self.ceiling, self._rate_at_decrease + self.ceiling * RECOVERY * calm)


class GroupPacer:
    """One `Pacer` per calling group, each with the group's share; a call uses its group's (`calling_group`)."""

    def __init__(self, calls_per_second: dict[str, float], **pacer_options: Callable[..., float]) -> None:
        self.pacers = {group: Pacer(calls_per_second[group], **pacer_options) for group in CALLING_GROUPS}

    @classmethod
    def from_settings(cls, settings: Settings) -> GroupPacer:
        """Each instance's share in each group: the group's part of the limit over the instances it may scale to."""
        per_instance = max(0.0, settings.geocatalog_max_calls_per_second) / max(1, settings.geocatalog_max_instances)
        return cls({group: per_instance * SHARES[group] for group in CALLING_GROUPS})

    @property
    def current(self) -> Pacer:
        return self.pacers[_group.get()]

    def acquire(self) -> float:
        return self.current.acquire()

    def rates(self) -> dict[str, float]:
        """The current rate of each paced group (calls per second)."""
        return {group: pacer.rate for group, pacer in self.pacers.items() if pacer.paced}

    def throttled(self) -> None:
        self.current.throttled()
