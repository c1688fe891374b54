"""The fault matrix: each defect found by the adversarial run, against Azurite and the emulator.

After every case the invariant holds: every item sent ends in exactly one terminal state, the
catalog holds exactly the items counted as succeeded, the job's counters equal a full recount of its
batch rows, and POSTs equal the batches that were sent (plus isolation children).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost.jobs import send_job, wait_for_jobs
from devhost.stack import LocalStack
from devhost.static_files import served
from emulator import EmulatorOptions, Faults, Timings
from shared.messages import JobRequest, PollMessage
from shared.retry import RetryRequest, catalog_lookup, plan_retry
from shared.services import Storage
from shared.steps.fanout import batch_message
from shared.steps.handlers import handle_work_message
from shared.steps.job_claims import JobClaim, fingerprint
from shared.steps.planning import plan_job
from shared.steps.rollup import settle_job, summarize
from shared.steps.sweeper import sweep
from shared.store import ItemState, Outcome, confirm_batch, end_batch, job_problems
from shared.store.status import BatchRow, BatchState, JobRow, JobState
from tests.conftest import ROOT
from tests.helpers import make_item, wait_until
from tests.test_items_ref import put_blob
from tests.test_pipeline_e2e import catalog, item_posts, stored, with_collection
from tests.test_sources_e2e import EXAMPLE_CATALOG, EXAMPLE_IDS
from tests.test_uploads_e2e import upload

SAMPLES = ROOT / "examples" / "landcover-items.json"


def assert_invariant(stack: LocalStack, job_id: str, sent: list[dict], collection: str = "landcover") -> JobRow:
    job = stack.services.status.get_job(job_id)
    assert job is not None and job.state.is_terminal, job
    batches = stack.services.status.batches(job_id)
    assert all(row.state.is_terminal for row in batches)
    assert job.items_succeeded + job.items_failed + job.items_rejected == job.item_count == len(sent)
    recount = summarize(job, batches)
    assert (job.items_succeeded, job.items_failed, job.items_rejected) == (
        recount.items_succeeded, recount.items_failed, recount.items_rejected)
    assert job.batches_by_state == recount.batches_by_state
    held = set(stored(stack, collection)) & {item["id"] for item in sent}
    assert len(held) == job.items_succeeded
    return job


def sent_batches(stack: LocalStack, job_id: str) -> int:
    """Batch rows that were POSTed: everything but rejected-input rows and never-sent failures."""
    return sum(1 for row in stack.services.status.batches(job_id) if row.operation_id)


# ----- 3. No job stays Running ------------------------------------------------------------------


def test_a_crash_between_the_terminal_batch_write_and_the_job_settling_is_healed_by_redelivery(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"r{n}") for n in range(3)]
    send_job(stack.services, {"v": 1, "job_id": "heal-1", "collection": collection, "items": items})
    job = wait_for_jobs(stack.services, ["heal-1"], timeout=60)["heal-1"]
    assert job.state == JobState.SUCCEEDED
    # Replay the crash: the batch row is terminal (its counters moved with it) but the job row was never finished.
    stack.pause_functions()
    stack.services.status.update_job("heal-1", lambda r: replace(r, state=JobState.RUNNING), datetime.now(UTC))
    assert stack.services.status.get_job("heal-1").state == JobState.RUNNING
    row = stack.services.status.get_batch("heal-1", "batch-000001")
    poll = PollMessage("heal-1", row.batch_id, collection, row.operation_url, attempt=3,
                       deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    stack.services.queues.send(stack.services.settings.poll_queue, poll.to_json())  # the redelivered poll message
    stack.resume_functions()
    job = wait_for_jobs(stack.services, ["heal-1"], timeout=30)["heal-1"]
    assert job.state == JobState.SUCCEEDED
    assert_invariant(stack, "heal-1", items, collection)


def test_the_sweeper_finishes_a_job_whose_last_write_was_lost(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"s{n}") for n in range(3)]
    send_job(stack.services, {"v": 1, "job_id": "sweep-1", "collection": collection, "items": items})
    wait_for_jobs(stack.services, ["sweep-1"], timeout=60)
    stack.pause_functions()
    stack.services.status.update_job("sweep-1", lambda r: replace(r, state=JobState.RUNNING), datetime.now(UTC))
    report = sweep(services=stack.services, now=datetime.now(UTC))  # what the timer runs
    assert report.jobs_finished == 1
    assert assert_invariant(stack, "sweep-1", items, collection).state == JobState.SUCCEEDED


def test_the_sweeper_times_out_a_batch_whose_poll_messages_were_lost(make_stack) -> None:
    stack = make_stack(settings={"POLL_DEADLINE_SECONDS": "60"})
    collection = with_collection(stack)
    items = [make_item(f"t{n}") for n in range(4)]
    send_job(stack.services, {"v": 1, "job_id": "sweep-2", "collection": collection, "items": items})
    wait_for_jobs(stack.services, ["sweep-2"], timeout=60)
    stack.pause_functions()
    # Rewind: the batch is Running again and nothing will ever poll it.
    stack.services.status.update_job("sweep-2", lambda r: replace(r, state=JobState.RUNNING), datetime.now(UTC))
    stack.services.status.update_batch("sweep-2", "batch-000001", lambda r: replace(
        r, state=BatchState.RUNNING, items_succeeded=0, finished=None), datetime.now(UTC))
    assert sweep(services=stack.services, now=datetime.now(UTC)).batches_timed_out == 0  # not yet past its deadline
    report = sweep(services=stack.services, now=datetime.now(UTC) + timedelta(hours=1))
    assert report.batches_timed_out == 1
    job = assert_invariant(stack, "sweep-2", items, collection)
    assert job.state == JobState.SUCCEEDED  # reconciled: the catalog holds all four


def test_every_get_answering_503_ends_the_job_at_its_deadline_reconciled(make_stack) -> None:
    stack = make_stack(settings={"POLL_DEADLINE_SECONDS": "4", "POLL_MAX_DELAY_SECONDS": "1"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), faults=Faults(operation_reads_status=503,
                                                                                                    retry_after_seconds=0)))
    collection = with_collection(stack)
    items = [make_item(f"g{n}") for n in range(5)]
    send_job(stack.services, {"v": 1, "job_id": "get-503", "collection": collection, "items": items, "batch_size": 2})
    job = wait_for_jobs(stack.services, ["get-503"], timeout=90)["get-503"]
    # No count of failed reads ends a batch, only its deadline; the operations did run: reconciled against
    # the catalog (which answers), every item is there.
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 5)
    assert_invariant(stack, "get-503", items, collection)
    assert item_posts(stack) == sent_batches(stack, "get-503") == 3


def test_every_get_answering_401_waits_for_the_deadline_then_reconciles(make_stack) -> None:
    stack = make_stack(settings={"POLL_DEADLINE_SECONDS": "4", "POLL_MAX_DELAY_SECONDS": "1"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), faults=Faults(operation_reads_status=401)))
    collection = with_collection(stack)
    items = [make_item(f"u{n}") for n in range(6)]
    send_job(stack.services, {"v": 1, "job_id": "get-401", "collection": collection, "items": items, "batch_size": 3})
    job = wait_for_jobs(stack.services, ["get-401"], timeout=90)["get-401"]
    # Only the deadline ended them, and nothing that is in the catalog was reported as failed.
    assert (job.state, job.items_succeeded, job.items_failed) == (JobState.SUCCEEDED, 6, 0)
    assert all(row.state == BatchState.SUCCEEDED and "deadline" in row.error_message
               for row in stack.services.status.batches("get-401"))
    assert_invariant(stack, "get-401", items, collection)


# ----- 4. One job per job_id ----------------------------------------------------------------------


def test_two_messages_with_one_job_id_and_different_items_post_once(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    first = [make_item(f"x{n}") for n in range(3)]
    second = [make_item(f"y{n}") for n in range(3)]
    stack.pause_functions()
    bodies = [{"v": 1, "job_id": "same-id", "collection": collection, "items": items} for items in (first, second)]
    for body in bodies:  # both on the queue together: delivered concurrently
        send_job(stack.services, body)
    stack.resume_functions()
    conflict = wait_until(lambda: next((j for j in stack.services.status.jobs() if j.job_id.startswith("job-id-conflict-")
                                        and j.state.is_terminal), None), timeout=60)
    job = wait_for_jobs(stack.services, ["same-id"], timeout=60)["same-id"]
    # The job row says which message won the claim; the catalog must hold exactly that one's items.
    winner = first if job.fingerprint == fingerprint(bodies[0]) else second
    assert job.fingerprint in (fingerprint(bodies[0]), fingerprint(bodies[1]))
    assert (conflict.state, conflict.error_code) == (JobState.REJECTED, "JobIdConflict")
    assert "'same-id'" in conflict.error_message
    assert set(stored(stack, collection)) == {i["id"] for i in winner}  # 3 items in the catalog, not 6
    assert item_posts(stack) == 1
    assert_invariant(stack, "same-id", winner, collection)


def test_the_same_message_content_again_is_a_no_op_and_a_finished_id_with_new_content_is_a_conflict(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item("k1"), make_item("k2")]
    body = {"v": 1, "job_id": "reuse-1", "collection": collection, "items": items}
    send_job(stack.services, body)
    wait_for_jobs(stack.services, ["reuse-1"], timeout=60)
    send_job(stack.services, {**body, "items": [make_item("k3")]})  # the finished job's id, other items
    send_job(stack.services, dict(reversed(body.items())))  # the very same content (keys in another order): ignored
    conflict = wait_until(lambda: next((j for j in stack.services.status.jobs()
                                        if j.job_id.startswith("job-id-conflict-") and j.state.is_terminal), None), timeout=60)
    assert "already used" in conflict.error_message and "Succeeded" in conflict.error_message
    wait_until(lambda: all(listener.waiting_messages() == 0 for listener in stack.host.listeners), timeout=30)
    assert len([j for j in stack.services.status.jobs() if j.job_id.startswith("job-id-conflict-")]) == 1
    assert item_posts(stack) == 1


def test_concurrent_copies_of_a_batch_message_post_it_once(make_stack) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), faults=Faults(latency_ms=300)))
    collection = with_collection(stack)
    items = [make_item(f"d{n}") for n in range(4)]
    stack.pause_functions()
    send_job(stack.services, {"v": 1, "job_id": "dupbatch", "collection": collection, "items": items})
    stack.resume_functions()
    row = wait_until(lambda: stack.services.status.get_batch("dupbatch", "batch-000001"), timeout=30)
    for _ in range(6):  # copies of the batch message, delivered while its POST is slow
        stack.services.queues.send(stack.services.settings.work_queue, batch_message("dupbatch", row.batch_id))
    job = wait_for_jobs(stack.services, ["dupbatch"], timeout=60)["dupbatch"]
    assert job.state == JobState.SUCCEEDED
    assert item_posts(stack) == 1
    assert_invariant(stack, "dupbatch", items, collection)


# ----- 5. Auth failures never lie ---------------------------------------------------------------------


def test_auth_failure_during_planning_keeps_every_item_accounted_for(make_stack) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(token="someone-else"))
    items = [make_item(f"a{n}") for n in range(50)]
    send_job(stack.services, {"v": 1, "job_id": "plan-401", "collection": "landcover", "items": items})
    job = wait_for_jobs(stack.services, ["plan-401"], timeout=60)["plan-401"]
    assert (job.state, job.item_count, job.items_failed, job.error_code) == (JobState.FAILED, 50, 50, "AuthenticationFailed")
    assert "AuthenticationFailed x50" in job.error_message


def test_a_401_on_submitting_ends_each_batch_at_once_retryable_and_never_poisoned(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"s{n}") for n in range(6)]
    stack.pause_functions()
    plan_job(JobRequest(collection=collection, items=items, batch_size=2), job_id="post-401", claim=JobClaim("m", "f"),
             services=stack.services, now=datetime.now(UTC))
    stack.emulator.app.token = "someone-else"  # planned with a good identity; its role is gone when the POSTs go out
    stack.resume_functions()
    job = wait_for_jobs(stack.services, ["post-401"], timeout=60)["post-401"]
    assert (job.state, job.item_count, job.items_failed, job.error_code) == (JobState.FAILED, 6, 6, "AuthenticationFailed")
    rows = stack.services.status.batches("post-401")
    assert [(row.state, row.error_code, row.attempts) for row in rows] == [(BatchState.FAILED, "AuthenticationFailed", 1)] * 3
    assert all("refused the credential (401 InvalidAuthenticationToken)" in row.error_message
               and "geocatalog-ingest retry post-401" in row.error_message for row in rows)
    token = stack.services.settings.geocatalog_token
    assert token and all(token not in row.error_message for row in rows) and token not in job.error_message
    assert poison_count(stack, stack.services.settings.work_queue) == 0

    stack.emulator.app.token = None  # the identity is fixed
    assert_invariant(stack, "post-401", items, collection)  # the catalog holds none of them
    storage = Storage(stack.services.status, stack.services.queues, stack.services.payloads, stack.services.items)
    result = plan_retry(RetryRequest("post-401"), storage=storage, settings=stack.services.settings)
    assert (result.created, result.items, result.skipped) == (True, 6, [])
    retried = wait_for_jobs(stack.services, [result.job_id], timeout=60)[result.job_id]
    assert (retried.state, retried.items_succeeded) == (JobState.SUCCEEDED, 6)
    assert set(stored(stack, collection)) == {item["id"] for item in items}


def test_a_401_after_an_earlier_attempt_leaves_the_batch_unconfirmed_until_the_catalog_answers(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"u{n}") for n in range(2)]
    stack.pause_functions()
    plan_job(JobRequest(collection=collection, items=items), job_id="late-401", claim=JobClaim("m", "f"),
             services=stack.services, now=datetime.now(UTC))
    work = QueueClient.from_connection_string(stack.azurite.connection_string, stack.services.settings.work_queue)

    def deliver() -> None:
        message = work.receive_message(visibility_timeout=60)
        handle_work_message(message.content.encode(), message_id=message.id, dequeue_count=message.dequeue_count,
                            services=stack.services, now=datetime.now(UTC))
        work.delete_message(message)

    stack.emulator.catalog.faults.update({"server_error_next": 1, "retry_after_seconds": 0})
    deliver()  # a 503: sent again at once
    stack.emulator.app.token = "someone-else"
    deliver()  # the second attempt is refused: the first might have landed, its answer lost
    [row] = stack.services.status.batches("late-401")
    assert (row.state, row.error_code, row.attempts, row.items_unconfirmed) == (BatchState.UNCONFIRMED, "AuthenticationFailed", 2, 2)
    assert work.peek_messages(max_messages=32) == []

    stack.emulator.app.token = None
    sweep(services=stack.services, now=datetime.now(UTC))  # the catalog answers: it holds neither
    job = stack.services.status.get_job("late-401")
    assert (job.state, job.items_failed) == (JobState.FAILED, 2)
    assert_invariant(stack, "late-401", items, collection)


def poison_count(stack: LocalStack, queue: str) -> int:
    client = QueueClient.from_connection_string(stack.azurite.connection_string, f"{queue}-poison")
    try:
        return client.get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0


# ----- 7. Retry budgets by time -------------------------------------------------------------------------


def test_a_429_storm_longer_than_eight_attempts_still_ingests_everything(make_stack) -> None:
    stack = make_stack(settings={"RETRY_BASE_DELAY_SECONDS": "1", "POLL_MAX_DELAY_SECONDS": "1"})
    collection = with_collection(stack)
    items = [make_item(f"z{n}") for n in range(4)]
    stack.pause_functions()
    plan_job(JobRequest(collection=collection, items=items, batch_size=1), job_id="storm-1", claim=JobClaim("m", "f"),
             services=stack.services, now=datetime.now(UTC))
    stack.emulator.catalog.faults.update({"rate_limit_next": 40, "retry_after_seconds": 0})  # the storm hits the POSTs
    stack.resume_functions()
    job = wait_for_jobs(stack.services, ["storm-1"], timeout=120)["storm-1"]
    assert stack.emulator.catalog.faults.rate_limit_next == 0  # all 40 429s were served
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 4)
    assert max(row.attempts for row in stack.services.status.batches("storm-1")) > 8
    assert_invariant(stack, "storm-1", items, collection)


def test_retries_stop_when_their_time_is_up(make_stack) -> None:
    stack = make_stack(settings={"SUBMIT_RETRY_SECONDS": "2", "RETRY_BASE_DELAY_SECONDS": "1"})
    collection = with_collection(stack)
    stack.emulator.catalog.faults.update({"rate_limit_fraction": 1.0, "retry_after_seconds": 1})
    items = [make_item("late-1")]
    # The collection check in planning is retried too; the job ends Failed when the time is up, not looping.
    send_job(stack.services, {"v": 1, "job_id": "late-1", "collection": collection, "items": items})
    job = wait_for_jobs(stack.services, ["late-1"], timeout=60)["late-1"]
    assert job.state == JobState.FAILED and "gave up" in job.error_message


# ----- the counters under concurrency ---------------------------------------------------------------


def test_counters_stay_exact_under_duplicate_and_concurrent_transitions(make_stack) -> None:
    """Random terminal transitions, each applied by two racing writers: the counters equal a recount."""
    stack = make_stack()
    status = stack.services.status
    now = datetime.now(UTC)
    status.create_job(JobRow("race-1", planned=True, state=JobState.RUNNING), now)

    rows = [BatchRow("race-1", f"batch-{n:06d}", item_count=10) for n in range(1, 41)]
    status.create_batches(rows, now)
    status.create_batches(rows, now)  # a redelivered planner: creates and counts nothing twice
    outcomes = [(BatchState.SUCCEEDED, 10, 0), (BatchState.FAILED, 0, 10), (BatchState.SPLIT, 7, 3)]

    def end(row: BatchRow, outcome: tuple) -> None:
        state, ok, failed = outcome
        status.update_batch("race-1", row.batch_id, lambda r: None if r.state.is_terminal else replace(
            r, state=state, items_succeeded=ok, items_failed=failed), now)

    threads = [threading.Thread(target=end, args=(row, outcomes[n % 3])) for n, row in enumerate(rows) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job = status.get_job("race-1")
    recount = summarize(job, status.batches("race-1"))
    assert (job.items_succeeded, job.items_failed, job.batches_open) == (recount.items_succeeded, recount.items_failed, 0)
    assert job.item_count == 400 and job.batches_by_state == recount.batches_by_state
    assert status.counters("race-1") == status.recount("race-1")
    assert orjson.loads(job.batches_by_state) == {"Failed": 13, "Split": 13, "Succeeded": 14}


# ----- 8. Never guess a verdict ---------------------------------------------------------------------------


def _submitted(stack: LocalStack, job_id: str, batches: int) -> bool:
    rows = stack.services.status.batches(job_id)
    return len(rows) == batches and all(row.operation_id for row in rows)


def _planned_and_sent(stack: LocalStack, job_id: str, items: list[dict], collection: str) -> None:
    """Plan `job_id` (one item per batch) and wait until every batch's POST was answered."""
    stack.pause_functions()
    plan_job(JobRequest(collection=collection, items=items, batch_size=1), job_id=job_id, claim=JobClaim("m", "f"),
             services=stack.services, now=datetime.now(UTC))
    stack.resume_functions()
    wait_until(lambda: _submitted(stack, job_id, len(items)), timeout=60)


