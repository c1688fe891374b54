"""A collection's first operations (shared/steps/cold_start.py): one scout learns their length, the rest are woken."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson

from devhost.jobs import send_items, wait_for_jobs
from emulator import EmulatorOptions, Faults, Timings
from shared.catalog.client import Operation, learnt_seconds
from shared.messages import PollMessage
from shared.steps.cold_start import LOOKOUT, SCOUT, WAITING, first_poll, recheck_waiting, superseded_fallback, wake_waiting
from shared.store.status import BatchRow, BatchState, JobState
from tests.helpers import make_collection, make_item

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FALLBACK = "600"  # POLL_MAX_DELAY_SECONDS: a waiting batch's own first poll is ten minutes away


def finished_operation(seconds: float) -> Operation:
    return Operation(id="op", status="Succeeded", raw={"creationTime": "2026-01-01T00:00:00+00:00",
                                                       "finishTime": f"2026-01-01T00:00:{seconds:02.0f}+00:00"})


def test_one_scout_per_collection_the_rest_wait_until_the_timing_is_known(make_stack) -> None:
    stack = make_stack(settings={"POLL_MAX_DELAY_SECONDS": FALLBACK})
    services = stack.services
    first, second = (BatchRow("j", f"batch-00000{n}", collection="tiles", item_count=10) for n in (1, 2))
    assert first_poll(first, services=services) == (1.0, SCOUT)
    assert first_poll(second, services=services) == (600.0, WAITING)
    assert first_poll(replace(second, collection="other"), services=services) == (1.0, SCOUT)  # per collection
    services.status.create_batches([replace(second, state=BatchState.SUBMITTED, poll_role=WAITING)], NOW)
    waiting = services.status.get_batch("j", second.batch_id)
    assert recheck_waiting(waiting, 600.0, WAITING, services=services, now=NOW) == (600.0, WAITING)  # nothing known yet
    services.timings.record("tiles", learnt_seconds(finished_operation(4)), 10)  # the scout's operation: 0.4 s per item
    assert recheck_waiting(waiting, 600.0, WAITING, services=services, now=NOW) == (4.0, "")  # read fresh: poll at its end
    assert services.status.get_batch("j", second.batch_id).poll_role == ""  # no longer waiting: a wake skips it
    assert recheck_waiting(waiting, 600.0, WAITING, services=services, now=NOW) is None  # woken already: send nothing
    assert first_poll(second, services=services) == (4.0, LOOKOUT)  # warm: the job's first batch (4 s: no early look)
    assert first_poll(replace(second, batch_id="batch-000003"), services=services) == (4.0, WAITING)  # at its own end


class FakeClock:
    """Monotonic seconds that only a sleep moves."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds

    def sleep(self, seconds: float) -> None:
        self.seconds += seconds


def recorded_polls(services, clock: FakeClock) -> list[tuple[str, float, float]]:
    """(batch id, seconds on `clock` when sent, delay) of every poll message sent from now on, instead of sending it."""
    sent: list[tuple[str, float, float]] = []
    services.queues.send = lambda queue, body, delay_seconds=0: sent.append(
        (PollMessage.from_json(orjson.loads(body)).batch_id, round(clock(), 6), delay_seconds))
    return sent


