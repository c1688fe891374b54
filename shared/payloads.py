"""Blobs of this storage account: claim-checked batch payloads, full operation logs, and `items_ref` reads."""

from __future__ import annotations

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.errors import InvalidInputError


class PayloadStore:
    """Reads and writes blobs; writes go to the payload container.

    Args:
        service: the account's blob service client.
        container: the payload container's name.
    """

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._service = service
        self.container = container

    def ensure(self) -> None:
        try:
            self._service.create_container(self.container)
        except ResourceExistsError:
            pass

    def put(self, name: str, data: bytes) -> str:
        """Write (or overwrite) `name` in the payload container; returns `container/name`."""
        self._service.get_blob_client(self.container, name).upload_blob(data, overwrite=True)
        return f"{self.container}/{name}"

    def read(self, ref: str, start: int | None = None, end: int | None = None) -> bytes:
        """Read `container/path`, or bytes [start, end) of it.

        Raises:
            InvalidInputError: the reference is malformed or the blob does not exist.
        """
        container, _, path = ref.partition("/")
        if not container or not path:
            raise InvalidInputError(f"blob reference {ref[:200]!r} must be 'container/path'")
        offset = start or 0
        length = None if end is None else max(end - offset, 0)
        try:
            downloader = self._service.get_blob_client(container, path).download_blob(offset=offset, length=length)
            return downloader.readall()
        except ResourceNotFoundError:
            raise InvalidInputError(f"blob {ref[:200]!r} does not exist") from None
