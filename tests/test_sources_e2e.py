"""End to end (Azurite + the GeoCatalog emulator): STAC GeoParquet and static catalogs as sources (issue 25).

GeoParquet: uploads, `items_ref` to a blob and to an allowlisted URL, planned row group by row group in
segments; each row gets the verdict its NDJSON line gets, and a row that is not an item is one Rejected
item `row N`. Static catalogs: `catalog.blob` and `catalog.url`, a cycle visited once, unreachable links
and links that leave the catalog's folder or host Rejected with the link as label (no query string).
"""

from __future__ import annotations

import copy
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import rustac

from cli import submit as submit_impl
from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from devhost.static_files import served
from shared.messages import JobRequest
from shared.retry import source_items
from shared.services import Storage
from shared.steps.handlers import handle_blob_event
from shared.store import JobRow, JobState, batch_outcomes
from tests.corpus import corpus_items
from tests.test_cli import invoke
from tests.test_items_ref import ndjson, put_blob, ref_job, source_stack
from tests.test_pipeline_e2e import run, sent_to_catalog, stored, with_collection
from tests.test_uploads_e2e import _event_for, _work_queue, upload

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CATALOG = ROOT / "examples" / "naip-catalog"
EXAMPLE_PARQUET = ROOT / "examples" / "naip-items.parquet"
EXAMPLE_IDS = {path.stem for path in EXAMPLE_CATALOG.glob("naip/*/*.json")}


def naip_items(count: int) -> list[dict[str, Any]]:
    return copy.deepcopy(corpus_items("pgstac-pc-naip-items-300.ndjson")[:count])


def items_with_problems() -> list[dict[str, Any]]:
    """20 corpus items, 3 of them refused by validation (a bad id, no datetime, a repeated id)."""
    items = naip_items(20)
    items[3]["id"] = "bad id!"
    items[7]["properties"]["datetime"] = None
    items[15]["id"] = items[14]["id"]
    return items


def parquet(items: list[dict[str, Any]], path: Path, *, row_group_rows: int | None = None) -> bytes:
    rustac.write_sync(str(path), items)
    if row_group_rows:
        pq.write_table(pq.read_table(path), path, row_group_size=row_group_rows)
    return path.read_bytes()


def corrupt_geometry(path: Path, row: int, row_group_rows: int) -> bytes:
    """One row's geometry replaced by bytes that are not WKB: a row rustac cannot turn into an item."""
    table = pq.read_table(path)
    index = table.schema.get_field_index("geometry")
    values = table["geometry"].to_pylist()
    values[row] = b"\x01\x02 not wkb"
    table = table.set_column(index, table.schema.field(index), pa.array(values, type=table.schema.field(index).type))
    pq.write_table(table, path, row_group_size=row_group_rows)
    return path.read_bytes()


def verdicts(stack: LocalStack, job_id: str) -> dict[str, tuple[str, str, str]]:
    """Every item of the job and how it ended: label or id -> (state, code, message), `row N` read as `line N`."""
    def same(text: str) -> str:
        return re.sub(r"\brow (\d+)", r"line \1", text)

    return {same(o.item): (str(o.state), o.code, same(o.message))
            for row in stack.services.status.batches(job_id) for o in batch_outcomes(row, read=stack.services.payloads.read)}


def problems(stack: LocalStack, job_id: str) -> dict[str, str]:
    return {k: v for row in stack.services.status.batches(job_id) for k, v in orjson.loads(row.rejected_items or "{}").items()}


def settled(stack: LocalStack, job_id: str, timeout: float = 180) -> JobRow:
    return wait_for_jobs(stack.services, [job_id], timeout=timeout)[job_id]


# ----- GeoParquet --------------------------------------------------------------------------------------