def test_woken_polls_are_sent_when_their_whole_second_delays_end_at_the_predicted_ends(make_stack) -> None:
    services = make_stack(settings={"POLL_MAX_DELAY_SECONDS": FALLBACK}).services
    scout = BatchRow("j", "batch-000001", collection="tiles", item_count=10, state=BatchState.SUCCEEDED)
    until_end = {"batch-000002": 2.2, "batch-000003": 2.3, "batch-000004": 0.6, "batch-000005": -1.5}
    services.status.create_batches([
        BatchRow("j", batch_id, collection="tiles", item_count=10, state=BatchState.SUBMITTED, poll_role=WAITING,
                 operation_url="https://x/op", submitted=NOW - timedelta(seconds=12 - seconds))
        for batch_id, seconds in until_end.items()], NOW)
    services.timings.record("tiles", learnt_seconds(finished_operation(12)), 10)  # 1.2 s per item: 12 s per batch
    clock = FakeClock()
    sent = recorded_polls(services, clock)
    assert wake_waiting(scout, services=services, now=NOW, clock=clock, sleep=clock.sleep) == 4
    # An end already past (`submitted` is when the POST returned, so it has come) is polled at once; the
    # others are sent at their end's fraction of a second, so that the whole seconds of delay end with it.
    # At once, 0.6 s and the ends 2.2 s and 2.3 s away would all come at 1 s and 3 s: early or late.
    assert sent == [("batch-000005", 0.0, 0), ("batch-000002", 0.2, 2), ("batch-000003", 0.3, 2),
                    ("batch-000004", 0.6, 0)]
    assert clock.seconds < 1  # the scout's invocation waits less than a second in all
    assert wake_waiting(scout, services=services, now=NOW, clock=clock, sleep=clock.sleep) == 0  # woken once


def test_a_batch_is_recorded_as_submitted_when_its_post_returned_not_when_its_invocation_began(make_stack) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), faults=Faults(latency_ms=400)))
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection("slowposts")))
    send_items(stack.services, [make_item("slow-1")], collection="slowposts", job_id="slow-1")
    assert wait_for_jobs(stack.services, ["slow-1"], timeout=60)["slow-1"].state == JobState.SUCCEEDED
    row = stack.services.status.batches("slow-1")[0]
    # The claim's time is the invocation's; the POST alone took 0.4 s more (the woken-poll rule counts on it).
    assert row.submitted - row.submit_started >= timedelta(seconds=0.4)


def test_a_fallback_poll_is_dropped_once_its_batch_was_woken() -> None:
    fallback = PollMessage("j", "b", "tiles", "https://x/op", attempt=0, deadline=NOW.isoformat(), role=WAITING)
    assert not superseded_fallback(fallback, BatchRow("j", "b", state=BatchState.SUBMITTED, poll_role=WAITING))
    assert superseded_fallback(fallback, BatchRow("j", "b", state=BatchState.SUBMITTED))  # woken: its woken poll is on its way
    assert not superseded_fallback(fallback, BatchRow("j", "b", state=BatchState.RUNNING, poll_role=WAITING))  # waits running
    assert superseded_fallback(fallback, BatchRow("j", "b", state=BatchState.RUNNING))  # woken, then polled
    assert not superseded_fallback(replace(fallback, role=""), BatchRow("j", "b", state=BatchState.RUNNING))


def test_a_cold_job_ends_through_its_scout_without_waiting_for_the_fallback_polls(make_stack) -> None:
    stack = make_stack(settings={"POLL_MAX_DELAY_SECONDS": FALLBACK, "BATCH_MAX_ITEMS": "2"},
                       emulator_options=EmulatorOptions(timings=Timings(0.0, 2.0)))
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection("coldtiles")))
    items = [make_item(f"cold-{n}") for n in range(12)]  # 6 batches, all submitted before the scout's 2 s operation ends
    send_items(stack.services, items, collection="coldtiles", job_id="cold-1")
    job = wait_for_jobs(stack.services, ["cold-1"], timeout=120)["cold-1"]  # the fallback polls would come at 600 s
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 12)
    rows = stack.services.status.batches("cold-1")
    roles = sorted(row.poll_role for row in rows)
    assert roles.count(SCOUT) == 1 and WAITING not in roles  # every waiting batch was woken
    assert stack.services.timings.seconds_per_item("coldtiles") is not None  # learnt for the next job
    operation_gets = sum(n for route, n in stack.emulator.app.stats.by_route.items()
                         if route.startswith("GET") and "operations" in route)
    assert operation_gets <= 4 + 2 * (len(rows) - 1)  # the scout's few polls, then about one per woken batch
