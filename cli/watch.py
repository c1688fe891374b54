"""`watch`: follow jobs until every one is terminal, as a live progress bar per job (or plain lines).

Exit codes (`cli.exit_codes`): OK when every item of every job succeeded, ITEMS_FAILED when any item failed,
was rejected or is unconfirmed (or a job ended without succeeding; an `Unconfirmed` job counts as ended),
OWN_ERROR when a job never appears or `timeout` passes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from cli.exit_codes import ExitCode
from cli.render import console, plain
from shared.store import JobRow, JobState, StatusStore


@dataclass
class Rate:
    """Items settled per second since this watch first saw the job, and the time left at that pace."""

    started: float = field(default_factory=time.monotonic)
    first_done: int | None = None

    def per_second(self, done: int, now: float) -> float:
        if self.first_done is None:
            self.first_done = done
        elapsed = now - self.started
        return (done - self.first_done) / elapsed if elapsed > 0.5 else 0.0

    @staticmethod
    def eta(done: int, total: int, rate: float) -> str:
        if total and total <= done:
            return "0s"
        if rate <= 0:
            return "?"
        seconds = (total - done) / rate
        return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def exit_code(rows: dict[str, JobRow]) -> ExitCode:
    if all(r.state == JobState.SUCCEEDED and not r.items_failed and not r.items_rejected for r in rows.values()):
        return ExitCode.OK
    return ExitCode.ITEMS_FAILED


def line(row: JobRow, rate: float) -> str:
    """One plain line per job (no control characters): what a pipe or a log gets on every change."""
    return (f"{row.job_id} {row.state} settled {row.items_done}/{row.item_count} succeeded {row.items_succeeded} "
            f"failed {row.items_failed} rejected {row.items_rejected} "
            f"{f'unconfirmed {row.items_unconfirmed} ' if row.items_unconfirmed else ''}{rate:.1f} items/s "
            f"eta {eta(row, rate)}")


def eta(row: JobRow, rate: float) -> str:
    return "0s" if row.state.is_terminal else Rate.eta(row.items_done, row.item_count, rate)


def watch(status: StatusStore, job_ids: list[str], *, every: float = 0.5, appear_timeout: float = 120.0,
          timeout: float | None = None, live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> ExitCode:
    """Follow `job_ids` until all are terminal; returns the exit code (see module docstring)."""
    live = sys.stdout.isatty() if live is None else live
    started = clock()
    rates = {job_id: Rate(started) for job_id in job_ids}
    last: dict[str, tuple] = {}
    rows: dict[str, JobRow] = {}
    display = _LiveDisplay(job_ids) if live else None
    try:
        while True:
            now = clock()
            for job_id in job_ids:
                row = status.get_job(job_id)
                if row is not None:
                    rows[job_id] = row
            missing = [j for j in job_ids if j not in rows]
            if missing and now - started > appear_timeout:
                click.echo(f"no such job after {appear_timeout:.0f}s: {', '.join(missing)}", err=True)
                return ExitCode.OWN_ERROR
            for job_id, row in rows.items():
                rate = rates[job_id].per_second(row.items_done, now)
                if display is not None:
                    display.update(row, rate)
                else:
                    key = (row.state, row.item_count, row.items_succeeded, row.items_failed, row.items_rejected,
                           row.items_unconfirmed)
                    if last.get(job_id) != key:
                        last[job_id] = key
                        click.echo(line(row, rate))
            if not missing and all(r.state.is_terminal for r in rows.values()):
                return exit_code(rows)
            if timeout is not None and now - started > timeout:
                click.echo(f"jobs not finished after {timeout:.0f}s", err=True)
                return ExitCode.OWN_ERROR
            time.sleep(every)
    finally:
        if display is not None:
            display.stop()


class _Counts(ProgressColumn):
    def render(self, task: Task) -> Text:
        f = task.fields
        return Text(f"{int(task.completed)}/{int(task.total or 0)} settled  ok {f.get('ok', 0)}  "
                    f"failed {f.get('failed', 0)}  rejected {f.get('rejected', 0)}  "
                    f"{'unconfirmed ' + str(f['unconfirmed']) + '  ' if f.get('unconfirmed') else ''}"
                    f"{f.get('rate', 0.0):.1f} items/s  eta {f.get('eta', '?')}")


def plain_markup(text: str) -> str:
    """A progress description shows `text` as written (its `[...]` are not markup, its escapes not sent)."""
    return escape(plain(text))


class _LiveDisplay:
    """A rich progress bar per job (a terminal only)."""

    def __init__(self, job_ids: list[str]) -> None:
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=16), _Counts(), console=console(),
                                  transient=False, auto_refresh=True)
        self._tasks: dict[str, TaskID] = {j: self._progress.add_task(f"{plain_markup(j)} (waiting)", total=None) for j in job_ids}
        self._progress.start()

    def update(self, row: JobRow, rate: float) -> None:
        self._progress.update(self._tasks[row.job_id], description=f"{plain_markup(row.job_id)} {row.state}", total=max(row.item_count, 1),
                              completed=row.items_done, ok=row.items_succeeded, failed=row.items_failed,
                              rejected=row.items_rejected, unconfirmed=row.items_unconfirmed, rate=rate, eta=eta(row, rate))

    def stop(self) -> None:
        self._progress.stop()
