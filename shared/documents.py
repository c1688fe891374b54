"""Reading item documents: whole JSON, NDJSON lines (with line numbers), and streams of either."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import ijson
import orjson

from shared.errors import InvalidInputError
from shared.items import items_from_document

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json", ".geojson")


@dataclass(frozen=True)
class UnreadableLine:
    """An NDJSON line that is not JSON; validation rejects it with its line number."""

    line: int
    error: str


@dataclass(frozen=True)
class FileKind:
    ndjson: bool
    gzipped: bool

    @property
    def seekable(self) -> bool:
        """Byte ranges of the stored blob are whole batches: plain NDJSON only."""
        return self.ndjson and not self.gzipped


def file_kind(path: str) -> FileKind | None:
    """What an uploaded file is, from its name; None when it is none of the supported formats."""
    name = path.lower()
    gzipped = name.endswith(".gz")
    if gzipped:
        name = name[:-3]
    if name.endswith(NDJSON_SUFFIXES):
        return FileKind(ndjson=True, gzipped=gzipped)
    if name.endswith(JSON_SUFFIXES):
        return FileKind(ndjson=False, gzipped=gzipped)
    return None


def parse_line(line: bytes, number: int) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return UnreadableLine(number, str(error)[:200])


def ndjson_items(data: bytes, first_line: int = 1) -> list[tuple[int, Any]]:
    """(line number, item or UnreadableLine) for every non-empty line."""
    return [(n, parse_line(line, n)) for n, line in enumerate(data.splitlines(), start=first_line) if line.strip()]


def json_items(data: bytes) -> list[Any]:
    """Items of a whole JSON document (Item, FeatureCollection or list).

    Raises:
        InvalidInputError: not JSON.
    """
    try:
        return items_from_document(orjson.loads(data))
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"not valid JSON: {error}") from None


class ChunkStream(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (a blob download), holding one chunk at a time."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def open_chunks(chunks: Iterator[bytes], *, gzipped: bool) -> IO[bytes]:
    raw: IO[bytes] = io.BufferedReader(ChunkStream(chunks), buffer_size=1 << 20)
    return gzip.GzipFile(fileobj=raw) if gzipped else raw  # type: ignore[return-value]


def stream_json_items(open_stream, *, max_single_item_bytes: int = 64 << 20) -> Iterator[Any]:
    """Items of a JSON document without loading it: features of a FeatureCollection, elements of a
    list, or the single Item. `open_stream()` opens the document anew (it is read at most twice).

    Raises:
        InvalidInputError: not JSON, or not an Item / FeatureCollection / list.
    """
    try:
        first = _first_significant_byte(open_stream())
        if first == b"[":
            yield from ijson.items(open_stream(), "item", use_float=True)
            return
        if first != b"{":
            raise InvalidInputError("not JSON: the file does not start with '{' or '['")
        found = False
        for feature in ijson.items(open_stream(), "features.item", use_float=True):
            found = True
            yield feature
        if found:
            return
        data = open_stream().read(max_single_item_bytes + 1)
        if len(data) > max_single_item_bytes:
            raise InvalidInputError("a single JSON object this large is not an Item: use a FeatureCollection or NDJSON")
        yield from json_items(data)
    except ijson.JSONError as error:
        raise InvalidInputError(f"not valid JSON: {str(error)[:200]}") from None


def _first_significant_byte(stream: IO[bytes]) -> bytes:
    while True:
        byte = stream.read(1)
        if not byte or not byte.isspace():
            return byte
