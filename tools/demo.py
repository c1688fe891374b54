"""`make demo`: the whole pipeline on this machine, from nothing to a status table.

Starts Azurite, the GeoCatalog emulator and function_app.py on the local host; sends the sample items
(or `--files`: JSON, NDJSON, STAC GeoParquet, or a static catalog's catalog.json) as jobs on the submit
queue; waits, showing progress; prints the status table, the
reasons of up to 10 failed or rejected items, and `ingested N items: S succeeded, F failed, R rejected`;
stops everything. Exits 0 only when every input item reached a terminal state.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from cli import submit as cli_submit
from cli.render import reasons_lines
from devhost.jobs import send_items, send_job, status_table, wait_for_jobs
from devhost.stack import LocalStack
from emulator import EmulatorOptions, Faults, Timings
from shared.catalog import GeoCatalogClient, StaticToken
from shared.errors import NotFoundError
from shared.inputs.blob_events import BlobCreated
from shared.inputs.documents import file_kind
from shared.inputs.geoparquet import GeoParquetReader
from shared.inputs.static_catalog import CatalogItem, walk_catalog
from shared.items import items_from_document
from shared.services import Services, Storage
from shared.steps.uploads import upload_job_id
from shared.store import JobRow, job_problems

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "landcover-items.json"
SAMPLE_COLLECTION = ROOT / "examples" / "collection.json"
QUICKSTART_INGEST = ROOT / "examples" / "quickstart-ingest.json"  # shown verbatim in docs/messages.md
QUICKSTART_DELETE = ROOT / "examples" / "quickstart-delete.json"
FALLBACK_COLLECTION = "demo-collection"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--files", default="", help="space-separated .json / .ndjson / .parquet files or catalog.json "
                                                    "of static catalogs (default: examples/)")
    parser.add_argument("--collection", default="", help="target collection (default: the items' own)")
    parser.add_argument("--via", default="queue", choices=["queue", "blob"])
    parser.add_argument("--scenario", default="")
    parser.add_argument("--repair", default="", help='comma-separated repairs to ask for in each job message, e.g. "bbox"')
    parser.add_argument("--timeout", type=float, default=900.0)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.scenario == "quickstart":
        return quickstart(args)
    if args.scenario:
        print(f"unknown SCENARIO={args.scenario}: the one scenario is 'quickstart'", file=sys.stderr)
        return 2
    files = [Path(f) for f in args.files.split()] or [SAMPLES]
    for path in files:
        if not path.is_file():
            print(f"no such file: {path}", file=sys.stderr)
            return 2
    repair = [name for name in args.repair.replace(",", " ").split() if name]
    message_options: dict[str, Any] = {"repair": repair} if repair else {}
    if args.via == "blob" and any(is_static_catalog(path) for path in files):
        print("a static catalog is sent as a job message (catalog.blob): use VIA=queue", file=sys.stderr)
        return 2
    if repair and args.via == "blob":
        print("REPAIR is a job-message option: uploads (VIA=blob) are checked as sent; use VIA=queue", file=sys.stderr)
        return 2

    print("starting Azurite, the GeoCatalog emulator and the local Functions host ...", flush=True)
    options = EmulatorOptions(timings=Timings(pending_seconds=0.5, running_seconds=1.0))
    with LocalStack(emulator_options=options) as stack:
        assert stack.services is not None
        assert stack.emulator is not None
        catalog = GeoCatalogClient(stack.emulator.url, StaticToken("local-dev-token"))
        print(f"  Azurite ports {stack.azurite.ports if stack.azurite else {}}, GeoCatalog emulator at {stack.emulator.url}")
        jobs: list[str] = []
        expected = 0
        for path in files:
            items, count = read_items(path)
            collection = args.collection or common_collection(items) or FALLBACK_COLLECTION
            ensure_collection(catalog, collection)
            if args.via == "blob":
                job_id = upload_file(stack.services, path, collection=collection)
                print(f"  uploaded {path.name}: {count} items -> {stack.services.settings.drop_container}/{collection}/ (job {job_id})")
            else:
                job_id = "demo-" + hashlib.sha256(f"{path.resolve()}:{time.time_ns()}".encode()).hexdigest()[:12]
                send_file(stack.services, path, items, collection=collection, job_id=job_id, options=message_options)
                print(f"  sent {path.name}: {count} items -> collection {collection} (job {job_id})")
            jobs.append(job_id)
            expected += count
        try:
            rows = wait_for_jobs(stack.services, jobs, timeout=args.timeout, on_progress=Progress(expected))
        except TimeoutError as error:
            print(f"\n{error}")
            rows = {job_id: stack.services.status.get_job(job_id) for job_id in jobs}  # type: ignore[misc]
        print()
        return report(stack.services, [r for r in rows.values() if r is not None], expected, len(jobs))


def quickstart(args: argparse.Namespace) -> int:
    """The Planetary Computer quickstart, offline: each step is one message on the submit queue."""
    print("starting Azurite, the GeoCatalog emulator (also playing the public STAC API and the SAS API) "
          "and the local Functions host ...", flush=True)
    options = EmulatorOptions(timings=Timings(pending_seconds=0.5, running_seconds=1.0), source_items=str(SAMPLES),
                              faults=Faults(require_signed_assets=True))
    settings = {"SOURCE_URL_ALLOWLIST": "127.0.0.1", "SAS_API_URL": "{emulator}/source/sas"}
    with LocalStack(emulator_options=options, settings=settings) as stack:
        assert stack.services is not None
        assert stack.emulator is not None
        catalog = GeoCatalogClient(stack.emulator.url, StaticToken("local-dev-token"))
        ingest, delete = quickstart_messages(stack.emulator.url, args.collection)
        collection = ingest["collection"]
        ensure_collection(catalog, collection)
        print("1. search the 4 land-cover items the quickstart names, sign their assets, rewrite collection, ingest:")
        print("   " + orjson.dumps(ingest).decode())
        send_job(stack.services, ingest)
        job = wait_for_jobs(stack.services, [ingest["job_id"]], timeout=args.timeout, on_progress=Progress(4))[ingest["job_id"]]
        listed = [item["id"] for item in catalog.list_items(collection)]
        print(f"2. list the collection: {', '.join(listed)}")
        print("3. delete the first item found: " + orjson.dumps(delete).decode())
        send_job(stack.services, delete)
        deleted = wait_for_jobs(stack.services, [delete["job_id"]], timeout=args.timeout)[delete["job_id"]]
        print(f"   left in the collection: {', '.join(item['id'] for item in catalog.list_items(collection))}")
        print()
        jobs = [job, deleted]
        print(status_table(jobs, {j.job_id: stack.services.status.batches(j.job_id) for j in jobs}))
        print_reasons(stack.services, jobs)
        print()
        print(f"deleted {deleted.items_succeeded} item(s): {deleted.state}")
        return report_line(job, expected=4) if deleted.state.is_terminal else 1


def quickstart_messages(emulator_url: str, collection: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The quickstart messages of docs/messages.md (examples/quickstart-*.json), with the search sent to the emulator's
    stand-in for the public STAC API; `collection` (COLLECTION=...) replaces the target collection."""
    ingest = orjson.loads(QUICKSTART_INGEST.read_bytes())
    delete = orjson.loads(QUICKSTART_DELETE.read_bytes())
    ingest["search"]["url"] = f"{emulator_url}/source/search"
    if collection:
        ingest["collection"] = delete["collection"] = collection
    return ingest, delete


