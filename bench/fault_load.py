"""A big job through the whole pipeline while the service misbehaves: 5 % 5xx and bursts of 429s.

Runs the local stack (Azurite, the emulator, function_app.py on the local host) in this process,
uploads one NDJSON file of N real NAIP-shaped items (ids made unique) to the drop container, and
while the job runs answers 5 % of the calls with 500/503 and injects a burst of 40 429s in each tenth
of the job, the first and the last alike (`--burst-every 20` injects one every 20 s instead, as this
benchmark first did: the first tenth, over in under 20 s, then never meets a burst, and whether the last
does is chance, which measured where the bursts fell rather than whether the job slows down). Prints
wall time, items/s, this process's peak RSS, and the invariant's figures: items lost (sent but not
in a terminal count), duplicates (counted twice, or held twice), and messages that reached a
poison queue, and the seconds per 1,000 items early and late in the job (it must not slow down as
it grows), with the pace of every tenth, where the bursts fell, and for the first and the last tenth of
the batches how long they took from submission to finish and how many were sent again. The baseline, in
the same run, is the same job with no faults.

    .venv/bin/python -m bench.fault_load [--items 100000] [--skip-baseline] [--burst-every SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import resource
import threading
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import orjson
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Timings
from shared.catalog import GeoCatalogClient, StaticToken
from shared.inputs.blob_events import BlobCreated
from shared.steps.uploads import upload_job_id

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT.parent / "shared" / "data" / "stac-real" / "pc-naip-2.json"
COLLECTION = "naip-load"
BURST = 40  # 429s in a row


def ndjson(count: int) -> bytes:
    item = orjson.loads(TEMPLATE.read_bytes())
    item["collection"] = COLLECTION
    return b"".join(orjson.dumps({**item, "id": f"load-{n:07d}"}) + b"\n" for n in range(count))


def run(count: int, *, faults: bool, burst_every: float | None = None) -> dict[str, float]:
    stack = LocalStack(emulator_options=EmulatorOptions(timings=Timings(0.5, 1.0)),
                       settings={"POLL_INITIAL_DELAY_SECONDS": "2", "POLL_MAX_DELAY_SECONDS": "5",
                                 "RETRY_BASE_DELAY_SECONDS": "1", "PLAN_SEGMENT_ITEMS": "20000"})
    with stack:
        catalog = GeoCatalogClient(stack.emulator.url, StaticToken("bench"))
        catalog.create_collection({"type": "Collection", "id": COLLECTION, "description": "load", "license": "proprietary",
                                   "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
                                   "links": [], "stac_version": "1.1.0"})
        stop = threading.Event()
        bursts: list[datetime] = []
        if faults:
            stack.emulator.catalog.faults.update({"server_error_fraction": 0.05, "retry_after_seconds": 1, "seed": 7})
            if burst_every:
                threading.Thread(target=_timed_bursts, args=(stack, stop, bursts, burst_every), daemon=True).start()
            else:
                threading.Thread(target=_bursts_per_tenth, args=(stack, stop, bursts, count), daemon=True).start()
        blobs = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
        path = f"{COLLECTION}/load.ndjson"
        started = time.monotonic()
        uploaded = blobs.get_blob_client(stack.services.settings.drop_container, path).upload_blob(ndjson(count), overwrite=True)
        etag = str(uploaded["etag"]).strip('"')
        job_id = upload_job_id(BlobCreated(stack.services.settings.drop_container, path, etag, None))
        job = wait_for_jobs(stack.services, [job_id], timeout=7200, every=2.0)[job_id]
        wall = time.monotonic() - started
        stop.set()
        held = stack.emulator.catalog.items.get(COLLECTION, {})
        poison = sum(QueueClient.from_connection_string(stack.azurite.connection_string, f"{q}-poison")
                     .get_queue_properties().approximate_message_count
                     for q in (stack.services.settings.submit_queue, stack.services.settings.work_queue,
                               stack.services.settings.poll_queue,
                               stack.services.settings.drop_events_queue))
        settled = job.items_succeeded + job.items_failed + job.items_rejected
        ends = _settle_times(stack, job_id)
        phases = _phases(stack, job_id)
        early, late = _early_and_late(ends)
        return {"early_s_per_1k": early, "late_s_per_1k": late, "wall": wall, "items_per_s": count / wall,
                "tenths": _tenths(ends), "bursts": _burst_tenths(ends, bursts), "phases": phases,
                "succeeded": job.items_succeeded, "failed": job.items_failed,
                "lost": count - settled, "duplicates": max(settled - count, 0) + max(job.items_succeeded - len(held), 0),
                "poison": poison, "state": str(job.state)}


def _settle_times(stack: LocalStack, job_id: str) -> list[tuple[int, datetime]]:
    """(items settled so far, when) at each batch's `finished` time, in order."""
    rows = sorted((row for row in stack.services.status.batches(job_id, select=["finished", "items_succeeded", "items_failed"])
                   if row.finished is not None), key=lambda row: row.finished)
    ends, done = [], 0
    for row in rows:
        done += row.items_succeeded + row.items_failed
        ends.append((done, row.finished))
    return ends


