"""A known timing proven wrong (shared/steps/cold_start.py): a scout after a slow-down, a lookout for a speed-up,
a prediction per batch size. Correctness only: who polls, who waits, who is woken, what the estimate becomes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from devhost.jobs import send_items, wait_for_jobs
from emulator import EmulatorOptions, Timings
from shared.messages import PollMessage
from shared.steps.backoff import PollSchedule, lookout_first_delay
from shared.steps.cold_start import (
    LOOKOUT,
    SCOUT,
    WAITING,
    defers_to_scout,
    first_poll,
    learn,
    recheck_waiting,
    superseded_fallback,
    wake_waiting,
)
from shared.steps.poll import poll_batch
from shared.store import BatchRow, BatchState, JobState, mark_running
from shared.store.timing import CollectionTiming
from tests.helpers import make_collection, make_item

CAP = 600  # POLL_MAX_DELAY_SECONDS: a waiting batch's fallback poll is ten minutes away
JOB = "slowed"


def recorded_polls(services) -> list[PollMessage | float]:
    """(message, delay) of every poll message sent from now on, instead of sending it."""
    sent: list = []
    services.queues.send = lambda queue, body, delay_seconds=0: sent.append(
        (PollMessage.from_json(orjson.loads(body)), delay_seconds))
    return sent


@pytest.fixture
def slow_service(make_stack):
    """A stack whose operations run for minutes, and a collection taught that 10 items take 3 s."""
    stack = make_stack(settings={"POLL_MAX_DELAY_SECONDS": str(CAP)},
                       emulator_options=EmulatorOptions(timings=Timings(0.0, 300.0)))
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection("tiles")))
    stack.services.timings.record("tiles", 3.0, 10)
    return stack


def submitted_batch(stack, batch_id: str, *, submitted: datetime, role: str = WAITING) -> tuple[BatchRow, PollMessage]:
    """A batch row Submitted with a real (long) operation in the emulator, and its first poll message."""
    services = stack.services
    body = orjson.dumps({"type": "FeatureCollection",
                         "features": [make_item(f"{batch_id}-{n}", "tiles") for n in range(10)]})
    operation = services.catalog.create_items("tiles", body)
    url = operation.url.split("?")[0]
    row = BatchRow(JOB, batch_id, collection="tiles", item_count=10, state=BatchState.SUBMITTED, poll_role=role,
                   operation_id=operation.id, operation_url=url, submitted=submitted)
    services.status.create_batches([row], submitted)
    message = PollMessage(JOB, batch_id, "tiles", operation.url, attempt=0,
                          deadline=(submitted + timedelta(hours=1)).isoformat(), role=role)
    return services.status.get_batch(JOB, batch_id), message


def gets(stack, row: BatchRow) -> int:
    return stack.emulator.call(lambda: stack.emulator.catalog.operations[row.operation_id].gets)


def test_a_batch_running_past_its_prediction_scouts_and_the_batches_after_it_wait_without_a_get(slow_service) -> None:
    stack, services = slow_service, slow_service.services
    now = datetime.now(UTC)
    early, _ = submitted_batch(stack, "batch-000000", submitted=now - timedelta(seconds=6))
    lookout, lookout_poll = submitted_batch(stack, "batch-000001", submitted=now - timedelta(seconds=4), role=LOOKOUT)
    later, later_poll = submitted_batch(stack, "batch-000002", submitted=now - timedelta(seconds=3.5))
    sent = recorded_polls(services)

    poll_batch(lookout_poll, services=services, now=now)  # 4 s after its POST, predicted 3 s: still running
    (message, _), = sent
    assert message.role == SCOUT and message.batch_id == lookout.batch_id
    assert services.timings.rescout_of(JOB).batch_id == lookout.batch_id

    poll_batch(later_poll, services=services, now=now)  # submitted after the scout: waits for it, no GET
    message, delay = sent[-1]
    assert (message.role, message.attempt, delay) == (WAITING, 1, CAP) and gets(stack, later) == 0
    assert services.status.get_batch(JOB, later.batch_id).poll_role == WAITING

    assert not defers_to_scout(message, later, services=services)  # its fallback poll GETs: nobody waits forever
    poll_batch(message, services=services, now=now + timedelta(seconds=CAP))  # the scout never woke it
    assert gets(stack, later) == 1 and sent[-1][0].batch_id == later.batch_id  # looked itself, and polls on
    early_poll = PollMessage(JOB, early.batch_id, "tiles", later_poll.operation_url, attempt=0,
                             deadline=later_poll.deadline, role="")
    assert not defers_to_scout(early_poll, early, services=services)  # submitted before the scout: it looks itself


@pytest.mark.parametrize(("earlier_by", "role", "its_gets"), [(0.4, "", 0), (0.4, LOOKOUT, 0), (2.0, "", 1), (2.0, LOOKOUT, 1)])
def test_a_batch_submitted_before_the_scout_but_polled_after_it_waits_for_it(slow_service, earlier_by: float, role: str,
                                                                              its_gets: int) -> None:
    """In the scout's second, which of the two polls first is chance: it waits without a GET, the job's lookout
    too. Earlier, its operation may have ended on time: it looks, and then waits."""
    stack, services = slow_service, slow_service.services
    now = datetime.now(UTC)
    _, scout_poll = submitted_batch(stack, "batch-000002", submitted=now - timedelta(seconds=4), role="")
    earlier, earlier_poll = submitted_batch(stack, "batch-000001", submitted=now - timedelta(seconds=4 + earlier_by), role=role)
    sent = recorded_polls(services)
    poll_batch(scout_poll, services=services, now=now)
    poll_batch(earlier_poll, services=services, now=now)
    message, delay = sent[-1]
    assert (message.batch_id, message.role, delay) == (earlier.batch_id, WAITING, CAP) and gets(stack, earlier) == its_gets
    row = services.status.get_batch(JOB, earlier.batch_id)
    assert (row.state, row.poll_role) == (BatchState.SUBMITTED, WAITING)  # findable by the scout's wake


def test_first_polls_in_flight_together_wait_for_the_one_that_looks_first(slow_service) -> None:
    stack, services = slow_service, slow_service.services
    now = datetime.now(UTC)
    polls = [submitted_batch(stack, f"batch-00000{n}", submitted=now - timedelta(seconds=4 - n / 10), role=role)[1]
             for n, role in ((1, LOOKOUT), (2, ""), (3, WAITING))]
    sent = recorded_polls(services)
    stack.emulator.call(lambda: stack.emulator.catalog.faults.update({"latency_ms": 500}))  # each GET is in flight 0.5 s
    threads = [threading.Thread(target=poll_batch, args=(poll,), kwargs={"services": services, "now": now}) for poll in polls]
    for thread in threads:
        thread.start()
        thread.join(0.1)
    for thread in threads:
        thread.join(10)
    assert sum(gets(stack, row) for row in services.status.batches(JOB)) == 1  # one looked; the others waited for it
    assert sorted(message.role for message, _ in sent) == [SCOUT, WAITING, WAITING]


def test_the_scouts_end_moves_the_estimate_at_once_and_wakes_each_waiting_batch_once(slow_service) -> None:
    stack, services = slow_service, slow_service.services
    now = datetime.now(UTC)
    scout, _ = submitted_batch(stack, "batch-000001", submitted=now - timedelta(seconds=21), role=SCOUT)
    waiting = [submitted_batch(stack, f"batch-00000{n}", submitted=now - timedelta(seconds=20))[0] for n in (2, 3, 4)]
    assert learn(scout, SCOUT, 20.0, services=services) is False  # slower, not faster
    assert services.timings.predict("tiles", 10) == pytest.approx(20.0)  # not 3 s + 30 % of the 17 s difference

    sent = recorded_polls(services)
    woken = []
    racers = [threading.Thread(target=lambda: woken.append(wake_waiting(scout, services=services, now=now)))
              for _ in range(2)]  # two scouts (or a redelivery) racing
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sum(woken) == 3 and sorted(m.batch_id for m, _ in sent) == [row.batch_id for row in waiting]
    assert all(message.role == "" and delay == 0 for message, delay in sent)  # their new predicted ends have passed
    assert wake_waiting(scout, services=services, now=now) == 0
    fallback = PollMessage(JOB, waiting[0].batch_id, "tiles", "https://x/op", attempt=1, deadline=now.isoformat(),
                           role=WAITING)
    assert superseded_fallback(fallback, services.status.get_batch(JOB, waiting[0].batch_id))  # dropped without a GET


def test_an_ordinary_batch_far_off_its_prediction_is_averaged_in_not_jumped_to(slow_service) -> None:
    services = slow_service.services
    row = BatchRow(JOB, "batch-000001", collection="tiles", item_count=10)
    assert learn(row, "", 13.0, services=services) is False
    assert services.timings.predict("tiles", 10) == pytest.approx(3.0 + 0.3 * 10)
    assert learn(row, LOOKOUT, 0.5, services=services) is True  # a lookout well early: faster, and it jumps
    assert services.timings.predict("tiles", 10) == pytest.approx(0.5)


def test_a_warm_jobs_first_batch_looks_early_and_its_other_batches_wait_at_their_own_ends(make_stack) -> None:
    services = make_stack(settings={"POLL_MAX_DELAY_SECONDS": str(CAP)}).services
    services.timings.record("tiles", 100.0, 10)
    rows = [BatchRow("j", f"batch-00000{n}", collection="tiles", item_count=10) for n in (1, 2)]
    assert first_poll(rows[0], services=services) == (7.0, LOOKOUT)  # a sixteenth of 100 s, rounded up
    assert first_poll(rows[1], services=services) == (100.0, WAITING)  # its fallback is its own predicted end
    assert first_poll(BatchRow("k", "batch-000001", collection="tiles", item_count=10), services=services)[1] == LOOKOUT
    assert lookout_first_delay(20.0, PollSchedule()) is None  # a sixteenth is under the 2 s step: no early look


def test_a_lookout_that_finds_the_service_faster_wakes_its_job_long_before_the_old_predicted_end(make_stack) -> None:
    stack = make_stack(settings={"POLL_MAX_DELAY_SECONDS": str(CAP), "BATCH_MAX_ITEMS": "2"},
                       emulator_options=EmulatorOptions(timings=Timings(0.0, 1.0)))
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection("quick")))
    stack.services.timings.record("quick", 200.0, 2)  # taught 200 s per batch; the service now takes 1 s
    send_items(stack.services, [make_item(f"quick-{n}", "quick") for n in range(10)], collection="quick", job_id="quick-1")
    job = wait_for_jobs(stack.services, ["quick-1"], timeout=100)["quick-1"]  # half the old predicted end
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 10)
    rows = stack.services.status.batches("quick-1")
    assert [row.poll_role for row in rows].count(LOOKOUT) == 1
    assert stack.services.timings.predict("quick", 2, fresh=True) < 20  # jumped to the new speed, not averaged
    operation_gets = sum(n for route, n in stack.emulator.app.stats.by_route.items()
                         if route.startswith("GET") and "operations" in route)
    assert operation_gets <= len(rows) + 3  # the lookout's early look, then about one GET per batch


def test_uneven_batch_sizes_are_predicted_from_their_own_size() -> None:
    timing = CollectionTiming.first(10, 3.0)  # the service: 2 s + 0.1 s per item
    for items in (100, 10, 100, 50, 10, 100):
        timing = timing.folded(items, 2.0 + 0.1 * items)
    assert timing.fixed_seconds == pytest.approx(2.0, rel=0.05)
    assert timing.seconds_for(10) == pytest.approx(3.0, rel=0.05)
    assert timing.seconds_for(100) == pytest.approx(12.0, rel=0.05)
    slower = timing.jumped(100, 24.0)  # twice as slow: the line keeps its shape
    assert slower.seconds_for(100) == pytest.approx(24.0, rel=0.05)
    assert slower.seconds_for(10) == pytest.approx(6.0, rel=0.1)


def test_equal_batch_sizes_keep_a_line_through_the_origin() -> None:
    timing = CollectionTiming.first(10, 4.0).folded(10, 15.0)
    assert timing.fixed_seconds == 0.0
    assert timing.seconds_per_item == pytest.approx(0.4 + 0.3 * (1.5 - 0.4))


def test_the_first_poll_of_each_batch_is_aimed_at_its_own_size(make_stack) -> None:
    services = make_stack(settings={"POLL_MAX_DELAY_SECONDS": str(CAP)}).services
    for items in (100, 10, 100, 10):
        services.timings.record("sized", 2.0 + 0.1 * items, items)
    small, big = (BatchRow("j", f"batch-00000{n}", collection="sized", item_count=items)
                  for n, items in ((1, 15), (2, 95)))
    first_poll(BatchRow("j", "batch-000000", collection="sized", item_count=1), services=services)  # the lookout
    assert first_poll(small, services=services) == (4.0, WAITING)  # 2 s + 1.5 s, rounded up
    assert first_poll(big, services=services) == (12.0, WAITING)  # 2 s + 9.5 s


def test_an_old_timing_row_of_seconds_per_item_alone_still_predicts(make_stack) -> None:
    services = make_stack().services
    services.status.table.upsert_entity({"PartitionKey": "_timing", "RowKey": "create:legacy",
                                         "seconds_per_item": 0.5, "samples": 3})
    assert services.timings.predict("legacy", 10) == pytest.approx(5.0)
    services.timings.record("legacy", 50.0, 100)
    assert services.timings.predict("legacy", 100, fresh=True) == pytest.approx(50.0, rel=0.05)


def test_a_batch_whose_predicted_end_is_the_fallback_delay_stays_waiting_for_its_lookout(make_stack) -> None:
    services = make_stack(settings={"POLL_MAX_DELAY_SECONDS": "60"}).services
    services.timings.record("long", 100.0, 10)
    first_poll(BatchRow("j", "batch-000001", collection="long", item_count=10), services=services)  # the lookout
    row = BatchRow("j", "batch-000002", collection="long", item_count=10, state=BatchState.SUBMITTED, poll_role=WAITING,
                   submitted=datetime.now(UTC))
    assert first_poll(row, services=services) == (60.0, WAITING)
    services.status.create_batches([row], datetime.now(UTC))
    stored = services.status.get_batch("j", row.batch_id)
    assert recheck_waiting(stored, 60.0, WAITING, services=services, now=datetime.now(UTC)) == (60.0, WAITING)
    assert services.status.get_batch("j", row.batch_id).poll_role == WAITING  # a lookout's wake still finds it


def test_a_running_batch_that_finds_another_scout_waits_and_exactly_one_poll_goes_on(slow_service) -> None:
    stack, services = slow_service, slow_service.services
    now = datetime.now(UTC)
    _, scout_poll = submitted_batch(stack, "batch-000001", submitted=now - timedelta(seconds=4), role=SCOUT)
    lookout, lookout_poll = submitted_batch(stack, "batch-000002", submitted=now - timedelta(seconds=4), role=LOOKOUT)
    sent = recorded_polls(services)
    poll_batch(scout_poll, services=services, now=now)  # overdue: holds the job's scouting
    mark_running(services.status, lookout, now=now)  # its early look saw it running
    poll_batch(lookout_poll, services=services, now=now)
    fallback, delay = sent[-1]
    assert (fallback.role, delay) == (WAITING, CAP)
    row = services.status.get_batch(JOB, lookout.batch_id)
    assert (row.state, row.poll_role) == (BatchState.RUNNING, WAITING)  # running, and found by the scout's wake

    scout = services.status.get_batch(JOB, "batch-000001")
    assert wake_waiting(scout, services=services, now=now) == 1
    before = gets(stack, lookout)
    assert poll_batch(fallback, services=services, now=now).poll_role == ""  # the fallback: dropped, no GET
    assert gets(stack, lookout) == before and len(sent) == 3  # the scout's, the fallback, the woken poll


def test_a_fallback_poll_that_goes_on_takes_its_batch_so_a_later_wake_sends_nothing(slow_service) -> None:
    stack, services = slow_service, slow_service.services
    now = datetime.now(UTC)
    waiting, first = submitted_batch(stack, "batch-000002", submitted=now - timedelta(seconds=2))  # not overdue yet
    sent = recorded_polls(services)
    poll_batch(first, services=services, now=now)
    (message, _), = sent
    assert message.role == ""  # its poll goes on as the batch's own
    row = services.status.get_batch(JOB, waiting.batch_id)
    assert (row.state, row.poll_role) == (BatchState.RUNNING, "")  # taken out of waiting in the same write
    assert wake_waiting(BatchRow(JOB, "batch-000001", collection="tiles"), services=services, now=now) == 0
