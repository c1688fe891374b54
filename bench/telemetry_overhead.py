"""What OpenTelemetry costs on the submit path, in us per item: without an SDK, and with one, in the same run.

The path is `bench.submit_path`'s (parse, validate, batch, serialize, message: the CPU the app spends on every item
between the bytes it reads and the bytes it POSTs), plus, per batch of 100, the telemetry the worker adds there: the
work invocation's span (with its message age and its job and batch ids), the span and count of the POST, and the
batches.submitted count (`shared.telemetry`). First with no SDK installed (the API's no-ops: what the app costs
when nothing is configured), then with the SDK as it runs deployed: a batch span processor and a metric reader,
exporting to memory instead of Application Insights (the export runs on the SDK's own thread). Each is timed in turns
with the same path without the hooks, as a baseline measured in the same run. Target: < 10 %.

    .venv/bin/python -m bench.telemetry_overhead [--items 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.submit_path import naip_lines, submit_path
from shared import telemetry
from shared.batching import split_serialized
from shared.items import validated
from shared.messages import BatchMessage

BATCH_ITEMS = 100


@dataclass
class SubmittedRow:
    collection: str


def submit_path_with_hooks(lines: list[bytes], collection: str) -> int:
    """`bench.submit_path.submit_path`, each batch with the telemetry calls its work invocation makes."""
    items = [orjson.loads(line) for line in lines]
    valid, _ = validated(items, collection)
    row, now = SubmittedRow(collection), datetime.now(UTC)
    batches = 0
    for number, _group in enumerate(split_serialized(valid, max_items=BATCH_ITEMS, max_bytes=2_000_000), start=1):
        BatchMessage("job", f"batch-{number:06d}").to_json()
        batch_hooks(f"batch-{number:06d}", row, now)
        batches += 1
    return batches


def batch_hooks(batch_id: str, row: SubmittedRow, now: datetime) -> None:
    """The telemetry of one batch's work invocation, as the worker makes it (the work itself left out)."""
    with telemetry.invocation("work", queue="stac-work", inserted=now, now=now):
        telemetry.tag(job_id="job", batch_id=batch_id)
        with telemetry.catalog_call("POST items") as call:
            call.code = "202"
        telemetry.batch_submitted(row)


def hooks_seconds_per_batch(batches: int = 2000) -> float:
    row, now = SubmittedRow("naip"), datetime.now(UTC)
    started = time.perf_counter()
    for number in range(batches):
        batch_hooks(f"batch-{number:06d}", row, now)
    return (time.perf_counter() - started) / batches


def timed(function, lines: list[bytes], collection: str) -> float:
    started = time.perf_counter()
    function(lines, collection)
    return time.perf_counter() - started


def interleaved(rounds: int, lines: list[bytes], collection: str) -> tuple[float, float]:
    """Median seconds of (the path without telemetry, the path with it), their rounds taken in turns (a loaded machine
    slows both alike)."""
    plain, hooked = [], []
    for _ in range(rounds):
        plain.append(timed(submit_path, lines, collection))
        hooked.append(timed(submit_path_with_hooks, lines, collection))
    return statistics.median(plain), statistics.median(hooked)


def install_sdk() -> tuple[TracerProvider, MeterProvider, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lines, collection = naip_lines(args.items), "naip"
    submit_path_with_hooks(lines[:200], collection)  # warm up: compile the schema, load pystac's hooks

    plain, no_sdk = interleaved(args.rounds, lines, collection)
    hooks_no_sdk = statistics.median(hooks_seconds_per_batch() for _ in range(args.rounds))
    tracer_provider, meter_provider, spans = install_sdk()
    submit_path_with_hooks(lines[:200], collection)
    plain_again, with_sdk = interleaved(args.rounds, lines, collection)
    hooks_sdk = statistics.median(hooks_seconds_per_batch() for _ in range(args.rounds))
    tracer_provider.force_flush()
    exported = len(spans.get_finished_spans())
    tracer_provider.shutdown()
    meter_provider.shutdown()

    def us(seconds: float) -> float:
        return 1e6 * seconds / args.items

    path = min(plain, plain_again)
    share = 100 * (hooks_sdk / BATCH_ITEMS) / (path / args.items)
    print(f"{args.items} real NAIP items in batches of {BATCH_ITEMS}, median of {args.rounds} rounds")
    print(f"submit path without telemetry:                 {us(path):8.1f} us/item")
    print(f"telemetry of one batch, no SDK (API no-ops):   {1e6 * hooks_no_sdk:8.1f} us/batch "
          f"= {1e6 * hooks_no_sdk / BATCH_ITEMS:.2f} us/item")
    print(f"telemetry of one batch, SDK exporting to memory: {1e6 * hooks_sdk:6.1f} us/batch "
          f"= {1e6 * hooks_sdk / BATCH_ITEMS:.2f} us/item: {share:.2f} % of the path (target < 10 %)")
    print(f"whole path in turns with and without the hooks (noisy on a loaded machine): no SDK {us(plain):.1f} -> "
          f"{us(no_sdk):.1f} us/item, SDK {us(plain_again):.1f} -> {us(with_sdk):.1f} us/item; {exported} spans exported")

if __name__ == "__main__":
    main()
