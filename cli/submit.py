"""`submit`: turn files, a STAC API search, a URL or a static catalog into job messages on the submit queue.

Small JSON inputs go inline. Anything that would not fit in one queue message (64 KiB), and every
NDJSON file (so a bad line is rejected with its line number), is uploaded to the payload container and
referenced with `items_ref.blob`. gzip files are decompressed first. A GeoParquet file is uploaded as it
is (streamed) and read row group by row group. `--catalog URL` sends `catalog.url`; `--catalog
./dir/catalog.json` walks the catalog on disk, uploads every document it reaches beside the job
(`inbox/<job>/...`, the same relative paths) and sends `catalog.blob`. One job per input.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shared.errors import InvalidInputError
from shared.ids import check_job_id, new_job_id
from shared.inputs.documents import SUPPORTED_FILES, file_kind, file_stem, json_items, ndjson_items, without_gzip_suffix
from shared.inputs.geoparquet import GeoParquetReader, UnreadableRow
from shared.inputs.static_catalog import CatalogItem, walk_catalog
from shared.messages import JobOptions as Options
from shared.messages import job_envelope
from shared.services import Storage
from shared.settings import Settings
from shared.store import ItemOutcome, JobRow, StatusStore, fits_in_message

INBOX = "inbox"
LOCAL_ROOT = "local"  # how the walk of a catalog on disk names its folder (a blob-like root: links stay inside it)
UPLOAD_CHUNK = 4 << 20


@dataclass(frozen=True)
class Inputs:
    """What one `submit` was given: files, or a search, or a URL."""

    paths: tuple[Path, ...] = ()
    search_url: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    max_items: int | None = None
    items_url: str = ""
    catalog: str = ""  # a catalog.json / collection.json: an https URL or a path on disk


@dataclass(frozen=True)
class SubmitRequest:
    """The `submit` command's arguments and options, as Click passes them."""

    paths: tuple[Path, ...] = ()
    search_url: str = ""
    params: tuple[str, ...] = ()  # `k=v` pairs of a search (`parse_params`)
    max_items: int | None = None
    items_url: str = ""
    catalog: str = ""
    collection: str = ""
    job_id: str = ""
    mode: str = "create"
    sign: str | None = None
    then_watch: bool = False
    sync: bool = False
    delete_missing: bool = False
    max_delete_fraction: float | None = None
    dry_run: bool = False

    def usage_problem(self) -> str | None:
        """What is wrong with the combination of inputs and options given, or None."""
        count = len(self.paths) + bool(self.search_url) + bool(self.items_url) + bool(self.catalog)
        if count == 0 or (self.paths and count > len(self.paths)) or (not self.paths and count > 1):
            return "give PATH..., or --search URL, or --items-url URL, or --catalog URL|PATH"
        if self.job_id and count > 1:
            return "--job-id names one job: give one input"
        if self.params and not self.search_url:
            return "--param goes with --search"
        if (self.delete_missing or self.max_delete_fraction is not None) and not self.sync:
            return "--delete-missing and --max-delete-fraction go with --sync"
        if self.sync and self.mode != "create":
            return "--sync is a mode of its own: leave out --mode"
        if self.max_delete_fraction is not None and not 0 <= self.max_delete_fraction <= 1:
            return "--max-delete-fraction is a fraction from 0 to 1"
        return None

    @property
    def options(self) -> Options:
        return Options(collection=self.collection, mode="sync" if self.sync else self.mode, sign=self.sign or "",
                       dry_run=self.dry_run, delete_missing=self.delete_missing,
                       max_delete_fraction=self.max_delete_fraction)

    def inputs(self) -> Inputs:
        """Raises InvalidInputError when a `--param` does not parse."""
        return Inputs(self.paths, self.search_url, parse_params(self.params), self.max_items, self.items_url, self.catalog)


@dataclass(frozen=True)
class Prepared:
    """One job ready to send: its message, and the collection it targets (when it can be told)."""

    job_id: str
    body: dict[str, Any]
    collection: str