def test_a_429_storm_longer_than_twenty_retry_afters_records_no_ingested_item_failed(make_stack) -> None:
    stack = make_stack(settings={"POLL_MAX_DELAY_SECONDS": "1"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05),
                                                        faults=Faults(operation_reads_status=429, retry_after_seconds=0)))
    collection = with_collection(stack)
    items = [make_item(f"q{n}") for n in range(3)]
    _planned_and_sent(stack, "storm-2", items, collection)
    # Every read of an operation, then of the catalog too (the check after a give-up), answers 429: 30 per batch.
    stack.emulator.catalog.faults.update({"operation_reads_status": 0, "rate_limit_next": 90})
    job = wait_for_jobs(stack.services, ["storm-2"], timeout=180)["storm-2"]
    assert stack.emulator.catalog.faults.rate_limit_next == 0  # the whole storm was served
    assert (job.state, job.items_succeeded, job.items_failed, job.items_unconfirmed) == (JobState.SUCCEEDED, 3, 0, 0)
    assert all(row.state == BatchState.SUCCEEDED and not row.error_code for row in stack.services.status.batches("storm-2"))
    assert_invariant(stack, "storm-2", items, collection)


def _break_everything(stack: LocalStack, fault: str) -> None:
    if fault == "wrong token":
        stack.emulator.app.token = "rotated-to-someone-else"
    elif fault == "5xx":
        stack.emulator.catalog.faults.update({"server_error_fraction": 1.0, "retry_after_seconds": 0})
    else:
        stack.emulator.catalog.faults.update({"latency_ms": 2500})
    stack.emulator.catalog.faults.update({"operation_reads_status": 0})


