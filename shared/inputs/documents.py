"""Reading item documents: whole JSON, NDJSON lines (with line numbers), and streams of either.

Streams are bounded as they are read, so a small file cannot make a worker hold or chew a huge one:
- `open_chunks(..., max_bytes=)` stops a (decompressed) stream past MAX_DECOMPRESSED_BYTES;
- `bounded_lines` never holds more than MAX_LINE_BYTES of a line: a longer line is skipped up to its
  newline and reported as an `OverlongLine`, and reading goes on with the next line (a newline always
  resynchronises NDJSON, so one bad line costs one Rejected item, not the file);
- `stream_json_items` stops when one item of a JSON document (or the bytes before the first one) is
  longer than MAX_ITEM_BYTES: a JSON document cannot be resynchronised, so the file ends there. This
  also bounds the time a parser spends in one huge string.
"""

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
from shared.limits import LimitExceeded, byte_cap

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json", ".geojson")
GZIP_SUFFIX = ".gz"
PARQUET_SUFFIXES = (".parquet", ".geoparquet")  # STAC GeoParquet (`shared.inputs.geoparquet`)
SUPPORTED_FILES = ".json, .geojson, .ndjson or .jsonl (optionally .gz), or STAC GeoParquet (.parquet, .geoparquet)"


@dataclass(frozen=True)
class UnreadableLine:
    """An NDJSON line that is not JSON; validation rejects it with its line number."""

    line: int
    error: str


@dataclass(frozen=True)
class OverlongLine:
    """An NDJSON line longer than MAX_LINE_BYTES, skipped unread; `size` counts its bytes and newline."""

    size: int

    def reason(self, max_bytes: int) -> str:
        return f"is longer than {byte_cap('MAX_LINE_BYTES', max_bytes)}"


@dataclass(frozen=True)
class FileKind:
    ndjson: bool
    gzipped: bool
    parquet: bool = False

    @property
    def seekable(self) -> bool:
        """Byte ranges of the stored blob are whole batches: plain NDJSON only."""
        return self.ndjson and not self.gzipped


def file_kind(path: str) -> FileKind | None:
    """What an uploaded file is, from its name; None when it is none of the supported formats."""
    name = path.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return FileKind(ndjson=False, gzipped=False, parquet=True)
    gzipped = name.endswith(".gz")
    if gzipped:
        name = name[:-3]
    if name.endswith(NDJSON_SUFFIXES):
        return FileKind(ndjson=True, gzipped=gzipped)
    if name.endswith(JSON_SUFFIXES):
        return FileKind(ndjson=False, gzipped=gzipped)
    return None


def without_gzip_suffix(name: str) -> str:
    """`items.ndjson.gz` -> `items.ndjson` (any case of `.gz`); other names as they are."""
    return name[: -len(GZIP_SUFFIX)] if name.lower().endswith(GZIP_SUFFIX) else name


def file_stem(name: str) -> str:
    """`items.ndjson.gz` -> `items`: the name without the suffixes `file_kind` reads."""
    name = without_gzip_suffix(name)
    for suffix in NDJSON_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


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


class _CappedStream(io.RawIOBase):
    """A read-only file over another that raises LimitExceeded once more than `max_bytes` were read."""

    def __init__(self, inner: IO[bytes], max_bytes: int, setting: str) -> None:
        self._inner = inner
        self._left = max_bytes
        self._cap = byte_cap(setting, max_bytes)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(min(len(buffer), self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise LimitExceeded(f"the file holds more than {self._cap}")
        buffer[:len(data)] = data
        return len(data)


READ_BUFFER = 1 << 20


def open_chunks(chunks: Iterator[bytes], *, gzipped: bool, max_bytes: int | None = None) -> IO[bytes]:
    """A file over a blob's chunks, gunzipped when `gzipped`; reading past `max_bytes` (after gunzip)
    raises LimitExceeded naming MAX_DECOMPRESSED_BYTES."""
    raw: IO[bytes] = io.BufferedReader(ChunkStream(chunks), buffer_size=READ_BUFFER)
    stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if gzipped else raw  # type: ignore[assignment]
    if max_bytes is None:
        return stream
    return io.BufferedReader(_CappedStream(stream, max_bytes, "MAX_DECOMPRESSED_BYTES"), buffer_size=READ_BUFFER)


def bounded_lines(stream: IO[bytes], max_bytes: int) -> Iterator[bytes | OverlongLine]:
    """Every line of `stream` with its newline, or an OverlongLine for one longer than `max_bytes`
    (newline not counted), which is skipped without ever holding more than `max_bytes` of it."""
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = stream.readline(READ_BUFFER)
            if not line:
                break
            size += len(line)
        yield OverlongLine(size)


class _ItemBudget(io.RawIOBase):
    """A file over another that counts the bytes read since `reset()` (the parser's item so far) and raises
    LimitExceeded past `max_bytes` (plus the parser's read-ahead)."""

    def __init__(self, inner: IO[bytes], max_bytes: int, read_ahead: int) -> None:
        self._inner = inner
        self._max = max_bytes + read_ahead
        self.cap = byte_cap("MAX_ITEM_BYTES", max_bytes)
        self.since = 0
        self.items = 0

    def readable(self) -> bool:
        return True

    def reset(self) -> None:
        self.since, self.items = 0, self.items + 1

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self.since += len(data)
        if self.since > self._max:
            raise LimitExceeded(f"item {self.items + 1} of the JSON document (or what precedes it) is larger than {self.cap}")
        buffer[:len(data)] = data
        return len(data)


JSON_READ_AHEAD = 64 * 1024  # what ijson reads at a time


def _items_within(stream: IO[bytes], prefix: str, max_item_bytes: int) -> Iterator[Any]:
    budget = _ItemBudget(stream, max_item_bytes, JSON_READ_AHEAD)
    for item in ijson.items(budget, prefix, use_float=True, buf_size=JSON_READ_AHEAD):
        budget.reset()
        yield item


def stream_json_items(open_stream, *, max_item_bytes: int = 16 << 20) -> Iterator[Any]:
    """Items of a JSON document without loading it: features of a FeatureCollection, elements of a
    list, or the single Item. `open_stream()` opens the document anew (it is read at most twice).

    Raises:
        InvalidInputError: not JSON, or not an Item / FeatureCollection / list.
        LimitExceeded: an item, or the bytes before the first one, is larger than `max_item_bytes`.
    """
    try:
        first = _first_significant_byte(open_stream())
        if first == b"[":
            yield from _items_within(open_stream(), "item", max_item_bytes)
            return
        if first != b"{":
            raise InvalidInputError("not JSON: the file does not start with '{' or '['")
        found = False
        for feature in _items_within(open_stream(), "features.item", max_item_bytes):
            found = True
            yield feature
        if found:
            return
        data = open_stream().read(max_item_bytes + 1)
        if len(data) > max_item_bytes:
            raise LimitExceeded(f"the JSON document is one object larger than {byte_cap('MAX_ITEM_BYTES', max_item_bytes)}")
        yield from json_items(data)
    except ijson.JSONError as error:
        raise InvalidInputError(f"not valid JSON: {str(error)[:200]}") from None


def _first_significant_byte(stream: IO[bytes]) -> bytes:
    while True:
        byte = stream.read(1)
        if not byte or not byte.isspace():
            return byte
