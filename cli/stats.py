"""`geocatalog-ingest stats`: throughput, durations and failures from the status table alone (docs/cli.md).

The read is bounded: one query for job rows and one for batch rows changed since `--since`, each with only
the columns the figures need and at most `max_rows` rows (pages of 1000); past that the figures say
`truncated`. So the cost follows the window asked for, capped, never the table's size.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from rich.table import Table

from cli.render import literal
from shared.store import BatchRow, BatchState, JobRow, StatusStore

MAX_ROWS = 20_000  # per query: jobs, and batches
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime


def collect(status: StatusStore, window: Window, *, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """The figures of the rows changed in `window` (see the module docstring for the bound)."""
    jobs, jobs_cut = status.jobs_updated_since(window.since, max_rows=max_rows)
    batches, batches_cut = status.batches_updated_since(window.since, max_rows=max_rows)
    return figures(jobs, batches, window, truncated=jobs_cut or batches_cut)


def figures(jobs: list[JobRow], batches: list[BatchRow], window: Window, *, truncated: bool) -> dict[str, Any]:
    """Pure: what `stats` prints, from the rows."""
    settled = [b for b in batches if b.state.is_terminal and b.state != BatchState.SPLIT and b.finished is not None
               and b.finished >= window.since]  # a Split batch's items are counted in its children
    items = Counter({name: sum(getattr(b, f"items_{name}") for b in settled)
                     for name in ("succeeded", "failed", "rejected", "superseded")})
    total = sum(items.values())
    ended_jobs = [j for j in jobs if j.state.is_terminal and (j.finished or j.updated) and j.created is not None]
    return {
        "since": window.since.isoformat(),
        "until": window.until.isoformat(),
        "truncated": truncated,
        "jobs": {"by_state": _by_state(jobs), "duration_seconds": summary((j.finished or j.updated) - j.created for j in ended_jobs)},  # type: ignore[operator]
        "batches": {"by_state": _by_state(batches)},
        "items": {"settled": total, **items, "per_minute": _per_minute(total, settled)},
        "submit_to_settled_seconds": summary(b.finished - b.submit_started for b in settled if b.submit_started),  # type: ignore[operator]
        "operation_seconds": summary(b.finished - b.submitted for b in settled if b.submitted),  # type: ignore[operator]
        "detection_lag_seconds": None,  # rows keep when a poll saw the end, not when the operation ended
        "failures_by_code": dict(failure_codes(settled).most_common()),
    }


def summary(durations: Iterable[Any]) -> dict[str, Any]:
    """count, p50, p90, p99 and max (seconds, nearest rank) of timedeltas."""
    values = sorted(max(d.total_seconds(), 0.0) for d in durations)
    if not values:
        return {"count": 0}
    ranks = {f"p{p}": round(values[max(math.ceil(p / 100 * len(values)) - 1, 0)], 3) for p in PERCENTILES}
    return {"count": len(values), **ranks, "max": round(values[-1], 3)}


def failure_codes(batches: Iterable[BatchRow]) -> Counter[str]:
    """Failed and rejected items by code: a failed item's own code where the row names it, else its batch's."""
    codes: Counter[str] = Counter()
    for row in batches:
        failed = _json_map(row.failed_items)
        codes.update(failed.values())
        codes[row.error_code or "OperationFailed"] += max(row.items_failed - len(failed), 0)
        codes[row.error_code or "InvalidItem"] += row.items_rejected
    return +codes  # only codes that some item ended with


def render(stats: dict[str, Any]) -> Table:
    table = Table("figure", "value", title=literal(f"stats {stats['since']} .. {stats['until']}"
                                                  + (" (truncated: more rows than read)" if stats["truncated"] else "")),
                  title_justify="left")
    items = stats["items"]
    rows = [
        ("jobs by state", _pairs(stats["jobs"]["by_state"])),
        ("batches by state", _pairs(stats["batches"]["by_state"])),
        ("items settled", f"{items['settled']} ({items['succeeded']} succeeded, {items['failed']} failed, "
                          f"{items['rejected']} rejected, {items['superseded']} superseded)"),
        ("items per minute", "" if items["per_minute"] is None else f"{items['per_minute']:.1f}"),
        ("job duration (s)", _percentiles(stats["jobs"]["duration_seconds"])),
        ("submit to settled (s)", _percentiles(stats["submit_to_settled_seconds"])),
        ("operation, POST answered to seen ended (s)", _percentiles(stats["operation_seconds"])),
        ("detection lag", "not recorded in the status table"),
        ("failures by code", _pairs(stats["failures_by_code"], separator=" x")),
    ]
    for name, value in rows:
        table.add_row(name, literal(value))
    return table


def to_json(stats: dict[str, Any]) -> str:
    return orjson.dumps(stats).decode()


def _by_state(rows: Iterable[JobRow | BatchRow]) -> dict[str, int]:
    return dict(sorted(Counter(str(r.state) for r in rows).items()))


def _per_minute(total: int, settled: list[BatchRow]) -> float | None:
    """Items settled per minute over the span they were worked in (first batch created to last settled)."""
    starts = [b.created for b in settled if b.created is not None]
    if not total or not starts:
        return None
    span = (max(b.finished for b in settled) - min(starts)).total_seconds()  # type: ignore[type-var,operator]
    return round(total / max(span / 60, 1 / 60), 3)


def _percentiles(summary_: dict[str, Any]) -> str:
    if not summary_["count"]:
        return "-"
    return f"p50 {summary_['p50']}  p90 {summary_['p90']}  p99 {summary_['p99']}  max {summary_['max']}  (n={summary_['count']})"


def _pairs(values: dict[str, int], *, separator: str = " ") -> str:
    return ", ".join(f"{name}{separator}{n}" for name, n in values.items()) or "-"


def _json_map(text: str) -> dict[str, str]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