def _heal(stack: LocalStack) -> None:
    stack.emulator.app.token = None
    stack.emulator.catalog.faults.update({"server_error_fraction": 0.0, "latency_ms": 0, "operation_reads_status": 0})


@pytest.mark.parametrize("fault", ["5xx", "wrong token", "latency"])
def test_a_fault_outlasting_the_deadline_leaves_items_unconfirmed_until_the_sweeper_confirms_them(make_stack, fault: str) -> None:
    stack = make_stack(settings={"POLL_DEADLINE_SECONDS": "6", "POLL_MAX_DELAY_SECONDS": "1", "HTTP_TIMEOUT_SECONDS": "1"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05),
                                                        faults=Faults(operation_reads_status=503, retry_after_seconds=0)))
    collection = with_collection(stack)
    items = [make_item(f"f{n}") for n in range(3)]
    _planned_and_sent(stack, "outlast", items, collection)  # every operation ran; no poll could read one
    _break_everything(stack, fault)  # from now on the catalog cannot be searched either
    job = wait_for_jobs(stack.services, ["outlast"], timeout=120)["outlast"]
    assert (job.state, job.items_unconfirmed, job.items_failed, job.items_succeeded) == (JobState.UNCONFIRMED, 3, 0, 0)
    assert "Unconfirmed x3" in job.error_message
    batches = stack.services.status.batches("outlast")
    assert all(row.state == BatchState.UNCONFIRMED and row.error_code == "TimedOut"
               and "could not be checked either" in row.error_message for row in batches)
    problems = job_problems(job, status=stack.services.status, read=stack.services.payloads.read)
    assert {(p.item, p.state) for p in problems} == {(i["id"], ItemState.UNCONFIRMED) for i in items}

    report = sweep(services=stack.services, now=datetime.now(UTC))  # the catalog still does not answer
    assert report.batches_confirmed == 0 and stack.services.status.get_job("outlast").state == JobState.UNCONFIRMED

    _heal(stack)
    report = sweep(services=stack.services, now=datetime.now(UTC))
    assert report.batches_confirmed == 3
    job = assert_invariant(stack, "outlast", items, collection)
    assert (job.state, job.items_succeeded, job.items_unconfirmed) == (JobState.SUCCEEDED, 3, 0)
    assert all(row.state == BatchState.SUCCEEDED for row in stack.services.status.batches("outlast"))
    assert [o.state for o in stack.services.items.lookup("f0", collection)] == [ItemState.SUCCEEDED]
    assert sweep(services=stack.services, now=datetime.now(UTC)).batches_confirmed == 0  # nothing left to confirm


