"""A small stand-in for the Functions host's queue trigger, with the same semantics.

It discovers the functions through the app itself (`app.get_functions()`), resolves `%SETTING%`
queue names from the environment, and honours host.json `extensions.queues`: `batchSize`,
`newBatchThreshold`, `maxPollingInterval`, `visibilityTimeout` (how long a failed message stays
invisible), `maxDequeueCount` (then the message moves to `<queue>-poison`), and `messageEncoding`.
A message is invisible while its function runs (`functionTimeout`), deleted on success, released on
failure: at-least-once delivery, as in Azure.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from shared.catalog import sdk_transport_options

log = logging.getLogger(__name__)

MIN_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the Functions defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_seconds: float = 60.0
    visibility_timeout_seconds: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"
    function_timeout_seconds: float = 300.0

    @classmethod
    def from_host_json(cls, path: Path) -> QueueOptions:
        host = json.loads(path.read_text())
        queues = host.get("extensions", {}).get("queues", {})
        batch = int(queues.get("batchSize", 16))
        return cls(
            batch_size=batch,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch // 2)),
            max_polling_seconds=_timespan(queues.get("maxPollingInterval", "00:01:00")),
            visibility_timeout_seconds=_timespan(queues.get("visibilityTimeout", "00:00:00")),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
            function_timeout_seconds=_timespan(host.get("functionTimeout", "00:05:00")),
        )


def _timespan(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def resolve_setting_names(text: str, env: Mapping[str, str]) -> str:
    """`%SUBMIT_QUEUE%-poison` -> `stac-submit-poison`, as the host resolves binding expressions."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise KeyError(f"app setting {name} is not set (binding expression %{name}%)")
        return env[name]

    return re.sub(r"%([^%]+)%", lookup, text)


