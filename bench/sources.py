"""Fanning out the new sources (issue 25): STAC GeoParquet and a static catalog, each beside the NDJSON of the same items.

Everything runs against Azurite and the GeoCatalog emulator, each measured run in a fresh child process
(peak RSS is that process's VmHWM: the interpreter, pyarrow, rustac and the Azure SDKs included):

1. `geoparquet`: a `.parquet` blob planned the way the function plans it, segment after segment
   (`segments.plan_segment` for the first, then every continuation it hands on, taken from the sender
   instead of the queue hop): rows read row group by row group through ranged reads, batch chunk blobs
   written, batch rows created and batch messages sent. Baseline: the NDJSON of the same items, uploaded
   and planned the same way (byte-range batches, no chunk blobs). At each size in `--sizes`; flat memory
   means the same peak RSS at 100k and 1M rows. The files are written once, in a temp dir, from a real
   item of ../shared/data/stac-real/ (`--template point`: a 0.4 KB point item, so that 1M rows take
   minutes; `naip`: the 300 NAIP items, 2.9 KB each), ids made unique, 10,000 rows per row group.
2. `catalog`: a static catalog of `--catalog-items` items (a root catalog.json, one child collection per
   1,000 items, one JSON file per item) planned by `plan_job` from `catalog.blob` (one blob read per
   document), and from `catalog.url` served by a local file server (through the guarded fetch path).
   Baseline: the NDJSON of the same items as an `items_ref` blob job. `--catalog-latency-ms N` adds a
   run of `catalog.url` whose server holds each answer N ms (a remote host's round trip, which the
   local server does not have: there the walk is bound by CPU, here by waiting).

    .venv/bin/python -m bench.sources [--sizes 100000,1000000] [--baseline-sizes 100000] [--template point|naip]
                                      [--catalog-items 10000] [--catalog-latency-ms 0] [--only geoparquet|catalog]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.geoparquet_memory import peak_rss_mb
from bench.geoparquet_memory import templates as naip_templates

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = "bench"
ROW_GROUP = 10_000
ITEMS_PER_COLLECTION = 1_000
POINT_ITEM = ROOT.parent / "shared" / "data" / "stac-real" / "stac-server-example-sample-item-point.json"


def templates(name: str) -> list[dict[str, Any]]:
    """`naip`: the 300 NAIP items of the corpus (~2.9 KB each); `point`: one small point item (~0.4 KB)."""
    return naip_templates() if name == "naip" else [orjson.loads(POINT_ITEM.read_bytes())]


def write_geoparquet(path: Path, count: int, items: list[dict[str, Any]]) -> int:
    """`count` rows: rustac writes one row group of the templates, then pyarrow repeats it with new ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rustac

    base_path = path.with_suffix(".base.parquet")
    rustac.write_sync(str(base_path), [items[n % len(items)] for n in range(ROW_GROUP)])
    base = pq.read_table(base_path)
    base_path.unlink()
    column = base.schema.get_field_index("id")
    with pq.ParquetWriter(path, base.schema) as writer:
        for start in range(0, count, ROW_GROUP):
            rows = min(ROW_GROUP, count - start)
            ids = pa.array([f"bench-{n:08d}" for n in range(start, start + rows)])
            writer.write_table(base.slice(0, rows).set_column(column, "id", ids), row_group_size=ROW_GROUP)
    return path.stat().st_size


def write_ndjson_of(parquet: Path, path: Path) -> int:
    """The NDJSON of exactly the items the GeoParquet file holds (as the reader gives them back)."""
    from shared.inputs.geoparquet import GeoParquetReader

    with parquet.open("rb") as file, path.open("wb") as out:
        for _, item in GeoParquetReader(file).rows():
            out.write(orjson.dumps(item) + b"\n")
    return path.stat().st_size


def write_catalog(folder: Path, count: int) -> list[bytes]:
    """A root catalog, one collection per 1,000 items, one file per item; returns the items' NDJSON lines."""
    items = naip_templates()
    lines: list[bytes] = []
    collections = []
    for first in range(0, count, ITEMS_PER_COLLECTION):
        name = f"part-{first // ITEMS_PER_COLLECTION:03d}"
        links = []
        for n in range(first, min(first + ITEMS_PER_COLLECTION, count)):
            item_id = f"bench-{n:08d}"
            item = {**items[n % len(items)], "id": item_id, "collection": "bench", "links": []}
            (folder / name / item_id).mkdir(parents=True)
            (folder / name / item_id / f"{item_id}.json").write_bytes(orjson.dumps(item))
            lines.append(orjson.dumps(item))
            links.append({"rel": "item", "href": f"./{item_id}/{item_id}.json"})
        (folder / name / "collection.json").write_bytes(orjson.dumps(
            {"type": "Collection", "id": name, "stac_version": "1.1.0", "description": name, "links": links}))
        collections.append({"rel": "child", "href": f"./{name}/collection.json"})
    (folder / "catalog.json").write_bytes(orjson.dumps(
        {"type": "Catalog", "id": "bench", "stac_version": "1.1.0", "description": "bench", "links": collections}))
    return lines