def prepare_inputs(inputs: Inputs, *, job_id: str, options: Options, storage: Storage) -> list[Prepared]:
    """One job per input, named `job_id` (one input) or `<file stem | search | url>-<random>`; files uploaded as needed."""

    def name(stem: str) -> str:
        return check_job_id(job_id or new_job_id(stem))

    prepared = [prepare_file(path, job_id=name(file_stem(path.name)), options=options, storage=storage) for path in inputs.paths]
    if inputs.search_url:
        prepared.append(prepare_search(inputs.search_url, inputs.params, inputs.max_items, job_id=name("search"), options=options))
    if inputs.items_url:
        prepared.append(prepare_url(inputs.items_url, job_id=name("url"), options=options))
    if inputs.catalog:
        prepared.append(prepare_catalog(inputs.catalog, job_id=name("catalog"), options=options, storage=storage))
    return prepared


def prepare_file(path: Path, *, job_id: str, options: Options, storage: Storage) -> Prepared:
    """The job for one file: inline items when they fit, else uploaded and referenced.

    Raises:
        InvalidInputError: not a supported file type, or not JSON.
    """
    kind = file_kind(path.name)
    if kind is None:
        raise InvalidInputError(f"{path}: use {SUPPORTED_FILES}")
    if kind.parquet:
        return prepare_parquet(path, job_id=job_id, options=options, storage=storage)
    data = path.read_bytes()
    if kind.gzipped:
        data = gzip.decompress(data)
    name = without_gzip_suffix(path.name)
    body = job_envelope(job_id, options)
    if kind.ndjson:
        first = next((item for _, item in ndjson_items(data[: 1 << 20]) if isinstance(item, dict)), {})
        hint = options.collection or str(first.get("collection") or "")
        return Prepared(job_id, {**body, "items_ref": {"blob": upload(storage, job_id, name, data), "start": 0}}, hint)
    items = json_items(data)
    hint = options.collection or common_collection(items)
    inline = {**body, "items": items}
    if fits_in_message(orjson.dumps(inline).decode()):
        return Prepared(job_id, inline, hint)
    return Prepared(job_id, {**body, "items_ref": {"blob": upload(storage, job_id, name, data)}}, hint)


def prepare_parquet(path: Path, *, job_id: str, options: Options, storage: Storage) -> Prepared:
    """A GeoParquet file, uploaded as a stream and referenced; its first row names the collection when none is given.

    Raises:
        InvalidInputError: not STAC GeoParquet (or over a cap of the reader).
    """
    hint = options.collection
    with path.open("rb") as file:
        reader = GeoParquetReader(file)
        if not hint:
            first = next((row for _, row in reader.rows() if not isinstance(row, UnreadableRow)), {})
            hint = str(first.get("collection") or "")
    blob, _ = storage.payloads.put_stream(f"{INBOX}/{job_id}/{path.name}", _file_chunks(path))
    return Prepared(job_id, {**job_envelope(job_id, options), "items_ref": {"blob": blob}}, hint)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(UPLOAD_CHUNK):
            yield chunk


def prepare_catalog(source: str, *, job_id: str, options: Options, storage: Storage) -> Prepared:
    """`catalog.url` for a URL; for a catalog on disk, its documents uploaded beside the job and `catalog.blob`.

    Raises:
        InvalidInputError: the file is not a STAC Catalog or Collection.
    """
    body = job_envelope(job_id, options)
    if source.startswith(("https://", "http://")):
        return Prepared(job_id, {**body, "catalog": {"url": source}}, options.collection)
    root = Path(source)
    if not root.is_file():
        raise InvalidInputError(f"{source}: no such catalog file (give a catalog.json / collection.json, or an https URL)")
    prefix = f"{INBOX}/{job_id}/catalog"
    hint = options.collection

    def fetch_and_upload(name: str) -> bytes:
        relative = name.removeprefix(f"{LOCAL_ROOT}/")
        try:
            data = (root.parent / relative).read_bytes()
        except OSError as error:
            raise InvalidInputError(f"{relative}: {error.strerror}") from None
        storage.payloads.put(f"{prefix}/{relative}", data)
        return data

    for entry in walk_catalog(f"{LOCAL_ROOT}/{root.name}", fetch_and_upload):
        if not hint and isinstance(entry, CatalogItem):
            hint = str(entry.item.get("collection") or "")
    blob = f"{storage.payloads.container}/{prefix}/{root.name}"
    return Prepared(job_id, {**body, "catalog": {"blob": blob}}, hint)