def print_reasons(services: Services, jobs: list[JobRow]) -> None:
    """Why items failed or were rejected: up to 10 of them, through the CLI's renderer."""
    problems = [p for job in jobs for p in job_problems(job, status=services.status, read=services.payloads.read)]
    if problems:
        print(f"\n{len(problems)} item(s) failed or were rejected:")
        print("\n".join(reasons_lines(problems, limit=10)))


def report_line(job: JobRow, *, expected: int) -> int:
    settled = job.items_succeeded + job.items_failed + job.items_rejected
    print(f"ingested {expected} items: {job.items_succeeded} succeeded, {job.items_failed} failed, {job.items_rejected} rejected")
    return 0 if job.state.is_terminal and settled == expected else 1


def read_items(path: Path) -> tuple[list[Any], int]:
    """The file's items as the demo counts them (an unparseable NDJSON line or GeoParquet row, an unreachable
    link of a catalog, still counts as one)."""
    if is_static_catalog(path):
        entries = list(walk_catalog(f"{cli_submit.LOCAL_ROOT}/{path.name}", lambda name: (
            path.parent / name.removeprefix(f"{cli_submit.LOCAL_ROOT}/")).read_bytes()))
        return [entry.item for entry in entries if isinstance(entry, CatalogItem)], len(entries)
    kind = file_kind(path.name)
    if kind is not None and kind.parquet:
        with path.open("rb") as file:
            rows = [row for _, row in GeoParquetReader(file).rows()]
        return [row for row in rows if isinstance(row, dict)], len(rows)
    data = path.read_bytes()
    if path.suffix in (".ndjson", ".jsonl"):
        lines = [line for line in data.splitlines() if line.strip()]
        items = []
        for line in lines:
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                items.append(None)
        return items, len(lines)
    items = items_from_document(orjson.loads(data))
    return items, len(items)


