"""Output: rich tables for people, JSON for programs (`--json`). Data goes to stdout, messages to stderr.

Columns of `--json` come from the row dataclasses themselves, so a field added in `shared/store/status.py`
shows up here with no second copy.

Row text is whatever a message, an upload or the service put there: every cell is a `Text` (never
parsed as rich markup, so `x/[/]` is shown as written), and control characters (terminal escapes,
OSC-8 links) are shown as `\\xNN` rather than sent to the terminal (`literal`, `plain`).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shared.store import BatchRow, ItemOutcome, JobRow

HIDDEN = {"etag"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: Any, *, newlines: bool = False) -> str:
    """`text` with its control characters written out as `\\xNN` (tab and, with `newlines`, line breaks kept)."""
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def literal(text: Any) -> Text:
    """A table cell that shows `text` as it is: no markup, no control characters."""
    return Text(plain(text))


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # A pipe or file gets plain text, wide enough not to wrap rows.
    return Console(file=stream, width=None if stream.isatty() else 200, soft_wrap=not stream.isatty())


def say(message: str) -> None:
    """A message for the person (stderr), never mixed into the data."""
    click.echo(plain(message, newlines=True), err=True)


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, default=_plain, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):  # the table SDK's TablesEntityDatetime, a datetime subclass
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def row_json(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(row).items() if k not in HIDDEN}


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def duration(job: JobRow, now: datetime | None = None) -> str:
    if job.created is None:
        return ""
    ended = job.finished or job.updated  # `updated` moves again when the job's event is published
    end = ended if job.state.is_terminal and ended else (now or datetime.now(UTC))
    seconds = max((end - job.created).total_seconds(), 0.0)
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def counts(row: JobRow | BatchRow) -> str:
    """ok / failed / rejected / items, where the first three (with any superseded or unconfirmed, named after)
    add up to the items once the row has ended."""
    text = f"{row.items_succeeded} / {row.items_failed} / {row.items_rejected} / {items_total(row)}"
    named = [f"{count} {name}" for count, name in ((row.items_superseded, "superseded"),
                                                   (row.items_unconfirmed, "unconfirmed")) if count]
    return f"{text} ({', '.join(named)})" if named else text


def items_total(row: JobRow | BatchRow) -> int:
    """Every item the row stands for. A job's `item_count` is all of them. A batch's is the items it sends:
    the lines of an upload batch rejected (or superseded) when it was checked are counted apart, so they are
    added while it is open; once it ended each of its items is in exactly one of its counts."""
    if isinstance(row, JobRow):
        return row.item_count
    done = (row.items_succeeded + row.items_failed + row.items_rejected + row.items_superseded
            + row.items_unconfirmed)
    if row.state.is_terminal:
        return max(row.item_count, done)
    return row.item_count + row.items_rejected + row.items_superseded


def jobs_table(jobs: Iterable[JobRow]) -> Table:
    table = Table("job", "state", "collection", "source", "ok / failed / rejected / total", "started", "duration",
                  title="jobs", title_justify="left")
    for job in jobs:
        table.add_row(*map(literal, (job.job_id, job.state, job.collection, job.source, counts(job), when(job.created),
                                     duration(job))))
    return table


def job_summary(job: JobRow) -> Table:
    table = Table.grid(padding=(0, 2))
    for name, value in (("job", job.job_id), ("state", str(job.state)), ("collection", job.collection),
                        ("source", job.source), ("items", f"{job.item_count} ({job.items_succeeded} succeeded, "
                                                             f"{job.items_failed} failed, {job.items_rejected} rejected"
                                                             f"{unconfirmed(job)})"),
                        ("batches", f"{job.batch_count} {job.batches_by_state}"), ("started", when(job.created)),
                        ("updated", when(job.updated)), ("duration", duration(job))):
        table.add_row(name, literal(value))
    if job.error_code or job.error_message:
        table.add_row("error", literal(f"{job.error_code}: {job.error_message}".strip(": ")))
    if job.event_state:  # its job-finished event (docs/events.md)
        table.add_row("event", literal(f"{job.event_state} {job.event_error}".strip()))
    return table


def unconfirmed(job: JobRow) -> str:
    """", N unconfirmed (the sweeper confirms them once the catalog answers)" when there are any."""
    if not job.items_unconfirmed:
        return ""
    return f", {job.items_unconfirmed} unconfirmed: their outcome could not be read; the sweeper confirms them once the catalog answers"


def batches_table(batches: Iterable[BatchRow]) -> Table:
    table = Table("batch", "state", "ok / failed / rejected / items", "attempts", "operation", "finished", "error",
                  title="batches", title_justify="left")
    for row in batches:
        error = f"{row.error_code}: {row.error_message}".strip(": ")
        table.add_row(*map(literal, (row.batch_id, row.state, counts(row), row.attempts, row.operation_id, when(row.finished),
                                     error[:120])))
    return table


def outcomes_table(outcomes: Iterable[ItemOutcome], *, title: str, with_job: bool = False) -> Table:
    columns = (["job"] if with_job else []) + ["item", "batch", "state", "code", "message"]
    if with_job:
        columns += ["operation", "submitted", "finished"]
    table = Table(*columns, title=literal(title), title_justify="left")
    for o in outcomes:
        cells = ([o.job_id] if with_job else []) + [o.item, o.batch_id, str(o.state), o.code, o.message[:200]]
        if with_job:
            cells += [o.operation_id, when(o.submitted), when(o.finished)]
        table.add_row(*map(literal, cells))
    return table


def reasons_lines(outcomes: list[ItemOutcome], *, limit: int = 10) -> list[str]:
    """Up to `limit` failed or rejected items as plain lines (the demo prints these under its table)."""
    lines = [plain(f"  {o.item} ({o.job_id} {o.batch_id}): {o.state} {o.code}: {o.message[:160]}".rstrip(": "))
             for o in outcomes[:limit]]
    if len(outcomes) > limit:
        lines.append(f"  ... and {len(outcomes) - limit} more (geocatalog-ingest failures JOB)")
    return lines
