"""What a million items cost in Azure: storage transactions, bytes kept and Flex instance time, priced.

Runs one NDJSON upload of N real NAIP-shaped items (ids made unique) through the local stack
(Azurite, the GeoCatalog emulator, function_app.py on the local host) at production poll settings,
and counts, while it runs:
- every queue, table and blob request the app makes, by kind, from a counting wrapper on the Azure SDK
  transport of this process (the benchmark's own reads of the status table are left out; of the
  BlobCreated watcher, which stands in for Event Grid, only its queue puts count: Event Grid's delivery);
- the bytes the job leaves in the payload container (kept until the lifecycle rule deletes them:
  `payloadRetentionDays` in infra/main.bicep) and in the status table (kept until someone deletes them);
- each function's busy seconds (time with at least one invocation running, as Flex bills an instance)
  and its invocations, from the local host.
It prints them per million items, priced with the dated rates below, then the idle cost per month of
the queue triggers polling with no job open, measured on the same local host for `--idle-seconds`.

    .venv/bin/python -m bench.cost [--items 100000] [--idle-seconds 20]

Figures scale linearly from N to a million (a job's costs are flat per item: docs/performance.md).
Busy seconds are measured on this machine with every function, Azurite and the emulator sharing its
cores: an upper bound of what a Flex instance would be billed for the same work.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient
from azure.storage.blob import BlobServiceClient

from devhost.jobs import wait_for_jobs
from devhost.queue_host import BusyClock, QueueOptions, QueueTriggerListener, functions_of, timer_interval_seconds
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Timings
from shared.catalog import GeoCatalogClient, StaticToken
from shared.inputs.blob_events import BlobCreated
from shared.services import services_from_env
from shared.settings import DEFAULTS
from shared.steps.handlers import handle_sweep
from shared.steps.uploads import upload_job_id

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT.parent / "shared" / "data" / "stac-real" / "pc-naip-2.json"
COLLECTION = "naip-cost"
MILLION = 1_000_000
SECONDS_PER_MONTH = 730 * 3600
GB = 1024 ** 3

# Published pay-as-you-go rates, USD, East US, read 2026-12-02. Where the official page could not be
# reached from this machine the figure is marked ASSUMPTION: check it against the linked page.
# Blob Storage, Hot, LRS, general-purpose v2: https://azure.microsoft.com/pricing/details/storage/blobs/
# (figures as copied in github.com/mitchpaulus/dotfiles notes/azure.md: write and list $0.065, read $0.005,
# other $0.005 per 10,000; delete free; $0.018 per GB-month for the first 50 TB).
BLOB_WRITE_PER_10K = 0.065
BLOB_READ_PER_10K = 0.005
BLOB_OTHER_PER_10K = 0.005
BLOB_GB_MONTH = 0.018
# Queue Storage, general-purpose v2, LRS: https://azure.microsoft.com/pricing/details/storage/queues/
# ASSUMPTION: $0.004 per 10,000 for class 1 (put, update, delete) and for class 2 (get, peek, metadata).
QUEUE_CLASS1_PER_10K = 0.004
QUEUE_CLASS2_PER_10K = 0.004
# Table Storage, LRS: https://azure.microsoft.com/pricing/details/storage/tables/
# ASSUMPTION: $0.00036 per 10,000 transactions (an entity group transaction, one $batch, is one
# transaction), $0.045 per GB-month.
TABLE_PER_10K = 0.00036
TABLE_GB_MONTH = 0.045
# Flex Consumption, on demand (no always-ready instances):
# https://azure.microsoft.com/pricing/details/functions/ (figures as quoted in
# https://modal.com/blog/azure-function-pricing-guide, 2025-05-22): $0.000026 per GB-second of instance
# memory while executing, $0.40 per million executions; the monthly free grant (100,000 GB-s and 250,000
# executions per subscription) is left out, so the figures are what a busy subscription pays.
FLEX_GB_SECOND = 0.000026
FLEX_PER_MILLION_EXECUTIONS = 0.40


def rate_of(service: str, kind: str) -> float:
    """USD per 10,000 transactions of this kind."""
    if service == "table":
        return TABLE_PER_10K
    if service == "queue":
        return QUEUE_CLASS1_PER_10K if kind in {"PutMessage", "UpdateMessage", "DeleteMessage", "CreateQueue"} \
            else QUEUE_CLASS2_PER_10K  # GetMessages, PeekMessages, GetQueueMetadata
    if kind == "DeleteBlob":
        return 0.0
    if kind in {"PutBlob", "PutBlock", "PutBlockList", "ListBlobs", "CreateContainer", "SetBlobMetadata"}:
        return BLOB_WRITE_PER_10K
    if kind in {"GetBlob"}:
        return BLOB_READ_PER_10K
    return BLOB_OTHER_PER_10K


def kind_of(service: str, method: str, url: str) -> str:
    """The storage operation a request is (the names the storage logs and price pages use)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    comp = query.get("comp", [""])[0]
    path = [p for p in parts.path.split("/") if p][1:]  # after the account name
    if service == "queue":
        if path[-1:] == ["messages"]:
            return {"POST": "PutMessage", "GET": "PeekMessages" if "peekonly" in query else "GetMessages",
                    "DELETE": "ClearMessages"}.get(method, f"{method} messages")
        if len(path) >= 2 and path[-2] == "messages":
            return {"DELETE": "DeleteMessage", "PUT": "UpdateMessage"}.get(method, f"{method} message")
        if comp == "metadata":
            return "GetQueueMetadata" if method in {"GET", "HEAD"} else "SetQueueMetadata"
        return {"PUT": "CreateQueue", "DELETE": "DeleteQueue"}.get(method, f"{method} queue")
    if service == "table":
        if path and path[0] == "$batch":
            return "EntityGroupTransaction"
        if path and path[0].startswith("Tables"):
            return "CreateTable" if method == "POST" else f"{method} Tables"
        keyed = bool(path) and "(" in path[0] and "PartitionKey=" in path[0]
        return {"GET": "GetEntity" if keyed else "QueryEntities", "POST": "InsertEntity",
                "PUT": "UpdateEntity", "MERGE": "MergeEntity", "PATCH": "MergeEntity",
                "DELETE": "DeleteEntity"}.get(method, f"{method} entity")
    if query.get("restype") == ["container"]:
        if comp == "list":
            return "ListBlobs"
        return {"PUT": "CreateContainer", "GET": "GetContainerProperties",
                "HEAD": "GetContainerProperties"}.get(method, f"{method} container")
    if comp == "block":
        return "PutBlock"
    if comp == "blocklist":
        return "PutBlockList"
    if comp == "metadata":
        return "SetBlobMetadata" if method == "PUT" else "GetBlobMetadata"
    return {"PUT": "PutBlob", "GET": "GetBlob", "HEAD": "GetBlobProperties", "DELETE": "DeleteBlob"}.get(
        method, f"{method} blob")


