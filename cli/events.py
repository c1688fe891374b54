"""`geocatalog-ingest events`: the job-finished events in the local sink queue (`JOB_EVENTS_QUEUE`, docs/events.md).

By default the queue is peeked: nothing is removed or hidden, so the command can be run again and by
anyone, but a peek shows at most the oldest 32 messages (the queue service's limit). `--consume`
receives and deletes, as a subscriber would, in pages of 32 up to `--max`; `--follow` keeps consuming
as events arrive. Anyone who can write to the storage account can write to that queue: a message that
is not an event is reported and skipped, never trusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from rich.table import Table

from cli.render import literal, plain
from shared.errors import InvalidInputError
from shared.messages import decode_body
from shared.store import JOB_FINISHED, QueueSender

PAGE = 32  # the queue service's most per peek or receive
RECEIVE_VISIBILITY_SECONDS = 30  # a received event that is not deleted (the command died) comes back after this


@dataclass(frozen=True)
class Received:
    event: dict[str, Any] | None  # None: not a job-finished event
    problem: str = ""


def peek(queues: QueueSender, name: str) -> list[Received]:
    return [parse(body) for body in queues.peek(name, max_messages=PAGE)]


def consume(queues: QueueSender, name: str, *, max_events: int) -> Iterator[Received]:
    """Receive and delete up to `max_events` messages until the queue is empty."""
    for body in queues.take(name, max_messages=max_events, visibility_timeout=RECEIVE_VISIBILITY_SECONDS):
        yield parse(body)


def follow(queues: QueueSender, name: str, *, every: float, stop: Callable[[], bool]) -> Iterator[Received]:
    """Consume events as they arrive until `stop()` says so."""
    while not stop():
        got = False
        for received in consume(queues, name, max_events=PAGE):
            got = True
            yield received
        if not got:
            time.sleep(every)


def parse(content: Any) -> Received:
    try:
        event = decode_body(content)
    except (InvalidInputError, ValueError) as error:
        return Received(None, f"not JSON: {error}")
    if not isinstance(event, dict) or event.get("type") != JOB_FINISHED or not isinstance(event.get("data"), dict):
        return Received(None, "not a GeoCatalogIngest.JobFinished CloudEvent")
    return Received(event)


def json_line(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


def line(event: dict[str, Any]) -> str:
    """One event as a line for people (`--follow` without `--json`)."""
    data = event["data"]
    counts = data.get("counts") if isinstance(data.get("counts"), dict) else {}
    return plain(f"{event.get('time') or ''} {event.get('subject') or ''} {data.get('state') or ''} "
                 f"ok {counts.get('succeeded', '')} failed {counts.get('failed', '')} rejected {counts.get('rejected', '')} "
                 f"items {counts.get('items', '')}")


def table(events: list[dict[str, Any]]) -> Table:
    out = Table("time", "job", "state", "collection", "ok / failed / rejected / items", "duration", "error", "id",
                title=f"{len(events)} job-finished event(s)", title_justify="left")
    for event in events:
        data = event["data"]
        counts = data.get("counts") if isinstance(data.get("counts"), dict) else {}
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        duration = data.get("duration_seconds")
        out.add_row(*map(literal, (
            event.get("time") or "", event.get("subject") or "", data.get("state") or "", data.get("collection") or "",
            " / ".join(str(counts.get(k, "")) for k in ("succeeded", "failed", "rejected", "items")),
            f"{duration:.0f}s" if isinstance(duration, int | float) else "",
            f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")[:120], event.get("id") or "")))
    return out
