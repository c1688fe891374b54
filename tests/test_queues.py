"""Sending to our queues (shared/store/queues.py) on Azurite: limits, and several messages at once."""

from __future__ import annotations

import pytest
from azure.storage.queue import QueueClient

from devhost.azurite import Azurite
from shared.store.queues import MAX_MESSAGE_BYTES, MessageTooLargeError, QueueSender
from tests.conftest import unique_storage_names


def test_send_many_sends_every_message_and_reports_a_failure_after_the_rest(azurite: Azurite) -> None:
    name = unique_storage_names()["SUBMIT_QUEUE"]
    sender = QueueSender(lambda queue: QueueClient.from_connection_string(azurite.connection_string, queue))
    sender.ensure(name)
    bodies = [f'{{"n": {n}}}' for n in range(20)]
    with pytest.raises(MessageTooLargeError):
        sender.send_many(name, [*bodies[:10], "x" * (MAX_MESSAGE_BYTES + 1), *bodies[10:]])
    queue = QueueClient.from_connection_string(azurite.connection_string, name)
    received = [m.content for m in queue.receive_messages(messages_per_page=32, max_messages=32)]
    assert sorted(received) == sorted(bodies)  # the oversize one refused, none of the others lost
