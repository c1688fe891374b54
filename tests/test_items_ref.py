"""End to end: `items_ref` reads only where settings allow, the way uploads read, and searches of the
target catalog carry its token while nothing else does.

Covers issue 8 defect 2 (blob references outside the allowed containers, `..`, empty blobs), the SSRF
redirect of an items URL, and issue 9's catalog-aware sources and streamed `items_ref` reading.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Timings
from shared.messages import JobRequest, PlanMessage
from shared.steps.job_claims import JobClaim
from shared.steps.planning import plan_job
from shared.steps.segments import plan_segment
from shared.store.status import JobState
from tests.conftest import ROOT
from tests.helpers import make_item
from tests.test_pipeline_e2e import assert_holds_exactly, batch_rows, run, stored, with_collection

SAMPLES = ROOT / "examples" / "landcover-items.json"
SAMPLE_IDS = {f["id"] for f in orjson.loads(SAMPLES.read_bytes())["features"]}


def source_stack(make_stack, **settings: str) -> LocalStack:
    return make_stack(settings={"SOURCE_URL_ALLOWLIST": "127.0.0.1,localhost", **settings},
                      emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), source_items=str(SAMPLES)))


def put_blob(stack: LocalStack, container: str, path: str, data: bytes) -> str:
    service = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
    try:
        service.create_container(container)
    except Exception:  # noqa: BLE001 - it exists already
        pass
    service.get_blob_client(container, path).upload_blob(data, overwrite=True)
    return f"{container}/{path}"


def ndjson(items: list) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def ref_job(job_id: str, collection: str, **ref: object) -> dict:
    return {"v": 1, "job_id": job_id, "collection": collection, "items_ref": ref}


def poison_count(stack: LocalStack) -> int:
    queue = QueueClient.from_connection_string(stack.azurite.connection_string, f"{stack.services.settings.submit_queue}-poison")
    return len(queue.peek_messages(max_messages=32))


# ----- issue 8, defect 2: blob references only where they belong -----------------------------------


def test_items_ref_blob_reads_only_allowed_containers_and_never_says_whether_a_blob_exists(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    secret = put_blob(stack, "azure-webjobs-secrets", "host.json", orjson.dumps(make_item("from-the-secrets")))
    payloads = stack.services.settings.payload_container
    cases = {"forbidden": secret, "forbidden-missing": "azure-webjobs-secrets/nothing.json",
             "hosts": "azure-webjobs-hosts/locks/x.json", "allowed-missing": f"{payloads}/nothing.json"}
    reasons = {}
    for name, blob in cases.items():
        job = run(stack, ref_job(f"ref-{name}", collection, blob=blob), f"ref-{name}")
        assert job.state == JobState.REJECTED and job.items_succeeded == 0
        reasons[name] = job.error_message.replace(repr(blob), "<ref>")
    assert len(set(reasons.values())) == 1, reasons  # one text: no existence oracle
    assert "ITEMS_REF_CONTAINERS" in reasons["forbidden"] and "exist" not in reasons["forbidden"].replace("existing", "")
    assert stored(stack, collection) == {}
    # What the setting allows (the payload and drop containers by default) is read.
    allowed = put_blob(stack, stack.services.settings.drop_container, "inbox/ok.json", orjson.dumps(make_item("ok")))
    assert run(stack, ref_job("ref-ok", collection, blob=allowed), "ref-ok").state == JobState.SUCCEEDED


def test_dot_segments_empty_names_and_empty_blobs_are_rejected_at_once(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    payloads = stack.services.settings.payload_container
    empty = put_blob(stack, payloads, "inbox/empty.ndjson", b"")
    cases = {"dotdot": (f"{payloads}/../azure-webjobs-secrets/host.json", "plain blob name"),
             "dot": (f"{payloads}/a/./b.json", "plain blob name"),
             "double-slash": (f"{payloads}//b.json", "plain blob name"),
             "backslash": (f"{payloads}/a\\..\\b.json", "plain blob name"),
             "empty": (empty, "is empty")}
    for name, (blob, reason) in cases.items():
        job = run(stack, ref_job(f"bad-{name}", collection, blob=blob), f"bad-{name}")
        assert job.state == JobState.REJECTED and reason in job.error_message, (name, job.error_message)
    ranged = run(stack, ref_job("bad-range", collection, blob=empty, start=0, end=10), "bad-range")
    assert ranged.state == JobState.REJECTED and "is empty" in ranged.error_message
    assert poison_count(stack) == 0  # rejected on the first delivery, never retried to poison


def test_the_containers_setting_replaces_the_default(make_stack) -> None:
    stack = make_stack(settings={"ITEMS_REF_CONTAINERS": "user-items"})
    collection = with_collection(stack)
    mine = put_blob(stack, "user-items", "a.json", orjson.dumps(make_item("mine")))
    payloads = put_blob(stack, stack.services.settings.payload_container, "a.json", orjson.dumps(make_item("p")))
    assert run(stack, ref_job("c-mine", collection, blob=mine), "c-mine").state == JobState.SUCCEEDED
    assert run(stack, ref_job("c-payloads", collection, blob=payloads), "c-payloads").state == JobState.REJECTED


# ----- issue 9, Deliver 4: items_ref reads like uploads ----------------------------------------------


def test_ndjson_blob_is_planned_in_byte_ranged_segments(make_stack) -> None:
    stack = make_stack(settings={"PLAN_SEGMENT_ITEMS": "10", "BATCH_MAX_ITEMS": "4"})
    collection = with_collection(stack)
    items = [make_item(f"n{n:03d}") for n in range(37)]
    lines = ndjson(items[:19]) + b"{not json\n" + ndjson(items[19:])
    blob = put_blob(stack, stack.services.settings.payload_container, "inbox/many.ndjson", lines)
    job = run(stack, ref_job("seg-1", collection, blob=blob), "seg-1")
    assert (job.state, job.item_count, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 38, 37, 1)
    assert job.batch_count == 10  # 38 lines in batches of 4, over four segments of 10 lines
    rejected = {k: v for row in batch_rows(stack, "seg-1").values() for k, v in orjson.loads(row.rejected_items or "{}").items()}
    assert list(rejected) == ["line 20"]
    assert_holds_exactly(stack, collection, [{**item, "collection": collection} for item in items])


def test_a_byte_range_of_an_ndjson_blob(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    lines = [orjson.dumps(make_item(f"r{n}")) + b"\n" for n in range(6)]
    blob = put_blob(stack, stack.services.settings.payload_container, "inbox/range.data", b"".join(lines))
    start, end = len(b"".join(lines[:2])), len(b"".join(lines[:5]))
    job = run(stack, ref_job("range-1", collection, blob=blob, start=start, end=end), "range-1")
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 3)
    assert set(stored(stack, collection)) == {"r2", "r3", "r4"}


def test_gzip_and_json_documents_from_blobs_and_urls(make_stack) -> None:
    stack = source_stack(make_stack)
    items = [make_item(f"z{n}") for n in range(7)]
    payloads = stack.services.settings.payload_container
    jobs = {
        "gz-ndjson-blob": ({"blob": put_blob(stack, payloads, "in/a.ndjson.gz", gzip.compress(ndjson(items)))}, 7),
        "gz-json-blob": ({"blob": put_blob(stack, payloads, "in/a.json.gz", gzip.compress(
            orjson.dumps({"type": "FeatureCollection", "features": items})))}, 7),
        "json-list-blob": ({"blob": put_blob(stack, payloads, "in/list.json", orjson.dumps(items))}, 7),
        "gz-ndjson-url": ({"url": f"{stack.emulator.url}/source/items/items.ndjson.gz"}, 4),
        "gz-json-url": ({"url": f"{stack.emulator.url}/source/items/items.json.gz"}, 4),
        "json-url": ({"url": f"{stack.emulator.url}/source/items/items.json"}, 4),
    }
    for n, (job_id, (ref, count)) in enumerate(jobs.items()):
        collection = with_collection(stack, f"target-{n}")
        job = run(stack, {"v": 1, "job_id": job_id, "collection": collection, "items_ref": ref}, job_id)
        assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, count), (job_id, job.error_message)


def test_an_items_url_redirected_off_the_allowlist_is_refused_and_the_answering_host_is_recorded(make_stack) -> None:
    stack = source_stack(make_stack)
    collection = with_collection(stack)
    base = stack.emulator.url
    evil = run(stack, ref_job("url-evil", collection, url=f"{base}/source/redirect?to=https://evil.example/items.json"), "url-evil")
    assert evil.state == JobState.REJECTED and "SOURCE_URL_ALLOWLIST" in evil.error_message
    meta = run(stack, ref_job("url-meta", collection, url=f"{base}/source/redirect?to=http://169.254.169.254/latest/"), "url-meta")
    assert meta.state == JobState.REJECTED
    assert stored(stack, collection) == {}
    final = base.replace("127.0.0.1", "localhost") + "/source/items/items.json"
    moved = run(stack, ref_job("url-moved", collection, url=f"{base}/source/redirect?to={final}"), "url-moved")
    assert (moved.state, moved.items_succeeded, moved.source) == (JobState.SUCCEEDED, 4, final)
    # A search redirected (307 keeps the POST body) to another allowlisted host: the row names that host.
    search = base.replace("127.0.0.1", "localhost") + "/source/search"
    redirected = {"url": f"{base}/source/redirect?" + urlencode({"to": search, "status": 307}), "params": {"limit": 2}}
    copied = run(stack, {"v": 1, "job_id": "search-moved", "collection": with_collection(stack, "moved"), "search": redirected},
                 "search-moved")
    assert (copied.state, copied.items_succeeded, copied.source) == (JobState.SUCCEEDED, 4, f"search {search}")


def test_loopback_sources_need_the_local_run_setting(make_stack) -> None:
    stack = source_stack(make_stack, SOURCE_ALLOW_LOOPBACK="false")
    collection = with_collection(stack)
    job = run(stack, ref_job("no-loop", collection, url=f"{stack.emulator.url}/source/items/items.json"), "no-loop")
    assert job.state == JobState.REJECTED and "not https" in job.error_message
    assert "GET /source/items/{name}" not in stack.emulator.app.stats.by_route


# ----- issue 9, Deliver 3: the catalog's own search as a source --------------------------------------


def test_the_catalogs_own_search_copies_and_deletes_with_its_token_and_sends_it_nowhere_else(make_stack) -> None:
    stack = source_stack(make_stack)
    first, second = with_collection(stack, "first"), with_collection(stack, "second")
    items = [make_item(f"c{n}") for n in range(5)]
    assert run(stack, {"v": 1, "job_id": "cs-0", "collection": first, "items": items}, "cs-0").state == JobState.SUCCEEDED
    # Copy between collections of the same catalog: a search with no url.
    copy = run(stack, {"v": 1, "job_id": "cs-1", "collection": second,
                       "search": {"params": {"collections": [first], "limit": 2}}}, "cs-1")
    assert (copy.state, copy.items_succeeded) == (JobState.SUCCEEDED, 5)
    copies = stored(stack, second)
    assert set(copies) == {f"c{n}" for n in range(5)}
    sent = [stack.services.payloads.read(row.payload_blob) for row in batch_rows(stack, "cs-1").values() if row.payload_blob]
    assert sent and all(b"_msft:" not in body for body in sent)  # the service's stamps are not copied over
    # Delete what a search of the target catalog finds; the job's collection only (first keeps its copies).
    deleted = run(stack, {"v": 1, "job_id": "cs-2", "collection": second,
                          "delete": {"search": {"params": {"ids": ["c1", "c2"]}}}}, "cs-2")
    assert (deleted.state, deleted.items_succeeded) == (JobState.SUCCEEDED, 2)
    assert set(stored(stack, second)) == {"c0", "c3", "c4"} and len(stored(stack, first)) == 5
    # The catalog's search URL given explicitly, GET: the same, with the token.
    url = f"{stack.emulator.url}/stac/search"
    again = run(stack, {"v": 1, "job_id": "cs-3", "collection": second, "delete": {"search": {
        "url": url, "method": "GET", "params": {"ids": ["c3"], "collections": [second]}}}}, "cs-3")
    assert (again.state, again.items_succeeded) == (JobState.SUCCEEDED, 1)
    # A source on the same host but outside the catalog's search: fetched, never with the token.
    source = run(stack, {"v": 1, "job_id": "cs-4", "collection": second,
                         "search": {"url": f"{stack.emulator.url}/source/search", "params": {"limit": 3}}}, "cs-4")
    assert (source.state, source.items_succeeded) == (JobState.SUCCEEDED, 4)
    # The catalog's path on another origin (localhost, not the endpoint's 127.0.0.1) is a source: no token, so 401.
    other = run(stack, {"v": 1, "job_id": "cs-5", "collection": second, "delete": {"search": {
        "url": url.replace("127.0.0.1", "localhost"), "params": {"ids": ["c0"]}}}}, "cs-5")
    assert other.state == JobState.REJECTED and "401" in other.error_message
    stats = stack.emulator.app.stats
    assert stats.source_authorization == 0 and stats.by_route["POST /source/search"] >= 2
    assert stats.by_route["POST /stac/search"] >= 2 and stats.by_route["GET /stac/search"] >= 1
    assert set(stored(stack, second)) == {"c0", "c4"} | SAMPLE_IDS


def test_a_duplicate_job_message_after_planning_resends_segment_batches_as_claim_checks(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    items = [make_item(f"d{n}") for n in range(5)]
    blob = put_blob(stack, stack.services.settings.payload_container, "inbox/dup.ndjson", ndjson(items))
    body = ref_job("dup-1", collection, blob=blob)
    request, claim = JobRequest.from_json(body), JobClaim.of_delivery(body, "message-1")
    stack.pause_functions()
    now = datetime.now(UTC)
    plan_job(request, job_id="dup-1", claim=claim, services=stack.services, now=now)
    queue = QueueClient.from_connection_string(stack.azurite.connection_string, stack.services.settings.work_queue)
    plans = [m for m in queue.receive_messages(max_messages=32) if '"kind":"plan"' in m.content]
    assert len(plans) == 1
    plan_segment(PlanMessage.from_json(orjson.loads(plans[0].content)), services=stack.services, now=now)
    queue.delete_message(plans[0])
    assert stack.services.status.get_job("dup-1").planned
    plan_job(request, job_id="dup-1", claim=claim, services=stack.services, now=now)  # the job message again, batches Queued
    stack.resume_functions()
    job = wait_for_jobs(stack.services, ["dup-1"], timeout=90)["dup-1"]
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 5)
    assert_holds_exactly(stack, collection, [{**item, "collection": collection} for item in items])


def test_repair_and_upsert_reach_the_batches_of_an_items_ref_job(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    no_bbox = {k: v for k, v in make_item("no-bbox").items() if k != "bbox"}
    first, last = make_item("twice", title="first"), make_item("twice", properties={**make_item("x")["properties"], "title": "last"})
    blob = put_blob(stack, stack.services.settings.payload_container, "inbox/fix.ndjson", ndjson([no_bbox, first, last]))
    plain = run(stack, ref_job("fix-0", collection, blob=blob), "fix-0")
    assert (plain.items_succeeded, plain.items_rejected) == (1, 2)  # no bbox, and the repeated id, are refused
    message = {**ref_job("fix-1", with_collection(stack, "fixed"), blob=blob), "repair": ["bbox"], "mode": "upsert"}
    job = run(stack, message, "fix-1")
    assert (job.state, job.items_succeeded, job.items_superseded, job.items_repaired) == (JobState.SUCCEEDED, 2, 1, 1)
    held = stored(stack, "fixed")
    assert held["no-bbox"]["bbox"] == [-122.5, 47.5, -122.0, 48.0] and held["twice"]["properties"]["title"] == "last"