def _running_past_its_deadline(make_stack, job_id: str, items: list[dict]) -> tuple[LocalStack, str, BatchRow]:
    """A one-batch job whose operation never ends and ignores its cancel; its Unconfirmed batch row."""
    stack = make_stack(settings={"POLL_DEADLINE_SECONDS": "3", "POLL_MAX_DELAY_SECONDS": "1"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), faults=Faults(stuck_operations_fraction=1.0)))
    catalog_state = stack.emulator.catalog
    stack.emulator.call(lambda: setattr(catalog_state, "cancel", lambda op, now: None))  # a cancel that never takes
    collection = with_collection(stack)
    send_job(stack.services, {"v": 1, "job_id": job_id, "collection": collection, "items": items})
    job = wait_for_jobs(stack.services, [job_id], timeout=60)[job_id]
    assert (job.state, job.items_unconfirmed, job.items_failed) == (JobState.UNCONFIRMED, len(items), 0)  # not guessed
    row, = stack.services.status.batches(job_id)
    assert row.error_code == "TimedOut" and "still Running after its cancel" in row.error_message
    return stack, collection, row


def test_an_operation_that_runs_past_its_deadline_and_ignores_its_cancel_is_confirmed_once_it_ends(make_stack) -> None:
    items = [make_item(f"r{n}") for n in range(2)]
    stack, collection, row = _running_past_its_deadline(make_stack, "runs-on", items)
    report = sweep(services=stack.services, now=row.finished + timedelta(seconds=1))  # the catalog answers; the operation runs on
    assert report.batches_confirmed == 0 and stack.services.status.get_job("runs-on").state == JobState.UNCONFIRMED

    catalog_state = stack.emulator.catalog
    stack.emulator.call(lambda: catalog_state.unstick(catalog_state.operations[row.operation_id], datetime.now(UTC)))
    wait_until(lambda: {"r0", "r1"} <= set(stored(stack, collection)), timeout=30)
    assert sweep(services=stack.services, now=datetime.now(UTC)).batches_confirmed == 1
    job = assert_invariant(stack, "runs-on", items, collection)
    assert (job.state, job.items_succeeded, job.items_unconfirmed) == (JobState.SUCCEEDED, 2, 0)