def test_geoparquet_rows_get_the_verdicts_their_ndjson_lines_get(make_stack, tmp_path: Path) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "6"})
    items = items_with_problems()
    as_ndjson = put_blob(stack, stack.services.settings.payload_container, "in/items.ndjson", ndjson(items))
    as_parquet = put_blob(stack, stack.services.settings.payload_container, "in/items.parquet",
                          parquet(items, tmp_path / "items.parquet", row_group_rows=7))
    jobs = {}
    for name, blob in (("ndjson", as_ndjson), ("parquet", as_parquet)):
        collection = with_collection(stack, f"naip-{name}")
        jobs[name] = run(stack, ref_job(f"same-{name}", collection, blob=blob), f"same-{name}", timeout=180)
    ndjson_job, parquet_job = jobs["ndjson"], jobs["parquet"]
    assert parquet_job.state == ndjson_job.state == JobState.PARTIALLY_SUCCEEDED
    assert (parquet_job.item_count, parquet_job.items_succeeded, parquet_job.items_rejected) == \
           (ndjson_job.item_count, ndjson_job.items_succeeded, ndjson_job.items_rejected) == (20, 17, 3)
    assert verdicts(stack, "same-parquet") == verdicts(stack, "same-ndjson")
    assert set(problems(stack, "same-parquet")) == {"row 4", "row 8", "row 16"}
    assert set(stored(stack, "naip-parquet")) == set(stored(stack, "naip-ndjson"))
    storage = Storage(stack.services.status, stack.services.queues, stack.services.payloads, stack.services.items)
    again = source_items(storage, stack.services.settings, parquet_job, {"row 4", "row 8"})  # what `retry` resends
    assert {key: item["id"] for key, item in again.items()} == {"row 4": "bad id!", "row 8": items[7]["id"]}


def test_a_geoparquet_upload_is_planned_in_segments_and_a_bad_row_is_one_rejected_item(make_stack, tmp_path: Path) -> None:
    stack = make_stack(settings={"PLAN_SEGMENT_ITEMS": "8", "BATCH_MAX_ITEMS": "5"})
    collection = with_collection(stack, "naip")
    items = naip_items(30)
    path = tmp_path / "nightly.parquet"
    parquet(items, path)
    data = corrupt_geometry(path, row=9, row_group_rows=4)  # row 10, in the third row group
    job = settled(stack, upload(stack, f"{collection}/nightly.parquet", data))
    assert (job.state, job.item_count, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 30, 29, 1)
    reasons = problems(stack, job.job_id)
    assert list(reasons) == ["row 10"] and "not a STAC item" in reasons["row 10"]
    rejected = [row for row in stack.services.status.batches(job.job_id) if row.items_rejected]
    assert [(row.batch_id, row.error_code) for row in rejected] == [("rejected-row-10", "InvalidInput")]
    assert set(stored(stack, collection)) == {item["id"] for n, item in enumerate(items) if n != 9}
    # Segments end at the first row-group end after 8 rows (1-8, 9-16, 17-24, 25-30): no batch spans two, and
    # the bad row ends the batch before it (a chunk holds consecutive rows).
    batches = {row.first_line: row.item_count for row in stack.services.status.batches(job.job_id) if row.first_line}
    assert batches == {1: 5, 6: 3, 9: 1, 11: 5, 16: 1, 17: 5, 22: 3, 25: 5, 30: 1}


def test_a_geoparquet_segment_ends_at_a_row_group_end_once_the_work_queue_is_full(make_stack, tmp_path: Path) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "5", "PLAN_AHEAD_BATCHES": "3"})
    collection = with_collection(stack, "naip")
    items = naip_items(120)
    stack.pause_functions()
    name = f"{collection}/ahead.parquet"
    job_id = upload(stack, name, parquet(items, tmp_path / "ahead.parquet", row_group_rows=10))
    handle_blob_event(_event_for(stack, name), dequeue_count=1, services=stack.services, now=datetime.now(UTC))
    # The queue is asked once 16 batches' rows (80) were taken: it was full, so the segment ends at row 80.
    kinds = [orjson.loads(m.content)["kind"] for m in _work_queue(stack).peek_messages(max_messages=32)]
    assert sorted(kinds) == ["batch"] * 16 + ["plan"] and kinds[-1] == "plan"
    stack.resume_functions()
    job = wait_for_jobs(stack.services, [job_id], timeout=120)[job_id]
    assert (job.state, job.item_count, job.batch_count, job.items_succeeded) == (JobState.SUCCEEDED, 120, 24, 120)
    assert set(stored(stack, collection)) == {item["id"] for item in items}