# ----- children ------------------------------------------------------------------------------------------


def child_plan_file(env: dict[str, str], blob: str, etag: str) -> dict[str, float]:
    """Plan a stored file (GeoParquet or NDJSON) segment after segment, as the function does."""
    from bench.hand_on import HandOnInProcess
    from shared.messages import PlanMessage
    from shared.services import build_services
    from shared.settings import Settings
    from shared.steps.segments import plan_segment
    from shared.store import JobRow

    services = build_services(Settings.from_env(env))
    sender = services.queues = HandOnInProcess(services.queues)
    now = datetime.now(UTC)
    job_id = "bench-" + blob.rsplit("/", 1)[-1].replace(".", "-")
    services.status.create_job(JobRow(job_id=job_id, claimed_by="bench"), now)
    started = time.perf_counter()
    plan_segment(PlanMessage(job_id, blob, etag, "bench", claimed_by="bench"), services=services, now=now)
    segments = 1
    while sender.plans:
        plan_segment(PlanMessage.from_json(orjson.loads(sender.plans.pop())), services=services, now=now)
        segments += 1
    elapsed = time.perf_counter() - started
    job = services.status.get_job(job_id)
    if job is None or not job.planned:
        raise RuntimeError(f"{blob} was not planned: {job}")
    return {"items": job.item_count, "batches": job.batch_count, "segments": segments, "seconds": elapsed}


def child_plan_job(env: dict[str, str], body: dict[str, Any]) -> dict[str, float]:
    """Plan a job message (a catalog, or an items_ref), and every plan message it hands on."""
    from bench.hand_on import HandOnInProcess
    from shared.messages import JobRequest, PlanMessage
    from shared.services import build_services
    from shared.settings import Settings
    from shared.steps.job_claims import JobClaim
    from shared.steps.planning import plan_job
    from shared.steps.segments import plan_segment

    services = build_services(Settings.from_env(env))
    sender = services.queues = HandOnInProcess(services.queues)
    now = datetime.now(UTC)
    started = time.perf_counter()
    plan_job(JobRequest.from_json(body), job_id=body["job_id"], claim=JobClaim.of_delivery(body, "bench-message"),
             services=services, now=now)
    while sender.plans:
        plan_segment(PlanMessage.from_json(orjson.loads(sender.plans.pop())), services=services, now=now)
    elapsed = time.perf_counter() - started
    job = services.status.get_job(body["job_id"])
    if job is None or not job.planned:
        raise RuntimeError(f"job {body['job_id']} was not planned: {job}")
    return {"items": job.item_count, "batches": job.batch_count, "seconds": elapsed, "rejected": job.items_rejected}


