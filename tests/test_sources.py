"""The new sources' message forms, file kinds and row keys (issue 25), without storage; end to end in test_sources_e2e.py."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest

from shared.batching import REJECTED_ROW_PREFIX
from shared.errors import InvalidInputError
from shared.inputs.documents import file_kind, file_stem
from shared.messages import BATCH_ID, CatalogRef, inbox_job
from shared.steps.planning import describe_source, source_ref_of
from shared.steps.segments import rejected_input_row_id
from shared.store import SourceKind
from tests.conftest import ROOT
from tests.helpers import make_item

VALIDATE = jsonschema_rs.validator_for(json.loads((ROOT / "schemas" / "messages.schema.json").read_text())).validate


@pytest.mark.parametrize(("message", "expected"), [
    ({"v": 1, "catalog": {"url": "https://data.example.com/stac/catalog.json"}},
     CatalogRef(url="https://data.example.com/stac/catalog.json")),
    ({"v": 1, "collection": "naip", "mode": "upsert", "repair": ["bbox"], "catalog": {"blob": "stac-payloads/a/catalog.json"}},
     CatalogRef(blob="stac-payloads/a/catalog.json")),
])
def test_a_catalog_message_is_accepted_by_the_schema_and_the_code(message: dict, expected: CatalogRef) -> None:
    VALIDATE(message)
    request = inbox_job(message)
    assert request.catalog == expected and request.items is None and request.items_ref is None


@pytest.mark.parametrize("message", [
    {"v": 1, "catalog": {}},
    {"v": 1, "catalog": {"url": "https://a.example/catalog.json", "blob": "c/catalog.json"}},
    {"v": 1, "catalog": {"blob": "no-slash"}},
    {"v": 1, "catalog": {"url": "https://a.example/catalog.json", "depth": 3}},
    {"v": 1, "catalog": "https://a.example/catalog.json"},
    {"v": 1, "catalog": {"url": "https://a.example/catalog.json"}, "items": [make_item("a")]},
    {"v": 1, "catalog": {"blob": "c/catalog.json"}, "items_ref": {"blob": "c/x.parquet"}},
])
def test_a_malformed_catalog_message_is_refused_by_both(message: dict) -> None:
    with pytest.raises(jsonschema_rs.ValidationError):
        VALIDATE(message)
    with pytest.raises(InvalidInputError):
        inbox_job(message)


def test_a_catalog_job_row_names_its_root_without_a_query_string() -> None:
    request = inbox_job({"v": 1, "catalog": {"url": "https://a.example/stac/catalog.json?sig=secret"}})
    assert describe_source(request) == "catalog https://a.example/stac/catalog.json"
    ref = source_ref_of(request)
    assert (ref.kind, ref.url, ref.blob) == (SourceKind.CATALOG, "https://a.example/stac/catalog.json", "")


@pytest.mark.parametrize("name", ["items.parquet", "ITEMS.GeoParquet", "naip/2023/part-0.parquet"])
def test_geoparquet_files_are_a_supported_kind(name: str) -> None:
    kind = file_kind(name)
    assert kind is not None and kind.parquet and not kind.ndjson and not kind.seekable
    assert file_stem(name.rsplit("/", 1)[-1]).lower() in ("items", "part-0")


def test_a_parquet_gz_or_json_named_file_is_not_geoparquet() -> None:
    assert not file_kind("items.json").parquet  # type: ignore[union-attr]
    assert file_kind("items.parquet.gz") is None


@pytest.mark.parametrize(("label", "expected"), [("row 12", "rejected-row-12"), ("line 3", "rejected-line-3")])
def test_a_labelled_rejection_keeps_its_readable_row_key(label: str, expected: str) -> None:
    assert rejected_input_row_id(label) == expected


def test_a_link_label_becomes_a_valid_row_key_of_its_own() -> None:
    first = rejected_input_row_id("https://data.example.com/stac/a b/#x/../item.json")
    second = rejected_input_row_id("https://data.example.com/stac/other.json")
    assert first.startswith(REJECTED_ROW_PREFIX) and BATCH_ID.match(first) and BATCH_ID.match(second)
    assert first != second and first == rejected_input_row_id("https://data.example.com/stac/a b/#x/../item.json")