def test_a_geoparquet_url_is_copied_then_read_in_ranges(make_stack, tmp_path: Path) -> None:
    stack = source_stack(make_stack)
    collection = with_collection(stack, "naip")
    shutil.copy(EXAMPLE_PARQUET, tmp_path / "items.geoparquet")
    (tmp_path / "export").write_bytes(EXAMPLE_PARQUET.read_bytes())  # no suffix: told by its PAR1 magic bytes
    with served(tmp_path) as server:
        for name in ("items.geoparquet", "export"):
            job_id = f"url-{name.split('.')[0]}"
            job = run(stack, {"v": 1, "job_id": job_id, "collection": collection, "mode": "upsert",
                              "items_ref": {"url": f"{server.url}/{name}?sig=secret"}}, job_id)
            assert (job.state, job.items_succeeded) == (JobState.SUCCEEDED, 5), job.error_message
    assert set(stored(stack, collection)) == EXAMPLE_IDS


def test_a_file_that_is_not_geoparquet_is_rejected_with_a_reason(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack, "naip")
    job = settled(stack, upload(stack, f"{collection}/broken.parquet", b"PAR1 this is no parquet file PAR1"))
    assert job.state == JobState.REJECTED and "Parquet" in job.error_message


# ----- static catalogs ---------------------------------------------------------------------------------


def catalog_tree(tmp_path: Path) -> Path:
    """The example catalog, plus a cycle (a child link back to the root), an unreachable item link (with a
    query string), a link that leaves the catalog's folder, and an item with a relative asset href."""
    tree = tmp_path / "tree" / "naip-catalog"
    shutil.copytree(EXAMPLE_CATALOG, tree)
    (tmp_path / "tree" / "outside.json").write_bytes(orjson.dumps(naip_items(6)[5]))
    collection_file = tree / "naip" / "collection.json"
    collection = orjson.loads(collection_file.read_bytes())
    collection["links"] += [{"rel": "child", "href": "../catalog.json"},
                            {"rel": "item", "href": "./missing/missing.json?sig=secret"},
                            {"rel": "item", "href": "../../outside.json"}]
    collection_file.write_bytes(orjson.dumps(collection))
    item_file = next(tree.glob("naip/al_m_3008501_ne_16_030_20211103/*.json"))
    item = orjson.loads(item_file.read_bytes())
    item["assets"]["thumbnail"]["href"] = "./thumb.jpg"
    item_file.write_bytes(orjson.dumps(item))
    return tree


def test_a_static_catalog_in_blobs_is_walked_once_and_its_bad_links_are_rejected(make_stack, tmp_path: Path) -> None:
    stack = make_stack(settings={"BATCH_MAX_ITEMS": "2"})
    collection = with_collection(stack, "naip")
    tree = catalog_tree(tmp_path)
    container = stack.services.settings.payload_container
    for path in tree.parent.rglob("*.json"):
        put_blob(stack, container, f"jobs/cat/{path.relative_to(tree.parent).as_posix()}", path.read_bytes())
    job = run(stack, {"v": 1, "job_id": "cat-blob", "catalog": {"blob": f"{container}/jobs/cat/naip-catalog/catalog.json"}},
              "cat-blob", timeout=180)
    assert (job.state, job.item_count, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 7, 5, 2)
    assert set(stored(stack, collection)) == EXAMPLE_IDS
    reasons = problems(stack, "cat-blob")
    prefix = f"{container}/jobs/cat/naip-catalog/naip"
    assert reasons == {f"{prefix}/missing/missing.json": f"unreachable: blob '{prefix}/missing/missing.json' does not exist",
                       f"{container}/jobs/cat/outside.json": "the link leaves the catalog's folder"}
    assert "secret" not in orjson.dumps([row.__dict__ for row in stack.services.status.batches("cat-blob")], default=str).decode()
    sent = sent_to_catalog(stack, collection)["al_m_3008501_ne_16_030_20211103"]
    blob_url = stack.services.payloads.url(f"{prefix}/al_m_3008501_ne_16_030_20211103/thumb.jpg")
    assert sent["assets"]["thumbnail"]["href"] == blob_url