def test_an_operation_still_running_a_deadline_after_its_batch_ended_leaves_the_verdict_to_the_catalog(make_stack) -> None:
    items = [make_item("q0")]
    stack, collection, row = _running_past_its_deadline(make_stack, "runs-forever", items)
    report = sweep(services=stack.services, now=row.finished + timedelta(seconds=4))  # patience (one deadline) is over
    assert report.batches_confirmed == 1
    job = assert_invariant(stack, "runs-forever", items, collection)
    assert (job.state, job.items_failed, job.error_code) == (JobState.FAILED, 1, "NotInCatalog")


def test_retry_of_unconfirmed_items_sends_only_those_the_catalog_does_not_hold(make_stack) -> None:
    stack = make_stack(settings={"POLL_DEADLINE_SECONDS": "4", "POLL_MAX_DELAY_SECONDS": "1"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05),
                                                        faults=Faults(operation_reads_status=503, retry_after_seconds=0)))
    collection = with_collection(stack)
    items = [make_item(f"h{n}") for n in range(3)]
    _planned_and_sent(stack, "half", items, collection)
    _break_everything(stack, "5xx")
    assert wait_for_jobs(stack.services, ["half"], timeout=120)["half"].state == JobState.UNCONFIRMED
    _heal(stack)
    catalog(stack).delete_item(collection, "h1")  # one item the catalog does not hold (as if its operation had failed)
    wait_until(lambda: "h1" not in stored(stack, collection), timeout=30)
    storage = Storage(stack.services.status, stack.services.queues, stack.services.payloads, stack.services.items)

    unanswered = plan_retry(RetryRequest("half"), storage=storage, settings=stack.services.settings, catalog=None)
    assert not unanswered.job_id and all("could not be checked" in reason for reason in unanswered.skipped)

    result = plan_retry(RetryRequest("half"), storage=storage, settings=stack.services.settings,
                        catalog=catalog_lookup(stack.services.catalog.search_ids))
    assert (result.job_id, result.items) == ("half-retry-1", 1)
    assert sum("holds it" in reason for reason in result.skipped) == 2
    retried = wait_for_jobs(stack.services, ["half-retry-1"], timeout=60)["half-retry-1"]
    assert (retried.state, retried.item_count, retried.items_succeeded) == (JobState.SUCCEEDED, 1, 1)
    assert {"h0", "h1", "h2"} <= set(stored(stack, collection))