@dataclass
class StorageMeter:
    """Counts the app's storage requests by (service, kind): a wrapper around the SDK transport's `send`.

    Requests from the benchmark's own thread are left out, and of the BlobCreated watcher (the stand-in
    for Event Grid) only its queue puts, which is what Event Grid's delivery costs.
    """

    ports: dict[int, str]
    counts: Counter = field(default_factory=Counter)
    counting: bool = False
    only_thread: str = ""  # count only threads whose name starts with this
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def installed(self) -> Iterator[StorageMeter]:
        original = RequestsTransport.send
        meter = self

        def send(transport, request, **kwargs):
            meter.record(request.method, request.url)
            return original(transport, request, **kwargs)

        RequestsTransport.send = send
        try:
            yield self
        finally:
            RequestsTransport.send = original

    def record(self, method: str, url: str) -> None:
        if not self.counting:
            return
        thread = threading.current_thread()
        if thread is threading.main_thread() or not thread.name.startswith(self.only_thread):
            return
        service = self.ports.get(urlsplit(url).port or 0)
        if service is None:
            return
        kind = kind_of(service, method, url)
        if thread.name.startswith("watch-") and kind != "PutMessage":
            return
        if kind == "GetMessages":  # by queue: most are the polls of queues with nothing to hand out
            kind = f"GetMessages {urlsplit(url).path.split('/')[2]}"
        with self._lock:
            self.counts[(service, kind)] += 1

    def take(self) -> Counter:
        with self._lock:
            taken, self.counts = self.counts, Counter()
        return taken


