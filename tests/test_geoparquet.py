"""The STAC GeoParquet reader: corpus round trips (rustac's and stac-geoparquet's writers), what a round trip
does not keep, one bad row as one labelled problem, resuming from a position, the caps, and reading a blob
version of Azurite through ranged reads."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rustac
from azure.storage.blob import BlobServiceClient
from stac_geoparquet.arrow import parse_stac_items_to_arrow, to_parquet

from shared.errors import InvalidInputError
from shared.inputs.geoparquet import GeoParquetLimits, GeoParquetReader, RangedFile, RowPosition, UnreadableRow, is_geoparquet
from shared.items import validate_job
from shared.store.payloads import BlobChangedError, PayloadStore
from tests.corpus import corpus_items

ROUND_TRIP_FILES = [  # valid items with many shapes: assets galore, antimeridian multipolygons, start/end datetimes
    "pc-usgs-lcmap-hawaii-items.ndjson",
    "pc-modis-14A1-items.ndjson",
    "pc-io-lulc-01C_2017.json",
    "stactools-s2-ANTIMERIDIAN-L2A-T01WCP-1.1.0.json",
    "pystac-spec-examples-1.1.0-extended-item.json",
    "stac-server-example-sample-item-point.json",
]
TIME_KEYS = frozenset({"datetime", "start_datetime", "end_datetime", "created", "updated"})
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "naip-items.parquet"


def naip_items(count: int) -> list[dict[str, Any]]:
    return corpus_items("pgstac-pc-naip-items-300.ndjson")[:count]


def write_rustac(items: list[dict[str, Any]], path: Path, *, row_group_rows: int | None = None) -> Path:
    rustac.write_sync(str(path), items)
    if row_group_rows:  # rustac writes one row group for small files: split it as other writers would
        table = pq.read_table(path)
        pq.write_table(table, path, row_group_size=row_group_rows)
    return path


def write_stac_geoparquet(items: list[dict[str, Any]], path: Path) -> Path:
    to_parquet(parse_stac_items_to_arrow(items), path)
    return path


def read_all(path: Path, start: RowPosition | None = None, **limits: int) -> list[tuple[int, Any]]:
    with path.open("rb") as file:
        return list(GeoParquetReader(file, limits=GeoParquetLimits(**limits)).rows(start or RowPosition()))


def comparable(value: Any, key: str = "") -> Any:
    """What a round trip keeps: nulls dropped (absent and null are one thing in Parquet), times as instants."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items() if v is not None and k != "stac_version"}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if key in TIME_KEYS and isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(microsecond=0)
    return value


@pytest.mark.parametrize("name", ROUND_TRIP_FILES)
@pytest.mark.parametrize("writer", [write_rustac, write_stac_geoparquet])
def test_corpus_items_come_back_the_same_and_stay_valid(name: str, writer: Any, tmp_path: Path) -> None:
    items = corpus_items(name)
    path = writer(items, tmp_path / "items.parquet")
    rows = read_all(path)
    assert [number for number, _ in rows] == list(range(1, len(items) + 1))
    back = [item for _, item in rows]
    assert [comparable(item) for item in back] == [comparable(item) for item in items]
    before, after = validate_job(items, "test-collection"), validate_job(back, "test-collection")
    assert len(after.valid) == len(before.valid) == len(items)
    assert all(isinstance(item["bbox"], list) for item in back)  # rustac gives tuples; the validator wants arrays


def test_what_a_round_trip_changes_is_only_what_the_docstring_says(tmp_path: Path) -> None:
    items = corpus_items("pc-ingest-items.ndjson")
    items[0]["properties"]["only-here"] = "x"
    items[1]["properties"]["proj:epsg"] = None
    for item in items:
        item["properties"]["created"] = "2023-01-12T17:37:41.201650Z"
    back = [item for _, item in read_all(write_stac_geoparquet(items, tmp_path / "a.parquet"))]
    assert "only-here" not in back[1]["properties"] and "only-here" not in back[2]["properties"]  # absent stays absent
    assert back[0]["properties"]["only-here"] == "x"
    assert "proj:epsg" not in back[1]["properties"]  # an explicit null comes back absent
    assert back[0]["properties"]["created"] == "2023-01-12T17:37:41.201650+00:00"  # re-rendered, the same instant
    assert back[0]["stac_version"] == items[0]["stac_version"]  # stac-geoparquet keeps the version
    by_rustac = [item for _, item in read_all(write_rustac(items, tmp_path / "b.parquet"))]
    assert by_rustac[0]["stac_version"] == "1.1.0" != items[0]["stac_version"]  # rustac's writer migrates


