"""OpenTelemetry: the metrics and spans of real jobs through the local host (Azurite, the emulator, function_app.py),
read with the SDK's in-memory reader and exporter and compared with the status table; and `up` exporting them to the
console and to an OTLP/HTTP endpoint from the standard OTEL_* variables.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cli.main import cli
from devhost.jobs import send_items, wait_for_jobs
from devhost.otel import configure_from_env, exporter_names
from emulator import EmulatorOptions, Faults, Timings
from shared.catalog.client import call_kind
from shared.errors import ConfigurationError
from shared.steps.handlers import handle_poison_message, handle_sweep
from shared.store.status import JobRow, JobState
from tests.helpers import make_item, wait_until
from tests.test_cli_up import Up
from tests.test_emulator_faults import set_faults
from tests.test_pipeline_e2e import with_collection
from tests.test_quickstart_e2e import quickstart_stack, search_message

SECRETS = ("sig=", "se=", "sv=", "local-dev-token", "Bearer")


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def points(self, name: str, **where: str) -> list[tuple[dict[str, Any], Any]]:
        """The data points of metric `name` whose attributes include `where`."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if all(attributes.get(k) == v for k, v in where.items()):
                            found.append((attributes, point))
        return found

    def sums(self, name: str, by: str, **where: str) -> dict[str, float]:
        totals: Counter[str] = Counter()
        for attributes, point in self.points(name, **where):
            totals[attributes[by]] += point.value
        return dict(totals)

    def histogram_count(self, name: str, **where: str) -> int:
        return sum(point.count for _, point in self.points(name, **where))


