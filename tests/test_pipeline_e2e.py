"""End to end: function_app.py on the local host, against Azurite and the emulator, driven by messages.

Each test drops messages on the submit queue as a user would, waits for the job row to be terminal,
and compares the status table and what the emulator holds with the input.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from azure.storage.queue import QueueClient

from devhost.jobs import send_items, send_job, wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Faults, Timings
from shared.catalog.auth import StaticToken
from shared.catalog.client import GeoCatalogClient
from shared.messages import JobRequest
from shared.steps.fanout import batch_message
from shared.steps.job_claims import JobClaim
from shared.steps.planning import plan_job
from shared.store.status import BatchRow, BatchState, JobRow, JobState
from tests.corpus import corpus_items
from tests.helpers import make_collection, make_item, wait_until

SERVICE_FIELDS = {"links", "collection", "_msft:ts", "_msft:etag"}
REWRITTEN_FIELDS = {"assets", "stac_extensions"}  # hrefs copied to the catalog's storage, projection v1.1.0


def catalog(stack: LocalStack) -> GeoCatalogClient:
    assert stack.emulator is not None
    return GeoCatalogClient(stack.emulator.url, StaticToken("test"))


def with_collection(stack: LocalStack, collection_id: str = "landcover") -> str:
    catalog(stack).create_collection(make_collection(collection_id))
    return collection_id


def run(stack: LocalStack, body: dict[str, Any] | bytes, job_id: str, timeout: float = 90) -> JobRow:
    assert stack.services is not None
    send_job(stack.services, body)
    return wait_for_jobs(stack.services, [job_id], timeout=timeout)[job_id]


def stored(stack: LocalStack, collection_id: str) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in catalog(stack).list_items(collection_id, limit=1000)}


def item_posts(stack: LocalStack) -> int:
    assert stack.emulator is not None
    return sum(n for key, n in stack.emulator.app.stats.by_route.items() if key.startswith("POST") and key.endswith("/items"))


def sent_to_catalog(stack: LocalStack, collection_id: str) -> dict[str, dict[str, Any]]:
    """The collection's items as the requests that stored them carried them (the emulator keeps them:
    the catalog's own copy has its asset hrefs rewritten to its storage, as the service does)."""
    assert stack.emulator is not None
    return stack.emulator.call(lambda: stack.emulator.catalog.sent_items(collection_id))


def without(item: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in fields}


def assert_holds_exactly(stack: LocalStack, collection_id: str, items: list[dict[str, Any]]) -> None:
    """The emulator holds these items and no others: sent as given (apart from the fields the service
    sets), and stored with the same content apart from what the service rewrites."""
    held, sent = stored(stack, collection_id), sent_to_catalog(stack, collection_id)
    assert sorted(held) == sorted(sent) == sorted(i["id"] for i in items)
    for item in items:
        assert without(sent[item["id"]], SERVICE_FIELDS) == without(item, SERVICE_FIELDS)
        assert without(held[item["id"]], SERVICE_FIELDS | REWRITTEN_FIELDS) == without(item, SERVICE_FIELDS | REWRITTEN_FIELDS)
        assert set(held[item["id"]].get("assets") or {}) == set(item.get("assets") or {})
        assert held[item["id"]]["collection"] == collection_id


def batch_rows(stack: LocalStack, job_id: str):
    assert stack.services is not None
    return {row.batch_id: row for row in stack.services.status.batches(job_id)}


def test_inline_message_ingests_and_records_every_item(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"tile-{n}") for n in range(5)]
    job = run(stack, {"v": 1, "job_id": "inline-1", "collection": collection, "items": items}, "inline-1")
    assert (job.state, job.item_count, job.items_succeeded, job.batch_count) == (JobState.SUCCEEDED, 5, 5, 1)
    assert_holds_exactly(stack, collection, items)
    row = batch_rows(stack, "inline-1")["batch-000001"]
    assert row.state == BatchState.SUCCEEDED and row.operation_id and "?" not in row.operation_url
    assert row.logs and not row.logs_blob  # short logs live in the row alone


