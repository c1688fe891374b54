"""How fast polling adapts when a collection's operations change length, and what it costs in GETs.

A real run: function_app.py on the local host, Azurite, and the GeoCatalog emulator, at the
production poll settings (5 s first poll and 60 s cap; 2 s / 10 % steps; counters that stay still
until the end, the hard case). Two collections:

- *drift*: jobs of `--ops` batches whose operations take 3 s, then 20 s, then 60 s, then 3 s again
  (the service slows down under load and recovers; the emulator's seconds per item change between jobs);
- *doubling*: a job at 10 s to learn the collection, then one whose operations double to 20 s halfway
  (after its first half of operations was created).

Lag = when the batch row was written as ended (the poll that saw it) minus when the emulator finished
the operation (median over the job); GETs = the emulator's count of GETs per operation (mean). The
baseline, in the same run and against the same emulator, is the notebook loop: POST, then `sleep(5)`
and GET until the operation ends, one operation per job. Targets, for every job after a collection's
first: lag <= max(2 s, 15 % of the length) and <= 2 GETs per operation. Then a subset of
`bench.poll_lag` (cold and warm collections, steady lengths) shows that those cases keep their figures.

    .venv/bin/python -m bench.poll_adapt [--ops 8] [--steady 12,47]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass, field

import orjson
import requests

from bench.poll_lag import PENDING, PRODUCTION_POLLING, TEMPLATE
from bench.poll_lag import run as poll_lag_run
from devhost.azurite import Azurite
from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Timings
from shared.services import Services

ITEMS = 20  # per batch: the emulator's seconds per item set each operation's length
DRIFT = [3.0, 20.0, 60.0, 3.0]
DOUBLING = (10.0, 20.0)
API = {"api-version": "2026-04-15"}
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
TERMINAL = {"Succeeded", "Failed", "Canceled"}
DETAIL = False


@dataclass
class Figures:
    lags: list[float] = field(default_factory=list)
    gets: list[int] = field(default_factory=list)

    @property
    def lag(self) -> float:
        return statistics.median(self.lags)

    @property
    def mean_gets(self) -> float:
        return sum(self.gets) / len(self.gets)


@dataclass
class Phase:
    name: str
    length: float
    pipeline: Figures
    notebook: Figures
    first: bool  # a collection's first job: cold, no target

    def line(self) -> str:
        target = max(2.0, 0.15 * self.length)
        met = "" if self.first else ("met" if self.pipeline.lag <= target and self.pipeline.mean_gets <= 2 else "MISSED")
        return (f"| {self.name:<26} | {self.pipeline.lag:6.2f} s (<= {target:4.1f}) | {self.pipeline.mean_gets:5.2f} | "
                f"{self.notebook.lag:6.2f} s | {self.notebook.mean_gets:5.2f} | {met or 'first job'} |")


def per_item(length: float) -> float:
    return (length - PENDING) / ITEMS


def send_job(services: Services, *, job_id: str, collection: str, batches: int) -> None:
    template = orjson.loads(TEMPLATE.read_bytes())
    features = [{**template, "id": f"{job_id}-{n:05d}", "collection": collection} for n in range(batches * ITEMS)]
    blob = services.payloads.put(f"inbox/{job_id}.json", orjson.dumps({"type": "FeatureCollection", "features": features}))
    body = {"v": 1, "job_id": job_id, "collection": collection, "batch_size": ITEMS, "items_ref": {"blob": blob}}
    services.queues.send(services.settings.submit_queue, orjson.dumps(body).decode())


def create_collection(stack: LocalStack, collection: str) -> None:
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(
        {"type": "Collection", "id": collection, "stac_version": "1.0.0", "description": collection,
         "license": "proprietary", "links": [],
         "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}))


def set_speed(stack: LocalStack, seconds_per_item: float) -> None:
    stack.emulator.call(lambda: setattr(stack.emulator.catalog.timings, "seconds_per_item", seconds_per_item))


def double_after(stack: LocalStack, collection: str, operations: int) -> None:
    """From the `operations`+1-th operation of `collection` created from now on, operations take twice as long."""
    catalog = stack.emulator.catalog
    original = catalog.start_operation
    seen = {"count": 0}

    def start_operation(*args, **kwargs):
        if kwargs.get("collection_id") == collection:
            seen["count"] += 1
            if seen["count"] == operations + 1:
                catalog.timings.seconds_per_item *= 2
        return original(*args, **kwargs)

    stack.emulator.call(lambda: setattr(catalog, "start_operation", start_operation))


def notebook(stack: LocalStack, collection: str, n: int) -> Figures:
    """The notebook loop on `n` operations of ITEMS items: POST, then sleep(5) and GET until it ends."""
    session = requests.Session()
    template = orjson.loads(TEMPLATE.read_bytes())
    figures = Figures()
    for k in range(n):
        stamp = f"{collection}-{time.time_ns()}-{k}"
        features = [{**template, "id": f"{stamp}-{i}", "collection": collection} for i in range(ITEMS)]
        response = session.post(f"{stack.emulator.url}/stac/collections/{collection}/items", params=API, headers=HEADERS,
                                data=orjson.dumps({"type": "FeatureCollection", "features": features}), timeout=60)
        response.raise_for_status()
        location = response.headers["operation-location"]
        while True:
            time.sleep(5)
            body = session.get(location, headers=HEADERS, timeout=60).json()
            if body["status"] in TERMINAL:
                seen = time.time()
                break
        operation = stack.emulator.call(lambda b=body: stack.emulator.catalog.operations[b["id"]])
        figures.lags.append(seen - operation.finish_at.timestamp())
        figures.gets.append(operation.gets)
    return figures


def pipeline_job(stack: LocalStack, job_id: str, collection: str, batches: int, baseline: str,
                 baseline_ops: int) -> tuple[Figures, Figures]:
    """Run one job, and the notebook loop beside it on a collection of its own; their figures."""
    result: dict[str, Figures] = {}
    loop = threading.Thread(target=lambda: result.setdefault("notebook", notebook(stack, baseline, baseline_ops)))
    send_job(stack.services, job_id=job_id, collection=collection, batches=batches)
    loop.start()
    wait_for_jobs(stack.services, [job_id], timeout=900)
    loop.join()
    rows = stack.services.status.batches(job_id)
    ops = stack.emulator.call(lambda: [stack.emulator.catalog.operations[r.operation_id] for r in rows])
    figures = Figures([(row.finished - op.finish_at).total_seconds() for row, op in zip(rows, ops, strict=True)],
                      [op.gets for op in ops])
    if DETAIL:
        first = min(row.submitted for row in rows)
        for row, op, lag in zip(rows, ops, figures.lags, strict=True):
            print(f"    {row.batch_id} {row.poll_role or '-':8} submitted +{(row.submitted - first).total_seconds():4.1f} s "
                  f"length {(op.finish_at - op.created).total_seconds():5.1f} s  {op.gets:2d} GETs  lag {lag:5.2f} s  "
                  f"looks at {' '.join(f'{(at - op.created).total_seconds():.1f}' for at in op.got_at)}")
    return figures, result["notebook"]


def adapt(azurite: Azurite, ops: int, drift: list[float], doubling: bool) -> list[Phase]:
    run_name = f"adapt{int(time.time())}"
    fresh_storage = {"SUBMIT_QUEUE": f"{run_name}-submit", "WORK_QUEUE": f"{run_name}-work", "POLL_QUEUE": f"{run_name}-poll",
                     "DROP_EVENTS_QUEUE": f"{run_name}-drop-events", "PAYLOAD_CONTAINER": f"{run_name}-payloads",
                     "DROP_CONTAINER": f"{run_name}-drop", "STATUS_TABLE": f"Adapt{run_name}"}
    options = EmulatorOptions(timings=Timings(PENDING, 0.0, per_item(drift[0])))
    phases = []
    with LocalStack(emulator_options=options, settings={**PRODUCTION_POLLING, **fresh_storage}, azurite=azurite) as stack:
        for collection in ("drift", "doubling", "notebook"):
            create_collection(stack, collection)
        previous = None
        for n, length in enumerate(drift):
            set_speed(stack, per_item(length))
            pipeline, loop = pipeline_job(stack, f"drift-{n}", "drift", ops, "notebook", 1)
            name = f"{length:g} s" + (f" (was {previous:g} s)" if previous else "")
            phases.append(Phase(name, length, pipeline, loop, first=n == 0))
            previous = length
            print(phases[-1].line(), flush=True)
        if not doubling:
            return phases
        short, long = DOUBLING
        set_speed(stack, per_item(short))
        pipeline, loop = pipeline_job(stack, "doubling-0", "doubling", ops, "notebook", 1)
        phases.append(Phase(f"{short:g} s (doubling's first)", short, pipeline, loop, first=True))
        print(phases[-1].line(), flush=True)
        double_after(stack, "doubling", ops // 2)
        pipeline, loop = pipeline_job(stack, "doubling-1", "doubling", ops, "notebook", 1)
        phases.append(Phase(f"{short:g} s -> {long:g} s halfway", long, pipeline, loop, first=False))
        print(phases[-1].line(), flush=True)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=8, help="operations (batches) per job")
    parser.add_argument("--steady", default="12,47", help="lengths of the poll_lag cells re-run (empty: none)")
    parser.add_argument("--drift", default=",".join(f"{x:g}" for x in DRIFT), help="the drift collection's job lengths")
    parser.add_argument("--no-doubling", action="store_true", help="skip the job whose operations double halfway")
    parser.add_argument("--detail", action="store_true", help="print each batch's role, GETs and lag")
    args = parser.parse_args()
    global DETAIL
    DETAIL = args.detail
    started = time.monotonic()
    print(f"Real run through the local host; {args.ops} operations of {ITEMS} items per job; counters still until the end.")
    print("Lag: median, batch row ended - operation finished; GETs: mean per operation. Baseline: the notebook's sleep(5)")
    print("loop on one operation per job beside it. Targets after a collection's first job: lag <= max(2 s, 15 %), <= 2 GETs.\n")
    header = (f"| {'operation length':<26} | {'lag (target)':>17} | {'GETs':>5} | {'notebook lag':>8} | "
              f"{'GETs':>5} | verdict |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|", flush=True)
    with Azurite() as azurite:
        adapt(azurite, args.ops, [float(x) for x in args.drift.split(",")], not args.no_doubling)
        lengths = [float(x) for x in args.steady.split(",") if x]
        if lengths:
            print("\nSteady lengths (bench.poll_lag's cells, predicted schedule, counters still, 6 operations per job):")
            cells = poll_lag_run(azurite, schedule="predicted", moving=False, lengths=lengths, ops=6)
            for length in lengths:
                print(f"{length:6.0f}s | cold {cells['cold'][length].text(length)} | warm {cells['warm'][length].text(length)}")
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
