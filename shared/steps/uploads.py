"""Uploads: a BlobCreated event starts a job, and the file is fanned out into batches as a stream.

Production trigger: Event Grid delivers the storage account's `Microsoft.Storage.BlobCreated` events
for the drop container to the `DROP_EVENTS_QUEUE` storage queue, and a queue-triggered function
reads them (see docs/uploads.md). Not the polling blob trigger (unsupported on Flex Consumption,
may miss or replay blobs) and not the Event Grid-sourced blob trigger either: in Python that binding
hands the function the whole blob, where this planner must stream it.

One job per blob version: the job id is derived from the blob's path and ETag, so a redelivered or
duplicated event finds its job, and a new upload (new ETag) makes a new one. The job row is claimed by
that blob version (`upload_claim`), which no queue message can be, so no message can act on it.

The file is then planned in segments by `shared.steps.segments` (the same reader as `items_ref`), the first
one in the event's own invocation, and each batch's items are validated by its submitter
(`check_upload_batch`), which records bad lines with their line numbers and POSTs the rest; a batch of
plain NDJSON is a byte range of the file and stays one (`shared.inputs.upload_items`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from shared.batching import feature_collection
from shared.catalog import COLLECTION_ID
from shared.inputs.blob_events import BlobCreated
from shared.inputs.documents import SUPPORTED_FILES, file_kind
from shared.inputs.upload_items import is_byte_range, read_lines, validate_lines
from shared.items import item_id_of
from shared.messages import PlanMessage
from shared.redact import redacted
from shared.services import Services
from shared.steps.planning import reject_job, rejection_key
from shared.steps.segments import plan_segment
from shared.store import (
    BatchRow,
    BlobChangedError,
    ItemsChecked,
    JobRow,
    SourceKind,
    SourceRef,
    UploadChanged,
    UploadCheck,
    spill_json,
    spill_text,
)

log = logging.getLogger(__name__)

# An upload's plan messages are planned like every stored file of items (items_ref too): shared.steps.segments.
plan_upload_segment = plan_segment


def upload_job_id(blob: BlobCreated) -> str:
    """One job per blob version."""
    return "upload-" + hashlib.sha256(f"{blob.ref}@{blob.etag.strip(chr(34))}".encode()).hexdigest()[:32]


def upload_claim(blob: BlobCreated) -> str:
    """Who holds an upload's job row: its blob version (never a queue message id)."""
    return "blob-version-" + upload_job_id(blob).removeprefix("upload-")


def collection_from_path(path: str) -> str:
    """`<collection>/<file>` -> collection (when it is a valid collection id), else ""."""
    first, sep, _ = path.partition("/")
    return first if sep and COLLECTION_ID.match(first) else ""


def start_upload_job(blob: BlobCreated, *, services: Services, now: datetime) -> PlanMessage | None:
    """Create the job for an uploaded blob version (idempotent); returns its first segment to plan, or
    None when there is nothing to plan (not the drop container, a refused file, a job already planned).

    The caller plans that segment in the same invocation rather than sending it as a plan message: a
    queue hop would add up to the host's polling interval before the first POST of every upload.
    """
    settings = services.settings
    if not is_this_account(blob, services):
        return None
    if blob.container != settings.drop_container:
        log.info("ignoring BlobCreated for %s: not the drop container", blob.container[:100])
        return None
    job_id, claim = upload_job_id(blob), upload_claim(blob)
    if blob.problem:
        return reject_event(blob, job_id, claim, services=services, now=now)
    job = services.status.create_job(JobRow(job_id=job_id, source=f"{blob.ref}@{blob.etag}", claimed_by=claim,
                                            source_ref=SourceRef(SourceKind.UPLOAD, blob=blob.ref, etag=blob.etag).to_json()), now)
    if job.planned or job.state.is_terminal:
        return None  # a duplicate event
    if job.claimed_by != claim:
        log.error("job id %s is held by another claim; the upload is not planned", job_id)
        return None
    kind = file_kind(blob.path)
    if kind is None:
        name = blob.path.rsplit("/", 1)[-1]
        reason = f"unsupported file type {name!r}: use {SUPPORTED_FILES}"
        reject_job(job_id, reason, 0, claimed_by=claim, services=services, now=now)
        return None
    size = blob.size if blob.size is not None else services.payloads.properties(blob.ref)[1]
    if size > settings.max_upload_bytes:
        reason = f"file of {size} bytes is larger than MAX_UPLOAD_BYTES ({settings.max_upload_bytes})"
        reject_job(job_id, reason, 0, claimed_by=claim, services=services, now=now)
        return None
    return PlanMessage(job_id, blob.ref, blob.etag, collection_from_path(blob.path), claimed_by=claim)


