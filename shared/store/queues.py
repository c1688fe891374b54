"""Sending to our queues, within the service's limits.

Messages are sent as raw JSON text: host.json sets `messageEncoding: none`, so the triggers hand
the body over as stored, and `messages.decode_body` accepts raw or base64 JSON alike (the Portal and
Storage Explorer send base64). Raw text keeps the full 64 KiB for the payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueMessage

MAX_MESSAGE_BYTES = 64 * 1024
# Shared by the worker's invocations: several sends of one invocation wait on storage together rather than
# one after another (a planner releasing 16 batches otherwise makes 16 round trips in a row).
_SENDERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="queue-send")
MAX_VISIBILITY_DELAY_SECONDS = 7 * 24 * 3600
PEEK_LIMIT = 32  # the queue service's most messages per peek or receive


class MessageTooLargeError(ValueError):
    """A message over the queue's 64 KiB limit: claim-check the payload instead."""


@dataclass(frozen=True)
class Received:
    """A message received (invisible to others until it is deleted or released, or its visibility timeout ends)."""

    body: bytes  # as stored: host.json `messageEncoding: none`
    dequeue_count: int
    message: QueueMessage  # the SDK's, with the pop receipt that deletes or releases it


class QueueSender:
    """Sends messages to named queues of one storage account (and peeks and takes them, for operator tools).

    Args:
        client_for: builds a `QueueClient` for a queue name (from a connection string or an identity).
    """

    def __init__(self, client_for: Callable[[str], QueueClient]) -> None:
        self._client_for = client_for
        self._clients: dict[str, QueueClient] = {}

    def send(self, queue_name: str, body: str, *, delay_seconds: float = 0) -> None:
        """Send `body`, invisible for `delay_seconds` (clamped to the 7-day maximum), never expiring.

        Raises:
            MessageTooLargeError: the body is over 64 KiB.
        """
        if len(body.encode()) > MAX_MESSAGE_BYTES:
            raise MessageTooLargeError(f"queue message of {len(body.encode())} bytes is over 64 KiB")
        delay = int(min(max(delay_seconds, 0), MAX_VISIBILITY_DELAY_SECONDS))
        # time_to_live=-1: a delayed message must not expire before it becomes visible.
        self._client(queue_name).send_message(body, visibility_timeout=delay, time_to_live=-1)

    def send_many(self, queue_name: str, bodies: list[str]) -> None:
        """Send several messages at once, a few requests in flight (a queue has no batch send).

        Raises the first failure after every send has ended; a planner sending its batches then
        plans the segment again, and the batch rows it already wrote make that idempotent.
        """
        if len(bodies) <= 1:
            for body in bodies:
                self.send(queue_name, body)
            return
        futures = [_SENDERS.submit(self.send, queue_name, body) for body in bodies]
        wait(futures)
        for future in futures:
            future.result()

    def ensure(self, *queue_names: str) -> None:
        for name in queue_names:
            try:
                self._client(name).create_queue()
            except ResourceExistsError:
                pass

    def approximate_count(self, queue_name: str) -> int:
        """How many messages the queue holds, visible or not (delayed and in-flight ones count): one request."""
        return self._client(queue_name).get_queue_properties().approximate_message_count

    def oldest_inserted(self, queue_name: str) -> datetime | None:
        """When the message at the front of the queue (the oldest visible one) was inserted; None when none is visible.

        A peek: one request, and the message stays where it is.
        """
        messages = self._client(queue_name).peek_messages(max_messages=1)
        return messages[0].inserted_on if messages else None

    def peek(self, queue_name: str, *, max_messages: int = PEEK_LIMIT) -> list[str]:
        """The oldest messages' bodies, left as they are (an operator tool's look; at most 32)."""
        return [m.content for m in self._client(queue_name).peek_messages(max_messages=min(max_messages, PEEK_LIMIT))]

    def take(self, queue_name: str, *, max_messages: int, visibility_timeout: int = 30) -> Iterator[str]:
        """Receive up to `max_messages` bodies, a page at a time until the queue is empty; each is deleted once
        the caller asks for the next (one the caller did not get past comes back after `visibility_timeout`)."""
        client, taken = self._client(queue_name), 0
        while taken < max_messages:
            page = list(client.receive_messages(max_messages=min(PEEK_LIMIT, max_messages - taken),
                                                visibility_timeout=visibility_timeout))
            if not page:
                return
            for message in page:
                yield message.content
                client.delete_message(message)
                taken += 1

    def receive(self, queue_name: str, *, max_messages: int, visibility_timeout: int) -> list[Received]:
        """One receive request for up to `max_messages` (at most 32), each invisible for `visibility_timeout` seconds."""
        count = min(max_messages, PEEK_LIMIT)
        if count < 1:
            return []
        pages = self._client(queue_name).receive_messages(max_messages=count, messages_per_page=count,
                                                          visibility_timeout=visibility_timeout).by_page()
        return [Received(str(m.content or "").encode(), m.dequeue_count or 1, m) for m in next(pages, [])]

    def delete(self, queue_name: str, received: Received) -> None:
        self._client(queue_name).delete_message(received.message)

    def release(self, queue_name: str, received: Received) -> None:
        """Make a received message visible again now (it keeps its dequeue count)."""
        self._client(queue_name).update_message(received.message, visibility_timeout=0)

    def _client(self, queue_name: str) -> QueueClient:
        if queue_name not in self._clients:
            self._clients[queue_name] = self._client_for(queue_name)
        return self._clients[queue_name]


def fits_in_message(body: str) -> bool:
    return len(body.encode()) <= MAX_MESSAGE_BYTES
