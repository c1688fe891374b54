"""The local host's queue semantics against Azurite: encoding, dequeue count, visibility, poison queue."""

from __future__ import annotations

import base64
import threading

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from devhost.azurite import Azurite
from devhost.queue_host import BusyClock, QueueOptions, QueueTriggerListener
from tests.conftest import unique_storage_names
from tests.helpers import wait_until


@pytest.fixture
def queues(azurite: Azurite) -> tuple[QueueClient, QueueClient]:
    name = unique_storage_names()["SUBMIT_QUEUE"]
    return (QueueClient.from_connection_string(azurite.connection_string, name),
            QueueClient.from_connection_string(azurite.connection_string, f"{name}-poison"))


def listen(queues, function, **options) -> QueueTriggerListener:
    listener = QueueTriggerListener("f", function, queues[0], queues[1],
                                    QueueOptions(max_polling_seconds=0.2, visibility_timeout_seconds=0, **options))
    listener.start()
    return listener


def test_success_deletes_and_hands_over_body_id_and_dequeue_count(queues) -> None:
    seen: list[func.QueueMessage] = []
    listener = listen(queues, seen.append, message_encoding="none")
    queues[0].send_message('{"a": 1}')
    wait_until(lambda: seen)
    listener.stop()
    assert seen[0].get_json() == {"a": 1} and seen[0].dequeue_count == 1 and seen[0].id
    assert queues[0].get_queue_properties().approximate_message_count == 0


def test_base64_encoding_is_decoded_like_the_host_default(queues) -> None:
    seen: list[bytes] = []
    listener = listen(queues, lambda m: seen.append(m.get_body()), message_encoding="base64")
    queues[0].send_message(base64.b64encode(b'{"b": 2}').decode())
    wait_until(lambda: seen)
    listener.stop()
    assert seen == [b'{"b": 2}']


def test_failures_are_retried_until_max_dequeue_then_poisoned(queues) -> None:
    counts: list[int] = []
    lock = threading.Lock()

    def fail(message: func.QueueMessage) -> None:
        with lock:
            counts.append(message.dequeue_count)
        raise RuntimeError("boom")

    listener = listen(queues, fail, message_encoding="none", max_dequeue_count=3)
    queues[0].send_message("poison me")
    poisoned = wait_until(lambda: list(queues[1].peek_messages()), timeout=30)
    listener.stop()
    assert counts == [1, 2, 3]
    assert poisoned[0].content == "poison me"
    assert queues[0].get_queue_properties().approximate_message_count == 0


def test_delayed_messages_wait_for_their_visibility(queues) -> None:
    seen: list[str] = []
    listener = listen(queues, lambda m: seen.append(m.get_body().decode()), message_encoding="none")
    queues[0].send_message("later", visibility_timeout=2)
    queues[0].send_message("now")
    wait_until(lambda: len(seen) == 2, timeout=30)
    listener.stop()
    assert seen == ["now", "later"]


def test_busy_clock_counts_overlapping_invocations_once_as_a_flex_instance_is_billed() -> None:
    now = [100.0]
    clock = BusyClock(clock=lambda: now[0])
    clock.begin()  # 100: one invocation
    now[0] = 102.0
    clock.begin()  # 102: a second one, overlapping
    now[0] = 103.0
    clock.end()
    now[0] = 105.0
    clock.end()  # 105: idle again after 5 busy seconds
    now[0] = 150.0  # idle time is not billed
    clock.begin()
    now[0] = 151.5  # still running: counted so far
    assert clock.busy_seconds == 6.5
    assert clock.invocations == 3


def test_busy_clock_of_a_listener_counts_each_processed_message(queues) -> None:
    seen: list[bytes] = []
    listener = listen(queues, lambda m: seen.append(m.get_body()), message_encoding="none")
    for n in range(3):
        queues[0].send_message(f'{{"n": {n}}}')
    wait_until(lambda: len(seen) == 3)
    listener.stop()
    assert listener.clock.invocations == 3
    assert listener.clock.busy_seconds > 0
