"""Pacing GeoCatalog calls across instances: 429s and calls/s with and without it, and what a shared bucket costs.

Part 1, a real run: three local Functions instances (`devhost.instance`, separate processes, each
with its own clients and pacer) share one Azurite and one emulator that answers 429 above
`--service-limit` calls/s (a token bucket, like the service's per-subscription limit). One job of
`--batches` one-item batches goes through twice: unpaced (`GEOCATALOG_MAX_CALLS_PER_SECOND=0`) and
paced at 80 % of the service's limit (production: 40 against ~50) with GEOCATALOG_MAX_INSTANCES=3.
Each process hosts submit, work and poll, which Flex would run on separate instances; each of its
three calling groups paces at its part of limit / 3, so the three together pace at the limit.
Printed: 429s served, calls accepted, calls/s achieved over the job, and the job's wall time.

Part 2, the alternative: a token bucket in one table row, taken with a read and an ETag-conditional
write per call by threads standing for the three instances (4 callers each) at the same paced rate.
Printed: storage transactions per GeoCatalog call and the time each take spends in storage.

    .venv/bin/python -m bench.pacing [--service-limit 5] [--batches 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from contextlib import ExitStack

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import TableServiceClient, UpdateMode

from devhost.azurite import Azurite
from devhost.instance import InstanceProcess
from devhost.jobs import send_items, wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Faults, Timings

INSTANCES = 3
HEADROOM = 0.8


def collection() -> dict:
    return {"type": "Collection", "id": "paced", "stac_version": "1.0.0", "description": "paced", "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}, "links": []}


def item(n: int) -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": f"paced-{n:05d}", "collection": "paced",
            "geometry": {"type": "Point", "coordinates": [0, 0]}, "bbox": [0, 0, 0, 0],
            "properties": {"datetime": "2024-01-01T00:00:00Z"}, "links": [], "assets": {}}


def run_job(azurite: Azurite, *, service_limit: float, app_limit: float, batches: int) -> dict[str, float]:
    faults = Faults(rate_limit_per_second=service_limit, retry_after_seconds=1)
    suffix = f"p{int(app_limit)}{int(time.time())}"
    settings = {"GEOCATALOG_MAX_CALLS_PER_SECOND": str(app_limit), "GEOCATALOG_MAX_INSTANCES": str(INSTANCES),
                "BATCH_MAX_ITEMS": "1", "SUBMIT_QUEUE": f"{suffix}-submit", "WORK_QUEUE": f"{suffix}-work",
                "POLL_QUEUE": f"{suffix}-poll",
                "DROP_EVENTS_QUEUE": f"{suffix}-drop-events", "PAYLOAD_CONTAINER": f"{suffix}-payloads",
                "DROP_CONTAINER": f"{suffix}-drop", "STATUS_TABLE": f"Pace{suffix}"}
    options = EmulatorOptions(timings=Timings(0.1, 0.2), faults=faults)
    with LocalStack(emulator_options=options, settings=settings, azurite=azurite) as stack, ExitStack() as instances:
        assert stack.services is not None
        assert stack.emulator is not None
        stack.pause_functions()  # only the three instances below run the app
        stack.emulator.call(lambda: stack.emulator.catalog.put_collection(collection()))
        for _ in range(INSTANCES):
            instances.enter_context(InstanceProcess(os.environ))
        started = time.monotonic()
        send_items(stack.services, [item(n) for n in range(batches)], collection="paced", job_id=f"job-{suffix}")
        job = wait_for_jobs(stack.services, [f"job-{suffix}"], timeout=1800)[f"job-{suffix}"]
        wall = time.monotonic() - started
        stats = stack.emulator.app.stats
        accepted = sum(stats.by_route.values()) - stats.throttled
        return {"throttled": stats.throttled, "accepted": accepted, "per_second": accepted / wall, "wall": wall,
                "succeeded": job.items_succeeded}


def shared_bucket_cost(azurite: Azurite, *, rate: float, seconds: float) -> dict[str, float]:
    """Take tokens from one table row (read + conditional write) at `rate`, from 3x4 callers."""
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    name = f"Bucket{int(time.time())}"
    try:
        service.create_table(name)
    except ResourceExistsError:
        pass
    service.get_table_client(name).upsert_entity({"PartitionKey": "_pace", "RowKey": "bucket", "tokens": rate,
                                                   "at": time.time()})
    lock = threading.Lock()
    taken, transactions, conflicts = [0], [0], [0]
    storage_seconds: list[float] = []
    stop = time.monotonic() + seconds

    def caller(table) -> None:
        while time.monotonic() < stop:
            spent = 0.0
            while True:
                t0 = time.perf_counter()
                row = table.get_entity("_pace", "bucket")
                now = time.time()
                tokens = min(rate, row["tokens"] + (now - row["at"]) * rate)
                spent += time.perf_counter() - t0
                with lock:
                    transactions[0] += 1
                if tokens < 1:
                    time.sleep((1 - tokens) / rate)
                    continue
                t0 = time.perf_counter()
                try:
                    table.update_entity({"PartitionKey": "_pace", "RowKey": "bucket", "tokens": tokens - 1, "at": now},
                                        mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                                        match_condition=MatchConditions.IfNotModified)
                except ResourceModifiedError:
                    spent += time.perf_counter() - t0
                    with lock:
                        transactions[0] += 1
                        conflicts[0] += 1
                    continue
                spent += time.perf_counter() - t0
                with lock:
                    transactions[0] += 1
                    taken[0] += 1
                    storage_seconds.append(spent)
                break

    threads = []
    for _ in range(INSTANCES):
        table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(name)
        threads += [threading.Thread(target=caller, args=(table,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    service.delete_table(name)
    storage_seconds.sort()
    return {"calls": taken[0], "per_call": transactions[0] / max(1, taken[0]), "conflicts": conflicts[0] / max(1, taken[0]),
            "median_ms": 1000 * statistics.median(storage_seconds),
            "p95_ms": 1000 * storage_seconds[int(0.95 * (len(storage_seconds) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--service-limit", type=float, default=5.0, help="calls/s the emulator allows (429 above)")
    parser.add_argument("--batches", type=int, default=120, help="one-item batches in the job")
    args = parser.parse_args()
    app_limit = HEADROOM * args.service_limit
    with Azurite() as azurite:
        print(f"Real run: {INSTANCES} local instances (separate processes), one Azurite, one emulator allowing "
              f"{args.service_limit:.0f} calls/s; a job of {args.batches} one-item batches.\n")
        print(f"{'':<44} {'429s':>6} {'calls ok':>9} {'calls/s':>8} {'wall':>7} {'items ok':>9}")
        for label, limit in (("unpaced (baseline)", 0.0),
                             (f"paced: {app_limit:.0f}/s, {INSTANCES} instances x 3 groups", app_limit)):
            r = run_job(azurite, service_limit=args.service_limit, app_limit=limit, batches=args.batches)
            print(f"{label:<44} {r['throttled']:>6.0f} {r['accepted']:>9.0f} {r['per_second']:>8.1f} "
                  f"{r['wall']:>6.1f}s {r['succeeded']:>9.0f}")
        cost = shared_bucket_cost(azurite, rate=app_limit, seconds=10)
        print(f"\nShared token bucket in one table row (Azurite, {INSTANCES}x4 callers at {app_limit:.0f} calls/s, "
              f"{cost['calls']:.0f} calls):")
        print(f"  storage transactions per GeoCatalog call: {cost['per_call']:.2f} "
              f"(ETag conflicts per call: {cost['conflicts']:.2f})")
        print(f"  time in storage per call: median {cost['median_ms']:.1f} ms, p95 {cost['p95_ms']:.1f} ms")
        print("  per-instance share (what ships): 0 storage transactions, 0 ms per call")


if __name__ == "__main__":
    main()