def test_null_datetime_with_a_range_is_kept(tmp_path: Path) -> None:
    item = corpus_items("pc-io-lulc-01C_2017.json")[0]
    item["properties"]["datetime"] = None
    back = read_all(write_stac_geoparquet([item], tmp_path / "a.parquet"))[0][1]
    assert "datetime" in back["properties"] and back["properties"]["datetime"] is None
    assert validate_job([back], "test-collection").valid


def test_the_example_file_holds_valid_naip_items() -> None:
    rows = read_all(EXAMPLE)
    assert len(rows) == 5 and {item["collection"] for _, item in rows} == {"naip"}
    assert len(validate_job([item for _, item in rows], "naip").valid) == 5
    assert [comparable(item) for _, item in rows] == [comparable(item) for item in naip_items(5)]


def corrupt_geometry(path: Path, row: int) -> None:
    """Overwrite one row's WKB geometry with bytes that are not WKB, keeping the rest of the file."""
    table = pq.read_table(path)
    index = table.schema.get_field_index("geometry")
    values = table["geometry"].to_pylist()
    values[row] = b"\x01\x02 not wkb"
    field = table.schema.field(index)
    table = table.set_column(index, field, pa.array(values, type=field.type))
    pq.write_table(table, path, row_group_size=4)


def test_a_bad_row_is_one_labelled_problem_and_the_others_go_on(tmp_path: Path) -> None:
    items = naip_items(10)
    path = write_rustac(items, tmp_path / "a.parquet")
    corrupt_geometry(path, row=5)  # row number 6, in the second row group of 4
    rows = read_all(path)
    assert [number for number, _ in rows] == list(range(1, 11))
    bad = [value for _, value in rows if isinstance(value, UnreadableRow)]
    assert len(bad) == 1 and bad[0].row == 6 and bad[0].label == "row 6"
    assert "not a STAC item" in bad[0].error
    good = [value for _, value in rows if not isinstance(value, UnreadableRow)]
    assert [item["id"] for item in good] == [item["id"] for n, item in enumerate(items) if n != 5]


def test_resuming_from_a_position_gives_the_rest_of_the_file(tmp_path: Path) -> None:
    items = naip_items(11)
    path = write_rustac(items, tmp_path / "a.parquet", row_group_rows=3)  # groups of 3, 3, 3, 2
    everything = read_all(path)
    with path.open("rb") as file:
        reader = GeoParquetReader(file)
        assert reader.row_group_count == 4 and reader.row_count == 11
        assert reader.position_of(1) == RowPosition(0, 0)
        assert reader.position_of(5) == RowPosition(1, 1)
        assert reader.position_of(7) == RowPosition(2, 0)
        assert reader.position_of(12) == RowPosition(4, 0)  # the end
        for number in range(1, 13):
            position = reader.position_of(number)
            assert reader.row_number(position) == number
            assert list(reader.rows(position)) == everything[number - 1:]
        with pytest.raises(InvalidInputError, match="no row 5 in row group 1"):
            list(reader.rows(RowPosition(1, 5)))


def test_resuming_inside_a_large_row_group_skips_whole_batches(tmp_path: Path) -> None:
    items = many_naip_items(8)  # 2,400 rows, one row group
    path = write_rustac(items, tmp_path / "a.parquet")
    rows = read_all(path, RowPosition(0, 2100))
    assert [number for number, _ in rows] == list(range(2101, 2401))
    assert [item["id"] for _, item in rows] == [item["id"] for item in items[2100:]]