def _phases(stack: LocalStack, job_id: str) -> str:
    """For the first and the last tenth of the batches to finish: median and longest seconds from submission
    to finish, and how many were submitted more than once."""
    rows = sorted((row for row in stack.services.status.batches(job_id, select=["submitted", "finished", "attempts"])
                   if row.finished is not None and row.submitted is not None), key=lambda row: row.finished)
    if len(rows) < 10:
        return ""
    tenth = len(rows) // 10
    parts = []
    for name, part in (("first", rows[:tenth]), ("last", rows[-tenth:])):
        spans = sorted((row.finished - row.submitted).total_seconds() for row in part)
        parts.append(f"{name} tenth: submitted to finished median {spans[len(spans) // 2]:.1f} s, longest {spans[-1]:.1f} s, "
                     f"resubmitted {sum(1 for row in part if row.attempts > 1)} of {len(part)}")
    return "; ".join(parts)


def _tenths(ends: list[tuple[int, datetime]]) -> list[float]:
    """Seconds per 1,000 items settled in each tenth of the job's items, first to last."""
    if not ends or ends[-1][0] < 10:
        return []
    total, start = ends[-1][0], ends[0][1]
    marks = [start] + [next(when for count, when in ends if count >= total * n / 10) for n in range(1, 11)]
    return [(later - earlier).total_seconds() / (total / 10 / 1000) for earlier, later in pairwise(marks)]


def _burst_tenths(ends: list[tuple[int, datetime]], bursts: list[datetime]) -> list[int]:
    """In which tenth of the job's items (1-10) each 429 burst started (0: before the first settled batch)."""
    if not ends:
        return []
    total = ends[-1][0]
    tenth_of = []
    for burst in bursts:
        settled = max((count for count, when in ends if when <= burst), default=0)
        if burst > ends[-1][1]:
            continue
        tenth_of.append(0 if burst < ends[0][1] else min(10, 1 + int(10 * settled / total)))
    return tenth_of


def _early_and_late(ends: list[tuple[int, datetime]]) -> tuple[float, float]:
    """Seconds per 1,000 items settled in the first and in the last tenth of the job (batch `finished` times)."""
    total = ends[-1][0] if ends else 0
    if total < 10:
        return 0.0, 0.0

    def time_at(items: float):
        return next(finished for count, finished in ends if count >= items)

    tenth = total / 10
    early = (time_at(tenth) - ends[0][1]).total_seconds() / (tenth / 1000)
    late = (ends[-1][1] - time_at(total - tenth)).total_seconds() / (tenth / 1000)
    return early, late


def _timed_bursts(stack: LocalStack, stop: threading.Event, started: list[datetime], every: float) -> None:
    """A burst of 429s every `every` seconds from the upload (the first tenth, over before the first, never sees one)."""
    while not stop.wait(every):
        _burst(stack, started)


def _bursts_per_tenth(stack: LocalStack, stop: threading.Event, started: list[datetime], count: int) -> None:
    """A burst of 429s in every tenth of the job, the first and the last included: when the catalog holds the
    first items of the job, and then each time it holds another tenth of them (read from the in-process emulator)."""
    done = 0
    while not stop.wait(0.2) and done < 10:
        held = len(stack.emulator.catalog.items.get(COLLECTION, {}))
        if held >= max(1, done * count / 10):
            _burst(stack, started)
            done += 1


def _burst(stack: LocalStack, started: list[datetime]) -> None:
    started.append(datetime.now(UTC))
    stack.emulator.catalog.faults.update({"rate_limit_next": BURST})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--burst-every", type=float, default=None,
                        help="a burst of 429s every this many seconds instead of one in each tenth of the job")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bursts = f"every {args.burst_every:g} s" if args.burst_every else "in each tenth"
    rows = [(f"with faults (5 % 5xx, {BURST} x 429 {bursts})", run(args.items, faults=True, burst_every=args.burst_every))]
    if not args.skip_baseline:
        rows.append(("baseline: no faults", run(args.items, faults=False)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.items} items in one NDJSON upload; peak RSS of this process (host + emulator + Azurite client): {peak_mb:.0f} MB")
    for name, r in rows:
        print(f"{name:45} {r['state']:>10} wall {r['wall']:7.1f} s  {r['items_per_s']:7.0f} items/s  "
              f"succeeded {r['succeeded']:.0f} failed {r['failed']:.0f} lost {r['lost']:.0f} "
              f"duplicates {r['duplicates']:.0f} poison {r['poison']:.0f}")
        print(f"{'':45} seconds per 1,000 items settled: first tenth {r['early_s_per_1k']:.2f}, last tenth "
              f"{r['late_s_per_1k']:.2f} (late/early {r['late_s_per_1k'] / max(r['early_s_per_1k'], 1e-9):.2f}x)")
        print(f"{'':45} by tenth: {' '.join(f'{t:.2f}' for t in r['tenths'])}"
              + (f"; 429 bursts began in tenths {r['bursts']}" if r["bursts"] else ""))
        print(f"{'':45} {r['phases']}")


if __name__ == "__main__":
    main()
