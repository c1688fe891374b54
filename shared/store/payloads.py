"""Blobs of this storage account: claim-checked batch payloads, full operation logs, and `items_ref` reads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
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

    def ensure(self, *containers: str) -> None:
        for container in containers or (self.container,):
            try:
                self._service.create_container(container)
            except ResourceExistsError:
                pass

    def put(self, name: str, data: bytes) -> str:
        """Write (or overwrite) `name` in the payload container; returns `container/name`."""
        self._service.get_blob_client(self.container, name).upload_blob(data, overwrite=True)
        return f"{self.container}/{name}"

    def put_stream(self, name: str, chunks: Iterable[bytes]) -> tuple[str, str]:
        """Write `name` in the payload container from a stream (block by block, never whole in memory);
        returns (`container/name`, ETag). The blob appears only once every block is committed."""
        result = self._service.get_blob_client(self.container, name).upload_blob(chunks, overwrite=True)
        return f"{self.container}/{name}", str(result["etag"]).strip('"')

    def chunks(self, ref: str, *, etag: str, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream `container/path` from `offset` (to `end`), only while it is still the version `etag`.

        Raises:
            InvalidInputError: the blob does not exist.
            BlobChangedError: the blob was overwritten (its newer version has its own event).
        """
        container, path = _split(ref)
        if end is not None and end <= offset:
            return iter(())
        length = None if end is None else end - offset
        try:
            downloader = self._service.get_blob_client(container, path).download_blob(
                offset=offset if offset or length else None, length=length,
                etag=f'"{etag.strip(chr(34))}"', match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            raise InvalidInputError(f"blob {ref[:200]!r} does not exist") from None
        except (ResourceModifiedError, HttpResponseError) as error:
            if isinstance(error, ResourceModifiedError) or getattr(error, "status_code", 0) in (412, 416):
                if getattr(error, "status_code", 0) == 416:  # offset at the very end: nothing left
                    return iter(())
                raise BlobChangedError(f"blob {ref[:200]!r} changed since version {etag}") from None
            raise
        return downloader.chunks()

    def url(self, ref: str) -> str:
        """The URL of `container/path` (what a relative href in a blob-held document is relative to)."""
        container, path = _split(ref)
        return self._service.get_blob_client(container, path).url

    def properties(self, ref: str) -> tuple[str, int]:
        """(ETag, size) of `container/path`.

        Raises:
            InvalidInputError: the blob does not exist.
        """
        container, path = _split(ref)
        try:
            props = self._service.get_blob_client(container, path).get_blob_properties()
        except ResourceNotFoundError:
            raise InvalidInputError(f"blob {ref[:200]!r} does not exist") from None
        return str(props.etag), int(props.size)

    def read(self, ref: str, start: int | None = None, end: int | None = None, *, etag: str = "") -> bytes:
        """Read `container/path`, or bytes [start, end) of it; with `etag`, only while it is that version.

        Raises:
            InvalidInputError: the reference is malformed or the blob does not exist.
            BlobChangedError: the blob is no longer version `etag`.
        """
        if etag:
            return b"".join(self.chunks(ref, etag=etag, offset=start or 0, end=end))
        container, path = _split(ref)
        offset = start or 0
        length = None if end is None else max(end - offset, 0)
        try:
            downloader = self._service.get_blob_client(container, path).download_blob(offset=offset, length=length)
            return downloader.readall()
        except ResourceNotFoundError:
            raise InvalidInputError(f"blob {ref[:200]!r} does not exist") from None


class BlobChangedError(InvalidInputError):
    """The blob was overwritten after the event that named it: that version is gone."""


def _split(ref: str) -> tuple[str, str]:
    container, _, path = ref.partition("/")
    if not container or not path:
        raise InvalidInputError(f"blob reference {ref[:200]!r} must be 'container/path'")
    return container, path