def is_this_account(blob: BlobCreated, services: Services) -> bool:
    """Whether the event's topic is this app's storage account. An event of another account (a
    misrouted subscription or a forged message) is dropped with a log line and no row: its names mean
    nothing here, and a row per forged event would let anyone fill the table."""
    storage = services.settings.storage
    ours = storage.account_name if storage is not None else ""
    if not ours or blob.account != ours:
        log.warning("BlobCreated event dropped: its topic names storage account %r, not this app's (%r)",
                    blob.account, ours)
        return False
    return True


def reject_event(blob: BlobCreated, job_id: str, claim: str, *, services: Services, now: datetime) -> None:
    """An event of this account and container that may not be acted on: a Rejected job that names the
    path and why, and no request for that blob."""
    services.status.create_job(JobRow(job_id=job_id, source=blob.shown, source_ref=SourceRef(SourceKind.UPLOAD).to_json(),
                                      claimed_by=claim), now)
    reject_job(job_id, f"BlobCreated event for {blob.shown} refused: {blob.problem}", 0, claimed_by=claim, services=services, now=now)


@dataclass(frozen=True)
class CheckedUpload:
    """An upload batch's items, validated: what its claim records on the row, and the FeatureCollection to send."""

    check: UploadCheck  # what the claim records on the row (`shared.store.claim_batch`)
    payload: bytes  # the valid items as a FeatureCollection, the body to POST (b"" when none is valid)
    items: list[dict[str, Any]] = field(default_factory=list)  # the same items, for a batch that signs them first
    rejected_ids: tuple[str, ...] = ()  # ids of the items the check rejected (those that have one): a sync still has them


def check_upload_batch(row: BatchRow, *, services: Services) -> CheckedUpload:
    """Validate an upload batch's items; returns what the claim records and the body to POST.

    A byte-range batch writes no copy of its items: anything that needs them again reads and validates
    its range again (`shared.inputs.upload_items`). A chunk batch writes its valid items as a payload blob
    (named after the batch: a redelivery writes the same bytes again). What it found is recorded by
    the caller together with the claim (`shared.store.claim_batch`), so validating costs no row write
    of its own. Bad lines are recorded with their line numbers; a batch with no valid item ends Rejected.
    """
    try:
        checked_items = validate_lines(row, read_lines(row, services.payloads))
    except BlobChangedError:
        return _changed_upload(row)
    valid, rejected, superseded = checked_items.valid, checked_items.rejected, checked_items.superseded
    reasons: dict[str, str] = {}
    for item in rejected + superseded:
        key = rejection_key(item)
        reasons[f"{key}#{item.position}" if key in reasons else key] = item.reason
    body = feature_collection(valid) if valid else b""
    payload = row.payload_blob
    if valid and not is_byte_range(row):
        payload = services.payloads.put(f"{row.job_id}/{row.batch_id}.json", body)
    check = ItemsChecked(
        valid=len(valid), rejected=len(rejected), superseded=len(superseded), repaired=len(checked_items.repaired_ids),
        item_ids=spill_json(services.payloads, row.job_id, row.batch_id, "item_ids", [item_id_of(i) for i in valid]),
        rejected_items=spill_text(services.payloads, row.job_id, row.batch_id, "rejected_items",
                             redacted(orjson.dumps(reasons).decode())),
        payload_blob=payload)
    return CheckedUpload(check, body, valid, tuple(item.item_id for item in rejected if item.item_id))


def _changed_upload(row: BatchRow) -> CheckedUpload:
    """The upload was overwritten before this batch was read: its items are gone with the old version
    (the new version has a job of its own), so the batch ends Rejected rather than send the new bytes."""
    reason = (f"{row.payload_blob[:200]} was overwritten after this job's version {row.payload_etag} was planned; "
              "an upload's new version has a job of its own")
    return CheckedUpload(UploadChanged(reason), b"")
