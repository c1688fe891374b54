"""Fanning out a large NDJSON file: the planner's peak memory and speed, for uploads and for
`items_ref` jobs, against a naive reader.

Generates NDJSON files at run time from real item templates in ../shared/data/stac-real/ (ids made
unique), uploads them to Azurite, and runs in a fresh child process each:
- the upload planner: `shared.steps.segments` planning every segment of the blob, exactly as the function
  does (reading the stored blob as a stream, writing batch rows and sending batch messages to Azurite);
- the items_ref job: a `{"items_ref": {"blob": ...}}` job message planned by `plan_job`, then every
  plan message it hands on planned by `plan_segment` (the handler's calls, in one process: plan
  messages are taken from the sender instead of making the queue hop; against the emulator);
- the baseline: download the whole blob, `readlines()`, and `json.loads` every line.
Each child reports its peak RSS and items/s. The baseline only runs on the smaller file: on the
large one it would need many GB.

    .venv/bin/python -m bench.fanout_memory [--sizes 100000,1000000] [--baseline-size 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "stac-real"
TEMPLATES = [  # small and mid-sized real items
    "stac-server-example-sample-item-point.json",
    "pc-naip-2.json",
    "pystac-spec-examples-1.1.0-core-item.json",
    "pc-ingest-items.ndjson",
]


def template_lines() -> list[bytes]:
    items = []
    for name in TEMPLATES:
        data = (CORPUS / name).read_bytes()
        items += [orjson.loads(line) for line in data.splitlines() if line.strip()] if name.endswith(".ndjson") else [orjson.loads(data)]
    return [orjson.dumps({**item, "id": "__ID__"}) for item in items]


def write_ndjson(path: Path, count: int) -> int:
    templates = template_lines()
    with path.open("wb") as out:
        for n in range(count):
            out.write(templates[n % len(templates)].replace(b"__ID__", f"bench-{n:08d}".encode()) + b"\n")
    return path.stat().st_size


def child_planner(env: dict[str, str], blob: str, etag: str) -> dict[str, float]:
    from shared.messages import PlanMessage
    from shared.services import build_services
    from shared.settings import Settings
    from shared.steps.segments import _plan_ndjson_segment
    from shared.store import JobRow

    services = build_services(Settings.from_env(env))
    now = datetime.now(UTC)
    services.status.create_job(JobRow(job_id="bench"), now)
    message = PlanMessage("bench", blob, etag, "bench")
    started = time.perf_counter()
    segments = 0
    while True:  # the same hand-offs the function makes through the queue, without the queue hop
        done, message = _plan_ndjson_segment(message, "bench", services=services, now=now)
        segments += 1
        if done:
            break
    elapsed = time.perf_counter() - started
    return {"items": message.items_before, "batches": message.next_batch - 1, "segments": segments, "seconds": elapsed}


def child_items_ref(env: dict[str, str], blob: str, etag: str) -> dict[str, float]:
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
    body = {"v": 1, "job_id": "bench-ref", "collection": "bench", "items_ref": {"blob": blob}}
    plan_job(JobRequest.from_json(body), job_id="bench-ref", claim=JobClaim.of_delivery(body, "bench-message"), services=services, now=now)
    segments = 0
    while sender.plans:
        plan_segment(PlanMessage.from_json(orjson.loads(sender.plans.pop())), services=services, now=now)
        segments += 1
    elapsed = time.perf_counter() - started
    job = services.status.get_job("bench-ref")
    if job is None or not job.planned:
        raise RuntimeError(f"the items_ref job was not planned: {job}")
    return {"items": job.item_count, "batches": job.batch_count, "segments": segments, "seconds": elapsed}


def child_baseline(env: dict[str, str], blob: str, etag: str) -> dict[str, float]:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(env["AzureWebJobsStorage"])
    container, path = blob.split("/", 1)
    started = time.perf_counter()
    lines = service.get_blob_client(container, path).download_blob().readall().splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return {"items": len(items), "seconds": time.perf_counter() - started}


def run_child(mode: str, env: dict[str, str], blob: str, etag: str) -> dict[str, float]:
    spec = json.dumps({"mode": mode, "env": env, "blob": blob, "etag": etag})
    output = subprocess.run([sys.executable, "-m", "bench.fanout_memory", "--child", spec], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def child_main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    runner = {"planner": child_planner, "items_ref": child_items_ref, "baseline": child_baseline}[spec["mode"]]
    figures = runner(spec["env"], spec["blob"], spec["etag"])
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--baseline-size", type=int, default=100_000)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return

    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from emulator import EmulatorServer

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} cores; templates: {', '.join(TEMPLATES)}")
    with Azurite() as azurite, EmulatorServer() as emulator, tempfile.TemporaryDirectory() as tmp:
        emulator.call(lambda: emulator.catalog.put_collection({"type": "Collection", "id": "bench", "stac_version": "1.1.0",
                                                               "description": "bench", "license": "other", "links": [],
                                                               "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                                                          "temporal": {"interval": [[None, None]]}}}))
        env = {"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": emulator.url,
               "GEOCATALOG_TOKEN": "unused", "BATCH_MAX_ITEMS": "100", "ITEMS_REF_CONTAINERS": "bench"}
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        service.create_container("bench")
        rows = []
        for size in sorted(set(sizes + [args.baseline_size])):
            path = Path(tmp) / f"{size}.ndjson"
            nbytes = write_ndjson(path, size)
            with path.open("rb") as data:
                result = service.get_blob_client("bench", f"{size}.ndjson").upload_blob(data, overwrite=True, max_concurrency=2)
            path.unlink()
            blob, etag = f"bench/{size}.ndjson", str(result["etag"]).strip('"')
            if size in sizes:
                rows.append(("upload planner (streaming fan-out)", size, nbytes, run_child("planner", env, blob, etag)))
                rows.append(("items_ref job (same reader)", size, nbytes, run_child("items_ref", env, blob, etag)))
            if size == args.baseline_size:
                rows.append(("baseline (readall + readlines + json.loads)", size, nbytes, run_child("baseline", env, blob, etag)))
    print(f"{'':46}{'items':>10}{'file MB':>10}{'peak RSS MB':>13}{'items/s':>10}")
    for name, size, nbytes, figures in rows:
        print(f"{name:46}{size:>10}{nbytes / 1e6:>10.0f}{figures['peak_rss_mb']:>13.0f}{figures['items'] / figures['seconds']:>10.0f}")
    print("goal: planner peak RSS <= 150 MB and flat as the file grows, for uploads and items_ref alike "
          "(RSS includes the interpreter and Azure SDKs)")


if __name__ == "__main__":
    main()
