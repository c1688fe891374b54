"""The pipeline against what a user would write instead, on one emulator, in one run.

For each scenario (10,000 real NAIP items at 1 s operations, 2,000 at 20 s operations; ids made
unique per run), against the same emulator process:
- the pipeline: the local stack (Azurite + function_app.py on the local host) at production poll
  settings, fed one NDJSON upload; wall time from the upload to the moment the job's row turned
  terminal (the storage service's own timestamp of that write, not when this watcher, which looks
  every 0.2 s, happened to see it: the pool's figure has no such sampling delay either). Twice: with
  submit, work and poll each on a local instance (a process) of its own, as Flex Consumption scales them
  (`devhost.instance`), and with every function in one process;
- the pool: 8 threads, each POSTing a 100-item batch and then polling it with `sleep(1)`;
- the notebook loop: POST, `sleep(5)`-poll, one batch after another; measured on 3 batches and
  extrapolated to the whole job (printed as such).
Each line shows GeoCatalog calls per 1,000 items; the floor is one POST and one GET per batch.
Each pipeline run also prints the CPU time every process used (Azurite, the instances, the emulator,
this process) and what that total allows on this machine's cores: the pipeline's wall can be no
shorter than its CPU time spread over every core, where the pool needs next to none.
Targets: pipeline >= 1.5x the pool at 1 s, >= 2x at 20 s, calls <= 1.3x the floor.

    .venv/bin/python -m bench.pipeline_vs_pool [--scenarios 1:10000,20:2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import orjson
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost.azurite import Azurite
from devhost.instance import FUNCTION_GROUPS, InstanceProcess
from devhost.stack import LocalStack
from shared.inputs.blob_events import BlobCreated
from shared.steps.uploads import upload_job_id
from shared.store import JOB_ROW, JobState, StatusStore

ROOT = Path(__file__).resolve().parent.parent
NAIP = ROOT.parent / "shared" / "data" / "stac-real" / "pgstac-pc-naip-items-300.ndjson"
API = {"api-version": "2026-04-15"}
HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
BATCH = 100
TERMINAL = {"Succeeded", "Failed", "Canceled"}


class Emulator:
    """`python -m emulator` in its own process, with operations of a fixed length."""

    def __init__(self, operation_seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", "0", "--pending-seconds", "0",
             "--running-seconds", str(operation_seconds)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        self.url = re.search(r"(http://\S+)", line).group(1).rstrip("/")

    def calls(self) -> int:
        stats = requests.get(f"{self.url}/_emulator/stats", timeout=10).json()["requests"]
        return sum(n for route, n in stats.items() if "/_emulator" not in route)

    def create_collection(self, collection: str) -> None:
        body = {"type": "Collection", "id": collection, "description": "bench", "license": "proprietary",
                "stac_version": "1.1.0", "links": [],
                "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}
        requests.post(f"{self.url}/stac/collections", params=API, headers=HEADERS, data=orjson.dumps(body), timeout=30)
        time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def naip_items(count: int, prefix: str, collection: str) -> list[dict]:
    templates = [orjson.loads(line) for line in NAIP.read_bytes().splitlines() if line.strip()]
    return [{**templates[n % len(templates)], "id": f"{prefix}-{n:06d}", "collection": collection} for n in range(count)]


def feature_collections(items: list[dict]) -> list[bytes]:
    return [orjson.dumps({"type": "FeatureCollection", "features": items[n:n + BATCH]}) for n in range(0, len(items), BATCH)]


def post_and_poll(session: requests.Session, url: str, collection: str, body: bytes, sleep: float) -> None:
    """What the notebook does for one batch: POST, then sleep-poll until the operation ends."""
    response = session.post(f"{url}/stac/collections/{collection}/items", params=API, headers=HEADERS, data=body, timeout=60)
    response.raise_for_status()
    operation = response.headers["operation-location"]
    while True:
        time.sleep(sleep)
        if session.get(operation, headers=HEADERS, timeout=60).json()["status"] in TERMINAL:
            return


def run_pool(emulator: Emulator, items: list[dict], collection: str, threads: int = 8) -> float:
    bodies = feature_collections(items)
    local = threading.local()

    def one(body: bytes) -> None:
        local.session = getattr(local, "session", None) or requests.Session()
        post_and_poll(local.session, emulator.url, collection, body, sleep=1.0)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, bodies))
    return time.monotonic() - started


def run_notebook(emulator: Emulator, items: list[dict], collection: str, sample_batches: int = 3) -> float:
    """Measured on a few batches, extrapolated to all of them."""
    bodies = feature_collections(items)
    session = requests.Session()
    started = time.monotonic()
    for body in bodies[:sample_batches]:
        post_and_poll(session, emulator.url, collection, body, sleep=5.0)
    return (time.monotonic() - started) * len(bodies) / sample_batches


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far (Linux: /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each named process uses between `start` and `stop` (this process: all its threads)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in self._pids.items()}, "bench process": time.process_time()}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> None:
        self.used = {name: after - self._before[name] for name, after in self._now().items()}

    def summary(self) -> str:
        total = sum(self.used.values())
        cores = os.cpu_count() or 1
        parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.used.items())
        return f"CPU s: {parts}; total {total:.1f} on {cores} cores, so no less than {total / cores:.1f} s of wall"


def run_pipeline(emulator: Emulator, azurite: Azurite, items: list[dict], collection: str, *, flex: bool) -> float:
    """`flex`: submit, work and poll each on an instance (a process) of its own, as Flex Consumption scales them;
    else every function in one local process. Prints the CPU time every process used meanwhile."""
    production_polling = {"GEOCATALOG_ENDPOINT": emulator.url, "POLL_INITIAL_DELAY_SECONDS": "5",
                          "POLL_MAX_DELAY_SECONDS": "60", "RETRY_BASE_DELAY_SECONDS": "2"}
    with LocalStack(settings=production_polling, azurite=azurite) as stack, ExitStack() as instances:
        pids = {"Azurite": azurite.pid, "emulator": emulator.process.pid}
        if flex:
            stack.pause_functions()
            for group in FUNCTION_GROUPS:
                pids[f"{group} instance"] = instances.enter_context(InstanceProcess(os.environ, FUNCTION_GROUPS[group])).pid
        meter = CpuMeter(pids)
        path = f"{collection}/items.ndjson"
        data = b"".join(orjson.dumps(item) + b"\n" for item in items)
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        meter.start()
        started = time.time()  # wall clock, to compare with the storage service's timestamp of the job's end
        uploaded = blobs.get_blob_client(stack.services.settings.drop_container, path).upload_blob(data, overwrite=True)
        job_id = upload_job_id(BlobCreated(stack.services.settings.drop_container, path, str(uploaded["etag"]).strip('"'), None))
        while not job_ended(stack.services.status, job_id):
            time.sleep(0.2)
        meter.stop()
        elapsed = job_ended_at(stack.services.status, job_id) - started
        job = stack.services.status.get_job(job_id)
        if job.items_succeeded != len(items):
            raise RuntimeError(f"pipeline job ended {job.state}: {job.items_succeeded} of {len(items)} items")
        print(f"    {'Flex instances' if flex else 'one process'}: {elapsed:.1f} s; {meter.summary()}", flush=True)
        return elapsed


def flex_instances(emulator: Emulator, azurite: Azurite, items: list[dict], collection: str) -> float:
    return run_pipeline(emulator, azurite, items, collection, flex=True)


def one_process(emulator: Emulator, azurite: Azurite, items: list[dict], collection: str) -> float:
    return run_pipeline(emulator, azurite, items, collection, flex=False)


PIPELINES = [("pipeline: a submit, a work and a poll instance, as Flex scales them", flex_instances),
             ("pipeline: every function in one local process", one_process)]
BASELINES = [("pool: 8 threads, sleep(1) poll", run_pool),
             ("notebook: sequential, sleep(5) poll (extrapolated from 3 batches)", run_notebook)]


def job_ended(status: StatusStore, job_id: str) -> bool:
    """Whether the job row is terminal, reading only its state: the watcher must not load the host it times."""
    try:
        return JobState(status.table.get_entity(job_id, JOB_ROW, select=["state"])["state"]).is_terminal
    except ResourceNotFoundError:
        return False


def job_ended_at(status: StatusStore, job_id: str) -> float:
    """When the job's row was last written, by the storage service's clock (this machine's wall clock here):
    the write that made it terminal, or a later one, which could only make the figure longer."""
    return status.table.get_entity(job_id, JOB_ROW, select=["Timestamp"]).metadata["timestamp"].timestamp()


def scenario(azurite: Azurite, operation_seconds: float, count: int, runs: int = 1) -> list[tuple[str, float, float]]:
    """(name, wall seconds, calls per 1,000 items) of each way; the pipelines and the pool are run `runs`
    times and give their median (each run printed); the notebook is extrapolated from one sample."""
    emulator = Emulator(operation_seconds)
    rows = []
    try:
        for name, runner in PIPELINES + BASELINES:
            is_pipeline = runner in (flex_instances, one_process)
            walls, calls = [], 0
            for run in range(1 if runner is run_notebook else runs):
                collection = f"bench-{len(rows)}-{int(operation_seconds)}-{run}"
                emulator.create_collection(collection)
                items = naip_items(count, collection, collection)
                before = emulator.calls()
                walls.append(runner(emulator, azurite, items, collection) if is_pipeline else runner(emulator, items, collection))
                calls = emulator.calls() - before
            if len(walls) > 1:
                print(f"  ({name}: {', '.join(f'{w:.1f}' for w in walls)} s; median {statistics.median(walls):.1f} s)",
                      flush=True)
            measured_items = count if runner is not run_notebook else 3 * BATCH
            rows.append((name, statistics.median(walls), 1000 * calls / measured_items))
    finally:
        emulator.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="1:10000,20:2000", help="operation seconds:items, comma-separated")
    parser.add_argument("--runs", type=int, default=1,
                        help="time the pipelines and the pool this many times each and compare medians (a noisy machine)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    floor = 2 * 1000 / BATCH
    with Azurite() as azurite:
        for spec in args.scenarios.split(","):
            seconds, count = float(spec.split(":")[0]), int(spec.split(":")[1])
            rows = scenario(azurite, seconds, count, args.runs)
            pipeline, pool, notebook = rows[0][1], rows[2][1], rows[3][1]
            print(f"\n{count} NAIP items, {seconds:g} s operations, batches of {BATCH}; call floor {floor:.0f} per 1,000 items")
            for name, wall, calls in rows:
                print(f"  {name:68} {wall:8.1f} s  {calls:6.1f} calls/1k items ({calls / floor:.2f}x floor)")
            print(f"  pipeline (Flex instances) vs pool: {pool / pipeline:.2f}x faster; vs notebook: {notebook / pipeline:.1f}x faster"
                  f"; one local process vs pool: {pool / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