def ndjson(count: int) -> bytes:
    item = orjson.loads(TEMPLATE.read_bytes())
    item["collection"] = COLLECTION
    return b"".join(orjson.dumps({**item, "id": f"cost-{n:07d}"}) + b"\n" for n in range(count))


def retention_days() -> int:
    """`payloadRetentionDays`' default in infra/main.bicep: how long the lifecycle rule keeps payload blobs."""
    text = (ROOT / "infra" / "main.bicep").read_text()
    return int(re.search(r"param payloadRetentionDays int = (\d+)", text).group(1))


def instance_memory_gb() -> float:
    text = (ROOT / "infra" / "main.bicep").read_text()
    return int(re.search(r"param instanceMemoryMB int = (\d+)", text).group(1)) / 1024


@dataclass
class JobFigures:
    items: int
    wall: float
    state: str
    transactions: Counter
    busy: dict[str, float]
    invocations: dict[str, int]
    payload_bytes: int
    table_bytes: int  # the status table and the item index
    idle_seconds: float = 0.0
    idle_transactions: Counter = field(default_factory=Counter)
    sweep_transactions: Counter = field(default_factory=Counter)  # per sweep run with no job open
    sweep_busy_seconds: float = 0.0  # per sweep run with no job open


def busy_figures(stack: LocalStack) -> tuple[dict[str, float], dict[str, int]]:
    """Busy seconds and invocations of each queue function so far (the sweep timer runs per time, not per item)."""
    listeners = [listener for listener in stack.host.listeners if isinstance(listener, QueueTriggerListener)]
    return ({listener.name: listener.clock.busy_seconds for listener in listeners},
            {listener.name: listener.clock.invocations for listener in listeners})


def run(count: int, idle_seconds: float) -> JobFigures:
    # Production poll settings (as bench.pipeline_vs_pool); operations of 1-1.5 s.
    stack = LocalStack(emulator_options=EmulatorOptions(timings=Timings(0.5, 1.0)),
                       settings={"POLL_INITIAL_DELAY_SECONDS": "5", "POLL_MAX_DELAY_SECONDS": "60",
                                 "RETRY_BASE_DELAY_SECONDS": "2", "PLAN_SEGMENT_ITEMS": "20000"})
    with stack:
        ports = {port: service for service, port in stack.azurite.ports.items()}
        catalog = GeoCatalogClient(stack.emulator.url, StaticToken("bench"))
        catalog.create_collection({"type": "Collection", "id": COLLECTION, "description": "cost", "license": "proprietary",
                                   "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
                                   "links": [], "stac_version": "1.1.0"})
        settings = stack.services.settings
        blobs = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
        data = ndjson(count)
        with StorageMeter(ports).installed() as meter:
            services_from_env()  # the worker's clients, built (queues and containers ensured) once per instance
            time.sleep(2.0)  # the listeners' start-up polls are not the job's
            meter.take()
            busy_before, calls_before = busy_figures(stack)
            meter.counting = True
            started = time.monotonic()
            path = f"{COLLECTION}/items.ndjson"
            uploaded = blobs.get_blob_client(settings.drop_container, path).upload_blob(data, overwrite=True)
            job_id = upload_job_id(BlobCreated(settings.drop_container, path, str(uploaded["etag"]).strip('"'), None))
            job = wait_for_jobs(stack.services, [job_id], timeout=7200, every=2.0)[job_id]
            wall = time.monotonic() - started
            time.sleep(3.0)  # the last deletes of the last messages
            transactions = meter.take()
            busy_after, calls_after = busy_figures(stack)
            time.sleep(idle_seconds and 5.0)  # let the listeners back off fully, as an idle host has
            meter.take()
            idle_started = time.monotonic()
            time.sleep(idle_seconds)
            idle = meter.take()
            idle_elapsed = time.monotonic() - idle_started
            meter.only_thread = "timer-"
            sweep_busy = idle_sweep_seconds(SWEEP_RUNS)
            sweeps = Counter({key: n / SWEEP_RUNS for key, n in meter.take().items()})
            meter.counting = False
        payload_bytes = sum(blob.size for blob in blobs.get_container_client(settings.payload_container).list_blobs())
        table_bytes = sum(len(orjson.dumps(dict(entity), default=str))
                          for name in (settings.status_table, settings.item_index_table)
                          for entity in TableClient.from_connection_string(stack.azurite.connection_string, name).list_entities())
        return JobFigures(
            items=count, wall=wall, state=str(job.state), transactions=transactions,
            busy={name: busy_after[name] - busy_before[name] for name in busy_after},
            invocations={name: calls_after[name] - calls_before[name] for name in calls_after},
            payload_bytes=payload_bytes, table_bytes=table_bytes, idle_seconds=idle_elapsed, idle_transactions=idle,
            sweep_transactions=sweeps, sweep_busy_seconds=sweep_busy)