@pytest.mark.parametrize(("limits", "reason"), [
    ({"max_row_group_rows": 3}, r"row group 0 holds 4 rows, over the cap of 3: rewrite the file with smaller row groups"),
    ({"max_row_group_bytes": 1000}, r"row group 0 is \d+ bytes uncompressed, over the cap of 1000"),
    ({"max_item_bytes": 100}, r"row group 0 averages \d+ bytes per row, over the cap of 100 bytes per item"),
    ({"max_footer_bytes": 100}, r"the Parquet footer is \d+ bytes, over the cap of 100"),
])
def test_a_file_over_a_cap_is_refused_before_any_row(limits: dict[str, int], reason: str, tmp_path: Path) -> None:
    path = write_rustac(naip_items(4), tmp_path / "a.parquet", row_group_rows=4)
    with pytest.raises(InvalidInputError, match=reason):
        read_all(path, **limits)


def test_a_later_large_row_group_refuses_the_file_when_opened(tmp_path: Path) -> None:
    path = write_rustac(naip_items(7), tmp_path / "a.parquet")
    pq.write_table(pq.read_table(path), path, row_group_size=5)  # groups of 5 and 2
    with pytest.raises(InvalidInputError, match="row group 0 holds 5 rows"):
        read_all(path, max_row_group_rows=4)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "too short"),
    (b'{"type": "Feature"}\n' * 3, "no PAR1 footer"),
    (b"PAR1" + b"\x00" * 20 + b"\x10\x00\x00\x00PAR1", "not a Parquet file"),
])
def test_what_is_not_parquet_is_refused_clearly(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        GeoParquetReader(io.BytesIO(data))


def test_parquet_that_is_not_stac_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "value": [1, 2]}), path)
    with pytest.raises(InvalidInputError, match="not a STAC GeoParquet file: no geometry column"):
        read_all(path)


def test_file_names() -> None:
    assert is_geoparquet("stac-drop/naip/items.parquet") and is_geoparquet("X.GEOPARQUET")
    assert not is_geoparquet("items.ndjson") and not is_geoparquet("parquet.json")


def many_naip_items(copies: int) -> list[dict[str, Any]]:
    return [{**item, "id": f"{item['id']}-{n}"} for n, item in enumerate(naip_items(300) * copies)]


def test_ranged_file_reads_one_range_per_row_group(tmp_path: Path) -> None:
    path = write_rustac(many_naip_items(4), tmp_path / "a.parquet", row_group_rows=300)
    data = path.read_bytes()
    reads: list[tuple[int, int]] = []

    def read_range(start: int, end: int) -> bytes:
        reads.append((start, end))
        return data[start:end]

    rows = list(GeoParquetReader(RangedFile(read_range, len(data))).rows())
    assert rows == read_all(path)
    assert len(reads) <= 4 + 2  # the footer (and its length), then one coalesced read per row group
    assert max(end - start for start, end in reads) < len(data) / 3


def test_a_blob_version_read_through_ranges_and_a_changed_blob_is_refused(azurite: Any, tmp_path: Path) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    store = PayloadStore(service, "geoparquet-test")
    store.ensure()
    data = write_rustac(naip_items(30), tmp_path / "a.parquet", row_group_rows=10).read_bytes()
    ref = store.put("upload/items.parquet", data)
    etag, size = store.properties(ref)
    reader = GeoParquetReader(RangedFile(lambda start, end: store.read(ref, start, end, etag=etag), size))
    rows = reader.rows()
    assert [next(rows)[0] for _ in range(12)] == list(range(1, 13))  # into the second row group
    store.put("upload/items.parquet", data + b"")  # a new version of the blob: a new ETag
    with pytest.raises(BlobChangedError):
        list(rows)
    again = GeoParquetReader(RangedFile(lambda start, end: store.read(ref, start, end, etag=store.properties(ref)[0]), size))
    assert [item["id"] for _, item in again.rows(again.position_of(21))] == [orjson.loads(orjson.dumps(i))["id"] for i in naip_items(30)[20:]]
