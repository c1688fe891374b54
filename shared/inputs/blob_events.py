"""BlobCreated events, as Event Grid delivers them to the drop-events queue (Event Grid or CloudEvents schema).

An event is input like any message: anyone who can write to the drop-events queue can forge one. So
an event is read for what it may be trusted with only after three checks:
- its `topic` (CloudEvents: `source`) names a storage account; the caller compares that with its own
  (`account`), since an event of another account says nothing about ours;
- its blob path is a plain blob name (`shared.ids.blob_path_problem`, the `items_ref.blob` rule),
  both as written and after unquoting: `%2E%2E/azure-webjobs-secrets/...` would otherwise become a
  request outside the drop container;
- its eTag has the storage format (`0x` and hex), since it goes into an `If-Match` header.
A BlobCreated event that fails the last two is still returned, with `problem` saying why, so that the
caller can record a Rejected job that names the path; one without a usable topic raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.errors import InvalidInputError
from shared.ids import blob_path_problem

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
LOCAL_ACCOUNT = "devstoreaccount1"  # Azurite's account
# /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<name>
_TOPIC = re.compile(r"\A/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/"
                    r"([a-z0-9]{3,24})\Z", re.IGNORECASE)
_ETAG = re.compile(r'\A"?(0x[0-9A-Fa-f]{1,32})"?\Z')
_SHOWN_PATH_CHARS = 200


@dataclass(frozen=True)
class BlobCreated:
    """One uploaded blob version."""

    container: str
    path: str
    etag: str  # unquoted, as Event Grid sends it
    size: int | None
    account: str = ""  # the storage account the event's topic names
    problem: str = ""  # why this event may not be acted on (path or eTag refused); "" when it may

    @property
    def ref(self) -> str:
        return f"{self.container}/{self.path}"

    @property
    def shown(self) -> str:
        """The blob, as a row or a log may show it (bounded; control characters escaped)."""
        return repr(self.ref[:_SHOWN_PATH_CHARS]) + ("..." if len(self.ref) > _SHOWN_PATH_CHARS else "")


def blob_created_from_event(event: Any) -> BlobCreated | None:
    """The uploaded blob an event names, or None for events of other types.

    Raises:
        InvalidInputError: a BlobCreated event that names no storage account (topic) or no blob.
    """
    if not isinstance(event, dict):
        raise InvalidInputError("event must be a JSON object")
    event_type = event.get("eventType") or event.get("type")
    if event_type != BLOB_CREATED:
        return None
    account = account_of_topic(event.get("topic") or event.get("source"))
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    container, raw_path = _container_and_raw_path(str(event.get("subject", "")), str(data.get("url", "")))
    path = unquote(raw_path)
    raw_etag = str(data.get("eTag") or data.get("etag") or "")
    etag = _ETAG.match(raw_etag)
    size = data.get("contentLength")
    size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    problem = _path_problem(raw_path, path)
    if not problem and etag is None:
        problem = f"its eTag {raw_etag[:40]!r} is not a storage ETag ('0x' and hex digits)"
    return BlobCreated(container, path, etag.group(1) if etag else "", size, account, problem)


def account_of_topic(topic: Any) -> str:
    """The storage account an Event Grid topic names (lower case).

    Raises:
        InvalidInputError: the topic is not a storage account's resource id.
    """
    match = _TOPIC.match(topic) if isinstance(topic, str) else None
    if match is None:
        raise InvalidInputError(f"BlobCreated event's topic {str(topic)[:200]!r} is not a storage account")
    return match.group(1).lower()


def _path_problem(raw_path: str, path: str) -> str:
    for name in (raw_path, path):  # as written, and as the SDK will send it
        problem = blob_path_problem(name)
        if problem:
            return f"blob name {problem}"
    return ""


def _container_and_raw_path(subject: str, url: str) -> tuple[str, str]:
    # subject: /blobServices/default/containers/<container>/blobs/<path>
    marker = "/containers/"
    if marker in subject and "/blobs/" in subject:
        rest = subject.split(marker, 1)[1]
        container, path = rest.split("/blobs/", 1)
        return container, path
    parts = urlsplit(url).path.lstrip("/").split("/")
    if len(parts) >= 2:  # https://acct.blob.core.windows.net/<container>/<path>; Azurite adds the account
        if parts[0] == LOCAL_ACCOUNT and len(parts) >= 3:
            parts = parts[1:]
        return parts[0], "/".join(parts[1:])
    raise InvalidInputError("BlobCreated event names no blob (no subject or url)")


def blob_created_event(container: str, path: str, etag: str, size: int, url: str = "", *,
                       account: str = LOCAL_ACCOUNT) -> dict[str, Any]:
    """An Event Grid-schema BlobCreated event (what the local host sends for uploads into Azurite)."""
    return {
        "topic": f"/subscriptions/local/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{path}",
        "eventType": BLOB_CREATED,
        "id": f"{container}/{path}@{etag}",
        "data": {"api": "PutBlob", "eTag": etag, "contentLength": size, "blobType": "BlockBlob", "url": url},
        "dataVersion": "",
        "metadataVersion": "1",
    }