class BusyClock:
    """Seconds during which at least one invocation of a function was running, and how many ran.

    Flex Consumption bills an on-demand instance for the time it is executing at least one function
    (concurrent invocations on it are billed once); each queue function scales on instances of its own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._since = 0.0
        self._busy = 0.0
        self.invocations = 0

    def begin(self) -> None:
        with self._lock:
            if self._running == 0:
                self._since = self._clock()
            self._running += 1
            self.invocations += 1

    def end(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._busy += self._clock() - self._since

    @property
    def busy_seconds(self) -> float:
        with self._lock:
            return self._busy + (self._clock() - self._since if self._running else 0.0)


class QueueTriggerListener:
    """Feeds one queue's messages to one function, like the host's queue listener."""

    def __init__(self, name: str, function: Callable[[func.QueueMessage], Any], queue: QueueClient,
                 poison: QueueClient, options: QueueOptions) -> None:
        self.name = name
        self._function = function
        self._queue = queue
        self._poison = poison
        self._options = options
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=options.batch_size, thread_name_prefix=f"fn-{name}")
        self._thread = threading.Thread(target=self._run, name=f"listen-{name}", daemon=True)
        self.processed = 0
        self.failed = 0
        self.clock = BusyClock()

    def start(self) -> None:
        for client in (self._queue, self._poison):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def waiting_messages(self) -> int:
        """Messages in the queue, visible or not (approximate, as the service reports it)."""
        return self._queue.get_queue_properties().approximate_message_count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        idle = MIN_POLL_SECONDS
        in_flight: set[Any] = set()
        while not self._stop.is_set():
            in_flight = {f for f in in_flight if not f.done()}
            if len(in_flight) > self._options.new_batch_threshold:
                wait(in_flight, timeout=0.2, return_when="FIRST_COMPLETED")
                continue
            messages = self._receive()
            if not messages:
                self._stop.wait(idle)
                idle = min(idle * 2, self._options.max_polling_seconds)
                continue
            idle = MIN_POLL_SECONDS
            in_flight |= {self._pool.submit(self._process, m) for m in messages}
        wait(in_flight)

    def _receive(self) -> list[StorageMessage]:
        count = min(self._options.batch_size, 32)
        try:
            return list(self._queue.receive_messages(
                messages_per_page=count, max_messages=count,
                visibility_timeout=int(self._options.function_timeout_seconds)))
        except Exception:  # noqa: BLE001 - a storage blip must not kill the listener
            log.exception("receiving from %s failed", self.name)
            return []

    def _process(self, message: StorageMessage) -> None:
        self.clock.begin()
        try:
            self._invoke(message)
        finally:
            self.clock.end()

    def _invoke(self, message: StorageMessage) -> None:
        if message.dequeue_count > self._options.max_dequeue_count:
            self._to_poison(message)
            return
        try:
            body = self._decode(message.content)
            self._function(QueueMessage(
                id=message.id, body=body, dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt,
                insertion_time=message.inserted_on, expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on))
        except Exception:  # noqa: BLE001 - the host's contract: any exception fails the invocation
            self.failed += 1
            log.exception("function %s failed (dequeue count %d)", self.name, message.dequeue_count)
            if message.dequeue_count >= self._options.max_dequeue_count:
                self._to_poison(message)
            else:
                self._queue.update_message(message, visibility_timeout=int(self._options.visibility_timeout_seconds))
            return
        self.processed += 1
        self._queue.delete_message(message)

    def _decode(self, content: str) -> bytes:
        if self._options.message_encoding == "base64":
            return base64.b64decode(content, validate=True)
        return content.encode()

    def _to_poison(self, message: StorageMessage) -> None:
        log.warning("moving message %s of %s to %s", message.id, self.name, self._poison.queue_name)
        self._poison.send_message(message.content, time_to_live=-1)
        self._queue.delete_message(message)


_INDEXED: dict[int, list[Any]] = {}


def functions_of(app: func.FunctionApp) -> list[Any]:
    """`app.get_functions()`, once per app: a second call raises (it re-registers the names)."""
    if id(app) not in _INDEXED:
        _INDEXED[id(app)] = app.get_functions()
    return _INDEXED[id(app)]


def timer_interval_seconds(schedule: str) -> float:
    """The period of a simple NCRONTAB schedule ("*/10 * * * * *", "0 */5 * * * *"); 300 s otherwise."""
    fields_ = schedule.split()
    if len(fields_) == 6:
        for position, unit in ((0, 1), (1, 60), (2, 3600)):
            if fields_[position].startswith("*/"):
                return float(fields_[position][2:]) * unit
    return 300.0


class TimerTriggerListener:
    """Runs one timer-triggered function every `interval` seconds (a single instance, like the host's
    singleton lock for timers); a failing run is logged and the next one comes as scheduled."""

    def __init__(self, name: str, function: Callable[[Any], Any], interval: float) -> None:
        self.name = name
        self._function = function
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"timer-{name}", daemon=True)
        self.processed = 0
        self.failed = 0
        self.clock = BusyClock()

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def waiting_messages(self) -> int:
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.clock.begin()
            try:
                self._function(TimerRequest(past_due=False))
                self.processed += 1
            except Exception:  # noqa: BLE001 - the host logs a failed timer run and keeps the schedule
                self.failed += 1
                log.exception("timer function %s failed", self.name)
            finally:
                self.clock.end()


class LocalFunctionsHost:
    """Runs every queue- and timer-triggered function of a `func.FunctionApp` against one storage account.

    `timer_seconds` overrides the timers' period (tests run the sweeper every second or so).
    `functions` names the functions to run (default: all), as on a Flex instance, which runs one
    function's scaling group.
    """

    def __init__(self, app: func.FunctionApp, *, host_json: Path, env: Mapping[str, str],
                 overrides: Mapping[str, Any] | None = None, timer_seconds: float | None = None,
                 functions: Collection[str] | None = None) -> None:
        self.options = replace(QueueOptions.from_host_json(host_json), **(overrides or {}))
        self.listeners: list[Any] = []
        for function in functions_of(app):
            if functions is not None and function.get_function_name() not in functions:
                continue
            trigger = json.loads(function.get_function_json())["bindings"][0]
            if trigger["type"] == "timerTrigger":
                schedule = resolve_setting_names(trigger["schedule"], env)
                interval = timer_seconds if timer_seconds is not None else timer_interval_seconds(schedule)
                self.listeners.append(TimerTriggerListener(function.get_function_name(), function.get_user_function(), interval))
                continue
            if trigger["type"] != "queueTrigger":
                raise NotImplementedError(f"trigger type {trigger['type']} of {function.get_function_name()}")
            queue_name = resolve_setting_names(trigger["queueName"], env)
            connection = env[trigger["connection"]]
            self.listeners.append(QueueTriggerListener(
                function.get_function_name(), function.get_user_function(),
                QueueClient.from_connection_string(connection, queue_name, **sdk_transport_options()),
                QueueClient.from_connection_string(connection, f"{queue_name}-poison", **sdk_transport_options()), self.options))

    def start(self) -> LocalFunctionsHost:
        for listener in self.listeners:
            listener.start()
        return self

    def stop(self) -> None:
        for listener in self.listeners:
            listener.request_stop()  # stop all first, then join
        for listener in self.listeners:
            listener.stop()