def run_child(spec: dict[str, Any]) -> dict[str, float]:
    output = subprocess.run([sys.executable, "-m", "bench.sources", "--child", json.dumps(spec)], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def child_main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    if spec["mode"] == "file":
        figures = child_plan_file(spec["env"], spec["blob"], spec["etag"])
    else:
        figures = child_plan_job(spec["env"], spec["body"])
    figures["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(figures))


# ----- the run ---------------------------------------------------------------------------------------


def upload_file(service: Any, path: Path, name: str) -> tuple[str, str]:
    with path.open("rb") as data:
        result = service.get_blob_client(CONTAINER, name).upload_blob(data, overwrite=True, max_concurrency=2)
    return f"{CONTAINER}/{name}", str(result["etag"]).strip('"')


def bench_geoparquet(sizes: list[int], baseline_sizes: list[int], template: str, env: dict[str, str], service: Any,
                     tmp: Path) -> list[tuple[str, int, float, dict]]:
    rows = []
    for size in sizes:
        parquet = tmp / f"items-{template}-{size}.parquet"
        parquet_bytes = write_geoparquet(parquet, size, templates(template))
        ndjson = tmp / f"items-{template}-{size}.ndjson"
        runs = [("GeoParquet upload planner", parquet, parquet_bytes)]
        if size in baseline_sizes:
            runs.append(("NDJSON of the same items (baseline)", ndjson, write_ndjson_of(parquet, ndjson)))
        for label, path, nbytes in runs:
            blob, etag = upload_file(service, path, path.name)
            path.unlink()
            figures = run_child({"mode": "file", "env": env, "blob": blob, "etag": etag})
            if figures["items"] != size:
                raise SystemExit(f"{label}: planned {figures}, expected {size} items")
            rows.append((label, size, nbytes / 1e6, figures))
            print(f"  {label:<40}{size:>10,}{nbytes / 1e6:>10.1f}{figures['items'] / figures['seconds']:>10,.0f}"
                  f"{figures['peak_rss_mb']:>13,.0f}{figures['segments']:>10}", flush=True)
    return rows


def bench_catalog(count: int, env: dict[str, str], service: Any, tmp: Path, latency_ms: float = 0.0) -> None:
    from devhost.static_files import served

    folder = tmp / "catalog"
    lines = write_catalog(folder, count)
    started = time.perf_counter()
    for path in folder.rglob("*.json"):
        service.get_blob_client(CONTAINER, f"cat/{path.relative_to(folder).as_posix()}").upload_blob(path.read_bytes(), overwrite=True)
    print(f"  (uploaded {count + count // ITEMS_PER_COLLECTION + 1} documents to Azurite in {time.perf_counter() - started:.0f} s)")
    ndjson = tmp / "catalog.ndjson"
    ndjson.write_bytes(b"\n".join(lines) + b"\n")
    blob, _ = upload_file(service, ndjson, "catalog-items.ndjson")
    runs = [("static catalog, catalog.blob", {"catalog": {"blob": f"{CONTAINER}/cat/catalog.json"}}),
            ("NDJSON of the same items (baseline)", {"items_ref": {"blob": blob}})]
    with served(folder) as server, served(folder, delay_seconds=latency_ms / 1000) as distant:
        runs.insert(1, ("static catalog, catalog.url (local server)", {"catalog": {"url": f"{server.url}/catalog.json"}}))
        if latency_ms:
            runs.insert(2, (f"static catalog, catalog.url (+{latency_ms:g} ms per GET)",
                            {"catalog": {"url": f"{distant.url}/catalog.json"}}))
        for number, (label, source) in enumerate(runs):
            body = {"v": 1, "job_id": f"bench-cat-{number}", "collection": "bench", **source}
            figures = run_child({"mode": "job", "env": env, "body": body})
            if figures["items"] != count or figures["rejected"]:
                raise SystemExit(f"{label}: planned {figures}, expected {count} items")
            print(f"  {label:<48}{count:>8,}{figures['items'] / figures['seconds']:>10,.0f}{figures['peak_rss_mb']:>13,.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--baseline-sizes", default=None, help="sizes that also plan the NDJSON baseline (default: all)")
    parser.add_argument("--template", choices=["naip", "point"], default="point",
                        help="GeoParquet rows: small point items (default) or the corpus's NAIP items")
    parser.add_argument("--catalog-items", type=int, default=10_000)
    parser.add_argument("--catalog-latency-ms", type=float, default=0.0,
                        help="also walk catalog.url from a server that holds each answer this long")
    parser.add_argument("--only", choices=["geoparquet", "catalog"], default=None)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return

    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from emulator import EmulatorServer

    with Azurite() as azurite, EmulatorServer() as emulator, tempfile.TemporaryDirectory() as folder:
        emulator.call(lambda: emulator.catalog.put_collection({"type": "Collection", "id": "bench", "stac_version": "1.1.0",
                                                               "description": "bench", "license": "other", "links": [],
                                                               "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                                                          "temporal": {"interval": [[None, None]]}}}))
        env = {"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": emulator.url,
               "GEOCATALOG_TOKEN": "unused", "BATCH_MAX_ITEMS": "100", "ITEMS_REF_CONTAINERS": CONTAINER,
               "SOURCE_URL_ALLOWLIST": "127.0.0.1", "SOURCE_ALLOW_LOOPBACK": "true"}
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        service.create_container(CONTAINER)
        tmp = Path(folder)
        if args.only in (None, "geoparquet"):
            print(f"GeoParquet fan-out ({args.template} items, row groups of {ROW_GROUP:,}, PLAN_SEGMENT_ITEMS default, "
                  "BATCH_MAX_ITEMS 100)")
            print(f"  {'':<40}{'items':>10}{'file MB':>10}{'items/s':>10}{'peak RSS MB':>13}{'segments':>10}")
            sizes = [int(size) for size in args.sizes.split(",")]
            baseline_sizes = sizes if args.baseline_sizes is None else [int(s) for s in args.baseline_sizes.split(",") if s]
            bench_geoparquet(sizes, baseline_sizes, args.template, env, service, tmp)
        if args.only in (None, "catalog"):
            print(f"static catalog of {args.catalog_items:,} items ({ITEMS_PER_COLLECTION:,} per collection), planned to batches")
            print(f"  {'':<48}{'items':>8}{'items/s':>10}{'peak RSS MB':>13}")
            bench_catalog(args.catalog_items, env, service, tmp, args.catalog_latency_ms)


if __name__ == "__main__":
    main()
