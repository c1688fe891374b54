"""Job-finished events and the `events` and `stats` commands through the local host (Azurite + emulator):
one event per job under duplicate delivery and a second settle, what `events --json` and `stats --json`
print, and a batch of two lines, one rejected, shown as 1 / 0 / 1 / 2."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from azure.storage.queue import QueueClient
from click.testing import CliRunner, Result

from cli.main import cli
from devhost.jobs import wait_for_jobs
from devhost.stack import LocalStack
from shared.steps.fanout import batch_message
from shared.steps.rollup import settle_job
from shared.steps.sweeper import sweep
from shared.store import EventState, JobRow, JobState, end_job, mark_planned
from tests.helpers import make_item, wait_until
from tests.test_pipeline_e2e import with_collection
from tests.test_uploads_e2e import upload


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def sink(stack: LocalStack) -> QueueClient:
    return QueueClient.from_connection_string(stack.azurite.connection_string, stack.services.settings.job_events_queue)


def json_lines(result: Result) -> list[dict]:
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_one_event_per_job_and_what_events_stats_and_status_show(make_stack) -> None:
    stack = make_stack()
    collection = with_collection(stack)
    lines = orjson.dumps(make_item("ok-1")) + b"\n" + b'{"type": "Feature", "id": "broken",\n'
    job_id = upload(stack, f"{collection}/two-lines.ndjson", lines)
    job = wait_for_jobs(stack.services, [job_id], timeout=120)[job_id]
    assert (job.state, job.items_succeeded, job.items_rejected) == (JobState.PARTIALLY_SUCCEEDED, 1, 1)
    wait_until(lambda: stack.services.status.get_job(job_id).event_state == EventState.PUBLISHED, timeout=30)

    # Every message of the job again, a second settle and a sweep: still one event.
    for row in stack.services.status.batches(job_id):
        stack.services.queues.send(stack.services.settings.work_queue, batch_message(job_id, row.batch_id))
    wait_until(lambda: all(listener.waiting_messages() == 0 for listener in stack.host.listeners), timeout=30)
    settle_job(job_id, status=stack.services.status, now=datetime.now(UTC))
    stack.services.events.publish_pending(datetime.now(UTC))
    assert sink(stack).get_queue_properties().approximate_message_count == 1

    [event] = json_lines(invoke("events", "--json"))
    assert (event["type"], event["subject"], event["source"]) == ("GeoCatalogIngest.JobFinished", job_id,
                                                                   stack.services.events.source)
    assert event["data"]["state"] == "PartiallySucceeded" and event["data"]["collection"] == collection
    assert {k: event["data"]["counts"][k] for k in ("items", "succeeded", "failed", "rejected")} == {
        "items": 2, "succeeded": 1, "failed": 0, "rejected": 1}
    assert event["data"]["error"]["code"] == "InvalidItem" and event["data"]["duration_seconds"] >= 0
    assert json_lines(invoke("events", "--json")) == [event]  # a peek leaves it there

    [batch] = [row for row in stack.services.status.batches(job_id)]
    assert (batch.item_count, batch.items_succeeded, batch.items_rejected) == (1, 1, 1)  # the row as the wart saw it
    shown = invoke("status", job_id).stdout
    assert "1 / 0 / 1 / 2" in shown and "1 / 0 / 1 / 1" not in shown
    assert "Published" in shown  # its event

    stats = orjson.loads(invoke("stats", "--since", "1h", "--json").stdout)
    assert stats["truncated"] is False
    assert stats["jobs"]["by_state"] == {"PartiallySucceeded": 1} and stats["jobs"]["duration_seconds"]["count"] == 1
    assert stats["batches"]["by_state"] == {"Succeeded": 1}
    assert {k: stats["items"][k] for k in ("settled", "succeeded", "failed", "rejected")} == {
        "settled": 2, "succeeded": 1, "failed": 0, "rejected": 1}
    assert stats["items"]["per_minute"] > 0
    assert stats["failures_by_code"] == {"InvalidItem": 1}
    assert stats["submit_to_settled_seconds"]["count"] == 1 and stats["operation_seconds"]["count"] == 1
    assert invoke("stats", "--since", "1h").stdout.count("InvalidItem x1") == 1

    assert json_lines(invoke("events", "--consume", "--json")) == [event]
    assert json_lines(invoke("events", "--json")) == []  # consumed: gone


def test_events_skips_what_is_not_an_event_shows_control_characters_escaped_and_follow_stops(make_stack) -> None:
    stack = make_stack()
    queue = sink(stack)
    queue.send_message("plain text, not json")
    queue.send_message('{"type": "Other", "data": {}}')
    hostile = {"type": "GeoCatalogIngest.JobFinished", "subject": "\x1b]8;;https://evil.example\x07job", "id": "e-1",
               "data": {"state": "Succeeded", "counts": {"items": "\x1b[2J"}}}
    queue.send_message(orjson.dumps(hostile).decode())
    result = CliRunner().invoke(cli, ["events"], catch_exceptions=False)
    assert result.exit_code == 0 and result.stderr.count("skipped a message") == 2
    assert "\\x1b" in result.stdout and "\x1b" not in result.stdout  # written out, never sent to the terminal
    followed = CliRunner().invoke(cli, ["events", "--follow", "--timeout", "1.5", "--json"], catch_exceptions=False)
    assert followed.exit_code == 0 and json_lines(followed) == [hostile]
    assert queue.get_queue_properties().approximate_message_count == 0  # --follow consumes


def test_the_sweeper_publishes_an_event_left_pending(make_stack) -> None:
    stack = make_stack()
    stack.pause_functions()  # no timer of the host's sweeps meanwhile
    status, now = stack.services.status, datetime.now(UTC)
    status.on_job_ended = None  # as if the worker died right after the ending write
    status.create_job(JobRow("left-1", state=JobState.RUNNING, collection="c-1"), now)
    mark_planned(status, "left-1", collection="c-1", item_count=0, batch_count=0, now=now)
    end_job(status, "left-1", state=JobState.SUCCEEDED, code="", message="", now=now)
    assert status.get_job("left-1").event_state == EventState.PENDING
    report = sweep(services=stack.services, now=now)
    assert report.events_published == 1 and status.get_job("left-1").event_state == EventState.PUBLISHED
    assert [e["subject"] for e in json_lines(invoke("events", "--json"))] == ["left-1"]
    assert sweep(services=stack.services, now=now).events_published == 0
