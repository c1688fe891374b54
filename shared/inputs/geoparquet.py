"""Reading a STAC GeoParquet file row group by row group: one item (or one labelled problem) per row.

The file is any seekable binary file object (a local file, or `RangedFile` over ranged reads of one
blob version). pyarrow reads the footer on opening (one read of the last 64 KiB), then each row group
in one coalesced read of its column chunks (`pre_buffer`; without it, a ranged read per page header),
decoding `READ_ROWS` rows per Arrow batch; rustac turns each batch into item dicts. Memory is bounded
by the largest row group allowed (`GeoParquetLimits`), never by the number of rows.

Positions: a row is numbered from 1 across the file (its label: "row N"); `RowPosition` (row-group
index, row within it) is where a later invocation goes on from (`position_of(row_number)`): a plan
message can carry the row-group index in `offset` and the next row number in `next_line`.

Why rustac, and not stac-geoparquet (both read the same files; pyarrow reads the row groups for both).
Measured on this machine (2 cores shared with other jobs, so absolute figures vary; the ratios held over
two runs), NAIP items from the corpus written by stac-geoparquet in row groups of 10,000, read in
batches of 1,000 rows, each item serialized again with orjson:
    100,000 rows  stac-geoparquet 0.8.3 `StacArrowBatch.to_json_batch().iter_dicts()`:   959 items/s, peak RSS 198 MB
                  rustac 0.9.18 `from_arrow` per batch:                                1,896 items/s, peak RSS 168 MB
                  rustac 0.9.18 `read_sync` of the whole file (for contrast):          1,242 items/s, peak RSS 4,039 MB
     20,000 rows  stac-geoparquet: 1,116 items/s, 186 MB; rustac: 1,670 items/s, 165 MB; orjson parsing and
                  serializing the same items as NDJSON in the same hour: ~19,000 items/s.
stac-geoparquet also needs geopandas, pandas, pyogrio and pyproj (~300 MB installed beyond pyarrow's
170 MB, and ~2.8 s to import on a cold worker); rustac is one 87 MB wheel that imports in ~60 ms.
So: pyarrow 26.0.1 for the row groups, rustac 0.9.18 for rows. Reading Parquet costs about 10x what
NDJSON does per item (`bench/geoparquet_memory.py`); memory stays flat in the number of rows.

What a GeoParquet round trip does not keep (checked on the corpus; see tests/test_geoparquet.py):
- absent and null are one thing in Parquet: a key that only some items have comes back as null in
  the others. We drop null members everywhere except `geometry` and `properties.datetime` (required
  keys whose null means something), so an explicit `"proj:epsg": null` comes back absent;
- timestamps are stored as instants and written out anew: `2023-01-12T17:37:41.201650Z` comes back as
  `2023-01-12T17:37:41.201650+00:00` (the same instant); rustac's own writer keeps milliseconds only;
- rustac's writer migrates items to STAC 1.1.0 (`stac_version` changes); stac-geoparquet's does not;
- what Parquet cannot hold cannot be in a file at all: a null geometry, empty objects (`"chunks": {}`),
  one key with values of different types across items (the writers refuse those files).
rustac panics (a BaseException) on an Arrow slice with an offset: rows are isolated with `take`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import rustac

from shared.errors import InvalidInputError
from shared.inputs.documents import PARQUET_SUFFIXES
from shared.items import MAX_ITEM_BYTES

READ_ROWS = 1000  # rows per Arrow batch handed to rustac
REQUIRED_COLUMNS = ("id", "geometry")
KEEP_NULL = frozenset({("geometry",), ("properties", "datetime")})


@dataclass(frozen=True)
class GeoParquetLimits:
    """Caps on what one file may make the reader hold. A file over one is refused when opened.

    Args:
        max_row_group_rows: rows in one row group.
        max_row_group_bytes: uncompressed bytes of one row group (what reading it may cost).
        max_item_bytes: uncompressed bytes per row, on average over a row group.
        max_footer_bytes: the file's metadata (schema and row-group index).
    """

    max_row_group_rows: int = 100_000
    max_row_group_bytes: int = 512 * 1024 * 1024
    max_item_bytes: int = MAX_ITEM_BYTES
    max_footer_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class RowPosition:
    """Where reading goes on from: row `row` (from 0) of row group `row_group` (from 0)."""

    row_group: int = 0
    row: int = 0


@dataclass(frozen=True)
class UnreadableRow:
    """A row that is not a STAC item; validation rejects it with its row number as label."""

    row: int
    error: str

    @property
    def label(self) -> str:
        return f"row {self.row}"


def is_geoparquet(path: str) -> bool:
    """Whether an uploaded file is GeoParquet, from its name."""
    return path.lower().endswith(PARQUET_SUFFIXES)


class GeoParquetReader:
    """The rows of one STAC GeoParquet file.

    Raises (when opened):
        InvalidInputError: not a Parquet file, not STAC GeoParquet (no `id` or `geometry` column), or over
            a limit (with the row group and the cap in the message).
    """

    def __init__(self, file: IO[bytes], *, limits: GeoParquetLimits = GeoParquetLimits()) -> None:
        self.limits = limits
        _check_footer(file, limits)
        try:
            self._file = pq.ParquetFile(file, pre_buffer=True)
        except (pa.ArrowException, OSError, ValueError) as error:
            raise InvalidInputError(f"not a Parquet file: {str(error)[:200]}") from None
        metadata = self._file.metadata
        missing = [name for name in REQUIRED_COLUMNS if name not in self._file.schema_arrow.names]
        if missing:
            raise InvalidInputError(f"not a STAC GeoParquet file: no {' or '.join(missing)} column")
        self._group_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        for index in range(metadata.num_row_groups):
            _check_row_group(index, metadata.row_group(index), limits)
        self._first_rows = _first_row_numbers(self._group_rows)

    @property
    def row_count(self) -> int:
        return sum(self._group_rows)

    @property
    def row_group_count(self) -> int:
        return len(self._group_rows)

    @property
    def last_rows(self) -> frozenset[int]:
        """The number of the last row of each row group: where a plan can stop and hand on cheaply."""
        return frozenset(first + rows - 1 for first, rows in zip(self._first_rows, self._group_rows, strict=True) if rows)

    def position_of(self, row_number: int) -> RowPosition:
        """The position of row `row_number` (from 1); past the last row: the end (`row_group_count`, 0)."""
        for index, first in enumerate(self._first_rows):
            if row_number < first + self._group_rows[index]:
                return RowPosition(index, max(row_number - first, 0))
        return RowPosition(self.row_group_count, 0)

    def row_number(self, position: RowPosition) -> int:
        """The number (from 1) of the row at `position`."""
        if position.row_group >= self.row_group_count:
            return self.row_count + 1
        return self._first_rows[position.row_group] + position.row

    def rows(self, start: RowPosition = RowPosition()) -> Iterator[tuple[int, dict[str, Any] | UnreadableRow]]:
        """(row number, item or UnreadableRow) for every row from `start`, one row group in memory at most.

        Raises:
            InvalidInputError: `start` is outside the file.
        """
        if start.row_group > self.row_group_count or start.row < 0 or (
                start.row_group < self.row_group_count and start.row > self._group_rows[start.row_group]):
            raise InvalidInputError(f"no row {start.row} in row group {start.row_group} of this file")
        for index in range(start.row_group, self.row_group_count):
            skip = start.row if index == start.row_group else 0
            number = self._first_rows[index]
            for batch in self._batches(index):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    number += batch.num_rows
                    continue
                if skip:
                    batch = batch.take(pa.array(range(skip, batch.num_rows)))
                    number, skip = number + skip, 0
                yield from zip(range(number, number + batch.num_rows), _batch_items(batch, number), strict=True)
                number += batch.num_rows


    def _batches(self, index: int) -> Iterator[pa.RecordBatch]:
        """The Arrow batches of row group `index`.

        Raises:
            InvalidInputError: the row group cannot be read (a corrupt page, a column of the wrong type).
        """
        batches = self._file.iter_batches(batch_size=READ_ROWS, row_groups=[index], use_threads=False)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, ValueError) as error:
                raise InvalidInputError(f"row group {index} cannot be read: {str(error)[:200]}") from None
            yield batch


def _check_footer(file: IO[bytes], limits: GeoParquetLimits) -> None:
    """Refuse a footer over the cap before pyarrow reads it into memory."""
    try:
        end = file.seek(0, io.SEEK_END)
        if end < 12:
            raise InvalidInputError("not a Parquet file: too short")
        file.seek(end - 8)
        tail = file.read(8)
        file.seek(0)
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"the file cannot be read: {str(error)[:200]}") from None
    if tail[4:] != b"PAR1":
        raise InvalidInputError("not a Parquet file: no PAR1 footer")
    footer = int.from_bytes(tail[:4], "little")
    if footer > limits.max_footer_bytes:
        raise InvalidInputError(f"the Parquet footer is {footer} bytes, over the cap of {limits.max_footer_bytes}")


def _check_row_group(index: int, group: Any, limits: GeoParquetLimits) -> None:
    rows, size = group.num_rows, group.total_byte_size
    advice = "rewrite the file with smaller row groups (pyarrow: row_group_size=10000)"
    if rows > limits.max_row_group_rows:
        raise InvalidInputError(f"row group {index} holds {rows} rows, over the cap of {limits.max_row_group_rows}: {advice}")
    if size > limits.max_row_group_bytes:
        raise InvalidInputError(f"row group {index} is {size} bytes uncompressed, over the cap of "
                                f"{limits.max_row_group_bytes}: {advice}")
    if rows and size / rows > limits.max_item_bytes:
        raise InvalidInputError(f"row group {index} averages {size // rows} bytes per row, over the cap of "
                                f"{limits.max_item_bytes} bytes per item")


def _first_row_numbers(group_rows: list[int]) -> list[int]:
    firsts, number = [], 1
    for rows in group_rows:
        firsts.append(number)
        number += rows
    return firsts


def _batch_items(batch: pa.RecordBatch, first: int) -> list[dict[str, Any] | UnreadableRow]:
    """The batch's rows as items; when the batch as a whole does not convert, row by row, so that one bad
    row is one UnreadableRow."""
    items = _converted(batch)
    if isinstance(items, list):
        return [_cleaned(item, ()) for item in items]
    return [_row_item(batch, row, first + row) for row in range(batch.num_rows)]


def _row_item(batch: pa.RecordBatch, row: int, number: int) -> dict[str, Any] | UnreadableRow:
    items = _converted(batch.take(pa.array([row])))
    if isinstance(items, str):
        return UnreadableRow(number, f"not a STAC item: {items[:200]}")
    return _cleaned(items[0], ())


def _converted(batch: pa.RecordBatch) -> list[dict[str, Any]] | str:
    """The batch's items, or why they cannot be had."""
    try:
        features = rustac.from_arrow(pa.Table.from_batches([batch])).get("features")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - rustac raises RustacError, and pyo3's PanicException (a BaseException)
        return f"{type(error).__name__}: {error}"
    if not isinstance(features, list) or len(features) != batch.num_rows:
        return "the rows did not convert to one item each"
    return features


def _cleaned(value: Any, path: tuple[str, ...]) -> Any:
    """Lists instead of tuples, and no null members but the required ones (see the module docstring)."""
    if isinstance(value, dict):
        return {key: _cleaned(member, (*path, key)) for key, member in value.items()
                if member is not None or (*path, key) in KEEP_NULL}
    if isinstance(value, (list, tuple)):
        return [_cleaned(member, ()) for member in value]
    return value


class RangedFile(io.RawIOBase):
    """A seekable read-only file over `read_range(start, end) -> bytes` of a blob of `size` bytes (for
    example `PayloadStore.read(ref, start, end, etag=...)`, so that every read is of the same version).
    pyarrow reads the footer, then each row group's column chunks, in a few ranged reads each."""

    def __init__(self, read_range: Callable[[int, int], bytes], size: int) -> None:
        self._read_range = read_range
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(base + offset, 0)
        return self._position

    def readinto(self, buffer: Any) -> int:
        end = min(self._position + len(buffer), self._size)
        if end <= self._position:
            return 0
        data = self._read_range(self._position, end)
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        data = self._read_range(self._position, self._size) if self._position < self._size else b""
        self._position += len(data)
        return data
