"""The app's collaborators, built once per worker from settings and handed to every handler."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from shared.catalog import GeoCatalogClient, quiet_sdk_request_logs, sdk_transport_options
from shared.event_publishers import EventGridPublisher, QueueEventSink
from shared.heap import settle_worker_heap
from shared.inputs.egress import EgressPolicy, GuardedSession
from shared.inputs.search import SourceFetcher
from shared.inputs.signing import SasTokenSigner
from shared.settings import Settings, StorageAccess
from shared.store import (
    EventPublisher,
    ItemIndex,
    JobEvents,
    OperationTimings,
    PayloadStore,
    QueueSender,
    StatusStore,
    TableClient,
    event_source,
)


@dataclass
class Services:
    """Everything a handler talks to. Tests build one against Azurite and the emulator."""

    settings: Settings
    catalog: GeoCatalogClient
    status: StatusStore
    queues: QueueSender
    payloads: PayloadStore
    sources: SourceFetcher
    signer: SasTokenSigner
    items: ItemIndex
    timings: OperationTimings | None = None  # None: polls are scheduled without predictions
    events: JobEvents | None = None  # None: job-finished events wait Pending in their rows (tests that need none)


@dataclass
class Storage:
    """The storage account's clients alone (what an operator tool needs; no GeoCatalog)."""

    status: StatusStore
    queues: QueueSender
    payloads: PayloadStore
    items: ItemIndex


def connect_storage(settings: Settings) -> Storage:
    """Clients for the configured storage account; creates nothing (safe for a read-only operator)."""
    storage = settings.storage
    assert storage is not None
    credential = None if storage.connection_string else _identity()
    return Storage(
        status=StatusStore(_table_client(storage, credential, settings.status_table)),
        queues=QueueSender(functools.partial(_queue_client, storage, credential)),
        payloads=PayloadStore(_blob_service(storage, credential), settings.payload_container),
        items=ItemIndex(_table_client(storage, credential, settings.item_index_table)),
    )


def ensure_storage(settings: Settings, storage: Storage) -> None:
    """Create the missing queues (and their poison queues), containers and tables."""
    storage.queues.ensure(*(name for queue in (settings.submit_queue, settings.work_queue, settings.poll_queue,
                                                           settings.drop_events_queue)
                            for name in (queue, f"{queue}-poison")))
    if settings.job_events_queue and not settings.job_events_topic_endpoint:
        storage.queues.ensure(settings.job_events_queue)
    storage.payloads.ensure(settings.payload_container, settings.drop_container)
    for table in (storage.status.table, storage.items.table):
        try:
            table.create_table()
        except ResourceExistsError:
            pass


def build_services(settings: Settings) -> Services:
    """Real clients for the configured storage account and GeoCatalog; creates missing queues, tables, containers."""
    storage = connect_storage(settings)
    ensure_storage(settings, storage)
    events = job_events(settings, storage)
    storage.status.on_job_ended = events.job_ended
    return Services(
        settings=settings,
        catalog=GeoCatalogClient.from_settings(settings),
        status=storage.status,
        queues=storage.queues,
        payloads=storage.payloads,
        sources=SourceFetcher(GuardedSession(source_policy(settings)), max_seconds=settings.source_max_seconds),
        signer=SasTokenSigner(settings.sas_api_url, GuardedSession(sas_api_policy(settings))),
        items=storage.items,
        timings=OperationTimings(storage.status.table),
        events=events,
    )


def job_events(settings: Settings, storage: Storage) -> JobEvents:
    """The job-finished publisher: the Event Grid topic if set, else the local queue if set, else none."""
    publisher: EventPublisher | None = None
    if settings.job_events_topic_endpoint:
        publisher = EventGridPublisher(settings.job_events_topic_endpoint, _identity(), **sdk_transport_options())
    elif settings.job_events_queue:
        publisher = QueueEventSink(functools.partial(storage.queues.send, settings.job_events_queue))
    account = settings.storage.account_name if settings.storage is not None else ""
    return JobEvents(storage.status, publisher, source=event_source(account, settings.status_table))


def source_policy(settings: Settings) -> EgressPolicy:
    """Where messages may send the app: SOURCE_URL_ALLOWLIST, public addresses (loopback for local runs)."""
    return EgressPolicy(frozenset(settings.source_url_allowlist), allow_loopback=settings.source_allow_loopback,
                        timeout=settings.http_timeout_seconds, max_bytes=settings.max_upload_bytes,
                        request_seconds=settings.source_request_seconds)


def sas_api_policy(settings: Settings) -> EgressPolicy:
    """The SAS API's host only (an operator setting, but fetched with the same guard)."""
    host = (urlsplit(settings.sas_api_url).hostname or "").lower()
    return EgressPolicy(frozenset({host}), allow_loopback=settings.source_allow_loopback,
                        timeout=settings.http_timeout_seconds, request_seconds=settings.source_request_seconds)


class _WorkerServices:
    """The worker's one set of clients: connection pools and the call pacer are shared by its invocations.

    Built under a lock: the first messages arrive on several threads at once, and each would
    otherwise build its own clients, with a pacer of its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: Services | None = None

    def __call__(self) -> Services:
        with self._lock:
            if self._services is None:
                quiet_sdk_request_logs()
                self._services = build_services(Settings.from_env())
                settle_worker_heap()
            return self._services

    def cache_clear(self) -> None:
        """Forget the clients (the local stack does, when it changes the settings)."""
        with self._lock:
            self._services = None


services_from_env = _WorkerServices()


def _identity() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _queue_client(storage: StorageAccess, credential: Any, name: str) -> QueueClient:
    if storage.connection_string:
        return QueueClient.from_connection_string(storage.connection_string, name, **sdk_transport_options())
    return QueueClient(storage.queue_uri, name, credential=credential, **sdk_transport_options())


# Streams read blobs 4 MiB at a time (the SDK's first GET would otherwise take up to 32 MiB at once).
BLOB_READ_CHUNK = {"max_single_get_size": 4 * 1024 * 1024, "max_chunk_get_size": 4 * 1024 * 1024}


def _blob_service(storage: StorageAccess, credential: Any) -> BlobServiceClient:
    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string, **BLOB_READ_CHUNK,
                                                        **sdk_transport_options())
    return BlobServiceClient(storage.blob_uri, credential=credential, **BLOB_READ_CHUNK, **sdk_transport_options())


def _table_client(storage: StorageAccess, credential: Any, name: str) -> TableClient:
    if storage.connection_string:
        return TableClient.from_connection_string(storage.connection_string, table_name=name, **sdk_transport_options())
    return TableClient(storage.table_uri, table_name=name, credential=credential, **sdk_transport_options())
