"""The quickstart as messages: search a STAC API, sign assets, rewrite collection, ingest; delete; upsert.

The emulator plays the source side too: a public STAC API (/source/search) serving the project's
land-cover samples, and a Planetary Computer SAS API (/source/sas/token/{account}/{container}); with
`require_signed_assets` it refuses items whose asset hrefs carry no valid token, as the real service
cannot copy private assets without one.
"""

from __future__ import annotations

import time

import orjson

from devhost.stack import LocalStack
from emulator import EmulatorOptions, Faults, Timings
from shared.store.status import BatchState, JobState
from tests.conftest import ROOT
from tests.helpers import make_item
from tests.test_pipeline_e2e import batch_rows, catalog, run, sent_to_catalog, stored, with_collection

SAMPLES = ROOT / "examples" / "landcover-items.json"
SOURCE_COLLECTION = "io-lulc-annual-v02"


def quickstart_stack(make_stack, *, sas_seconds: float = 3600, **settings: str) -> LocalStack:
    return make_stack(
        settings={"SOURCE_URL_ALLOWLIST": "127.0.0.1", "SAS_API_URL": "{emulator}/source/sas", **settings},
        emulator_options=EmulatorOptions(timings=Timings(0.05, 0.1), source_items=str(SAMPLES), sas_token_seconds=sas_seconds,
                                         faults=Faults(require_signed_assets=True)),
    )


def search_message(stack: LocalStack, job_id: str, **extra: object) -> dict:
    return {"v": 1, "job_id": job_id, "collection": "landcover-demo",
            "search": {"url": f"{stack.emulator.url}/source/search", "params": {"collections": [SOURCE_COLLECTION], "limit": 2},
                       "max_items": 4}, **extra}


def test_search_sign_rewrite_ingest(make_stack) -> None:
    stack = quickstart_stack(make_stack)
    with_collection(stack, "landcover-demo")
    job = run(stack, search_message(stack, "qs-1", sign="planetary-computer"), "qs-1")
    assert (job.state, job.item_count, job.items_succeeded) == (JobState.SUCCEEDED, 4, 4)
    held, sent = stored(stack, "landcover-demo"), sent_to_catalog(stack, "landcover-demo")
    samples = {f["id"]: f for f in orjson.loads(SAMPLES.read_bytes())["features"]}
    assert set(held) == set(sent) == set(samples)
    for item_id, item in sent.items():
        assert item["collection"] == held[item_id]["collection"] == "landcover-demo"
        href = item["assets"]["data"]["href"]
        assert href.startswith(samples[item_id]["assets"]["data"]["href"] + "?") and "sig=" in href
    # The token went to the service, and nowhere else: not in rows, not in stored payloads or logs.
    rows = [stack.services.status.get_job("qs-1"), *batch_rows(stack, "qs-1").values()]
    assert all("sig=" not in repr(row) for row in rows)
    for row in batch_rows(stack, "qs-1").values():
        assert b"sig=" not in stack.services.payloads.read(row.payload_blob)
        assert "sig=" not in row.logs
        assert not row.logs_blob or b"sig=" not in stack.services.payloads.read(row.logs_blob)


def test_an_ndjson_file_of_items_to_sign_is_signed_in_memory_and_stored_unsigned(make_stack) -> None:
    stack = quickstart_stack(make_stack, BATCH_MAX_ITEMS="3")
    with_collection(stack, "landcover-demo")
    samples = orjson.loads(SAMPLES.read_bytes())["features"]
    lines = b"".join(orjson.dumps({**item, "collection": SOURCE_COLLECTION}) + b"\n" for item in samples)
    blob = stack.services.payloads.put("inbox/qs-3/items.ndjson", lines)
    job = run(stack, {"v": 1, "job_id": "qs-3", "collection": "landcover-demo", "items_ref": {"blob": blob},
                      "sign": "planetary-computer"}, "qs-3")
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, len(samples))
    sent = sent_to_catalog(stack, "landcover-demo")
    assert set(sent) == {item["id"] for item in samples} and all("sig=" in item["assets"]["data"]["href"] for item in sent.values())
    rows = batch_rows(stack, "qs-3").values()
    assert all(row.payload_start is not None and row.payload_blob == blob for row in rows)  # byte ranges, no copy
    assert stack.services.payloads.read(blob) == lines and all("sig=" not in repr(row) for row in rows)


