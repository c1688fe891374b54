"""Turning groups of items into batches: payload blob, Queued row, and a message on the work queue.

Used by planning (a job's first batches) and by isolation (the halves of a failed batch). Order
matters for crash safety: blob, then row, then message. A crash before the message leaves a Queued
row that the next delivery of the same job (or poll) message re-sends; a duplicate message is
harmless because submitting checks the row first.

A batch message names its batch and nothing more: what is sent is read from the row, which points at
the stored payload (or byte range of an upload). So no message can change what a batch POSTs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.batching import feature_collection
from shared.items import item_id_of
from shared.messages import BatchMessage
from shared.services import Services
from shared.store import BatchRow, BatchState, spill_json

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PlannedBatch:
    batch_id: str
    items: list[dict[str, Any]]
    repaired: int = 0  # items whose bbox was computed from their geometry (`repair: ["bbox"]`)
    body: bytes | None = None  # the items as a FeatureCollection, when already serialized
    sync_items: dict[str, str] | None = None  # a sync's diff of these items (`shared.steps.sync`), when known


@dataclass(frozen=True)
class BatchGroup:
    """What the batches planned together share: their job, collection and how they are sent."""

    job_id: str
    collection: str
    mode: str = "create"
    action: str = "create"
    sign: str = ""
    sign_collection: str = ""
    parent: str = ""  # the failed batch these were split from (isolation), and how deep in its splits
    depth: int = 0


def payload_name(job_id: str, batch_id: str) -> str:
    return f"{job_id}/{batch_id}.json"


def enqueue_batches(group: BatchGroup, batches: list[PlannedBatch], *, services: Services, now: datetime) -> None:
    """Write each batch's payload and row, then send its message."""
    rows: list[BatchRow] = []
    for batch in batches:
        body = batch.body if batch.body is not None else feature_collection(batch.items)
        payload = "" if group.action == "delete" else services.payloads.put(payload_name(group.job_id, batch.batch_id), body)
        ids = spill_json(services.payloads, group.job_id, batch.batch_id, "item_ids", [item_id_of(i) for i in batch.items])
        diff = spill_json(services.payloads, group.job_id, batch.batch_id, "sync_items", batch.sync_items) \
            if batch.sync_items else None
        rows.append(
            BatchRow(
                job_id=group.job_id, batch_id=batch.batch_id, state=BatchState.QUEUED, collection=group.collection,
                item_count=len(batch.items), **ids.columns(), payload_blob=payload, parent=group.parent,
                depth=group.depth, mode=group.mode, action=group.action, sign=group.sign,
                sign_collection=group.sign_collection, items_repaired=batch.repaired,
                **(diff.columns() if diff is not None else {}),
            )
        )
    services.status.create_batches(rows, now)
    services.queues.send_many(services.settings.work_queue, [batch_message(group.job_id, row.batch_id) for row in rows])


def batch_message(job_id: str, batch_id: str, attempt: int = 0) -> str:
    """The batch's message: which batch (its row holds the rest)."""
    return BatchMessage(job_id, batch_id, attempt=attempt).to_json()