@pytest.mark.parametrize(("name", "body"), [
    ("items.ndjson", lambda items: b"".join(orjson.dumps(i) + b"\n" for i in items)),
    ("items.json", lambda items: orjson.dumps({"type": "FeatureCollection", "features": items})),
])
def test_a_401_while_planning_an_upload_leaves_every_item_retryable(make_stack, name: str, body) -> None:
    stack = make_stack(settings={"PLAN_SEGMENT_ITEMS": "4", "BATCH_MAX_ITEMS": "3"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), token="someone-else"))
    items = [make_item(f"w{n}") for n in range(10)]
    job_id = upload(stack, f"landcover/{name}", body(items))
    job = wait_for_jobs(stack.services, [job_id], timeout=90)[job_id]
    assert (job.state, job.item_count, job.items_failed, job.error_code) == (JobState.FAILED, 10, 10, "AuthenticationFailed")
    assert item_posts(stack) == 0
    assert all(row.state == BatchState.FAILED and row.error_code == "AuthenticationFailed"
               for row in stack.services.status.batches(job_id))

    stack.emulator.app.token = None  # the identity is fixed
    with_collection(stack)
    storage = Storage(stack.services.status, stack.services.queues, stack.services.payloads, stack.services.items)
    result = plan_retry(RetryRequest(job_id), storage=storage, settings=stack.services.settings)
    assert (result.created, result.items, result.skipped) == (True, 10, [])
    retried = wait_for_jobs(stack.services, [result.job_id], timeout=90)[result.job_id]
    assert (retried.state, retried.items_succeeded) == (JobState.SUCCEEDED, 10)
    assert set(stored(stack, "landcover")) == {i["id"] for i in items}