SWEEP_RUNS = 5


def idle_sweep_seconds(runs: int) -> float:
    """Runs the sweeper `runs` times on a timer-named thread, as the host's timer does; its busy seconds per run."""
    clock = BusyClock()

    def sweeps() -> None:
        for _ in range(runs):
            clock.begin()
            try:
                handle_sweep(services=services_from_env(), now=datetime.now(UTC))
            finally:
                clock.end()

    thread = threading.Thread(target=sweeps, name="timer-sweep-idle")
    thread.start()
    thread.join()
    return clock.busy_seconds / runs


def print_bill(figures: JobFigures) -> float:
    """Prints the bill per million items; returns its total in USD."""
    scale = MILLION / figures.items
    memory_gb = instance_memory_gb()
    days = retention_days()
    print(f"{figures.items} items in one NDJSON upload: {figures.state} in {figures.wall:.1f} s; "
          f"figures per million items (x{scale:g})")
    rows: list[tuple[str, str, float]] = []
    print(f"  {'storage transactions':44} {'count':>12} {'USD':>9}")
    for (service, kind), n in sorted(figures.transactions.items(), key=lambda kv: -kv[1]):
        usd = n * scale * rate_of(service, kind) / 10_000
        rows.append((service, kind, usd))
        print(f"    {service:6} {kind:36} {n * scale:12,.0f} {usd:9.4f}")
    by_service = {service: sum(usd for s, _, usd in rows if s == service) for service in ("queue", "table", "blob")}
    counts = {service: sum(n for (s, _), n in figures.transactions.items() if s == service) * scale
              for service in by_service}
    for service, usd in by_service.items():
        print(f"    {service} total {'':30} {counts[service]:12,.0f} {usd:9.4f}")
    payload_gb = figures.payload_bytes * scale / GB
    table_gb = figures.table_bytes * scale / GB
    payload_usd = payload_gb * BLOB_GB_MONTH * days / 30.4
    table_usd = table_gb * TABLE_GB_MONTH
    print("  bytes kept")
    print(f"    payload blobs {payload_gb:8.3f} GB for {days} days (lifecycle rule)  {payload_usd:9.4f}")
    print(f"    tables        {table_gb:8.3f} GB per month kept (no expiry)      {table_usd:9.4f} per month")
    print(f"  Flex Consumption, on demand, {memory_gb:g} GB instances (busy: at least one invocation running)")
    flex_usd = 0.0
    for name in sorted(figures.busy, key=lambda n: -figures.busy[n]):
        busy, calls = figures.busy[name] * scale, figures.invocations[name] * scale
        if calls == 0:
            continue
        usd = busy * memory_gb * FLEX_GB_SECOND + calls * FLEX_PER_MILLION_EXECUTIONS / MILLION
        flex_usd += usd
        print(f"    {name:14} busy {busy:10,.0f} s  executions {calls:10,.0f}  {usd:9.4f}")
    total = sum(by_service.values()) + payload_usd + table_usd + flex_usd
    print(f"  total per million items: {total:.4f} USD (storage transactions {sum(by_service.values()):.4f}, "
          f"bytes {payload_usd + table_usd:.4f}, Flex {flex_usd:.4f})")
    return total


