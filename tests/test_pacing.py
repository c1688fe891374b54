"""The pacer: slots at the share's rate, AIMD on 429s, and the client pacing every call."""

from __future__ import annotations

import threading

import pytest

from emulator import EmulatorOptions, EmulatorServer, Faults
from shared.catalog.auth import StaticToken
from shared.catalog.client import GeoCatalogClient
from shared.catalog.pacing import POLL, RECOVERY, SUBMIT, WORK, GroupPacer, Pacer, calling_group
from shared.errors import RetryableError
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


def test_share_is_the_limit_divided_by_the_instances_of_every_calling_group() -> None:
    settings = Settings("http://127.0.0.1:1", geocatalog_max_calls_per_second=40, geocatalog_max_instances=4)
    pacers = GroupPacer.from_settings(settings)
    # up to 4 submit, 4 work and 4 poll instances: 4 x (1 + 4.5 + 4.5) = 40 calls/s together
    assert {g: p.ceiling for g, p in pacers.pacers.items()} == pytest.approx({SUBMIT: 1, WORK: 4.5, POLL: 4.5})
    unpaced = GroupPacer.from_settings(Settings("http://127.0.0.1:1", geocatalog_max_calls_per_second=0))
    assert not unpaced.current.paced and unpaced.acquire() == 0


def test_each_calling_group_takes_slots_from_its_own_share() -> None:
    """A process hosting both functions gets both shares: the poll group's calls do not queue behind submit's."""
    clock = Clock()
    pacers = GroupPacer(dict.fromkeys((SUBMIT, WORK, POLL), 10.0), clock=clock, sleep=clock.sleep)
    for _ in range(11):
        pacers.acquire()  # submit, the default group
    with calling_group(POLL):
        assert pacers.acquire() == 0  # its first slot is free, whatever submit used
        pacers.throttled()
    assert pacers.pacers[POLL].rate == 5 and pacers.pacers[SUBMIT].rate == 10
    assert clock.now - 100.0 == pytest.approx(1.0)


def test_a_429_halves_the_rate_once_per_burst_and_calm_brings_it_back() -> None:
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    for _ in range(5):  # the calls in flight all answer 429 together: one decrease
        pacer.throttled()
    assert pacer.rate == 5 and pacer.throttled_calls == 5
    clock.now += 1.0
    pacer.throttled()
    assert pacer.rate == pytest.approx(3.75)  # 5 grew to 7.5 in that second, then halved
    clock.now += 2.0
    assert pacer.rate == pytest.approx(8.75)  # additive: +25 % of the share per second without a 429
    clock.now += 60.0
    assert pacer.rate == 10  # never above the share


def test_under_a_429_every_second_the_rate_settles_low_and_is_whole_again_four_seconds_after() -> None:
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    for _ in range(30):
        clock.now += 1.0
        pacer.throttled()
    assert pacer.rate == pytest.approx(2.5, abs=0.01)  # halved each second, a quarter of the share back in between
    clock.now += 2.0
    assert pacer.rate < 10  # still coming back
    clock.now += 1.0
    assert pacer.rate == pytest.approx(10, abs=0.01)


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
        throttled_at = clock.now
        for _ in range(4):
            client.get_collection("paced")
        assert server.app.stats.throttled == 1
        assert len(clock.slept) == 4  # the four calls after the first each waited for their slot
        assert pacer.rate == pytest.approx(min(20, 10 + 20 * RECOVERY * (clock.now - throttled_at)))  # recovering