def test_base64_bare_feature_collection_takes_collection_from_its_items(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"b64-{n}", collection) for n in range(3)]
    body = base64.b64encode(orjson.dumps({"type": "FeatureCollection", "features": items}))
    stack.services.queues.send(stack.services.settings.submit_queue, body.decode())
    job = wait_until(lambda: next((j for j in stack.services.status.jobs() if j.state.is_terminal), None), timeout=60)
    assert (job.state, job.collection, job.items_succeeded) == (JobState.SUCCEEDED, collection, 3)
    assert_holds_exactly(stack, collection, items)


def test_thousand_item_feature_collection_spans_many_batches(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"k{n:04d}") for n in range(1000)]
    send_items(stack.services, items, collection=collection, job_id="big-1")  # too big inline: sent by blob ref
    job = wait_for_jobs(stack.services, ["big-1"], timeout=180)["big-1"]
    assert (job.state, job.batch_count, job.items_succeeded) == (JobState.SUCCEEDED, 10, 1000)
    assert_holds_exactly(stack, collection, items)
    assert item_posts(stack) == 10


def test_batches_over_the_queue_limit_are_claim_checked(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [{**item, "collection": collection} for item in corpus_items("pc-usgs-lcmap-hawaii-items.ndjson")]  # ~38 KB each
    send_items(stack.services, items, collection=collection, job_id="claim-1")
    job = wait_for_jobs(stack.services, ["claim-1"], timeout=90)["claim-1"]
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 4)
    assert_holds_exactly(stack, collection, items)


def test_rate_limit_storm_then_success(make_stack) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.1, 0.2), faults=Faults(rate_limit_next=5, retry_after_seconds=1)))
    collection = "landcover"
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection(collection)))
    items = [make_item(f"r{n}") for n in range(3)]
    job = run(stack, {"v": 1, "job_id": "storm-1", "collection": collection, "items": items}, "storm-1", timeout=120)
    assert job.state == JobState.SUCCEEDED
    assert_holds_exactly(stack, collection, items)
    assert stack.emulator.catalog.faults.rate_limit_next == 0  # all five 429s were served, then the job went through
    assert item_posts(stack) == 1


def test_failed_operation_keeps_its_code_and_logs(make_stack) -> None:
    stack = make_stack(settings={"GEOCATALOG_API_VERSION": "2024-01-31-preview", "LOG_TRUNCATE_CHARS": "40"},
                       emulator_options=EmulatorOptions(timings=Timings(0.1, 0.1), faults=Faults(fail_operations_code="GenericIngestionError")))
    collection = with_collection(stack)
    job = run(stack, {"v": 1, "job_id": "fail-1", "collection": collection, "items": [make_item("f1")]}, "fail-1")
    assert (job.state, job.items_failed) == (JobState.FAILED, 1)
    row = batch_rows(stack, "fail-1")["batch-000001"]
    assert (row.state, row.error_code) == (BatchState.FAILED, "GenericIngestionError")
    assert orjson.loads(row.failed_items) == {"f1": "GenericIngestionError"}
    full_logs = stack.services.payloads.read(row.logs_blob).decode()  # longer than the row keeps: whole in a blob
    assert len(row.logs) == 40 and full_logs.startswith(row.logs)
    assert "GenericIngestionError" in full_logs and "f1" in full_logs  # the preview generation's logs route


