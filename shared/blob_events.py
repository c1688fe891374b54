"""BlobCreated events, as Event Grid delivers them to the drop-events queue (Event Grid or CloudEvents schema)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.errors import InvalidInputError

BLOB_CREATED = "Microsoft.Storage.BlobCreated"


@dataclass(frozen=True)
class BlobCreated:
    """One uploaded blob version."""

    container: str
    path: str
    etag: str  # unquoted, as Event Grid sends it
    size: int | None

    @property
    def ref(self) -> str:
        return f"{self.container}/{self.path}"


def blob_created_from_event(event: Any) -> BlobCreated | None:
    """The uploaded blob an event names, or None for events of other types.

    Raises:
        InvalidInputError: a BlobCreated event without a usable subject or eTag.
    """
    if not isinstance(event, dict):
        raise InvalidInputError("event must be a JSON object")
    event_type = event.get("eventType") or event.get("type")
    if event_type != BLOB_CREATED:
        return None
    data = event.get("data") or {}
    container, path = _container_and_path(str(event.get("subject", "")), str(data.get("url", "")))
    etag = str(data.get("eTag") or data.get("etag") or "").strip('"')  # Event Grid sends it unquoted
    if not etag:
        raise InvalidInputError("BlobCreated event has no eTag")
    size = data.get("contentLength")
    return BlobCreated(container, path, etag, int(size) if isinstance(size, int) else None)


def _container_and_path(subject: str, url: str) -> tuple[str, str]:
    # subject: /blobServices/default/containers/<container>/blobs/<path>
    marker = "/containers/"
    if marker in subject and "/blobs/" in subject:
        rest = subject.split(marker, 1)[1]
        container, path = rest.split("/blobs/", 1)
        return container, unquote(path)
    parts = urlsplit(url).path.lstrip("/").split("/")
    if len(parts) >= 2:  # https://acct.blob.core.windows.net/<container>/<path>; Azurite adds the account
        if parts[0] == "devstoreaccount1" and len(parts) >= 3:
            parts = parts[1:]
        return parts[0], unquote("/".join(parts[1:]))
    raise InvalidInputError("BlobCreated event names no blob (no subject or url)")


def blob_created_event(container: str, path: str, etag: str, size: int, url: str = "") -> dict[str, Any]:
    """An Event Grid-schema BlobCreated event (what the local host sends for uploads into Azurite)."""
    return {
        "topic": "/subscriptions/local/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        "subject": f"/blobServices/default/containers/{container}/blobs/{path}",
        "eventType": BLOB_CREATED,
        "id": f"{container}/{path}@{etag}",
        "data": {"api": "PutBlob", "eTag": etag, "contentLength": size, "blobType": "BlockBlob", "url": url},
        "dataVersion": "",
        "metadataVersion": "1",
    }