def test_unsigned_assets_are_refused_by_the_service_and_recorded(make_stack) -> None:
    stack = quickstart_stack(make_stack)
    with_collection(stack, "landcover-demo")
    job = run(stack, search_message(stack, "qs-2"), "qs-2")
    assert (job.state, job.items_failed) == (JobState.FAILED, 4)
    failed = {k: v for row in batch_rows(stack, "qs-2").values() for k, v in orjson.loads(row.failed_items or "{}").items()}
    assert set(failed.values()) == {"IngestionResourceForbidden"} and len(failed) == 4


def test_an_expired_sas_token_is_refreshed(make_stack) -> None:
    stack = quickstart_stack(make_stack, sas_seconds=2)
    with_collection(stack, "landcover-demo")
    assert run(stack, search_message(stack, "qs-3a", sign="planetary-computer"), "qs-3a").state == JobState.SUCCEEDED
    time.sleep(2.5)  # the first token has expired now
    second = search_message(stack, "qs-3b", sign="planetary-computer", collection="landcover-two")
    with_collection(stack, "landcover-two")
    assert run(stack, second, "qs-3b").state == JobState.SUCCEEDED  # would be IngestionResourceForbidden with the old token
    assert stack.emulator.app.stats.by_route["GET /source/sas/token/{account}/{container}"] == 2  # one container, two lifetimes


def test_search_hosts_must_be_on_the_allowlist(make_stack) -> None:
    stack = quickstart_stack(make_stack, SOURCE_URL_ALLOWLIST="planetarycomputer.microsoft.com")
    with_collection(stack, "landcover-demo")
    job = run(stack, search_message(stack, "qs-4", sign="planetary-computer"), "qs-4")
    assert job.state == JobState.REJECTED and "SOURCE_URL_ALLOWLIST" in job.error_message
    assert "GET /source/search" not in stack.emulator.app.stats.by_route and "POST /source/search" not in stack.emulator.app.stats.by_route


def test_delete_by_ids_records_missing_ones_without_retrying(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    run(stack, {"v": 1, "job_id": "d-setup", "collection": collection, "items": [make_item("keep"), make_item("drop")]}, "d-setup")
    job = run(stack, {"v": 1, "job_id": "d-1", "collection": collection, "delete": {"ids": ["drop", "never-was"]}}, "d-1")
    assert (job.state, job.items_succeeded, job.items_failed) == (JobState.PARTIALLY_SUCCEEDED, 1, 1)
    assert set(stored(stack, collection)) == {"keep"}
    rows = batch_rows(stack, "d-1")
    missing = next(row for row in rows.values() if "never-was" in row.item_ids)
    assert (missing.state, missing.error_code, missing.attempts) == (BatchState.FAILED, "NoRecordsToDelete", 1)


def test_upsert_replaces_existing_items_and_create_mode_fails_them(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    run(stack, {"v": 1, "job_id": "u-0", "collection": collection, "items": [make_item("a"), make_item("b")]}, "u-0")
    newer = [make_item("a", properties={"datetime": "2024-01-01T00:00:00Z", "title": "v2"}), make_item("c")]
    created = run(stack, {"v": 1, "job_id": "u-1", "collection": collection, "items": newer}, "u-1")
    assert (created.items_succeeded, created.items_failed) == (1, 1)
    failed = {k: v for row in batch_rows(stack, "u-1").values() for k, v in orjson.loads(row.failed_items or "{}").items()}
    assert failed == {"a": "ItemAlreadyExistsInCollection"}
    newer[1] = make_item("d")
    upserted = run(stack, {"v": 1, "job_id": "u-2", "collection": collection, "items": newer, "mode": "upsert"}, "u-2")
    assert (upserted.state, upserted.items_succeeded, upserted.items_failed) == (JobState.SUCCEEDED, 2, 0)
    assert catalog(stack).get_item(collection, "a")["properties"]["title"] == "v2"
    assert any(row.action == "replace" and row.state == BatchState.SUCCEEDED for row in batch_rows(stack, "u-2").values())


def test_delete_by_search_removes_what_the_search_finds(make_stack) -> None:
    stack = quickstart_stack(make_stack)
    with_collection(stack, "landcover-demo")
    run(stack, search_message(stack, "qs-5a", sign="planetary-computer"), "qs-5a")
    search = {"url": f"{stack.emulator.url}/source/search", "params": {"ids": ["23M-2023", "24L-2023"]}, "method": "GET"}
    job = run(stack, {"v": 1, "job_id": "qs-5b", "collection": "landcover-demo", "delete": {"search": search}}, "qs-5b")
    assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 2)
    assert set(stored(stack, "landcover-demo")) == {"23L-2023", "24M-2023"}