def test_mix_of_invalid_and_valid_items(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    good = [make_item(f"g{n}") for n in range(4)]
    bad = [make_item("x" * 70), {**make_item("no-time"), "properties": {}}, {"type": "Feature", "geometry": None}, make_item("g0")]
    job = run(stack, {"v": 1, "job_id": "mix-1", "collection": collection, "items": good + bad}, "mix-1")
    assert (job.state, job.items_succeeded, job.items_rejected, job.item_count) == (JobState.PARTIALLY_SUCCEEDED, 4, 4, 8)
    rejected = batch_rows(stack, "mix-1")["rejected-000001"]
    reasons = orjson.loads(rejected.rejected_items)
    assert set(reasons) == {"#4", "no-time", "#6", "g0"}  # an id that breaks the rule is never a key: its position is
    assert "1-64" in reasons["#4"] and "'xxxx" in reasons["#4"] and "datetime" in reasons["no-time"]
    assert "more than once" in reasons["g0"]
    assert_holds_exactly(stack, collection, good)


def test_real_world_corpus(make_stack) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "25"})
    collection = with_collection(stack, "real-world")
    names = ["stactools-s2-ANTIMERIDIAN-L2A-T01WCP-1.1.0.json", "stactools-s2-ANTIMERIDIAN-L1C-T01LAC-1.1.0.json",
             "pc-io-lulc-01C_2017.json", "pystac-client-cassette-pc-sentinel-2-l2a-itemcollection.json",
             "pystac-OLD-0.8.1-label-zanzibar-znz029.json", "pgstac-testdata-items.ndjson", "pystac-raster-planet-example.json",
             "stac-validator-INVALID-v1.1.0-opera-rtc-sar.json", "pc-sentinel-1-grd-raw-S1A_IW_GRDH_1SDV_20230628.json",
             "stac-validator-INVALID-v1.0.0-missing-id.json", "stac-server-INVALID-badGeometryItem-antimeridian.json"]
    items = [item for name in names for item in corpus_items(name)]
    valid_ids = {i["id"] for i in items if i.get("id") and "INVALID" not in i.get("id", "") and len(i["id"]) <= 64} - {"badGeometryItem"}
    send_items(stack.services, items, collection=collection, job_id="corpus-1")
    job = wait_for_jobs(stack.services, ["corpus-1"], timeout=240)["corpus-1"]
    assert job.state == JobState.PARTIALLY_SUCCEEDED
    assert job.items_succeeded == len(valid_ids) and job.items_rejected == len(items) - len(valid_ids)
    assert_holds_exactly(stack, collection, [i for i in items if i.get("id") in valid_ids])


def test_duplicate_deliveries_post_nothing_twice(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    body = {"v": 1, "job_id": "dup-1", "collection": collection, "items": [make_item(f"d{n}") for n in range(90)], "batch_size": 30}
    run(stack, body, "dup-1")
    posts = item_posts(stack)
    assert posts == 3
    send_job(stack.services, body)  # the job message again
    for row in batch_rows(stack, "dup-1").values():  # and every batch message again
        stack.services.queues.send(stack.services.settings.work_queue, batch_message("dup-1", row.batch_id))
    wait_until(lambda: all(listener.waiting_messages() == 0 for listener in stack.host.listeners), timeout=30)
    assert item_posts(stack) == posts
    job = stack.services.status.get_job("dup-1")
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 90)


def test_crash_between_post_and_row_write_counts_items_once(make_stack) -> None:
    """The lost POST created the items; the re-POST fails as duplicates; they still count as ours."""
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"c{n}", collection) for n in range(6)]
    stack.pause_functions()
    plan_job(JobRequest(collection=collection, items=items), job_id="crash-1", claim=JobClaim("m-1", "f"),
             services=stack.services, now=datetime.now(UTC))
    # The dying worker had claimed the batch for the message it was processing and POSTed it; then it crashed.
    message_id = waiting_message_id(stack, "batch-000001")
    started = datetime.now(UTC)
    stack.services.status.update_batch("crash-1", "batch-000001", lambda r: replace(
        r, state=BatchState.SUBMITTING, attempts=1, submit_started=started, claimed_by=message_id), started)
    lost = catalog(stack).create_items(collection, {"type": "FeatureCollection", "features": items})
    wait_until(lambda: catalog(stack).get_operation(lost).is_terminal)
    stack.resume_functions()  # the batch message is still on the queue: it is redelivered
    job = wait_for_jobs(stack.services, ["crash-1"], timeout=60)["crash-1"]
    assert (job.state, job.items_succeeded, job.items_failed) == (JobState.SUCCEEDED, 6, 0)
    assert item_posts(stack) == 2  # the lost POST and the redelivered one; no isolation round
    assert_holds_exactly(stack, collection, items)


def waiting_message_id(stack: LocalStack, batch_id: str) -> str:
    queue = QueueClient.from_connection_string(stack.azurite.connection_string, stack.services.settings.work_queue)
    return next(m.id for m in queue.peek_messages(max_messages=32) if batch_id in m.content)


