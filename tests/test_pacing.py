"""The pacer: slots at the share's rate, AIMD on 429s, and the client pacing every call."""

from __future__ import annotations

import threading

import pytest

from emulator import EmulatorOptions, EmulatorServer, Faults
from shared.auth import StaticToken
from shared.errors import RetryableError
from shared.geocatalog import GeoCatalogClient
from shared.pacing import Pacer
from shared.settings import Settings
from tests.helpers import make_collection


class Clock:
    """Time that passes only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_slots_are_spaced_at_the_rate_never_in_a_burst() -> None:
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    for _ in range(21):
        pacer.acquire()
    assert clock.now - 100.0 == pytest.approx(2.0)  # 21 calls at 10/s: the first at once, then one every 0.1 s
    assert clock.slept == pytest.approx([0.1] * 20)


def test_idle_time_is_not_banked_into_a_burst() -> None:
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    pacer.acquire()
    clock.now += 60
    pacer.acquire(), pacer.acquire()
    assert clock.slept == pytest.approx([0.1])


def test_share_is_the_limit_divided_by_the_instances_of_both_calling_groups() -> None:
    settings = Settings("http://127.0.0.1:1", geocatalog_max_calls_per_second=40, geocatalog_max_instances=4)
    assert Pacer.from_settings(settings).ceiling == 5  # up to 4 submit and 4 poll instances
    unpaced = Pacer.from_settings(Settings("http://127.0.0.1:1", geocatalog_max_calls_per_second=0))
    assert not unpaced.paced and unpaced.acquire() == 0


def test_a_429_halves_the_rate_once_per_burst_and_successes_bring_it_back() -> None:
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    for _ in range(5):  # the calls in flight all answer 429 together: one decrease
        pacer.throttled()
    assert pacer.rate == 5 and pacer.throttled_calls == 5
    clock.now += 1.5
    pacer.throttled()
    assert pacer.rate == 2.5
    for _ in range(10):
        pacer.succeeded()
    assert pacer.rate == pytest.approx(4.5)  # additive: +2 % of the share per success
    for _ in range(100):
        pacer.succeeded()
    assert pacer.rate == 10  # never above the share


def test_the_rate_never_falls_below_the_floor() -> None:
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        clock.now += 2
        pacer.throttled()
    assert pacer.rate == 0.5


def test_concurrent_callers_share_the_slots() -> None:
    clock = Clock()
    lock = threading.Lock()
    pacer = Pacer(50, clock=clock, sleep=lambda s: None)
    slots: list[float] = []

    def call() -> None:
        pacer.acquire()
        with lock:
            slots.append(pacer._next_slot)  # noqa: SLF001 - the slot each call reserved

    threads = [threading.Thread(target=call) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(slots)) == 40  # no two callers got the same slot


def test_the_client_paces_every_call_and_slows_down_on_429() -> None:
    faults = Faults(rate_limit_next=1, retry_after_seconds=1)
    with EmulatorServer(EmulatorOptions(faults=faults)) as server:
        clock = Clock()
        pacer = Pacer(20, clock=clock, sleep=clock.sleep)
        client = GeoCatalogClient(server.url, StaticToken("dev"), pacer=pacer, timeout=5)
        server.call(lambda: server.catalog.put_collection(make_collection("paced")))
        with pytest.raises(RetryableError) as raised:
            client.get_collection("paced")
        assert raised.value.status == 429
        assert pacer.throttled_calls == 1 and pacer.rate == 10
        for _ in range(4):
            client.get_collection("paced")
        assert server.app.stats.throttled == 1
        assert len(clock.slept) == 4  # the four calls after the first each waited for their slot
        assert pacer.rate == pytest.approx(10 + 4 * 0.4)
