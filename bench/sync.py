"""A nightly sync against re-sending everything: GeoCatalog calls and wall time, in one run.

Runs the local stack (Azurite, the emulator, function_app.py on the local host) in this process. A
collection is first loaded by a sync of N real NAIP-shaped items (ids made unique; its figures are
printed too). Then the source changes: 1 % of its items edited, 1 % removed. Measured:

- sync: `mode: "sync"` with `delete_missing` of the changed source into the loaded collection;
- baseline 1, re-send into an empty collection: the changed source's items POSTed as a plain create job
  into a new collection: the cheapest re-send there is, but it is not a nightly run (the collection
  is not the one users read);
- baseline 2, re-send into the loaded collection: what a nightly re-send without sync must do, since a
  POST of an existing id fails (ItemAlreadyExistsInCollection) and each existing item needs a PUT of its
  own: `mode: "upsert"`. Measured on the first `--upsert-sample` items of the source and scaled to all of
  them (its calls are per item, and the sample is sent the same way), so the run stays short.

Each job is an NDJSON file referenced by `items_ref`, planned in segments as any upload. Prints, per
run, the wall time, the GeoCatalog requests by kind (item writes, searches, operation polls) and the
job's counts.

    .venv/bin/python -m bench.sync [--items 100000]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from devhost.jobs import send_job, wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Timings
from shared.catalog import GeoCatalogClient, StaticToken

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT.parent / "shared" / "data" / "stac-real" / "pc-naip-2.json"
SYNCED, RESENT = "sync-bench", "resend-bench"


def source(count: int, *, changed: int = 0, removed: int = 0) -> bytes:
    """NDJSON of `count` items, the first `changed` edited and the last `removed` left out."""
    item = orjson.loads(TEMPLATE.read_bytes())
    lines = []
    for n in range(count - removed):
        properties = {**item["properties"], "revision": 2 if n < changed else 1}
        lines.append(orjson.dumps({**item, "id": f"sync-{n:07d}", "properties": properties}) + b"\n")
    return b"".join(lines)


def collection(collection_id: str) -> dict[str, Any]:
    return {"type": "Collection", "id": collection_id, "description": "sync bench", "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [], "stac_version": "1.1.0"}


def requests(stack: LocalStack) -> Counter[str]:
    """The emulator's requests so far, by kind."""
    kinds: Counter[str] = Counter()
    for route, n in stack.emulator.app.stats.by_route.items():
        method, _, path = route.partition(" ")
        if "/items" in path and method in ("POST", "PUT", "PATCH", "DELETE"):
            kinds[f"item {method}"] += n
        elif path.endswith("/search"):
            kinds["search"] += n
        elif "/operations/" in path:
            kinds["operation reads"] += n
        else:
            kinds["other"] += n
    return kinds


def run_job(stack: LocalStack, job_id: str, target: str, data: bytes, **options: Any) -> dict[str, Any]:
    blob = stack.services.payloads.put(f"inbox/{job_id}/source.ndjson", data)
    before = requests(stack)
    started = time.monotonic()
    send_job(stack.services, {"v": 1, "job_id": job_id, "collection": target, "items_ref": {"blob": blob}, **options})
    job = wait_for_jobs(stack.services, [job_id], timeout=14_400, every=1.0)[job_id]
    wall = time.monotonic() - started
    calls = requests(stack)
    calls.subtract(before)
    return {"job": job, "wall": wall, "calls": {k: v for k, v in calls.items() if v}}


def line(name: str, result: dict[str, Any]) -> str:
    job, calls = result["job"], result["calls"]
    detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
    return (f"{name:<42} {job.state:<10} wall {result['wall']:7.1f} s   GeoCatalog calls {total(result):6d} "
            f"(item writes {writes(result)}; {detail})   created {job.items_created} replaced {job.items_replaced} "
            f"unchanged {job.items_unchanged} deleted {job.items_deleted} succeeded {job.items_succeeded}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--upsert-sample", type=int, default=1000, help="items of baseline 2 measured (then scaled)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    count = args.items
    changed = removed = max(count // 100, 1)
    stack = LocalStack(emulator_options=EmulatorOptions(timings=Timings(0.5, 1.0)),
                       settings={"POLL_INITIAL_DELAY_SECONDS": "2", "POLL_MAX_DELAY_SECONDS": "5",
                                 "RETRY_BASE_DELAY_SECONDS": "1", "PLAN_SEGMENT_ITEMS": "20000"})
    with stack:
        catalog = GeoCatalogClient(stack.emulator.url, StaticToken("bench"))
        for name in (SYNCED, RESENT):
            catalog.create_collection(collection(name))
        print(f"{count} items; then {changed} edited and {removed} removed from the source (1 % each)")
        first = run_job(stack, "load", SYNCED, source(count), mode="sync")
        print(line("load: first sync (all new)", first))
        changed_source = source(count, changed=changed, removed=removed)
        synced = run_job(stack, "nightly-sync", SYNCED, changed_source, mode="sync", delete_missing=True)
        resent = run_job(stack, "nightly-resend", RESENT, changed_source)
        sample = min(args.upsert_sample, count - removed)
        upserted = scaled(run_job(stack, "nightly-upsert", SYNCED, source(sample, changed=sample), mode="upsert"),
                          (count - removed) / sample)
        print(line("sync: --sync --delete-missing", synced))
        print(line("baseline 1: re-send, empty collection", resent))
        print(line(f"baseline 2: upsert re-send (x{(count - removed) / sample:.0f} of {sample})", upserted))
        for name, baseline in (("baseline 1", resent), ("baseline 2", upserted)):
            print(f"sync / {name}: wall {synced['wall'] / baseline['wall']:.2f}x, GeoCatalog calls "
                  f"{total(synced) / max(total(baseline), 1):.2f}x, item writes "
                  f"{writes(synced) / max(writes(baseline), 1):.2f}x")


def scaled(result: dict[str, Any], factor: float) -> dict[str, Any]:
    """A sample's figures as the whole source's (wall and calls times `factor`; the job's counts as measured)."""
    return {"job": result["job"], "wall": result["wall"] * factor,
            "calls": {kind: round(n * factor) for kind, n in result["calls"].items()}}


def total(result: dict[str, Any]) -> int:
    return sum(result["calls"].values())


def writes(result: dict[str, Any]) -> int:
    return sum(v for k, v in result["calls"].items() if k.startswith("item "))


if __name__ == "__main__":
    main()
