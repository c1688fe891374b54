"""All configuration, read from the environment (app settings) in one place: `Settings.from_env()`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

GA_API_VERSION = "2026-04-15"
# The storage connection the triggers use (function_app.py binds to it) and so do our own SDK clients.
STORAGE_CONNECTION = "AzureWebJobsStorage"
POLL_SCHEDULES = ("predicted", "backoff")

# name -> (default, description); docs/configuration.md's settings table is this table.
DEFAULTS: dict[str, tuple[str | None, str]] = {
    "GEOCATALOG_ENDPOINT": (None, "GeoCatalog URL, e.g. https://name.label.region.geocatalog.spatio.azure.com"),
    "GEOCATALOG_API_VERSION": (GA_API_VERSION, "2026-04-15 (GA, /stac + /inma), 2025-04-30-preview, or 2024-01-31-preview (/api)"),
    "GEOCATALOG_TOKEN": ("", "static bearer token for local runs against the emulator; empty = DefaultAzureCredential"),
    "GEOCATALOG_CA_BUNDLE": ("", "PEM file to trust for the GeoCatalog's TLS (local emulator over https); empty = system CAs"),
    "SUBMIT_QUEUE": ("stac-submit", "the users' inbox: job messages only (anyone who may send a job writes here)"),
    "WORK_QUEUE": ("stac-work", "the app's own queue: batch and plan messages and delayed job re-sends (only the app writes here)"),
    "POLL_QUEUE": ("stac-poll", "queue of poll messages (sent with a visibility delay)"),
    "PAYLOAD_CONTAINER": ("stac-payloads", "blob container for claim-checked batches and full operation logs"),
    "STATUS_TABLE": ("StacIngestStatus", "table of job and batch rows"),
    "ITEM_INDEX_TABLE": ("StacIngestItems", "table of which jobs and batches handled each item (PartitionKey = collection)"),
    "DROP_CONTAINER": ("stac-drop", "uploads here start a job (`<container>/<collection>/<file>`)"),
    "DROP_EVENTS_QUEUE": ("stac-drop-events", "queue that Event Grid fills with BlobCreated events of the drop container"),
    "MAX_UPLOAD_BYTES": ("10737418240", "uploads larger than this are refused (default 10 GiB)"),
    "MAX_LINE_BYTES": ("16777216", "longest NDJSON line read: a longer one is a Rejected item (its line number), reading goes on"),
    "MAX_ITEM_BYTES": ("16777216", "largest item of a JSON document (the file stops there) or search result (Rejected)"),
    "MAX_DECOMPRESSED_BYTES": ("17179869184", "bytes read from one stored file after gunzip (default 16 GiB); the file stops there"),
    "SEARCH_MAX_ITEMS": ("100000", "largest `max_items` a search message may ask for; also the most items a static-catalog walk reads"),
    "SEARCH_MAX_PAGES": ("2000", "pages one search reads at most (it then ends with the items got); documents one catalog walk fetches"),
    "SEARCH_MAX_EMPTY_PAGES": ("10", "a search ends after this many pages in a row that bring no new item"),
    "SEARCH_MAX_IDLE_SECONDS": ("60", "a search ends when no new item came for this long"),
    "SOURCE_REQUEST_SECONDS": ("60", "total wall time of one request to a source (search page, SAS answer), body included"),
    "SOURCE_MAX_SECONDS": ("900", "total wall time of reading one source: a search's pages, an items URL's download, a catalog's walk"),
    "PLAN_SEGMENT_ITEMS": ("50000", "items one planning invocation reads from an NDJSON or GeoParquet file before handing on"),
    "PLAN_AHEAD_BATCHES": ("64", "an NDJSON or GeoParquet planner hands on to a continuation once the work queue holds this "
                           "many messages, so a retried batch waits behind at most about this many"),
    "DEFAULT_COLLECTION": ("", "collection used when neither the message nor the items name one"),
    "BATCH_MAX_ITEMS": ("100", "items per POST (one GeoCatalog operation)"),
    "BATCH_MAX_BYTES": ("2000000", "serialized bytes per POST"),
    "POLL_INITIAL_DELAY_SECONDS": ("5", "delay before the first poll while the collection's operation times are unknown (then doubling)"),
    "POLL_MAX_DELAY_SECONDS": ("60", "longest wait between two polls of an operation"),
    "POLL_SCHEDULE": ("predicted", "`predicted`: first poll at the end predicted from recent operations, then short steps; "
                      "`backoff`: doubling from POLL_INITIAL_DELAY_SECONDS"),
    "POLL_STEP_FRACTION": ("0.1", "after the predicted end, poll again after this fraction of the time since submission"),
    "POLL_MIN_STEP_SECONDS": ("2", "shortest wait between two polls after the predicted end"),
    "POLL_DEADLINE_SECONDS": ("21600", "a batch whose operation is still running or unreadable this long after submission ends "
                                       "TimedOut (Unconfirmed if the catalog is unreadable too)"),
    "SUBMIT_RETRY_SECONDS": ("1800", "how long a batch's POST (or a job's planning) is retried on 429/5xx/timeouts before it is Failed"),
    "SWEEP_SCHEDULE": ("0 */5 * * * *", "NCRONTAB schedule of the sweeper that drains the poison queues, settles stuck jobs and batches"),
    "SWEEP_STALE_SECONDS": ("900", "a batch Queued or Submitting with no change for this long is re-sent by the sweeper"),
    "RETRY_BASE_DELAY_SECONDS": ("2", "first delay of the submit retry backoff"),
    "ISOLATION_MAX_DEPTH": ("12", "how many times a failed batch may be halved to isolate its bad items"),
    "MAX_DEQUEUE_COUNT": ("5", "must equal host.json maxDequeueCount: the last delivery records a failure before the poison queue"),
    "GEOCATALOG_MAX_CALLS_PER_SECOND": ("40", "GeoCatalog calls per second of all instances together "
                                        "(the service allows ~50 per subscription); 0 = unpaced"),
    "GEOCATALOG_MAX_INSTANCES": ("2", "must equal the Flex plan's maximumInstanceCount: submit and poll scale apart, "
                                 "so each instance paces each calling group at its part of the limit / this"),
    "HTTP_TIMEOUT_SECONDS": ("30", "connect+read timeout of each GeoCatalog request"),
    "SOURCE_URL_ALLOWLIST": ("planetarycomputer.microsoft.com",
                             "comma-separated hosts that `items_ref.url` and `search.url` may point at (https, public addresses "
                             "only; every redirect is checked again; the GeoCatalog's own search needs no entry)"),
    "SOURCE_ALLOW_LOOPBACK": ("false", "local runs only: let sources be loopback addresses (and plain http to them); never in Azure"),
    "ITEMS_REF_CONTAINERS": ("", "comma-separated containers that `items_ref.blob` may read; empty = PAYLOAD_CONTAINER and DROP_CONTAINER"),
    "SAS_API_URL": ("https://planetarycomputer.microsoft.com/api/sas/v1", "Planetary Computer SAS API used by `sign: planetary-computer`"),
    "LOG_TRUNCATE_CHARS": ("8000", "characters of operation logs kept in the status row (all of it goes to a blob)"),
    "JOB_EVENTS_TOPIC_ENDPOINT": ("", "Event Grid topic (CloudEvents 1.0) that gets one GeoCatalogIngest.JobFinished event per "
                                  "job, sent as the app's identity; empty = JOB_EVENTS_QUEUE, if set (docs/events.md)"),
    "JOB_EVENTS_QUEUE": ("", "local runs: storage queue that gets the job-finished events when no topic is set "
                         "(`make up`: job-events); both empty = no events, job rows say Unsent"),
}


@dataclass(frozen=True)
class Settings:
    """Typed settings; build with `from_env()` (or directly in tests). `repr` shows no secret."""

    geocatalog_endpoint: str
    geocatalog_api_version: str = GA_API_VERSION
    geocatalog_token: str = field(default="", repr=False)
    geocatalog_ca_bundle: str = ""
    submit_queue: str = "stac-submit"
    work_queue: str = "stac-work"
    poll_queue: str = "stac-poll"
    payload_container: str = "stac-payloads"
    status_table: str = "StacIngestStatus"
    item_index_table: str = "StacIngestItems"
    drop_container: str = "stac-drop"
    drop_events_queue: str = "stac-drop-events"
    max_upload_bytes: int = 10 * 1024**3
    max_line_bytes: int = 16 * 1024**2
    max_item_bytes: int = 16 * 1024**2
    max_decompressed_bytes: int = 16 * 1024**3
    search_max_items: int = 100_000
    search_max_pages: int = 2000
    search_max_empty_pages: int = 10
    search_max_idle_seconds: float = 60.0
    source_request_seconds: float = 60.0
    source_max_seconds: float = 900.0
    plan_segment_items: int = 50_000
    plan_ahead_batches: int = 64
    default_collection: str = ""
    batch_max_items: int = 100
    batch_max_bytes: int = 2_000_000
    poll_initial_delay_seconds: int = 5
    poll_max_delay_seconds: int = 60
    poll_schedule: str = "predicted"
    poll_step_fraction: float = 0.1
    poll_min_step_seconds: float = 2.0
    poll_deadline_seconds: int = 21_600
    submit_retry_seconds: int = 1800
    sweep_schedule: str = "0 */5 * * * *"
    sweep_stale_seconds: int = 900
    retry_base_delay_seconds: int = 2
    isolation_max_depth: int = 12
    max_dequeue_count: int = 5
    geocatalog_max_calls_per_second: float = 40.0
    geocatalog_max_instances: int = 2
    http_timeout_seconds: float = 30.0
    source_url_allowlist: tuple[str, ...] = ("planetarycomputer.microsoft.com",)
    source_allow_loopback: bool = False
    items_ref_containers: tuple[str, ...] = ()
    sas_api_url: str = "https://planetarycomputer.microsoft.com/api/sas/v1"
    log_truncate_chars: int = 8000
    job_events_topic_endpoint: str = ""
    job_events_queue: str = ""
    storage: StorageAccess | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting, naming all missing or malformed ones at once.

        Raises:
            ConfigurationError: a required setting is missing or a number is malformed.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: list[str] = []
        types = {f.name: f.type for f in fields(cls)}
        for name, (default, _) in DEFAULTS.items():
            raw = env.get(name, default)
            if raw is None or raw == "" and default is None:
                problems.append(f"{name} is required")
                continue
            key = name.lower()
            try:
                values[key] = _convert(raw, types[key])
            except ValueError:
                problems.append(f"{name}={raw!r} is not a valid {types[key]}")
        if values.get("poll_schedule") not in (None, *POLL_SCHEDULES):
            problems.append(f"POLL_SCHEDULE={values['poll_schedule']!r} is not one of {', '.join(POLL_SCHEDULES)}")
        topic = values.get("job_events_topic_endpoint", "")
        if urlsplit(topic).scheme.lower() == "http":  # the app's token would go in clear text
            problems.append("JOB_EVENTS_TOPIC_ENDPOINT must be an https URL (the topic's endpoint)")
        try:
            values["storage"] = StorageAccess.from_env(env, STORAGE_CONNECTION)
        except ConfigurationError as error:
            problems.append(str(error))
        if problems:
            raise ConfigurationError("; ".join(problems))
        return cls(**values)

    @property
    def readable_containers(self) -> tuple[str, ...]:
        """Containers `items_ref.blob` may name."""
        return self.items_ref_containers or (self.payload_container, self.drop_container)


def _convert(raw: str, type_name: Any) -> Any:
    text = str(type_name)
    if text == "bool":
        if raw.strip().lower() not in ("true", "false", "1", "0", ""):
            raise ValueError(raw)
        return raw.strip().lower() in ("true", "1")
    if text.startswith("int"):
        return int(raw)
    if text.startswith("float"):
        return float(raw)
    if text.startswith("tuple"):
        return tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    return raw


@dataclass(frozen=True)
class StorageAccess:
    """How to reach the storage account: a connection string, or service URIs + managed identity.

    Mirrors the Functions host's own rules for a connection named N: the setting N holds a
    connection string; otherwise `N__accountName` or `N__queueServiceUri` / `N__blobServiceUri` /
    `N__tableServiceUri` select identity-based access. `repr` leaves out the connection string (its key).
    """

    connection_string: str = field(default="", repr=False)
    queue_uri: str = ""
    blob_uri: str = ""
    table_uri: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str) -> StorageAccess:
        if env.get(name):
            return cls(connection_string=env[name])
        account = env.get(f"{name}__accountName")
        if account:
            return cls(
                queue_uri=f"https://{account}.queue.core.windows.net",
                blob_uri=f"https://{account}.blob.core.windows.net",
                table_uri=f"https://{account}.table.core.windows.net",
            )
        uris = {kind: env.get(f"{name}__{kind}ServiceUri", "") for kind in ("queue", "blob", "table")}
        if all(uris.values()):
            return cls(queue_uri=uris["queue"], blob_uri=uris["blob"], table_uri=uris["table"])
        raise ConfigurationError(
            f"{name} is required (a connection string, or {name}__accountName, or the three {name}__*ServiceUri)"
        )

    @property
    def account_name(self) -> str:
        """The storage account's name (lower case; "" when neither setting tells): what BlobCreated
        events of this account name in their topic."""
        if self.connection_string:
            parts = dict(_key_value(part) for part in self.connection_string.split(";") if "=" in part)
            if parts.get("usedevelopmentstorage", "").lower() == "true":
                return "devstoreaccount1"
            return parts.get("accountname", "").lower() or _account_of_uri(parts.get("blobendpoint", ""))
        return _account_of_uri(self.blob_uri)


def _key_value(part: str) -> tuple[str, str]:
    key, _, value = part.partition("=")
    return key.strip().lower(), value.strip()


def _account_of_uri(uri: str) -> str:
    """`https://<account>.blob.core.windows.net` -> account; `http://127.0.0.1:10000/<account>` (Azurite) -> account."""
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if ".blob." in host:
        return host.split(".", 1)[0]
    return parts.path.strip("/").split("/", 1)[0].lower()
