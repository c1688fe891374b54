"""The `geocatalog-ingest` command: one root group; each command a thin layer over `shared/`.

Data goes to stdout (a rich table, or JSON with `--json`), messages to stderr. Exit codes: `cli.exit_codes`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from cli.context import CliContext
from cli.exit_codes import ExitCode
from shared.errors import IngestError
from shared.store import JobState

SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class IngestGroup(click.Group):
    """Turns the app's own errors (and storage errors) into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        from azure.core.exceptions import AzureError

        try:
            return super().invoke(ctx)
        except (IngestError, AzureError) as error:
            from cli.render import plain

            click.echo(plain(f"error: {error}", newlines=True), err=True)
            sys.exit(ExitCode.OWN_ERROR)


class CliError(click.ClickException):
    """An error of the command's own (no such job, ...): exit code 2."""

    exit_code = ExitCode.OWN_ERROR


pass_cli = click.make_pass_decorator(CliContext)
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@click.group(cls=IngestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--connection-string", envvar="AzureWebJobsStorage", default="", show_envvar=True,
              help="storage account connection string (default: AzureWebJobsStorage)")
@click.option("--account-name", default="", help="storage account name, reached with DefaultAzureCredential (a deployment)")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path(".run"), envvar="GEOCATALOG_INGEST_RUN_DIR",
              show_default=True, help="where `up` keeps its data and writes up.json (read when no storage is given)")
@click.pass_context
def cli(ctx: click.Context, connection_string: str, account_name: str, run_dir: Path) -> None:
    """Operate geocatalog-ingest: run it locally, submit jobs, watch them, see what failed, retry."""
    ctx.obj = CliContext(connection_string=connection_string, account_name=account_name, run_dir=run_dir)


# ----- run -------------------------------------------------------------------------------------------


@cli.command()
@click.option("--endpoint", default="", help="a real GeoCatalog URL (DefaultAzureCredential) instead of the emulator")
@click.option("--atomic-batches", is_flag=True, help="emulator: a batch with a bad item ingests nothing")
@pass_cli
def up(obj: CliContext, endpoint: str, atomic_batches: bool) -> None:
    """Start Azurite (data kept in the run dir), the emulator and function_app.py; run until Ctrl-C."""
    from cli.up import up as run_up

    sys.exit(run_up(obj.run_dir, endpoint=endpoint, atomic_batches=atomic_batches))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--search", "search_url", default="", help="a STAC API /search URL: ingest what it finds")
@click.option("--param", "params", multiple=True, metavar="K=V", help="search parameter (repeatable), e.g. collections=a,b")
@click.option("--max-items", type=int, default=None, help="stop the search after this many items")
@click.option("--items-url", default="", help="an allowlisted URL of a JSON, NDJSON or GeoParquet file of items")
@click.option("--catalog", default="", metavar="URL|PATH",
              help="a static STAC catalog: an allowlisted URL of its catalog.json, or a catalog.json on disk (uploaded)")
@click.option("--collection", default="", help="target collection (default: the items' own)")
@click.option("--job-id", default="", help="the job id (one input only; default: generated)")
@click.option("--mode", type=click.Choice(["create", "upsert"]), default="create", show_default=True)
@click.option("--sign", type=click.Choice(["planetary-computer"]), default=None, help="sign asset hrefs when sending")
@click.option("--watch", "then_watch", is_flag=True, help="then follow the jobs (exit code as `watch`)")
@click.option("--sync", is_flag=True, help="make the collection match the source: create new, replace changed, skip unchanged")
@click.option("--delete-missing", is_flag=True, help="with --sync: delete the collection's items the source no longer has")
@click.option("--max-delete-fraction", type=float, default=None, help="with --delete-missing: refuse above this fraction (default 0.1)")
@click.option("--dry-run", is_flag=True, help="check, batch and diff as a real run, send nothing; print the plan")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="--dry-run: how long to wait for the plan")
@pass_cli
def submit(obj: CliContext, **given: Any) -> None:
    """Send files, a STAC API search, a URL or a static catalog as jobs; prints one job id per input.

    PATH: .json, .geojson, .ndjson or .jsonl, each also .gz; or STAC GeoParquet (.parquet, .geoparquet).
    """
    from cli import submit as impl
    from cli.emulator import ensure_collection

    timeout = given.pop("timeout")
    request = impl.SubmitRequest(**given)
    if problem := request.usage_problem():
        raise click.UsageError(problem)
    job_id = request.job_id
    storage, settings = obj.storage, obj.settings
    if job_id and (existing := storage.status.get_job(impl.check_job_id(job_id))) is not None:
        raise CliError(f"job {job_id} exists ({existing.state}); a message with its id would be ignored: choose another --job-id")
    prepared = impl.prepare_inputs(request.inputs(), job_id=job_id, options=request.options, storage=storage)
    for job in prepared:
        if obj.emulator_url and job.collection and ensure_collection(obj.emulator_url, settings.geocatalog_token, job.collection):
            click.echo(f"created collection {job.collection} in the local emulator", err=True)
        impl.send(storage, settings, job)
        click.echo(job.job_id)
    if request.dry_run:
        _print_plans(obj, [job.job_id for job in prepared], timeout=timeout)
        return
    if request.then_watch:
        from cli.watch import watch as follow

        sys.exit(follow(storage.status, [job.job_id for job in prepared]))


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--timeout", type=float, default=None, help="give up (exit 2) after this many seconds")
@pass_cli
def watch(obj: CliContext, job_ids: tuple[str, ...], timeout: float | None) -> None:
    """Follow jobs until all are terminal: exit 0 all items succeeded, 1 some failed or were rejected, 2 own error."""
    from cli.watch import watch as follow

    sys.exit(follow(obj.storage.status, list(job_ids), timeout=timeout))