def test_a_static_catalog_url_is_walked_through_the_guarded_path(make_stack, tmp_path: Path) -> None:
    stack = source_stack(make_stack)
    collection = with_collection(stack, "naip")
    tree = catalog_tree(tmp_path)
    with served(tree.parent) as server:
        root = f"{server.url}/naip-catalog/catalog.json"
        job = run(stack, {"v": 1, "job_id": "cat-url", "catalog": {"url": root}}, "cat-url", timeout=180)
        catalog_reads = [path for path in server.requests if path.endswith("catalog.json")]
    assert (job.state, job.item_count, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 7, 6, 1)
    assert catalog_reads == ["/naip-catalog/catalog.json"]  # the cycle back to the root is not followed again
    assert set(stored(stack, collection)) == EXAMPLE_IDS | {naip_items(6)[5]["id"]}  # a URL catalog may use its host
    reasons = problems(stack, "cat-url")
    missing = f"{server.url}/naip-catalog/naip/missing/missing.json"
    assert list(reasons) == [missing] and reasons[missing].startswith("unreachable: ")
    assert "secret" not in orjson.dumps([row.__dict__ for row in stack.services.status.batches("cat-url")], default=str).decode()
    sent = sent_to_catalog(stack, collection)["al_m_3008501_ne_16_030_20211103"]
    assert sent["assets"]["thumbnail"]["href"] == f"{server.url}/naip-catalog/naip/al_m_3008501_ne_16_030_20211103/thumb.jpg"


def test_a_catalog_link_to_another_host_is_rejected_unfetched(make_stack, tmp_path: Path) -> None:
    stack = source_stack(make_stack)
    collection = with_collection(stack, "naip")
    tree = tmp_path / "c"
    tree.mkdir()
    item = naip_items(1)[0]
    (tree / "item.json").write_bytes(orjson.dumps(item))
    with served(tree) as server:
        (tree / "catalog.json").write_bytes(orjson.dumps({
            "type": "Catalog", "id": "c", "stac_version": "1.1.0", "description": "d",
            "links": [{"rel": "item", "href": "./item.json"},
                      {"rel": "item", "href": f"http://localhost:{server.server_address[1]}/item.json"}]}))
        job = run(stack, {"v": 1, "job_id": "cat-host", "catalog": {"url": f"{server.url}/catalog.json"}}, "cat-host")
        asked = list(server.requests)
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 1, 1)
    assert list(problems(stack, "cat-host").values()) == ["the link leaves the catalog's host"]
    assert asked == ["/catalog.json", "/item.json"]
    assert set(stored(stack, collection)) == {item["id"]}


def test_a_catalog_blob_outside_the_allowed_containers_is_refused(make_stack) -> None:
    stack = make_stack()
    job = run(stack, {"v": 1, "job_id": "cat-secret", "collection": "naip",
                      "catalog": {"blob": "azure-webjobs-secrets/catalog.json"}}, "cat-secret")
    assert job.state == JobState.REJECTED and "catalog.blob" in job.error_message and "ITEMS_REF_CONTAINERS" in job.error_message


# ----- the command line ----------------------------------------------------------------------------------


def test_submit_a_geoparquet_file_and_a_catalog_on_disk(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack, "naip")
    validate = jsonschema_rs.validator_for(orjson.loads((ROOT / "schemas" / "messages.schema.json").read_bytes())).validate
    for args, job_id in (((str(EXAMPLE_PARQUET),), "cli-parquet"), (("--catalog", str(EXAMPLE_CATALOG / "catalog.json")), "cli-cat")):
        result = invoke("submit", *args, "--job-id", job_id, "--mode", "upsert", "--watch")
        assert result.exit_code == 0, result.output
        assert f"{job_id} Succeeded settled 5/5 succeeded 5" in result.stdout
    assert set(stored(stack, collection)) == EXAMPLE_IDS
    container = stack.services.settings.payload_container
    uploaded = {blob.name for blob in stack.services.payloads._service.get_container_client(container)  # noqa: SLF001
                .list_blobs(name_starts_with="inbox/cli-cat/catalog/")}
    assert uploaded == {"inbox/cli-cat/catalog/catalog.json", "inbox/cli-cat/catalog/naip/collection.json"} | {
        f"inbox/cli-cat/catalog/naip/{item_id}/{item_id}.json" for item_id in EXAMPLE_IDS}
    options = submit_impl.Options(collection="naip")
    storage = Storage(stack.services.status, stack.services.queues, stack.services.payloads, stack.services.items)
    by_url = submit_impl.prepare_catalog("https://example.com/stac/catalog.json", job_id="u-1", options=options,
                                         storage=storage)
    parquet_job = submit_impl.prepare_parquet(EXAMPLE_PARQUET, job_id="p-1", options=submit_impl.Options(), storage=storage)
    assert parquet_job.collection == "naip"
    for prepared in (by_url, parquet_job):
        validate(prepared.body)
        JobRequest.from_json(prepared.body)
