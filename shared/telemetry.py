"""The app's OpenTelemetry metrics and spans (docs/observability.md), through the OpenTelemetry API only.

Whoever runs the app configures the SDK: in Azure the Python worker does (`PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`
makes it call `configure_azure_monitor()`), under `make up` the local host does from the standard `OTEL_*`
variables (`devhost.otel`), and tests install in-memory readers. With no SDK every call here is a no-op.

Each hook is one line at its site and takes what the site has in hand. Dimensions stay bounded: a collection,
an outcome or state name, a call kind and status code, a queue or pacer group; never an item id. Span
attributes carry `job_id` and `batch_id` (ids the app checked), never a URL, a token or a SAS.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

SCOPE = "geocatalog_ingest"
PREFIX = "geocatalog_ingest."
ITEM_OUTCOMES = (("Succeeded", "items_succeeded"), ("Failed", "items_failed"), ("Rejected", "items_rejected"),
                 ("Superseded", "items_superseded"))

_meter = metrics.get_meter(SCOPE)
_tracer = trace.get_tracer(SCOPE)

_items_settled = _meter.create_counter(PREFIX + "items.settled", unit="{item}",
                                       description="Items that reached a terminal status, counted when their job's verdict is final")
_batches_submitted = _meter.create_counter(PREFIX + "batches.submitted", unit="{batch}",
                                           description="Batches the GeoCatalog accepted (one operation each)")
_catalog_calls = _meter.create_counter(PREFIX + "catalog.calls", unit="{call}",
                                       description="GeoCatalog requests by kind and HTTP status (or Timeout, ConnectionError)")
_poison_messages = _meter.create_counter(PREFIX + "poison.messages", unit="{message}",
                                         description="Messages the host moved to a poison queue")
_jobs_swept = _meter.create_counter(PREFIX + "jobs.swept", unit="{job}", description="Jobs the sweeper ended")
_operation_duration = _meter.create_histogram(PREFIX + "operation.duration", unit="s",
                                              description="A GeoCatalog operation's length by the service's clock")
_poll_lag = _meter.create_histogram(PREFIX + "poll.lag", unit="s",
                                    description="The poll that saw an operation ended, minus the operation's end")
_settle_time = _meter.create_histogram(PREFIX + "batch.settle_time", unit="s",
                                       description="From a batch's submission to its terminal state")
_message_age = _meter.create_histogram(PREFIX + "queue.message_age", unit="s",
                                       description="A queue message's age when a function picks it up")
_oldest_age = _meter.create_gauge(PREFIX + "queue.oldest_age", unit="s",
                                  description="Age of the oldest visible message of a queue, as the sweeper last saw it")

_pacer_rates: list[Callable[[], dict[str, float]]] = []


def _observe_pacer(_: CallbackOptions) -> Iterator[Observation]:
    for rates in list(_pacer_rates):
        for group, rate in rates().items():
            yield Observation(rate, {"group": group})


_meter.create_observable_gauge(PREFIX + "pacer.rate", callbacks=[_observe_pacer], unit="{call}/s",
                               description="The adaptive GeoCatalog call rate of each calling group")


@dataclass
class _Invocation:
    job_id: str = ""
    batch_id: str = ""


_current: contextvars.ContextVar[_Invocation | None] = contextvars.ContextVar("telemetry_invocation", default=None)


class JobLike(Protocol):
    job_id: str
    collection: str


class BatchLike(Protocol):
    job_id: str
    batch_id: str
    collection: str
    state: Any
    submitted: datetime | None


# ----- invocations -------------------------------------------------------------------------------


@contextmanager
def invocation(function: str, *, queue: str = "", inserted: datetime | None = None,
               now: datetime | None = None) -> Iterator[None]:
    """One span around a function invocation; with `inserted` (the message's insertion time), its age at pickup."""
    if queue and inserted is not None and now is not None:
        inserted = inserted if inserted.tzinfo is not None else inserted.replace(tzinfo=UTC)
        _message_age.record(max(0.0, (now - inserted).total_seconds()), {"queue": queue})
    attributes = {"faas.trigger": "pubsub" if queue else "timer", **({"messaging.destination.name": queue} if queue else {})}
    token = _current.set(_Invocation())
    try:
        with _tracer.start_as_current_span(f"{SCOPE}.{function}", kind=SpanKind.CONSUMER if queue else SpanKind.INTERNAL,
                                           attributes=attributes):
            yield
    finally:
        _current.reset(token)


def tag(*, job_id: str = "", batch_id: str = "") -> None:
    """Name the job (and batch) the current invocation works on: on its span and on the GeoCatalog calls it makes."""
    current = _current.get()
    if current is not None:
        current.job_id, current.batch_id = job_id or current.job_id, batch_id or current.batch_id
    span = trace.get_current_span()
    for key, value in (("job_id", job_id), ("batch_id", batch_id)):
        if value:
            span.set_attribute(key, value)


# ----- GeoCatalog calls --------------------------------------------------------------------------


@dataclass
class CatalogCall:
    """What one GeoCatalog request came to; the client sets `code` (the status, or why there was none)."""

    kind: str
    code: str = ""


@contextmanager
def catalog_call(kind: str) -> Iterator[CatalogCall]:
    """One span and one count per GeoCatalog request; `kind` is e.g. "POST items" (no URL, no id)."""
    call = CatalogCall(kind)
    current = _current.get()
    attributes = {"geocatalog.call.kind": kind}
    if current is not None:
        attributes.update({k: v for k, v in (("job_id", current.job_id), ("batch_id", current.batch_id)) if v})
    with _tracer.start_as_current_span(f"GeoCatalog {kind}", kind=SpanKind.CLIENT, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        try:
            yield call
        finally:
            code = call.code or "Error"
            span.set_attribute("geocatalog.call.code", code)
            if code.isdigit():
                span.set_attribute("http.response.status_code", int(code))
            if not code.isdigit() or int(code) >= 400:
                span.set_status(Status(StatusCode.ERROR))
            _catalog_calls.add(1, {"kind": kind, "code": code})


# ----- batches and jobs --------------------------------------------------------------------------


def batch_submitted(row: BatchLike | None) -> None:
    if row is not None:
        _batches_submitted.add(1, {"collection": row.collection})


def operation_finished(collection: str, status: str, *, seconds: float | None, ended: datetime | None,
                       now: datetime) -> None:
    """A poll saw the operation end: its length (the service's clock) and how late the poll came."""
    attributes = {"collection": collection, "outcome": status}
    if seconds is not None:
        _operation_duration.record(seconds, attributes)
    if ended is not None:
        _poll_lag.record(max(0.0, (now - ended).total_seconds()), {"collection": collection})


def batch_settled(row: BatchLike | None, now: datetime) -> None:
    """A batch this delivery ended (`row` None: another delivery had): submit-to-settled time."""
    if row is not None and row.submitted is not None:
        _settle_time.record(max(0.0, (now - row.submitted).total_seconds()),
                            {"collection": row.collection, "outcome": str(row.state)})


def job_ended(row: JobLike | None) -> None:
    """A job whose verdict this write made final: its items by terminal status, exactly as its row counts them."""
    if row is None:
        return
    for outcome, column in ITEM_OUTCOMES:
        count = getattr(row, column, 0)
        if count:
            _items_settled.add(count, {"collection": row.collection, "outcome": outcome})


def job_swept(row: JobLike | None) -> None:
    if row is not None:
        _jobs_swept.add(1, {"collection": row.collection})


def poison_message(queue: str) -> None:
    _poison_messages.add(1, {"queue": queue})


# ----- gauges ------------------------------------------------------------------------------------


def queue_oldest_age(queue: str, seconds: float) -> None:
    _oldest_age.set(max(0.0, seconds), {"queue": queue})


def watch_pacer(rates: Callable[[], dict[str, float]]) -> None:
    """Report `rates()` (calls per second by group) as the pacer.rate gauge; the latest one registered wins."""
    _pacer_rates[:] = [rates]