def test_a_401_while_planning_a_search_records_the_results_read_for_retry(make_stack) -> None:
    stack = make_stack(settings={"SOURCE_URL_ALLOWLIST": "127.0.0.1", "BATCH_MAX_ITEMS": "2"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), source_items=str(SAMPLES),
                                                        token="someone-else"))
    search = {"url": f"{stack.emulator.url}/source/search", "params": {"collections": ["io-lulc-annual-v02"], "limit": 2},
              "max_items": 3}
    send_job(stack.services, {"v": 1, "job_id": "search-401", "collection": "landcover", "search": search})
    job = wait_for_jobs(stack.services, ["search-401"], timeout=90)["search-401"]
    assert (job.state, job.item_count, job.items_failed, job.error_code) == (JobState.FAILED, 3, 3, "AuthenticationFailed")
    assert item_posts(stack) == 0

    stack.emulator.app.token = None
    with_collection(stack)
    storage = Storage(stack.services.status, stack.services.queues, stack.services.payloads, stack.services.items)
    result = plan_retry(RetryRequest("search-401"), storage=storage, settings=stack.services.settings)
    assert (result.items, result.skipped) == (3, [])
    retried = wait_for_jobs(stack.services, [result.job_id], timeout=90)[result.job_id]
    assert (retried.state, retried.items_succeeded) == (JobState.SUCCEEDED, 3)