@pytest.fixture(scope="module")
def otel() -> Iterator[Telemetry]:
    """The SDK with in-memory readers, installed once for this module (a process takes one provider of each)."""
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    assert trace.get_tracer_provider() is tracer_provider, "another test installed a tracer provider first"
    yield Telemetry(spans, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def attribute_text(span: ReadableSpan) -> str:
    return " ".join([span.name, *(str(value) for value in (span.attributes or {}).values())])


def test_a_job_through_the_local_host_emits_metrics_and_spans_that_match_its_rows(make_stack, otel: Telemetry) -> None:
    stack = quickstart_stack(make_stack)
    services = stack.services
    assert services is not None
    collection = with_collection(stack, "otel-landcover")
    set_faults(stack.emulator, rate_limit_next=1)  # the app's first GeoCatalog call is answered 429
    signed = {**search_message(stack, "otel-signed", sign="planetary-computer"), "collection": collection}
    services.queues.send(services.settings.submit_queue, orjson.dumps(signed).decode())
    send_items(services, [make_item("otel-ok", collection), {"type": "Feature", "id": "otel-bad"}], collection=collection,
               job_id="otel-mixed")
    jobs = wait_for_jobs(services, ["otel-signed", "otel-mixed"], timeout=120)
    assert jobs["otel-signed"].state == JobState.SUCCEEDED and jobs["otel-mixed"].items_rejected == 1
    batches = [row for job_id in jobs for row in services.status.batches(job_id)]
    submitted = [row for row in batches if row.operation_id]

    # Items by terminal status: exactly the job rows' counters.
    expected = Counter()
    for job in jobs.values():
        expected.update({"Succeeded": job.items_succeeded, "Failed": job.items_failed, "Rejected": job.items_rejected})
    assert otel.sums("geocatalog_ingest.items.settled", "outcome", collection=collection) == +expected
    assert otel.sums("geocatalog_ingest.batches.submitted", "collection", collection=collection) == {collection: len(submitted)}
    by_state = Counter(str(row.state) for row in submitted)  # the mixed job's item fails: its asset is not signed
    assert by_state == {"Succeeded": 1, "Failed": 1}
    for outcome, count in by_state.items():
        assert otel.histogram_count("geocatalog_ingest.batch.settle_time", collection=collection, outcome=outcome) == count
    assert otel.histogram_count("geocatalog_ingest.operation.duration", collection=collection) == len(submitted)
    assert otel.histogram_count("geocatalog_ingest.poll.lag", collection=collection) == len(submitted)

    calls = otel.sums("geocatalog_ingest.catalog.calls", "code", kind="POST items")
    assert calls.get("202", 0) >= len(submitted)
    assert sum(otel.sums("geocatalog_ingest.catalog.calls", "code").values()) > len(submitted)
    assert otel.sums("geocatalog_ingest.catalog.calls", "code").get("429", 0) >= 1  # 429s are visible
    assert otel.histogram_count("geocatalog_ingest.queue.message_age", queue=services.settings.submit_queue) >= 2
    assert otel.histogram_count("geocatalog_ingest.queue.message_age", queue=services.settings.poll_queue) >= len(submitted)
    rates = otel.sums("geocatalog_ingest.pacer.rate", "group")
    assert rates and set(rates) <= {"submit", "work", "poll"} and all(rate > 0 for rate in rates.values())

    spans = otel.spans.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    planned = [s for s in spans if s.name == "geocatalog_ingest.submit" and (s.attributes or {}).get("job_id") == "otel-signed"]
    assert planned
    batch_ids = {row.batch_id for row in submitted if row.job_id == "otel-signed"}
    posts = [s for s in spans if s.name == "GeoCatalog POST items" and (s.attributes or {}).get("job_id") == "otel-signed"]
    assert {s.attributes["batch_id"] for s in posts} == batch_ids
    for post in posts:  # each call is a child of the invocation that made it, in its trace
        parent = by_id[post.parent.span_id]
        assert parent.name == "geocatalog_ingest.work" and parent.context.trace_id == post.context.trace_id
        assert parent.attributes["batch_id"] == post.attributes["batch_id"]
    polls = [s for s in spans if s.name == "GeoCatalog GET operation" and (s.attributes or {}).get("job_id") == "otel-signed"]
    assert {s.attributes["batch_id"] for s in polls} == batch_ids
    assert all(by_id[s.parent.span_id].name == "geocatalog_ingest.poll" for s in polls)

    # The signed hrefs went to the service and the token to its header; neither is in any span or metric attribute.
    for span in spans:
        assert not any(secret in attribute_text(span) for secret in SECRETS), span.name
        assert "?" not in attribute_text(span) and "://" not in attribute_text(span), span.name
    for name in ("geocatalog_ingest.catalog.calls", "geocatalog_ingest.items.settled", "geocatalog_ingest.queue.message_age"):
        for attributes, _ in otel.points(name):
            assert not any(secret in str(value) for value in attributes.values() for secret in SECRETS)
            assert "otel-ok" not in attributes.values()  # no item id as a dimension


def test_the_sweeper_reports_queue_ages_and_swept_jobs_and_poison_messages_are_counted(make_stack, otel: Telemetry) -> None:
    stack = make_stack()
    stack.pause_functions()  # nothing reads the queues: the sweep below is called by hand
    services = stack.services
    assert services is not None
    settings = services.settings
    services.queues.send(settings.submit_queue, '{"v": 1}')
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.submit_retry_seconds + settings.sweep_stale_seconds + 60)
    services.status.create_job(JobRow(job_id="otel-stalled", collection="otel-swept", claimed_by="m-1"), long_ago)

    handle_sweep(services=services, now=datetime.now(UTC) + timedelta(seconds=120))

    ages = otel.sums("geocatalog_ingest.queue.oldest_age", "queue")
    assert ages[settings.submit_queue] >= 120 and ages[settings.work_queue] == 0
    assert services.status.get_job("otel-stalled").state == JobState.FAILED
    assert otel.sums("geocatalog_ingest.jobs.swept", "collection", collection="otel-swept") == {"otel-swept": 1}

    before = otel.sums("geocatalog_ingest.poison.messages", "queue").get("work-poison", 0)
    handle_poison_message(b"not json", queue="work-poison", services=services, now=datetime.now(UTC))
    assert otel.sums("geocatalog_ingest.poison.messages", "queue")["work-poison"] == before + 1


