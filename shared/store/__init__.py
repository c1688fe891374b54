"""What the app keeps in its storage account: job and batch rows (and every change to them), payload blobs,
queues, the item index and the collections' timing. Code outside the package imports from here."""

from shared.store.item_index import WHOLE_JOB, ItemIndex, ItemOutcome, ItemState, batch_outcomes, job_problems, record_batch, record_batches
from shared.store.payloads import BlobChangedError, PayloadStore
from shared.store.queues import MAX_MESSAGE_BYTES, QueueSender, fits_in_message
from shared.store.source_ref import SourceKind, SourceRef
from shared.store.status import JOB_ROW, BatchRow, BatchState, JobRow, JobState, StatusStore, state_group
from shared.store.table_batch import TableClient
from shared.store.timing import OperationTimings, record_timing, seconds_per_item

__all__ = [
    "BatchRow",
    "BatchState",
    "BlobChangedError",
    "ItemIndex",
    "ItemOutcome",
    "ItemState",
    "JOB_ROW",
    "JobRow",
    "JobState",
    "MAX_MESSAGE_BYTES",
    "OperationTimings",
    "PayloadStore",
    "QueueSender",
    "SourceKind",
    "SourceRef",
    "StatusStore",
    "TableClient",
    "WHOLE_JOB",
    "batch_outcomes",
    "fits_in_message",
    "job_problems",
    "record_batch",
    "record_batches",
    "record_timing",
    "seconds_per_item",
    "state_group",
]
