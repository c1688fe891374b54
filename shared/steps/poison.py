"""Poison queues, drained by the sweeper instead of by queue triggers of their own.

The Functions host moves a message to `<queue>-poison` after `maxDequeueCount` failed deliveries. Those
queues are almost always empty, and a queue trigger polls its queue every `maxPollingInterval` for as long as
an instance is alive: triggers on the four poison queues were half the app's idle queue reads
(docs/performance.md). Instead, each sweep receives up to `POISON_PER_SWEEP` messages of each poison queue
(one receive request per queue), hands each to the poison handler and deletes it.

Handling is idempotent (one row per message body; a batch that already ended stays as it is), so a message
handled again because a sweep died before deleting it changes nothing. A message whose handling fails is
released for the next sweep; once it has been received `MAX_DEQUEUE_COUNT` times it is logged and deleted,
so that no message of a poison queue comes back forever.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.services import Services
from shared.settings import Settings
from shared.store import Received

log = logging.getLogger(__name__)

POISON_PER_SWEEP = 32  # the queue service's most messages per receive: one request per poison queue and sweep
# Longer than handling a sweep's messages takes; a sweep that dies leaves them to the next one after this.
RECEIVE_VISIBILITY_SECONDS = 120


class PoisonHandler(Protocol):
    def __call__(self, body: bytes, *, queue: str, services: Services, now: datetime) -> None: ...


@dataclass
class PoisonPass:
    """What one sweep did with the poison queues' messages."""

    handled: int = 0
    released: int = 0  # handling failed: left for the next sweep
    dropped: int = 0  # handling failed on the last allowed receive (or a sweep died holding it): logged and deleted


def poison_queues(settings: Settings) -> list[tuple[str, str]]:
    """Each poison queue's name, with the label its rows and the poison.messages metric use."""
    return [(f"{settings.submit_queue}-poison", "submit-poison"), (f"{settings.work_queue}-poison", "work-poison"),
            (f"{settings.poll_queue}-poison", "poll-poison"), (f"{settings.drop_events_queue}-poison", "drop-events-poison")]


def poison_row_id(body: bytes) -> str:
    """The poison row's id, derived from the message's raw bytes (stable across deliveries)."""
    return "poison-" + hashlib.sha256(body).hexdigest()[:24]


def drain_poison_queues(handle: PoisonHandler, *, services: Services, now: datetime,
                        per_queue: int = POISON_PER_SWEEP) -> PoisonPass:
    """Hand up to `per_queue` messages of each poison queue to `handle`; a queue that cannot be read is left for the next sweep."""
    drained = PoisonPass()
    for queue, label in poison_queues(services.settings):
        try:
            for message in services.queues.receive(queue, max_messages=per_queue, visibility_timeout=RECEIVE_VISIBILITY_SECONDS):
                _drain_one(handle, message, queue, label, drained, services=services, now=now)
        except Exception as error:  # noqa: BLE001 - storage trouble on one queue must not stop the sweep
            log.warning("sweeper: could not drain poison queue %s: %s", queue, error)
    if drained.released or drained.dropped:
        log.warning("sweeper: poison queues: %s", drained)
    return drained


def _drain_one(handle: PoisonHandler, message: Received, queue: str, label: str, drained: PoisonPass, *,
               services: Services, now: datetime) -> None:
    limit = services.settings.max_dequeue_count
    if message.dequeue_count > limit:  # sweeps died while holding it: it must not come back forever
        _drop(message, queue, "a sweep died while handling it", services=services)
        drained.dropped += 1
        return
    try:
        handle(message.body, queue=label, services=services, now=now)
    except Exception as error:  # noqa: BLE001 - the next sweep tries again, a bounded number of times
        if message.dequeue_count < limit:
            log.warning("sweeper: poison message %s of %s failed (receive %d of %d), kept for the next sweep: %s",
                        poison_row_id(message.body), queue, message.dequeue_count, limit, error)
            services.queues.release(queue, message)
            drained.released += 1
            return
        _drop(message, queue, f"{type(error).__name__}: {error}", services=services)
        drained.dropped += 1
        return
    services.queues.delete(queue, message)
    drained.handled += 1


def _drop(message: Received, queue: str, why: str, *, services: Services) -> None:
    log.error("sweeper: poison message %s of %s deleted unhandled after %d receives (%d bytes): %s",
              poison_row_id(message.body), queue, message.dequeue_count, len(message.body), why)
    services.queues.delete(queue, message)