@cli.command()
@click.argument("job_id")
@click.option("--code", "codes", multiple=True, help="only items that failed with this code (repeatable)")
@click.option("--include-rejected", is_flag=True, help="also the items that were rejected")
@pass_cli
def retry(obj: CliContext, job_id: str, codes: tuple[str, ...], include_rejected: bool) -> None:
    """Start JOB-retry-N with exactly JOB's failed items; while it runs, print its id and create nothing.

    Unconfirmed items are first looked up in the GeoCatalog: the ones it holds are not sent again."""
    from cli.render import say
    from shared.retry import RetryRequest, plan_retry

    request = RetryRequest(job_id, codes=frozenset(codes), include_rejected=include_rejected)
    result = plan_retry(request, storage=obj.storage, settings=obj.settings, catalog=obj.catalog_lookup)
    for reason in result.skipped:
        say(f"skipped {reason}")
    if not result.job_id:
        say(f"job {job_id}: nothing to retry")
        return
    say(f"started {result.job_id} with {result.items} item(s)" if result.created else f"{result.job_id} is still running")
    click.echo(result.job_id)


# ----- read ------------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """`2h`, `30m`, `1d`, `90s`, or an ISO 8601 time."""
    unit = text[-1:].lower()
    if unit in SINCE_UNITS and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(text[:-1]) * SINCE_UNITS[unit])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use e.g. 2h, 30m, 1d or an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command()
@click.option("--state", type=click.Choice([s.value for s in JobState]), default=None)
@click.option("--since", default="", help="created within, e.g. 2h, 30m, 1d (or an ISO 8601 time)")
@json_option
@pass_cli
def jobs(obj: CliContext, state: str | None, since: str, as_json: bool) -> None:
    """List jobs, newest first."""
    from cli import render

    rows = obj.storage.status.list_jobs(state=JobState(state) if state else None,
                                        since=parse_since(since, datetime.now(UTC)) if since else None)
    if as_json:
        render.emit_json([render.row_json(r) for r in rows])
    else:
        render.console().print(render.jobs_table(rows))


@cli.command()
@click.argument("job_id")
@json_option
@pass_cli
def status(obj: CliContext, job_id: str, as_json: bool) -> None:
    """Show a job and its batches."""
    from cli import render

    job = _job(obj, job_id)
    batches = obj.storage.status.batches(job_id)
    if as_json:
        render.emit_json({"job": render.row_json(job), "batches": [render.row_json(b) for b in batches]})
        return
    out = render.console()
    out.print(render.job_summary(job))
    out.print(render.batches_table(batches))


@cli.command()
@click.argument("job_id")
@click.argument("batch_id", required=False)
@json_option
@pass_cli
def logs(obj: CliContext, job_id: str, batch_id: str | None, as_json: bool) -> None:
    """Print the full operation logs of a job's batches (or of one batch)."""
    _job(obj, job_id)
    store = obj.storage
    rows = [r for r in store.status.batches(job_id) if batch_id in (None, r.batch_id)]
    if batch_id and not rows:
        raise CliError(f"job {job_id} has no batch {batch_id}")
    found = {r.batch_id: store.payloads.read(r.logs_blob).decode() if r.logs_blob else r.logs for r in rows}
    if as_json:
        from cli.render import emit_json

        emit_json(found)
        return
    from cli.render import plain

    for name, text in found.items():
        if text:
            click.echo(plain(f"===== {job_id} {name}\n{text.rstrip()}", newlines=True))


