"""How soon the pipeline notices that an operation has ended, and how many GETs that costs.

A real run: function_app.py on the local host, Azurite, and the GeoCatalog emulator, at the
production poll settings (5 s first poll and 60 s cap for the doubling; 2 s / 10 % steps). For each
operation length, one collection gets jobs of `--ops` batches sized so that the emulator's
operations last that long (0.2 s Pending plus 0.2 s per item). Each job is sent twice: the first
("cold") meets a collection whose operation times are unknown, the second ("warm") one whose
earlier operations have finished; warm is the steady state of a collection in use.

Lag = when the batch row was written as ended (the poll that saw it) minus when the emulator
finished the operation. It includes the queue's delivery delay (host.json maxPollingInterval, 0.5 s),
as in Azure. GETs = the emulator's count of GETs of each operation.

Both schedules run in the same invocation: `POLL_SCHEDULE=backoff` (the old schedule: 5 s, then
doubling to 60 s, shortened by moving counters) is the baseline, `predicted` the new one; and
both kinds of service: counters that stay still until the end, and counters that move while Running.

    .venv/bin/python -m bench.poll_lag [--lengths 1,12,47,60] [--ops 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from devhost.azurite import Azurite
from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Timings
from shared.services import Services

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT.parent / "shared" / "data" / "stac-real" / "pc-naip-fl_m_2808060_sw_17_060_20191215_20200114.json"
PENDING = 0.2
PER_ITEM = 0.2
PRODUCTION_POLLING = {"POLL_INITIAL_DELAY_SECONDS": "5", "POLL_MAX_DELAY_SECONDS": "60",
                      "BATCH_MAX_ITEMS": "1000", "BATCH_MAX_BYTES": "4000000"}


@dataclass
class Figures:
    lags: list[float]
    gets: list[int]

    def text(self, length: float) -> str:
        lag = statistics.median(self.lags)
        target = max(2.0, 0.15 * length)
        gets = sum(self.gets) / len(self.gets)
        met = "met" if lag <= target and gets <= 3 else "MISSED"
        return f"{lag:6.2f} s {gets:4.1f} GETs ({met})"


def items_for(length: float) -> int:
    return max(1, round((length - PENDING) / PER_ITEM))


def send_job(services: Services, *, job_id: str, collection: str, batches: int, per_batch: int) -> None:
    template = orjson.loads(TEMPLATE.read_bytes())
    features = [{**template, "id": f"{job_id}-{n:05d}", "collection": collection} for n in range(batches * per_batch)]
    blob = services.payloads.put(f"inbox/{job_id}.json", orjson.dumps({"type": "FeatureCollection", "features": features}))
    body = {"v": 1, "job_id": job_id, "collection": collection, "batch_size": per_batch, "items_ref": {"blob": blob}}
    services.queues.send(services.settings.submit_queue, orjson.dumps(body).decode())


def measure(stack: LocalStack, job_ids: dict[float, str]) -> dict[float, Figures]:
    assert stack.services is not None
    assert stack.emulator is not None
    wait_for_jobs(stack.services, job_ids.values(), timeout=900)
    figures: dict[float, Figures] = {}
    for length, job_id in job_ids.items():
        rows = stack.services.status.batches(job_id)
        ops = stack.emulator.call(lambda rows=rows: [stack.emulator.catalog.operations[r.operation_id] for r in rows])
        lags = [(row.finished - op.finish_at).total_seconds() for row, op in zip(rows, ops, strict=True)]
        figures[length] = Figures(lags, [op.gets for op in ops])
    return figures


def run(azurite: Azurite, *, schedule: str, moving: bool, lengths: list[float], ops: int) -> dict[str, dict[float, Figures]]:
    options = EmulatorOptions(timings=Timings(PENDING, 0.0, PER_ITEM), moving_counters=moving)
    run_name = f"{schedule}{'moving' if moving else 'still'}{int(time.time())}"
    fresh_storage = {"SUBMIT_QUEUE": f"{run_name}-submit", "WORK_QUEUE": f"{run_name}-work", "POLL_QUEUE": f"{run_name}-poll",
                     "DROP_EVENTS_QUEUE": f"{run_name}-drop-events", "PAYLOAD_CONTAINER": f"{run_name}-payloads",
                     "DROP_CONTAINER": f"{run_name}-drop", "STATUS_TABLE": f"Lag{run_name}"}  # cold means cold
    settings = {**PRODUCTION_POLLING, **fresh_storage, "POLL_SCHEDULE": schedule}
    with LocalStack(emulator_options=options, settings=settings, azurite=azurite) as stack:
        assert stack.services is not None
        assert stack.emulator is not None
        for length in lengths:
            collection = f"lag-{int(length)}s"
            stack.emulator.call(lambda c=collection: stack.emulator.catalog.put_collection(
                {"type": "Collection", "id": c, "stac_version": "1.0.0", "description": c, "license": "proprietary",
                 "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
                 "links": []}))
        result = {}
        for phase in ("cold", "warm"):
            job_ids = {}
            for length in lengths:
                job_id = f"lag-{schedule}-{'moving' if moving else 'still'}-{phase}-{int(length)}s"
                send_job(stack.services, job_id=job_id, collection=f"lag-{int(length)}s", batches=ops,
                         per_batch=items_for(length))
                job_ids[length] = job_id
            result[phase] = measure(stack, job_ids)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="1,12,47,60", help="operation lengths, seconds")
    parser.add_argument("--ops", type=int, default=6, help="operations (batches) per length and job")
    args = parser.parse_args()
    lengths = [float(x) for x in args.lengths.split(",")]
    print(f"Real run through the local host (function_app.py, Azurite, emulator); {args.ops} operations per length and job;")
    print("operations last 0.2 s Pending + 0.2 s per item. Lag = batch row ended - operation finished (median).")
    print("Targets: lag <= max(2 s, 15 % of the length), <= 3 GETs per operation on average.\n")
    started = time.monotonic()
    with Azurite() as azurite:
        for moving in (False, True):
            service = "counters move while Running" if moving else "counters still until the end"
            runs = {schedule: run(azurite, schedule=schedule, moving=moving, lengths=lengths, ops=args.ops)
                    for schedule in ("backoff", "predicted")}
            print(f"service: {service}")
            print(f"{'length':>7} | {'old (5 s, doubling to 60 s)':>27} | {'new, cold collection':>27} | {'new, warm collection':>27}")
            for length in lengths:
                old = runs["backoff"]["warm"][length]
                old.lags += runs["backoff"]["cold"][length].lags
                old.gets += runs["backoff"]["cold"][length].gets
                print(f"{length:6.0f}s | {old.text(length):>27} | {runs['predicted']['cold'][length].text(length):>27} | "
                      f"{runs['predicted']['warm'][length].text(length):>27}")
            print()
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
