"""Where job-finished events go (`shared.store.job_events` builds them): an Event Grid custom topic in
Azure, a storage queue locally. Each `publish` raises when its sink did not take the event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson


class EventGridPublisher:
    """Sends each event to an Event Grid topic that takes CloudEvents 1.0 (azure-eventgrid), as the app's identity."""

    def __init__(self, endpoint: str, credential: Any, **client_options: Any) -> None:
        from azure.eventgrid import EventGridPublisherClient

        self._client = EventGridPublisherClient(endpoint, credential, **client_options)

    def publish(self, event: dict[str, Any]) -> None:
        from azure.core.messaging import CloudEvent

        extra = {"time": datetime.fromisoformat(event["time"])} if event.get("time") else {}
        self._client.send(CloudEvent(source=event["source"], type=event["type"], data=event["data"],
                                     subject=event["subject"], id=event["id"],
                                     datacontenttype=event["datacontenttype"], **extra))


class QueueEventSink:
    """Local runs: each event's CloudEvents JSON as one message of a storage queue (`send(body)`)."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self._send = send

    def publish(self, event: dict[str, Any]) -> None:
        self._send(orjson.dumps(event).decode())