def is_static_catalog(path: Path) -> bool:
    """Whether a .json file is a static catalog's root (a STAC Catalog or Collection) rather than items."""
    if path.suffix != ".json" or path.stat().st_size > 16 << 20:
        return False
    document = orjson.loads(path.read_bytes())
    return isinstance(document, dict) and document.get("type") in ("Catalog", "Collection")


def common_collection(items: list[Any]) -> str:
    named = {i.get("collection") for i in items if isinstance(i, dict) and isinstance(i.get("collection"), str)}
    return named.pop() if len(named) == 1 else ""


def ensure_collection(catalog: GeoCatalogClient, collection_id: str) -> None:
    """Create the target collection in the emulator when it is missing (as an operator would in Azure)."""
    try:
        catalog.get_collection(collection_id)
        return
    except NotFoundError:
        pass
    body = orjson.loads(SAMPLE_COLLECTION.read_bytes())
    body.update(id=collection_id, title=collection_id)
    catalog.create_collection(body)
    print(f"  created collection {collection_id} in the emulator")


def send_file(services: Services, path: Path, items: list[Any], *, collection: str, job_id: str,
              options: dict[str, Any] | None = None) -> None:
    """NDJSON and GeoParquet go up as blobs (bad lines or rows are then rejected with their numbers), a static
    catalog's documents too (`catalog.blob`); JSON is sent as items.

    `options` are added to the job message (e.g. `{"repair": ["bbox"]}`).
    """
    kind = file_kind(path.name)
    if path.suffix in (".ndjson", ".jsonl"):
        blob = services.payloads.put(f"inbox/{job_id}{path.suffix}", path.read_bytes())
        body = {"v": 1, "job_id": job_id, "collection": collection, "items_ref": {"blob": blob, "start": 0}, **(options or {})}
        services.queues.send(services.settings.submit_queue, orjson.dumps(body).decode())
    elif is_static_catalog(path) or (kind is not None and kind.parquet):
        storage = Storage(services.status, services.queues, services.payloads, services.items)
        job_options = cli_submit.Options(collection=collection)
        prepared = (cli_submit.prepare_catalog(str(path), job_id=job_id, options=job_options, storage=storage)
                    if is_static_catalog(path) else
                    cli_submit.prepare_parquet(path, job_id=job_id, options=job_options, storage=storage))
        cli_submit.send(storage, services.settings, replace(prepared, body={**prepared.body, **(options or {})}))
    else:
        send_items(services, items, collection=collection, job_id=job_id, options=options)


def upload_file(services: Services, path: Path, *, collection: str) -> str:
    """Upload into the drop container under the collection's folder; the upload's BlobCreated event starts the job."""
    container = services.settings.drop_container
    blob_path = f"{collection}/{path.name}"
    with path.open("rb") as data:
        result = services.payloads._service.get_blob_client(container, blob_path).upload_blob(data, overwrite=True)  # noqa: SLF001
    return upload_job_id(BlobCreated(container, blob_path, str(result["etag"]), path.stat().st_size))


class Progress:
    """Prints one line whenever the settled-item count changes."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.started = time.monotonic()
        self.last = ""

    def __call__(self, rows: dict[str, JobRow | None]) -> None:
        done_jobs = sum(1 for r in rows.values() if r is not None and r.state.is_terminal)
        settled = sum(r.items_done for r in rows.values() if r is not None)
        line = f"  [{time.monotonic() - self.started:5.1f}s] jobs {done_jobs}/{len(rows)} finished, items {settled}/{self.expected} settled"
        if line.split("]")[1] != self.last:
            print(line, flush=True)
            self.last = line.split("]")[1]


def report(services: Services, jobs: list[JobRow], expected: int, job_count: int) -> int:
    batches = {job.job_id: services.status.batches(job.job_id) for job in jobs}
    print(status_table(jobs, batches))
    print_reasons(services, jobs)
    succeeded = sum(j.items_succeeded for j in jobs)
    failed = sum(j.items_failed for j in jobs)
    rejected = sum(j.items_rejected for j in jobs)
    superseded = sum(j.items_superseded for j in jobs)
    repaired = sum(j.items_repaired for j in jobs)
    all_terminal = len(jobs) == job_count and all(j.state.is_terminal for j in jobs)
    accounted = succeeded + failed + rejected + superseded == expected
    print()
    if not all_terminal:
        print("not every job finished")
    elif not accounted:
        print(f"items do not add up: {succeeded + failed + rejected + superseded} settled of {expected} sent")
    if repaired:
        print(f"{repaired} item(s) had their bbox computed from their geometry (repair: bbox)")
    if superseded:
        print(f"{superseded} earlier copies of repeated ids were superseded by later ones (mode upsert)")
    print(f"ingested {expected} items: {succeeded} succeeded, {failed} failed, {rejected} rejected")
    return 0 if all_terminal and accounted else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