def test_a_job_whose_last_batch_the_sweeper_times_out_counts_as_swept(make_stack, otel: Telemetry) -> None:
    stack = make_stack(emulator_options=EmulatorOptions(timings=Timings(0.1, 0.2), faults=Faults(stuck_operations_fraction=1.0)))
    services = stack.services
    assert services is not None
    collection = with_collection(stack, "otel-stuck")
    send_items(services, [make_item("stuck-1", collection)], collection=collection, job_id="otel-stuck-job")
    wait_until(lambda: [row for row in services.status.batches("otel-stuck-job") if row.operation_id])
    stack.pause_functions()  # its polls stop: only the sweeper can end it now
    settings = services.settings
    later = datetime.now(UTC) + timedelta(seconds=settings.poll_deadline_seconds + 2 * settings.poll_max_delay_seconds + 60)

    handle_sweep(services=services, now=later)

    job = services.status.get_job("otel-stuck-job")
    assert job.state == JobState.FAILED and job.items_failed == 1
    assert otel.sums("geocatalog_ingest.jobs.swept", "collection", collection=collection) == {collection: 1}
    assert otel.sums("geocatalog_ingest.items.settled", "outcome", collection=collection) == {"Failed": 1}
    assert otel.histogram_count("geocatalog_ingest.batch.settle_time", collection=collection, outcome="TimedOut") == 1


@pytest.mark.parametrize(("method", "url", "kind"), [
    ("POST", "https://gc.example/stac/collections/c1/items?api-version=2026-04-15", "POST items"),
    ("PUT", "https://gc.example/stac/collections/c1/items/item-1", "PUT item"),
    ("DELETE", "https://gc.example/stac/collections/items/items/search", "DELETE item"),  # ids never confuse it
    ("GET", "https://gc.example/inma/operations/op-1?api-version=2026-04-15", "GET operation"),
    ("GET", "https://gc.example/api/collections/c1/operations/op-1/logs", "GET logs"),
    ("POST", "https://gc.example/stac/search?sig=x", "POST search"),
    ("GET", "https://gc.example/stac/collections/c1", "GET collection"),
    ("POST", "https://gc.example/stac/collections", "POST collections"),
    ("GET", "https://gc.example/elsewhere/1/2/3/4", "GET other"),
])
def test_a_call_kind_names_the_resource_and_never_an_id(method: str, url: str, kind: str) -> None:
    assert call_kind(method, url) == kind


def test_the_otel_variables_choose_the_exporters_and_nothing_set_exports_nothing() -> None:
    assert configure_from_env({}) is None
    assert configure_from_env({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) is None
    assert exporter_names("traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == ["otlp"]
    assert exporter_names("metrics", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"}) == []
    assert exporter_names("metrics", {"OTEL_METRICS_EXPORTER": "console, none"}) == ["console"]
    with pytest.raises(ConfigurationError, match="zipkin"):
        exporter_names("traces", {"OTEL_TRACES_EXPORTER": "zipkin"})


def run_a_job_through_up(run_dir: Path, tmp_path: Path, job_id: str) -> Up:
    up = Up(run_dir)
    try:
        path = tmp_path / "items.json"
        path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": [make_item("o1"), make_item("o2")]}))
        result = CliRunner().invoke(cli, ["--run-dir", str(run_dir), "submit", str(path), "--collection", "otel-up",
                                          "--job-id", job_id, "--watch"], catch_exceptions=False, env={"AzureWebJobsStorage": ""})
        assert result.exit_code == 0, result.output
    finally:
        assert up.terminate() == 0  # stopping flushes what the exporters still hold
    return up


def test_up_exports_to_the_console_when_the_otel_variables_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    output = "".join(run_a_job_through_up(tmp_path / "run", tmp_path, "otel-console").lines)
    assert '"name": "GeoCatalog POST items"' in output and '"job_id": "otel-console"' in output
    assert '"name": "geocatalog_ingest.items.settled"' in output and '"outcome": "Succeeded"' in output
    assert '"service.name": "geocatalog-ingest"' in output
    assert "local-dev-token" not in output and "sig=" not in output


def test_up_exports_nothing_without_otel_variables(tmp_path: Path) -> None:
    output = "".join(run_a_job_through_up(tmp_path / "run", tmp_path, "otel-quiet").lines)
    assert "geocatalog_ingest." not in output and "GeoCatalog POST" not in output


class OtlpReceiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_up_exports_to_an_otlp_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtlpReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        run_a_job_through_up(tmp_path / "run", tmp_path, "otel-otlp")
    finally:
        server.shutdown()
    traces = b"".join(body for path, body in OtlpReceiver.received if path == "/v1/traces")
    exported = b"".join(body for path, body in OtlpReceiver.received if path == "/v1/metrics")
    assert b"GeoCatalog POST items" in traces and b"otel-otlp" in traces
    assert b"geocatalog_ingest.items.settled" in exported and b"geocatalog_ingest.batches.submitted" in exported
    assert b"local-dev-token" not in traces + exported