def test_partial_failure_isolates_the_bad_items(make_stack) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), atomic_batches=True))
    collection = with_collection(stack)
    existing = catalog(stack).create_items(collection, make_item("taken", collection))
    wait_until(lambda: catalog(stack).get_operation(existing).is_terminal)
    items = [make_item(f"p{n}") for n in range(7)] + [make_item("taken")] + [make_item(f"q{n}") for n in range(7)]
    job = run(stack, {"v": 1, "job_id": "iso-1", "collection": collection, "items": items}, "iso-1")
    assert (job.state, job.items_succeeded, job.items_failed) == (JobState.PARTIALLY_SUCCEEDED, 14, 1)
    rows = batch_rows(stack, "iso-1")
    assert rows["batch-000001"].state == BatchState.SPLIT
    failed = {k: v for row in rows.values() for k, v in orjson.loads(row.failed_items or "{}").items()}
    assert failed == {"taken": "ItemAlreadyExistsInCollection"}
    held = stored(stack, collection)
    assert set(held) == {i["id"] for i in items}


def test_partial_failure_without_item_detail_is_halved_down(make_stack) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), faults=Faults(partial_failure_fraction=0.25, seed=3)))
    collection = with_collection(stack)
    items = [make_item(f"h{n}") for n in range(8)]
    job = run(stack, {"v": 1, "job_id": "iso-2", "collection": collection, "items": items}, "iso-2")
    assert job.items_succeeded + job.items_failed == 8 and job.items_failed == 2
    failed = {k for row in batch_rows(stack, "iso-2").values() for k in orjson.loads(row.failed_items or "{}")}
    assert set(stored(stack, collection)) == {i["id"] for i in items} - failed


def test_poll_deadline_ends_in_timed_out(make_stack) -> None:
    stack = make_stack(settings={"POLL_DEADLINE_SECONDS": "3"},
                       emulator_options=EmulatorOptions(timings=Timings(0.05, 0.05), faults=Faults(stuck_operations_fraction=1.0)))
    collection = with_collection(stack)
    job = run(stack, {"v": 1, "job_id": "slow-1", "collection": collection, "items": [make_item("s1"), make_item("s2")]}, "slow-1")
    assert (job.state, job.items_failed) == (JobState.FAILED, 2)
    row = batch_rows(stack, "slow-1")["batch-000001"]
    assert (row.state, row.error_code) == (BatchState.TIMED_OUT, "TimedOut") and row.error_message.endswith("; canceled")
    operation = stack.emulator.call(lambda: stack.emulator.catalog.operations[row.operation_id])
    assert operation.canceled_at is not None  # stopped at its deadline: it cannot land the items after their verdict


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b"this is not json", "neither JSON nor base64"), (b'{"v": 1, "collection": "landcover"}', "exactly one"),
     (b'{"v": 1, "job_id": "job-1\\n", "items": []}', "job_id must be 1-64 characters of [A-Za-z0-9_-]: it has '\\n' at position 6")],
)
def test_unreadable_messages_become_rejected_jobs_not_crash_loops(make_stack, body: bytes, fragment: str) -> None:
    stack = make_stack()
    stack.services.queues.send(stack.services.settings.submit_queue, body.decode())
    job = wait_until(lambda: next(iter(stack.services.status.jobs()), None), timeout=30)
    job = wait_until(lambda: (j := stack.services.status.get_job(job.job_id)).state.is_terminal and j, timeout=30)
    assert job.state == JobState.REJECTED and fragment in job.error_message
    assert sum(listener.failed for listener in stack.host.listeners) == 0


def test_unknown_collection_rejects_the_job(make_stack) -> None:
    stack = make_stack()
    job = run(stack, {"v": 1, "job_id": "nocoll-1", "collection": "missing-collection", "items": [make_item("a")]}, "nocoll-1")
    assert (job.state, job.items_rejected) == (JobState.REJECTED, 1)
    assert "does not exist" in job.error_message


