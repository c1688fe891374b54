"""The OpenTelemetry SDK for the local host, from the standard `OTEL_*` environment variables.

In Azure the Python worker sets the SDK up (Application Insights); locally `up` calls `configure_from_env`,
which exports the same metrics and spans to the console or to an OTLP/HTTP endpoint:

- `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`: `otlp`, `console` or `none` (comma-separated lists allowed).
  Unset: `otlp` when an OTLP endpoint is given, else `none`.
- `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`), `..._HEADERS`,
  `..._TIMEOUT`: read by the OTLP/HTTP exporter itself (protobuf over HTTP, e.g. http://localhost:4318).
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_*`: read by the SDK.
- `OTEL_SDK_DISABLED=true`: nothing.

Nothing configured: no SDK at all, so every telemetry call stays the API's no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from shared.errors import ConfigurationError

SERVICE_NAME = "geocatalog-ingest"
EXPORTERS = ("otlp", "console", "none")


def exporter_names(signal: str, env: Mapping[str, str]) -> list[str]:
    """The exporters asked for `signal` ("traces" or "metrics"), as the OpenTelemetry spec reads the variables."""
    given = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if not given:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        given = "otlp" if endpoint else "none"
    names = [name.strip().lower() for name in given.split(",") if name.strip()]
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise ConfigurationError(f"OTEL_{signal.upper()}_EXPORTER: {', '.join(unknown)} is not one of {', '.join(EXPORTERS)}")
    return [name for name in names if name != "none"]


def configure_from_env(env: Mapping[str, str] | None = None) -> Callable[[], None] | None:
    """Install tracer and meter providers as the variables ask; returns their shutdown (it flushes), or None when
    nothing is to be exported.

    Raises:
        ConfigurationError: an unknown exporter name, or `otlp` without the OTLP exporter package installed.
    """
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces, metrics_ = exporter_names("traces", env), exporter_names("metrics", env)
    if not traces and not metrics_:
        return None
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    resource = Resource.create(defaults)
    shutdowns: list[Callable[[], Any]] = []
    if traces:
        tracer_provider = TracerProvider(resource=resource)
        for name in traces:
            tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(name)))
        trace.set_tracer_provider(tracer_provider)
        shutdowns.append(tracer_provider.shutdown)
    if metrics_:
        readers = [PeriodicExportingMetricReader(_metric_exporter(name)) for name in metrics_]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
        shutdowns.append(meter_provider.shutdown)

    def shutdown() -> None:
        for stop in shutdowns:
            stop()

    return shutdown


def _span_exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigurationError(_NO_OTLP) from None
    return OTLPSpanExporter()


def _metric_exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError:
        raise ConfigurationError(_NO_OTLP) from None
    return OTLPMetricExporter()


_NO_OTLP = "the otlp exporter needs opentelemetry-exporter-otlp-proto-http (requirements-dev.txt: `make setup`)"