@pytest.mark.parametrize("where", ["blob", "url"])
def test_a_401_while_planning_a_static_catalog_records_every_item_walked_for_retry(make_stack, where: str) -> None:
    stack = make_stack(settings={"SOURCE_URL_ALLOWLIST": "127.0.0.1", "SOURCE_ALLOW_LOOPBACK": "true", "BATCH_MAX_ITEMS": "2"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), token="someone-else"))
    container = stack.services.settings.payload_container
    names = [put_blob(stack, container, f"jobs/cat401/{path.relative_to(EXAMPLE_CATALOG).as_posix()}", path.read_bytes())
             for path in EXAMPLE_CATALOG.rglob("*.json")]
    with served(EXAMPLE_CATALOG) as server:
        root = {"blob": f"{container}/jobs/cat401/catalog.json"} if where == "blob" else {"url": f"{server.url}/catalog.json"}
        send_job(stack.services, {"v": 1, "job_id": "cat-401", "catalog": root})
        job = wait_for_jobs(stack.services, ["cat-401"], timeout=90)["cat-401"]
    assert (job.state, job.item_count, job.items_failed, job.error_code) == (JobState.FAILED, 5, 5, "AuthenticationFailed")
    assert item_posts(stack) == 0
    rows = stack.services.status.batches("cat-401")
    assert len(rows) == 3 and all(row.state == BatchState.FAILED and row.error_code == "AuthenticationFailed" for row in rows)

    blobs = BlobServiceClient.from_connection_string(stack.azurite.connection_string).get_container_client(container)
    for name in names:  # the retry reads the batches' chunks, not the catalog (the file server is gone too)
        blobs.delete_blob(name.split("/", 1)[1])
    stack.emulator.app.token = None  # the identity is fixed
    with_collection(stack, "naip")
    storage = Storage(stack.services.status, stack.services.queues, stack.services.payloads, stack.services.items)
    result = plan_retry(RetryRequest("cat-401"), storage=storage, settings=stack.services.settings)
    assert (result.items, result.skipped) == (5, [])
    retried = wait_for_jobs(stack.services, [result.job_id], timeout=90)[result.job_id]
    assert (retried.state, retried.items_succeeded) == (JobState.SUCCEEDED, 5)
    assert set(stored(stack, "naip")) == EXAMPLE_IDS


def test_a_sweep_settles_an_unconfirmed_job_whose_batch_was_confirmed_just_before_a_crash(make_stack) -> None:
    stack = make_stack()
    status, payloads = stack.services.status, stack.services.payloads
    now = datetime.now(UTC)
    status.create_job(JobRow("crash-c", state=JobState.RUNNING, planned=True, collection="landcover"), now)
    status.create_batches([BatchRow("crash-c", "batch-000001", state=BatchState.RUNNING, collection="landcover", item_count=2,
                                    item_ids='["a", "b"]')], now)
    row = status.get_batch("crash-c", "batch-000001")
    row = end_batch(status, row, Outcome.every_item_unconfirmed("TimedOut", "unreadable"), payloads=payloads, now=now)
    assert settle_job("crash-c", status=status, now=now).state == JobState.UNCONFIRMED
    confirm_batch(status, row, landed={"a", "b"}, ids=["a", "b"], payloads=payloads, now=now)  # ...and the process dies
    assert status.get_job("crash-c").state == JobState.UNCONFIRMED
    report = sweep(services=stack.services, now=now)
    job = status.get_job("crash-c")
    assert (report.jobs_finished, report.batches_confirmed) == (1, 0)
    assert (job.state, job.items_succeeded, job.items_unconfirmed) == (JobState.SUCCEEDED, 2, 0)
    assert status.counters("crash-c") == status.recount("crash-c")
