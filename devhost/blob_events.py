"""Event Grid's part, locally: watch the drop container in Azurite and send BlobCreated events.

In Azure, an Event Grid subscription on the storage account sends `Microsoft.Storage.BlobCreated`
events for the drop container to the drop-events queue. Azurite has no Event Grid, so this watcher
lists the container and sends the same event (Event Grid schema) for every new blob version.
With a `state` file (the long-running `up`), the versions already announced are remembered across
restarts, so a blob uploaded while the watcher was down gets its event when it starts again; a
repeated event is harmless (one job per blob version).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from shared.catalog import sdk_transport_options
from shared.inputs.blob_events import LOCAL_ACCOUNT, blob_created_event

log = logging.getLogger(__name__)


class BlobCreatedWatcher:
    """Sends one BlobCreated event per new (blob, ETag) that appears in `container`."""

    def __init__(self, connection_string: str, container: str, events_queue: str, *, every: float = 0.3,
                 state: Path | None = None) -> None:
        self._container = ContainerClient.from_connection_string(connection_string, container, **sdk_transport_options())
        self._queue = QueueClient.from_connection_string(connection_string, events_queue, **sdk_transport_options())
        self._every = every
        self._state = state
        self._seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{container}", daemon=True)

    def start(self) -> BlobCreatedWatcher:
        for client in (self._container.create_container, self._queue.create_queue):
            try:
                client()
            except ResourceExistsError:
                pass
        if self._state is not None and self._state.is_file():
            self._seen = {(name, etag) for name, etag in orjson.loads(self._state.read_bytes())}
        else:
            self._seen = self._current()  # like Event Grid: only uploads after the subscription count
            self._save()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _current(self) -> set[tuple[str, str]]:
        return {(blob.name, str(blob.etag)) for blob in self._container.list_blobs()}

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                blobs = {(b.name, str(b.etag)): b.size for b in self._container.list_blobs()}
            except Exception:  # noqa: BLE001 - a storage blip must not end the watcher
                log.exception("listing %s failed", self._container.container_name)
                continue
            for (name, etag), size in blobs.items():
                if (name, etag) in self._seen:
                    continue
                self._seen.add((name, etag))
                url = f"{self._container.url}/{name}"
                event = blob_created_event(self._container.container_name, name, etag, size, url,
                                           account=self._container.account_name or LOCAL_ACCOUNT)
                self._queue.send_message(orjson.dumps(event).decode())
                self._save()  # after the send: a crash in between re-sends the event, which is harmless

    def _save(self) -> None:
        if self._state is not None:
            self._state.write_bytes(orjson.dumps(sorted(self._seen)))
