"""Status-table cost of finishing a batch, for jobs of 10, 100 and 1,000 batches (Azurite).

For each size, a job is planned (its batch rows created), then every batch is ended the way a poll
does it: one batch transition (which moves the job's counters in the same transaction), then the
job is settled if the batch's counter row has no active batch left (`settle_after_batch`). Every
call on the table client is counted. Printed beside it, in the same run: the previous step, which
read the job's progress after every batch, and the baseline, the recompute roll-up that read every
batch row of the job each time a batch ended. The figure that matters is "table ops per finished
batch": it must stay flat.

    .venv/bin/python -m bench.rollup_ops [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableServiceClient

from devhost.azurite import Azurite
from shared.steps.rollup import settle_after_batch, settle_job, summarize
from shared.store import BatchRow, BatchState, JobRow, JobState, StatusStore


class CountingTable:
    """A TableClient that counts its calls, and the entities its queries return."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.calls = 0
        self.entities_read = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._table, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            result = method(*args, **kwargs)
            if name == "query_entities":
                rows = list(result)
                self.entities_read += len(rows)
                return rows
            if name == "get_entity":
                self.entities_read += 1
            return result

        return counted


SHARD_SETTLE, SETTLE_EVERY, RECOMPUTE = "shard", "every", "recompute"


def end_every_batch(store: StatusStore, table: CountingTable, job_id: str, batches: int, *, mode: str) -> tuple[float, float, float]:
    """(table calls, entities read, ms) per finished batch."""
    now = datetime.now(UTC)
    store.create_job(JobRow(job_id, state=JobState.RUNNING, planned=True), now)
    store.create_batches([BatchRow(job_id, f"batch-{n:06d}", item_count=100) for n in range(1, batches + 1)], now)
    for n in range(1, batches + 1):  # submitted, as a batch is when its operation ends (not counted below)
        store.update_batch(job_id, f"batch-{n:06d}", lambda r: replace(r, state=BatchState.SUBMITTED), now)
    table.calls = table.entities_read = 0
    started = time.perf_counter()
    for n in range(1, batches + 1):
        ended = store.update_batch(job_id, f"batch-{n:06d}", lambda r: replace(r, state=BatchState.SUCCEEDED, items_succeeded=100), now)
        if mode == RECOMPUTE:  # what the roll-up did first: read every batch row, rewrite the job row
            rows = store.batches(job_id)
            store.update_job(job_id, lambda j, rows=rows: summarize(j, rows), now)
        elif mode == SETTLE_EVERY:
            settle_job(job_id, status=store, now=now)
        else:
            settle_after_batch(ended, job_id, status=store, now=now)
    elapsed = time.perf_counter() - started
    job = store.get_job(job_id)
    if job is None or job.items_succeeded != 100 * batches or job.state != JobState.SUCCEEDED:
        raise RuntimeError(f"the job did not end as expected: {job}")
    return table.calls / batches, table.entities_read / batches, 1000 * elapsed / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with Azurite() as azurite:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        print("status-table cost per finished batch (Azurite)")
        print(f"{'batches':>8} | {'counters, shard settle: calls':>29} {'rows read':>10} {'ms':>7} | "
              f"{'settle every batch: calls':>25} {'rows read':>10} {'ms':>7} | "
              f"{'baseline recompute: calls':>25} {'rows read':>10} {'ms':>8}")
        for size in sizes:
            table = CountingTable(service.create_table(f"RollupBench{size}"))
            store = StatusStore(table)  # type: ignore[arg-type]
            new = end_every_batch(store, table, f"o1-{size}", size, mode=SHARD_SETTLE)
            every = end_every_batch(store, table, f"every-{size}", size, mode=SETTLE_EVERY)
            old = end_every_batch(store, table, f"recompute-{size}", size, mode=RECOMPUTE) if size <= 300 else None
            old_text = (f"{old[0]:>25.1f} {old[1]:>10.1f} {old[2]:>8.1f}" if old
                        else f"{'(skipped: ~' + str(size) + ' rows read per batch)':>45}")
            print(f"{size:>8} | {new[0]:>29.1f} {new[1]:>10.1f} {new[2]:>7.1f} | "
                  f"{every[0]:>25.1f} {every[1]:>10.1f} {every[2]:>7.1f} | {old_text}")


if __name__ == "__main__":
    main()