@cli.command()
@click.argument("job_id")
@click.option("--code", default="", help="only items with this error code")
@json_option
@pass_cli
def failures(obj: CliContext, job_id: str, code: str, as_json: bool) -> None:
    """Every failed, rejected or unconfirmed item of a job: id (or line), batch, state, code, message."""
    from cli import render
    from shared.store import job_problems

    job = _job(obj, job_id)
    problems = [p for p in job_problems(job, status=obj.storage.status, read=obj.storage.payloads.read) if not code or p.code == code]
    if as_json:
        render.emit_json([p.to_json() for p in problems])
    else:
        title = f"{len(problems)} failed, rejected or unconfirmed item(s) of {job_id}"
        render.console().print(render.outcomes_table(problems, title=title))


@cli.command()
@click.argument("item_id")
@click.option("--collection", default=None, help="the item's collection (default: every indexed collection)")
@json_option
@pass_cli
def item(obj: CliContext, item_id: str, collection: str | None, as_json: bool) -> None:
    """Every job and batch that handled ITEM_ID, oldest first (from the item index)."""
    from cli import render

    found = obj.storage.items.lookup(item_id, collection)
    if as_json:
        render.emit_json([o.to_json() for o in found])
    else:
        render.console().print(render.outcomes_table(found, title=f"item {item_id}", with_job=True))


@cli.command()
@click.option("--consume", is_flag=True, help="receive and delete them, as a subscriber does (default: peek, the oldest 32)")
@click.option("--follow", is_flag=True, help="keep consuming events as they arrive (implies --consume); Ctrl-C ends")
@click.option("--max", "max_events", type=click.IntRange(1), default=1000, show_default=True, help="with --consume: at most")
@click.option("--timeout", type=float, default=None, help="with --follow: stop after this many seconds")
@json_option
@pass_cli
def events(obj: CliContext, consume: bool, follow: bool, max_events: int, timeout: float | None, as_json: bool) -> None:
    """Job-finished events in the local sink queue (JOB_EVENTS_QUEUE; `up` sets job-events). `--json`: one per line."""
    import time

    from cli import events as impl
    from cli import render

    name = obj.settings.job_events_queue
    if not name:
        raise CliError("JOB_EVENTS_QUEUE is not set: events go to the Event Grid topic, or nowhere (docs/events.md)")
    queues = obj.storage.queues
    if follow:
        deadline = None if timeout is None else time.monotonic() + timeout
        found = impl.follow(queues, name, every=0.5, stop=lambda: deadline is not None and time.monotonic() >= deadline)
    else:
        found = iter(impl.consume(queues, name, max_events=max_events) if consume else impl.peek(queues, name))
    shown: list[dict[str, Any]] = []
    try:
        for received in found:
            if received.event is None:
                render.say(f"skipped a message: {received.problem}")
            elif as_json or follow:
                click.echo(impl.json_line(received.event) if as_json else impl.line(received.event))
            else:
                shown.append(received.event)
    except KeyboardInterrupt:
        pass
    if shown:
        render.console().print(impl.table(shown))


@cli.command()
@click.option("--since", default="1h", show_default=True, help="rows changed within, e.g. 30m, 2h, 1d (or an ISO 8601 time)")
@click.option("--max-rows", type=click.IntRange(1), default=20_000, show_default=True,
              help="most job rows, and most batch rows, read (the figures say when more matched)")
@json_option
@pass_cli
def stats(obj: CliContext, since: str, max_rows: int, as_json: bool) -> None:
    """Throughput, durations, failures by code and counts by state, from the status table alone."""
    from cli import render
    from cli import stats as impl

    now = datetime.now(UTC)
    figures = impl.collect(obj.storage.status, impl.Window(parse_since(since, now), now), max_rows=max_rows)
    if as_json:
        click.echo(impl.to_json(figures))
    else:
        render.console().print(impl.render(figures))


def _print_plans(obj: CliContext, job_ids: list[str], *, timeout: float) -> None:
    """Wait for dry runs to end and print each one's plan (counts and rejected items)."""
    from cli import submit as impl
    from cli.render import plain
    from shared.store import job_problems

    try:
        rows = impl.wait_for_jobs(obj.storage.status, job_ids, timeout=timeout)
    except TimeoutError as error:
        raise CliError(f"{error} (is the pipeline running? `geocatalog-ingest up`)") from None
    for job in rows.values():
        problems = job_problems(job, status=obj.storage.status, read=obj.storage.payloads.read)
        for text in impl.plan_lines(job, problems):
            click.echo(plain(text))


def _job(obj: CliContext, job_id: str):
    job = obj.storage.status.get_job(job_id)
    if job is None:
        raise CliError(f"no job {job_id}")
    return job


def main() -> None:
    cli(prog_name="geocatalog-ingest")


if __name__ == "__main__":
    main()