def prepare_search(url: str, params: dict[str, Any], max_items: int | None, *, job_id: str, options: Options) -> Prepared:
    search: dict[str, Any] = {"url": url, "params": params}
    if max_items is not None:
        search["max_items"] = max_items
    return Prepared(job_id, {**job_envelope(job_id, options), "search": search}, options.collection)


def prepare_url(url: str, *, job_id: str, options: Options) -> Prepared:
    return Prepared(job_id, {**job_envelope(job_id, options), "items_ref": {"url": url}}, options.collection)


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` pairs: JSON when the value starts with `[`, `{` or `"` (`bbox=[...]`), lists for `collections`/`ids`
    (`collections=a,b`), a number for `limit`, else text (`datetime=2023-01-01/2024-01-01`).

    Raises:
        InvalidInputError: a pair has no `=`, or its JSON does not parse.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--param {pair!r} must be key=value")
        parsed: Any = value
        if value[:1] in ("[", "{", '"'):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError as error:
                raise InvalidInputError(f"--param {key}: {error}") from None
        elif key in ("collections", "ids"):
            parsed = [v for v in value.split(",") if v]
        elif key == "limit" and value.isdigit():
            parsed = int(value)
        params[key] = parsed
    return params


def upload(storage: Storage, job_id: str, name: str, data: bytes) -> str:
    return storage.payloads.put(f"{INBOX}/{job_id}/{name}", data)


def send(storage: Storage, settings: Settings, prepared: Prepared) -> None:
    storage.queues.send(settings.submit_queue, orjson.dumps(prepared.body).decode())


def common_collection(items: list[Any]) -> str:
    named = {i.get("collection") for i in items if isinstance(i, dict) and isinstance(i.get("collection"), str)}
    return named.pop() if len(named) == 1 else ""


def plan_lines(job: JobRow, problems: list[ItemOutcome], *, limit: int = 20) -> list[str]:
    """What a dry run found: its counts, then the rejected (or refused) items with their reasons."""
    lines = [f"{job.job_id}: {job.state}, {job.item_count} item(s): {job.items_created} to create, "
             f"{job.items_replaced} to replace, {job.items_unchanged} unchanged, {job.items_deleted} to delete, "
             f"{job.items_rejected} rejected, {job.items_superseded} superseded, {job.items_repaired} repaired"]
    if job.error_code:
        lines.append(f"  {job.error_code}: {job.error_message}")
    lines += [f"  {p.item} ({p.batch_id}): {p.code}: {p.message}".rstrip(": ") for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more (geocatalog-ingest failures {job.job_id})")
    return lines


def wait_for_jobs(status: StatusStore, job_ids: list[str], *, timeout: float, every: float = 0.5) -> dict[str, JobRow]:
    """The jobs' rows once all are terminal.

    Raises:
        TimeoutError: some job is not terminal after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        rows = {job_id: status.get_job(job_id) for job_id in job_ids}
        if all(row is not None and row.state.is_terminal for row in rows.values()):
            return rows  # type: ignore[return-value]
        if time.monotonic() > deadline:
            waiting = [job_id for job_id, row in rows.items() if row is None or not row.state.is_terminal]
            raise TimeoutError(f"not finished after {timeout:.0f} s: {', '.join(waiting)}")
        time.sleep(every)
