"""Job-finished events (`shared.store.job_events`) on real Azurite: the outbox on the job row, one event per
job whatever is delivered twice, a failing sink retried without touching the verdict, a crash between the
send and the mark sent again with the same id, and no secret in an event."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from azure.core.credentials import AzureKeyCredential
from azure.storage.queue import QueueClient

from devhost.azurite import Azurite
from shared.errors import ConfigurationError
from shared.event_publishers import EventGridPublisher, QueueEventSink
from shared.services import Storage, connect_storage, ensure_storage, job_events
from shared.settings import Settings
from shared.steps.rollup import settle_job
from shared.store import (
    JOB_FINISHED,
    EventState,
    JobEvents,
    JobRow,
    JobState,
    claim_event,
    end_job,
    event_id,
    event_source,
    give_up_stalled,
    job_finished_event,
    mark_planned,
    mark_rejected,
)
from tests.conftest import unique_storage_names

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SAS = "sv=2024-11-04&se=2030-01-01&sig=TOPSECRETSIGNATURE"


@pytest.fixture
def settings(azurite: Azurite) -> Settings:
    names = unique_storage_names()
    return Settings.from_env({"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": "https://x.invalid",
                              "JOB_EVENTS_QUEUE": names["SUBMIT_QUEUE"].replace("submit", "job-events"), **names})


@pytest.fixture
def storage(settings: Settings) -> Storage:
    store = connect_storage(settings)
    ensure_storage(settings, store)
    return store


@pytest.fixture
def sink(azurite: Azurite, settings: Settings) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, settings.job_events_queue)


def wired(settings: Settings, storage: Storage) -> JobEvents:
    """The events as `build_services` wires them (to the local queue)."""
    events = job_events(settings, storage)
    storage.status.on_job_ended = events.job_ended
    return events


def queued_events(sink: QueueClient) -> list[dict[str, Any]]:
    return [orjson.loads(m.content) for m in sink.peek_messages(max_messages=32)]


def running_job(storage: Storage, job_id: str, **fields: Any) -> None:
    storage.status.create_job(JobRow(job_id, state=JobState.RUNNING, collection="c-1", claimed_by="m-1", **fields), NOW)
    mark_planned(storage.status, job_id, collection="c-1", item_count=0, batch_count=0, now=NOW)


class FailingSink:
    def __init__(self) -> None:
        self.calls = 0

    def publish(self, event: dict[str, Any]) -> None:
        self.calls += 1
        raise ConnectionError("topic unreachable")


class Crash(BaseException):
    """The worker dies (not an error the code may catch)."""


class SendsThenDies:
    def __init__(self, inner: QueueEventSink) -> None:
        self._inner = inner

    def publish(self, event: dict[str, Any]) -> None:
        self._inner.publish(event)
        raise Crash


def test_ending_a_job_publishes_exactly_one_event_even_when_settled_again(settings, storage, sink) -> None:
    wired(settings, storage)
    running_job(storage, "job-1")
    ended = end_job(storage.status, "job-1", state=JobState.SUCCEEDED, code="", message="", now=NOW)
    assert ended is not None and ended.finished == NOW and ended.event_state == EventState.PENDING  # the same write
    row = storage.status.get_job("job-1")
    assert (row.state, row.event_state, row.event_attempts) == (JobState.SUCCEEDED, EventState.PUBLISHED, 1)
    # A second settle, a redelivered ending and the sweeper's pass find it terminal and published.
    assert end_job(storage.status, "job-1", state=JobState.FAILED, code="X", message="", now=NOW) is None
    settle_job("job-1", status=storage.status, now=NOW)
    assert JobEvents(storage.status, QueueEventSink(lambda body: None), source="s").publish_pending(NOW) == 0
    [event] = queued_events(sink)
    assert (event["type"], event["subject"], event["specversion"]) == (JOB_FINISHED, "job-1", "1.0")
    assert event["id"] == event_id(event_source("devstoreaccount1", settings.status_table), "job-1")
    assert event["data"]["state"] == "Succeeded" and event["data"]["collection"] == "c-1"


def test_every_verb_that_ends_a_job_marks_its_event(settings, storage, sink) -> None:
    wired(settings, storage)
    storage.status.create_job(JobRow("rejected-1", claimed_by="m-1"), NOW)
    mark_rejected(storage.status, "rejected-1", claimed_by="m-1", item_count=3, code="InvalidInput", reason="bad", now=NOW)
    storage.status.create_job(JobRow("stalled-1", state=JobState.RUNNING), NOW - timedelta(hours=2))
    give_up_stalled(storage.status, "stalled-1", older_than=NOW - timedelta(hours=1), reason="swept", now=NOW)
    subjects = {e["subject"]: e["data"] for e in queued_events(sink)}
    assert subjects["rejected-1"]["state"] == "Rejected" and subjects["rejected-1"]["counts"]["rejected"] == 3
    assert subjects["stalled-1"]["state"] == "Failed" and subjects["stalled-1"]["error"]["code"] == "GaveUp"
    assert len(subjects) == 2


def test_a_held_event_is_not_published_by_another_publisher(settings, storage, sink) -> None:
    running_job(storage, "held-1")  # not wired: the event waits Pending
    end_job(storage.status, "held-1", state=JobState.SUCCEEDED, code="", message="", now=NOW)
    assert claim_event(storage.status, "held-1", claimed_by="other", until=NOW + timedelta(minutes=5), now=NOW)
    events = wired(settings, storage)
    assert events.publish("held-1", NOW) is None
    assert events.publish_pending(NOW) == 0 and queued_events(sink) == []


def test_a_failing_sink_is_retried_by_the_sweeper_and_never_changes_the_verdict(settings, storage, sink) -> None:
    failing = FailingSink()
    source = event_source("devstoreaccount1", settings.status_table)
    storage.status.on_job_ended = JobEvents(storage.status, failing, source=source).job_ended
    running_job(storage, "flaky-1")
    ended = end_job(storage.status, "flaky-1", state=JobState.PARTIALLY_SUCCEEDED, code="InvalidItem",
                    message="InvalidItem x1", now=NOW)  # the publish failed inside; the ending write stands
    assert ended is not None and failing.calls == 1
    row = storage.status.get_job("flaky-1")
    assert (row.state, row.error_code, row.event_state) == (JobState.PARTIALLY_SUCCEEDED, "InvalidItem", EventState.PENDING)
    assert "topic unreachable" in row.event_error and not row.event_claimed_by
    assert JobEvents(storage.status, failing, source=source).publish_pending(NOW) == 0 and failing.calls == 2
    later = NOW + timedelta(minutes=5)
    assert wired(settings, storage).publish_pending(later) == 1
    row = storage.status.get_job("flaky-1")
    assert (row.state, row.event_state, row.event_attempts, row.event_error) == (
        JobState.PARTIALLY_SUCCEEDED, EventState.PUBLISHED, 3, "")
    [event] = queued_events(sink)
    assert event["data"]["error"] == {"code": "InvalidItem", "message": "InvalidItem x1"}


def test_a_crash_between_send_and_mark_is_sent_again_with_the_same_id(settings, storage, sink) -> None:
    source = event_source("devstoreaccount1", settings.status_table)
    queue_sink = QueueEventSink(lambda body: storage.queues.send(settings.job_events_queue, body))
    dying = JobEvents(storage.status, SendsThenDies(queue_sink), source=source, claim_seconds=300)
    running_job(storage, "crash-1")
    end_job(storage.status, "crash-1", state=JobState.SUCCEEDED, code="", message="", now=NOW)
    with pytest.raises(Crash):
        dying.publish("crash-1", NOW)
    assert storage.status.get_job("crash-1").event_state == EventState.PENDING  # sent, not marked
    events = wired(settings, storage)
    assert events.publish_pending(NOW + timedelta(seconds=299)) == 0  # its claim still holds
    assert events.publish_pending(NOW + timedelta(seconds=301)) == 1
    first, second = queued_events(sink)
    assert first["id"] == second["id"] and first == second  # the same event: consumers dedupe on its id
    assert storage.status.get_job("crash-1").event_state == EventState.PUBLISHED


def test_no_sink_configured_says_unsent(azurite: Azurite, storage, settings) -> None:
    plain = replace(settings, job_events_queue="")
    wired(plain, storage)
    running_job(storage, "quiet-1")
    end_job(storage.status, "quiet-1", state=JobState.SUCCEEDED, code="", message="", now=NOW)
    assert storage.status.get_job("quiet-1").event_state == EventState.UNSENT


def test_no_sas_or_token_reaches_an_event(settings, storage, sink) -> None:
    wired(settings, storage)
    running_job(storage, "secret-1", source=f"https://host.example/items.json?{SAS}")
    reason = f"GET https://host.example/a.tif?{SAS} answered 403; Authorization: Bearer eyJhbGciOi.secret.token"
    end_job(storage.status, "secret-1", state=JobState.FAILED, code="SourceFailed", message=reason, now=NOW)
    [event] = queued_events(sink)
    text = orjson.dumps(event).decode()
    assert "TOPSECRETSIGNATURE" not in text and "eyJhbGciOi" not in text
    assert event["data"]["error"]["code"] == "SourceFailed" and "answered 403" in event["data"]["error"]["message"]
    # The builder redacts on its own too (a row written before redaction, or by hand).
    built = job_finished_event(JobRow("j", state=JobState.FAILED, error_message=reason), source="s")
    assert "TOPSECRETSIGNATURE" not in orjson.dumps(built).decode()


class _TopicHandler(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_event_grid_publisher_sends_a_cloudevent_with_the_sdk() -> None:
    """The real azure-eventgrid client against a local HTTP endpoint: what Event Grid would receive."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TopicHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/api/events"
        job = JobRow("eg-1", state=JobState.SUCCEEDED, collection="c-1", item_count=2, items_succeeded=2, created=NOW,
                     finished=NOW + timedelta(seconds=42))
        event = job_finished_event(job, source="urn:geocatalog-ingest:acct:Status")
        EventGridPublisher(endpoint, AzureKeyCredential("local-key")).publish(event)
        [(headers, body)] = _TopicHandler.received
    finally:
        server.shutdown()
    assert headers["content-type"].startswith("application/cloudevents-batch+json")
    [sent] = orjson.loads(body)
    assert {k: sent[k] for k in ("specversion", "type", "source", "id", "subject", "datacontenttype")} == {
        k: event[k] for k in ("specversion", "type", "source", "id", "subject", "datacontenttype")}
    assert sent["data"]["duration_seconds"] == 42.0 and sent["data"]["counts"]["succeeded"] == 2


def test_the_topic_endpoint_must_be_https(azurite: Azurite) -> None:
    env = {"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": "https://x.invalid"}
    with pytest.raises(ConfigurationError, match="JOB_EVENTS_TOPIC_ENDPOINT must be an https URL"):
        Settings.from_env({**env, "JOB_EVENTS_TOPIC_ENDPOINT": "http://topic.example/api/events"})
    topic = "https://t.westeurope-1.eventgrid.azure.net/api/events"
    assert Settings.from_env({**env, "JOB_EVENTS_TOPIC_ENDPOINT": topic}).job_events_topic_endpoint == topic