def test_auth_failure_in_planning_records_the_items_as_failed_not_rejected(make_stack) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(token="the-real-token"),
                       queue_overrides={"visibility_timeout_seconds": 0})
    items = [make_item(f"a{n}") for n in range(50)]
    job = run(stack, {"v": 1, "job_id": "auth-1", "collection": "landcover", "items": items}, "auth-1", timeout=60)
    assert (job.state, job.item_count, job.items_failed, job.items_rejected) == (JobState.FAILED, 50, 50, 0)
    assert job.error_code == "AuthenticationFailed" and "refused the credential" in job.error_message
    assert sum(listener.failed for listener in stack.host.listeners) == 0  # recorded, not a crash loop
    rows = batch_rows(stack, "auth-1").values()
    assert all(row.payload_blob and row.error_code == "AuthenticationFailed" for row in rows)  # kept for a retry
    assert "the-real-token" not in job.error_message and "local-dev-token" not in job.error_message


def test_poison_queue_messages_end_in_a_terminal_row_of_their_own(make_stack) -> None:
    """No trigger reads the poison queues: the sweep timer (every second here) drains them."""
    stack = make_stack(settings={"SWEEP_SCHEDULE": "*/1 * * * * *"})
    settings, status = stack.services.settings, stack.services.status
    status.create_job(JobRow("job-p", state=JobState.RUNNING, planned=True, batch_count=1, claimed_by="m"), datetime.now(UTC))
    status.create_batches([BatchRow("job-p", "batch-000001", item_count=2)], datetime.now(UTC))
    body = orjson.dumps({"v": 1, "job_id": "poisoned-1", "items": []})
    stack.services.queues.send(f"{settings.submit_queue}-poison", body.decode())
    stack.services.queues.send(f"{settings.work_queue}-poison", batch_message("job-p", "batch-000001"))
    row_id = f"poison-{hashlib.sha256(body).hexdigest()[:24]}"
    job = wait_until(lambda: (j := status.get_job(row_id)) and j.state.is_terminal and j, timeout=30)
    assert job.state == JobState.FAILED and "poison" in job.error_message and "poisoned-1" in job.error_message
    assert status.get_job("poisoned-1") is None
    ended = wait_until(lambda: (j := status.get_job("job-p")) and j.state.is_terminal and j, timeout=30)
    assert (ended.state, ended.items_failed) == (JobState.FAILED, 2)
    assert status.get_batch("job-p", "batch-000001").error_code == "GaveUp"
    for queue in (settings.submit_queue, settings.work_queue):  # handled, then deleted
        assert wait_until(lambda q=queue: not stack.services.queues.peek(f"{q}-poison"), timeout=10)


def test_emulator_request_log_never_sees_a_sas_token_in_rows(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    item = make_item("sas-1")
    item["assets"]["data"]["href"] += "?sv=2024-01-01&sig=SECRETSIG"
    run(stack, {"v": 1, "job_id": "sas-1", "collection": collection, "items": [item]}, "sas-1")
    rows = [stack.services.status.get_job("sas-1"), *batch_rows(stack, "sas-1").values()]
    assert all("SECRETSIG" not in repr(row) for row in rows)


def test_a_full_size_message_retried_after_a_429_is_claim_checked(make_stack) -> None:
    """Re-sending a job after a transient error adds its job id; a message already near 64 KiB then goes by blob."""
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), faults=Faults(rate_limit_next=1)))
    collection = "landcover"
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection(collection)))
    items = [make_item(f"full-{n}", collection) for n in range(20)]
    body = orjson.dumps({"v": 1, "collection": collection, "items": items})
    items[0]["properties"]["pad"] = "x" * (65536 - 20 - len(body))  # leaves less room than the retry envelope needs
    body = orjson.dumps({"v": 1, "collection": collection, "items": items})
    assert 65536 - 40 < len(body) <= 65536
    stack.services.queues.send(stack.services.settings.submit_queue, body.decode())
    job = wait_until(lambda: next((j for j in stack.services.status.jobs() if j.state.is_terminal), None), timeout=60)
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 20)
    assert stack.services.payloads.read(f"{stack.services.settings.payload_container}/{job.job_id}/job-items.json")
