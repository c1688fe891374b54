"""`submit`: turn files, a STAC API search or a URL into job messages on the submit queue.

Small JSON inputs go inline. Anything that would not fit in one queue message (64 KiB), and every
NDJSON file (so a bad line is rejected with its line number), is uploaded to the payload container and
referenced with `items_ref.blob`. gzip files are decompressed first. One job per input.
"""

from __future__ import annotations

import gzip
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shared.errors import InvalidInputError
from shared.inputs.documents import file_kind, json_items, ndjson_items
from shared.messages import JOB_ID, VERSION
from shared.services import Storage
from shared.settings import Settings
from shared.store import fits_in_message

INBOX = "inbox"


@dataclass(frozen=True)
class Options:
    """What every job of one `submit` shares."""

    collection: str = ""
    mode: str = "create"
    sign: str = ""


@dataclass(frozen=True)
class Inputs:
    """What one `submit` was given: files, or a search, or a URL."""

    paths: tuple[Path, ...] = ()
    search_url: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    max_items: int | None = None
    items_url: str = ""


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

    prepared = [prepare_file(path, job_id=name(file_stem(path)), options=options, storage=storage) for path in inputs.paths]
    if inputs.search_url:
        prepared.append(prepare_search(inputs.search_url, inputs.params, inputs.max_items, job_id=name("search"), options=options))
    if inputs.items_url:
        prepared.append(prepare_url(inputs.items_url, job_id=name("url"), options=options))
    return prepared


def file_stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".json", ".geojson", ".ndjson", ".jsonl"):
        name = name.removesuffix(suffix)
    return name


def new_job_id(stem: str) -> str:
    """`<stem>-<8 random hex>`: readable, unique, and within the job-id rule."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:48] or "job"
    return f"{slug}-{secrets.token_hex(4)}"


def check_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise InvalidInputError(f"job id {job_id!r} must be 1-64 characters of [A-Za-z0-9_-]")
    return job_id


def envelope(job_id: str, options: Options) -> dict[str, Any]:
    body: dict[str, Any] = {"v": VERSION, "job_id": job_id, "mode": options.mode}
    if options.collection:
        body["collection"] = options.collection
    if options.sign:
        body["sign"] = options.sign
    return body


def prepare_file(path: Path, *, job_id: str, options: Options, storage: Storage) -> Prepared:
    """The job for one file: inline items when they fit, else uploaded and referenced.

    Raises:
        InvalidInputError: not a supported file type, or not JSON.
    """
    kind = file_kind(path.name)
    if kind is None:
        raise InvalidInputError(f"{path}: use .json, .geojson, .ndjson or .jsonl (optionally .gz)")
    data = path.read_bytes()
    if kind.gzipped:
        data = gzip.decompress(data)
    name = path.name.removesuffix(".gz").removesuffix(".GZ")
    body = envelope(job_id, options)
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


def prepare_items(items: list[dict[str, Any]], *, job_id: str, options: Options, storage: Storage, name: str) -> Prepared:
    """The job for items already in hand (`retry`): inline when they fit, else uploaded as a FeatureCollection."""
    body = envelope(job_id, options)
    inline = {**body, "items": items}
    if fits_in_message(orjson.dumps(inline).decode()):
        return Prepared(job_id, inline, options.collection)
    data = orjson.dumps({"type": "FeatureCollection", "features": items})
    return Prepared(job_id, {**body, "items_ref": {"blob": upload(storage, job_id, name, data)}}, options.collection)


def prepare_search(url: str, params: dict[str, Any], max_items: int | None, *, job_id: str, options: Options) -> Prepared:
    search: dict[str, Any] = {"url": url, "params": params}
    if max_items is not None:
        search["max_items"] = max_items
    return Prepared(job_id, {**envelope(job_id, options), "search": search}, options.collection)


def prepare_url(url: str, *, job_id: str, options: Options) -> Prepared:
    return Prepared(job_id, {**envelope(job_id, options), "items_ref": {"url": url}}, options.collection)


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