def idle_polls_per_second(host_json: Path, queue_triggers: int) -> float:
    """Receives per second of an idle instance: every queue trigger polls once per maxPollingInterval once
    its backoff (doubling from 0.1 s while the queue is empty) has reached it."""
    return queue_triggers / QueueOptions.from_host_json(host_json).max_polling_seconds


def queue_triggers() -> list[str]:
    """The queue names (binding expressions) function_app.py's queue triggers read."""
    import function_app

    bindings = [orjson.loads(f.get_function_json())["bindings"][0] for f in functions_of(function_app.app)]
    return [binding["queueName"] for binding in bindings if binding["type"] == "queueTrigger"]


def print_idle(figures: JobFigures) -> None:
    triggers = len(queue_triggers())
    expected = idle_polls_per_second(ROOT / "host.json", triggers)
    measured = sum(figures.idle_transactions.values()) / max(figures.idle_seconds, 1e-9)
    per_month = measured * SECONDS_PER_MONTH
    usd = per_month * QUEUE_CLASS2_PER_10K / 10_000
    per_trigger = per_month / max(triggers, 1)
    kinds = ", ".join(f"{kind} {n}" for (_, kind), n in figures.idle_transactions.most_common())
    print(f"idle, no job open ({figures.idle_seconds:.0f} s measured: {kinds or 'nothing'}):")
    print(f"  queue polling: {measured:.2f} receives/s on one live instance running every function "
          f"({triggers} queue triggers / maxPollingInterval = {expected:.1f}/s): {per_month:,.0f} per month, "
          f"{usd:.2f} USD per month while it stays alive; on Flex each queue function scales on instances of its own, "
          f"{per_trigger:,.0f} receives and {usd / max(triggers, 1):.2f} USD per month for each instance kept alive, "
          f"none once it has scaled to zero")
    print_poison_triggers_compared(triggers)
    interval = timer_interval_seconds(str(DEFAULTS["SWEEP_SCHEDULE"][0]))
    runs = SECONDS_PER_MONTH / interval
    sweep_usd = sum(n * runs * rate_of(service, kind) / 10_000 for (service, kind), n in figures.sweep_transactions.items())
    flex_usd = runs * (figures.sweep_busy_seconds * instance_memory_gb() * FLEX_GB_SECOND + FLEX_PER_MILLION_EXECUTIONS / MILLION)
    kinds = ", ".join(f"{kind} {n:g}" for (_, kind), n in figures.sweep_transactions.most_common())
    print(f"  sweep timer every {interval:g} s: {runs:,.0f} runs per month, each {kinds or 'no storage request'} and "
          f"{figures.sweep_busy_seconds * 1000:.0f} ms busy: {sweep_usd:.4f} USD storage + {flex_usd:.4f} USD Flex per month")


def print_poison_triggers_compared(triggers: int) -> None:
    """The idle polling computed from host.json with and without a trigger on each queue's `-poison` queue
    (the app had them until the sweeper drained those queues: one receive per poison queue and sweep)."""
    poison_triggers = sum(1 for queue in queue_triggers() if queue.endswith("-poison"))
    without = triggers - poison_triggers
    with_them = without * 2
    for label, count in ((f"with a trigger on each -poison queue too (before the sweeper drained them), {with_them}", with_them),
                         (f"without (the sweeper drains them), {without}", without)):
        rate = idle_polls_per_second(ROOT / "host.json", count)
        print(f"  computed, {label} queue triggers: {rate:.1f} receives/s, {rate * SECONDS_PER_MONTH:,.0f} per month, "
              f"{rate * SECONDS_PER_MONTH * QUEUE_CLASS2_PER_10K / 10_000:.2f} USD per month per live instance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    figures = run(args.items, args.idle_seconds)
    print_bill(figures)
    if args.idle_seconds > 0:
        print_idle(figures)


if __name__ == "__main__":
    main()
