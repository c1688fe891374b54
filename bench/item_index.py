"""What the item index adds to settling a batch: table requests and time per batch, for 10 to 1000 batches.

Against Azurite (in memory). Each batch has 100 items (BATCH_MAX_ITEMS), two of them failed. For each
job size it measures, per batch:
- the baseline, the batch's own terminal row write as `end_batch` does it (`update_batch`: read + replace);
- the index, `record_batch` on the settled row (transactions of <= 100 upserts + the collection's marker).
The index cost per batch should stay flat as the job grows: it never reads other batches.

    .venv/bin/python -m bench.item_index [--batches 10,100,1000] [--items 100]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import UTC, datetime

import orjson

from devhost.azurite import Azurite
from shared.services import connect_storage, ensure_storage
from shared.settings import Settings
from shared.store import BatchRow, BatchState, record_batch


def run(storage, job_id: str, batches: int, items: int) -> tuple[float, float, float]:
    """(baseline ms per batch, index ms per batch, index requests per batch)."""
    now = datetime.now(UTC)
    rows = [BatchRow(job_id=job_id, batch_id=f"batch-{n:06d}", collection="bench", state=BatchState.SUBMITTED, item_count=items,
                     item_ids=orjson.dumps([f"{job_id}-{n}-{i}" for i in range(items)]).decode(), operation_id=f"op-{n}")
            for n in range(1, batches + 1)]
    storage.status.create_batches(rows, now)

    def settle(current: BatchRow) -> BatchRow:
        failed = {f"{job_id}-{current.batch_id}-0": "ItemAlreadyExistsInCollection", f"{job_id}-{current.batch_id}-1": "Boom"}
        return replace(current, state=BatchState.FAILED, finished=now, items_succeeded=items - 2, items_failed=2,
                       failed_items=orjson.dumps(failed).decode(), error_code="ErrorsInBatchOperation")

    start = time.perf_counter()
    settled = [storage.status.update_batch(job_id, row.batch_id, settle, now) for row in rows]
    baseline = time.perf_counter() - start

    requests_before = storage.items.operations
    start = time.perf_counter()
    for row in settled:
        record_batch(row, services=storage)
    index = time.perf_counter() - start
    return baseline * 1000 / batches, index * 1000 / batches, (storage.items.operations - requests_before) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="10,100,1000")
    parser.add_argument("--items", type=int, default=100)
    args = parser.parse_args()
    with Azurite() as azurite:
        settings = Settings.from_env({"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": "https://bench.invalid"})
        storage = connect_storage(settings)
        ensure_storage(settings, storage)
        print(f"{'batches':>8} {'items/batch':>12} {'terminal row write ms/batch':>28} {'+ item index ms/batch':>22} "
              f"{'+ index requests/batch':>23}")
        for n in (int(b) for b in args.batches.split(",")):
            baseline, index, requests = run(storage, f"bench-{n}", n, args.items)
            print(f"{n:>8} {args.items:>12} {baseline:>28.1f} {index:>22.1f} {requests:>23.1f}", flush=True)


if __name__ == "__main__":
    main()
