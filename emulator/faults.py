"""Fault injection for the emulator: what to break, how often, changeable mid-run.

Every fault has a deterministic "next N requests" form (for tests that must not be flaky) and a
fraction form (for soak runs and demos). Fractions use a seeded RNG so a run can be repeated.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Faults:
    """The fault settings; all off by default.

    Args:
        rate_limit_next: answer the next N API requests with 429 + Retry-After.
        rate_limit_fraction: answer this fraction of API requests with 429.
        rate_limit_per_second: when above 0, answer 429 to API requests beyond this rate, as the
            service's per-subscription limit does (a token bucket holding one second of requests;
            a refused request takes no token).
        retry_after_seconds: the Retry-After value sent with a 429 (and with 503s).
        server_error_next: answer the next N API requests with 503.
        server_error_fraction: answer this fraction of API requests with 500/503.
        latency_ms: added to every API request before it is answered.
        fail_operations_code: when set, new item operations fail with this error code.
        fail_operations_fraction: the fraction of new operations that fail with that code.
        stuck_operations_fraction: the fraction of new operations that stay Running forever.
        partial_failure_fraction: the fraction of items in each new operation that fail
            (with `partial_failure_code`), while the rest are ingested and the counters say so.
        partial_failure_code: the error code of those items.
        require_signed_assets: refuse (fail) items whose http(s) asset hrefs carry no query string.
        operation_reads_status: when set (e.g. 503, 429 or 401), every GET of an operation answers
            with this status, while the rest of the API keeps working.
        seed: seed of the RNG used by the fraction faults.
    """

    rate_limit_next: int = 0
    rate_limit_fraction: float = 0.0
    rate_limit_per_second: float = 0.0
    retry_after_seconds: int = 1
    server_error_next: int = 0
    server_error_fraction: float = 0.0
    latency_ms: int = 0
    fail_operations_code: str = ""
    fail_operations_fraction: float = 1.0
    stuck_operations_fraction: float = 0.0
    partial_failure_fraction: float = 0.0
    partial_failure_code: str = "GenericIngestionError"
    require_signed_assets: bool = False
    operation_reads_status: int = 0
    seed: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _bucket: tuple[float, float] | None = field(default=None, repr=False, compare=False)  # (tokens, at)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update (the admin endpoint's PATCH body); unknown keys raise KeyError."""
        known = {f.name: f.type for f in fields(self) if not f.name.startswith("_")}
        for key, value in changes.items():
            if key not in known:
                raise KeyError(key)
            setattr(self, key, value)
        if "seed" in changes:
            self._rng.seed(self.seed)

    def _chance(self, fraction: float) -> bool:
        return fraction > 0 and (fraction >= 1 or self._rng.random() < fraction)

    def take_request_fault(self) -> int | None:
        """Decide whether this API request fails up front: 429, 500/503, or None to serve it."""
        with self._lock:
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return 429
            if self.server_error_next > 0:
                self.server_error_next -= 1
                return 503
            if self._chance(self.rate_limit_fraction):
                return 429
            if self.rate_limit_per_second > 0 and not self._take_token(time.monotonic()):
                return 429
            if self._chance(self.server_error_fraction):
                return self._rng.choice((500, 503))
            return None

    def _take_token(self, now: float) -> bool:
        rate = self.rate_limit_per_second
        tokens, at = self._bucket if self._bucket is not None else (rate, now)
        tokens = min(rate, tokens + (now - at) * rate)
        if tokens < 1:
            self._bucket = (tokens, now)
            return False
        self._bucket = (tokens - 1, now)
        return True

    def operation_outcome(self) -> str:
        """For a new operation: 'fail', 'stuck' or 'normal'."""
        with self._lock:
            if self.fail_operations_code and self._chance(self.fail_operations_fraction):
                return "fail"
            if self._chance(self.stuck_operations_fraction):
                return "stuck"
            return "normal"

    def items_to_fail(self, item_ids: list[str]) -> set[str]:
        """Pick the items of a new operation that fail through `partial_failure_fraction`."""
        with self._lock:
            if self.partial_failure_fraction <= 0 or not item_ids:
                return set()
            count = max(1, round(len(item_ids) * self.partial_failure_fraction))
            return set(self._rng.sample(item_ids, min(count, len(item_ids))))
