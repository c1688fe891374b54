"""`items_ref`: check where a job's items are, and hand the file to the segment planner.

A blob reference may name only the containers ITEMS_REF_CONTAINERS allows (by default the payload and
drop containers): the Functions storage account also holds the host's keys. Anything else gets one
reason that says nothing about whether such a blob exists. An allowlisted URL is copied, as a stream,
into a blob of the payload container first, so both are then read the same way as an upload
(`shared.steps.segments`): NDJSON in byte-ranged segments, JSON streamed, gzip by its magic bytes, STAC
GeoParquet (a `.parquet`/`.geoparquet` name, or the `PAR1` magic bytes) row group by row group through
ranged reads of the stored blob (the URL's copy is written as a stream, never held whole).
"""

from __future__ import annotations

import itertools
from datetime import datetime

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.errors import InvalidInputError
from shared.ids import blob_path_problem
from shared.inputs.documents import file_kind
from shared.messages import ItemsRef, JobRequest, PlanMessage
from shared.redact import url_without_query
from shared.services import Services
from shared.store import SourceKind, SourceRef, record_source

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


def plan_message_for(request: JobRequest, *, job_id: str, services: Services, now: datetime) -> PlanMessage:
    """The first plan message of an `items_ref` job (a URL is staged as a blob first; idempotent).

    Raises:
        InvalidInputError: the reference may not be read, or names an empty or unusable file.
        RetryableError: the source or storage is briefly unavailable.
    """
    ref = request.items_ref
    assert ref is not None
    if ref.url:
        blob, etag, size, name = _staged_url(ref.url, job_id=job_id, services=services, now=now)
    else:
        blob, name = checked_blob(ref.blob, services.settings.readable_containers), ref.blob
        etag, size = _properties(blob, services)
    if size == 0:
        raise InvalidInputError(f"items_ref {_shown(ref)} is empty")
    if size > services.settings.max_upload_bytes:
        raise InvalidInputError(f"items_ref {_shown(ref)} has {size} bytes, more than MAX_UPLOAD_BYTES")
    magic = b"".join(services.payloads.chunks(blob, etag=etag, end=4))
    gzipped = magic[:2] == GZIP_MAGIC
    kind = file_kind(name.split("?", 1)[0].removesuffix(".gz"))
    parquet = magic == PARQUET_MAGIC or (kind is not None and kind.parquet)
    ndjson = kind.ndjson if kind is not None else ref.start is not None
    if (gzipped or parquet) and (ref.start is not None or ref.end is not None):
        raise InvalidInputError("items_ref start/end need a plain (not gzipped) NDJSON blob")
    document = "parquet" if parquet else ("ndjson" if ndjson else "json") + (".gz" if gzipped else "")
    read = SourceRef(SourceKind.URL if ref.url else SourceKind.BLOB, blob=blob, etag=etag, start=ref.start, end=ref.end,
                     url=url_without_query(name) if ref.url else "", format=document)
    record_source(services.status, job_id, source_ref=read, now=now)
    return PlanMessage(
        job_id, blob, etag, request.collection or "", offset=ref.start or 0, end=ref.end, format=document, mode=request.mode,
        sign=request.sign or "", sign_collection=request.sign_collection or "", batch_size=request.batch_size or 0,
        repair=",".join(sorted(request.repair)),
    )


def checked_blob(ref: str, containers: tuple[str, ...]) -> str:
    """`container/path` when the container may be read and the path is a plain blob name.

    Raises:
        InvalidInputError: with one reason for every container not allowed (whether or not such a
            blob exists), and a clear one for `..`, `.`, empty segments and control characters.
    """
    container, _, path = ref.partition("/")
    if container not in containers:
        raise InvalidInputError(_not_readable(ref))
    problem = blob_path_problem(path)
    if problem:
        raise InvalidInputError(f"items_ref.blob {ref[:200]!r} {problem}")
    return ref


def _not_readable(ref: str) -> str:
    return (f"items_ref.blob {ref[:200]!r} cannot be read: name an existing blob in a container that "
            "ITEMS_REF_CONTAINERS allows")


def _properties(blob: str, services: Services) -> tuple[str, int]:
    try:
        return services.payloads.properties(blob)
    except (InvalidInputError, ResourceNotFoundError):
        raise InvalidInputError(_not_readable(blob)) from None
    except HttpResponseError as error:
        if error.status_code in (400, 403, 404, 416):  # a name storage refuses: the same answer as a missing blob
            raise InvalidInputError(_not_readable(blob)) from None
        raise


def _staged_url(url: str, *, job_id: str, services: Services, now: datetime) -> tuple[str, str, int, str]:
    """(blob, ETag, size, the URL's name) of the URL's copy in the payload container, copied once per job."""
    name = f"{job_id}/items-ref-source"
    staged = f"{services.payloads.container}/{name}"
    try:
        etag, size = services.payloads.properties(staged)
        return staged, etag, size, url
    except InvalidInputError:
        pass  # not copied yet
    services.sources.check(url)
    with services.sources.open(url) as (chunks, answered):
        first = next(chunks, b"")
        blob, etag = services.payloads.put_stream(name, itertools.chain([first], chunks))
    if url_without_query(answered) != url_without_query(url):  # the row shows the host actually used
        record_source(services.status, job_id, source=url_without_query(answered), now=now)
    _, size = services.payloads.properties(blob)
    return blob, etag, size, answered


def _shown(ref: ItemsRef) -> str:
    return url_without_query(ref.url) if ref.url else repr(ref.blob[:200])
