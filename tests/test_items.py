"""Offline item validation, on hand-made items and on the real-world corpus."""

from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest

from shared.batching import split
from shared.errors import InvalidInputError
from shared.ids import check_item_id, is_item_id, is_job_id
from shared.items import MAX_ITEM_BYTES, item_problem, json_depth, normalize, repaired, validate_job, validated
from shared.repair import GeometryError, bbox_of
from tests.conftest import ROOT
from tests.corpus import corpus_items
from tests.helpers import make_item, nested


def test_a_valid_item_passes_and_is_sent_unchanged_but_for_collection() -> None:
    item = make_item("a", "other")
    assert item_problem(item, "landcover") is None
    sent = normalize(item, "landcover")
    assert sent["collection"] == "landcover" and item["collection"] == "other"
    assert {k: v for k, v in sent.items() if k != "collection"} == {k: v for k, v in item.items() if k != "collection"}
    assert sent["links"] == []  # no collection link is added to what is sent


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"type": "Collection"}, "not 'Feature'"),
        ({"id": ""}, "no id"),
        ({"id": "a" * 65}, "1-64"),
        ({"id": "has space"}, "1-64"),
        ({"id": "a/b"}, "1-64"),
        ({"properties": {"title": "no time"}}, "datetime"),
        ({"assets": None}, "assets"),
        ({"bbox": None}, "bbox"),
        ({"geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}, "schema"),
        ({"properties": {"datetime": "yesterday"}}, "schema"),
    ],
)
def test_invalid_items_are_refused_with_a_reason(change: dict, fragment: str) -> None:
    item = {**make_item("a"), **change}
    problem = item_problem(item, "landcover")
    assert problem is not None and fragment in problem


def test_missing_geometry_key_is_refused_but_null_geometry_without_bbox_is_fine() -> None:
    item = make_item("a")
    del item["geometry"]
    assert "geometry" in (item_problem(item, "landcover") or "")
    nullgeom = {**make_item("a"), "geometry": None}
    del nullgeom["bbox"]
    assert item_problem(nullgeom, "landcover") is None


def test_duplicates_within_a_job_and_positions_of_id_less_items() -> None:
    valid, rejected = validated([make_item("a"), {"type": "Feature"}, make_item("a")], "landcover")
    assert [i["id"] for i in valid] == ["a"]
    assert [(r.item_id, r.position) for r in rejected] == [("", 1), ("a", 2)]
    assert "more than once" in rejected[1].reason


# ----- the real-world corpus (../shared/data/stac-real) ------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "stactools-s2-ANTIMERIDIAN-L2A-T01WCP-1.1.0.json",  # antimeridian bbox minx > maxx, 42 assets, 1.1.0
        "stactools-s2-ANTIMERIDIAN-L2A-T60CWS-antarctic-1.0.0.json",  # polar + antimeridian, 1.0.0
        "pc-io-lulc-01C_2017.json",  # bbox minx < -180
        "pc-modis-14A1-items.ndjson",  # start/end datetimes, odd bboxes
        "pc-usgs-lcmap-hawaii-items.ndjson",  # 22 assets each, ~38 KB items
        "pystac-client-cassette-pc-sentinel-2-l2a-itemcollection.json",  # a real /search response
        "pystac-raster-planet-example.json",  # 1.1.0 with raster statistics
        "pc-sentinel-1-grd-S1A_EW_GRDM_1SSH_20220505.json",  # RFC 3339 date-time with a space
        "pystac-1.0.0-example-sentinel2.json",  # relative self link, valid in 1.0.0
        "pystac-sample-item-collection.json",  # STAC 1.0.0-rc.4 (pre-1.0): migrated copy validates
        "pgstac-testdata-items.ndjson",  # STAC 1.0.0-beta.2 (pre-1.0)
        "pystac-OLD-0.8.1-label-zanzibar-znz029.json",  # STAC 0.8.1, 1 MB geometry
    ],
)
def test_real_items_that_must_pass(name: str) -> None:
    items = corpus_items(name)
    assert items
    assert [item_problem(item, "target") for item in items] == [None] * len(items)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("stac-validator-INVALID-v1.0.0-missing-id.json", "no id"),
        ("stac-validator-INVALID-v0.9.0-missing-id.json", "no id"),
        ("stac-validator-INVALID-1.0.0-beta.2-no-geometry.json", "no geometry"),
        ("stac-server-INVALID-badGeometryItem-antimeridian.json", "geometry"),
        ("pc-examples-INVALID-sentinel-5p-original-geometry-ZZ-datetime.json", "date-time"),
        ("stac-validator-INVALID-v1.1.0-opera-rtc-sar.json", "1-64"),  # id of 77 characters
        ("pc-sentinel-1-grd-raw-S1A_IW_GRDH_1SDV_20230628.json", "1-64"),  # id of 67 characters
        ("pystac-EDGE-relative-extension-path.json", "stac_extensions"),
        ("pc-WRAPPED-stac_item_record-modis.json", "not 'Feature'"),
        ("pgstac-EDGE-dehydrated-landsat-c2-l1-LM04.json", "not 'Feature'"),
    ],
)
def test_real_items_that_must_be_refused(name: str, fragment: str) -> None:
    problems = [item_problem(item, "target") for item in corpus_items(name)]
    assert problems and all(p is not None and fragment in p for p in problems), problems


# ----- deterministic validation under threads (pystac's lazy extension hooks) --------------------

PRE_1_0_FILES = [
    "pc-examples-OLD-hls-s30-1.0.0-beta.2-shortname-extensions.json",
    "pystac-1.0.0-beta.2-datetimerange.json",
    "pystac-client-earth-search-v0-stac-1.0.0-beta.2-itemcollection.json",
    "pystac-sample-item-collection.json",
    "stac-validator-OLD-1.0.0-beta.1-CBERS4-MUX.json",
    "stac-validator-OLD-0.8.0-itemcollection-sample-full.json",
    "stac-validator-INVALID-v0.9.0-CBERS4-bad-links.json",
    "pgstac-items_for_delsert.ndjson",
]

# Runs in a fresh interpreter, so pystac's extension hooks are cold, as on a new Functions worker:
# 8 threads validate the same pre-1.0 items at once, then one thread validates them again.
THREADED_THEN_SEQUENTIAL = """
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from tests.conftest import ROOT
from tests.corpus import corpus_items
from shared.items import item_problem
items = [item for name in json.loads(sys.argv[2]) for item in corpus_items(name)]
threads = 8
barrier = threading.Barrier(threads)
verdicts = [None] * threads
def check(k):
    barrier.wait()
    try:
        verdicts[k] = [item_problem(item, "target") for item in items]
    except Exception as error:
        verdicts[k] = repr(error)
workers = [threading.Thread(target=check, args=(k,)) for k in range(threads)]
for worker in workers: worker.start()
for worker in workers: worker.join()
print(json.dumps({"threaded": verdicts, "sequential": [item_problem(item, "target") for item in items]}))
"""


@pytest.mark.parametrize("round_", range(3))
def test_pre_1_0_items_get_the_same_verdicts_from_concurrent_threads_on_a_cold_worker(round_: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", THREADED_THEN_SEQUENTIAL, str(ROOT), json.dumps(PRE_1_0_FILES)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    verdicts = json.loads(result.stdout)
    sequential = verdicts["sequential"]
    assert sequential.count(None) >= 20  # the valid pre-1.0 items pass when checked one at a time
    for threaded in verdicts["threaded"]:
        assert threaded == sequential


# ----- clear id errors; ids matched as whole strings ---------------------------------------------


@pytest.mark.parametrize(
    ("item_id", "named"),
    [
        ("half-moon-bay/video-2018-01-01-0001", "'/' at position 14"),
        ("a" * 77, "77 characters long"),
        ("item-1\n", "'\\n' at position 7"),
        ("has space", "' ' at position 4"),
    ],
)
def test_an_id_error_names_the_bad_character_or_the_length(item_id: str, named: str) -> None:
    problem = item_problem(make_item(item_id), "landcover") or ""
    assert named in problem and "1-64" in problem
    if "character" not in named:
        assert "characters long" not in problem


def test_an_id_with_a_trailing_newline_is_refused_everywhere() -> None:
    assert not is_item_id("item-1\n") and not is_job_id("job-1\n")
    with pytest.raises(InvalidInputError, match="position 7"):
        check_item_id("item-1\n")


# ----- depth and size: checked before anything serializes the item -------------------------------


def test_a_deeply_nested_item_is_rejected_and_the_good_ones_go_on() -> None:
    deep = make_item("deep", properties={"datetime": "2023-01-01T00:00:00Z", "x": nested(300)})
    valid, rejected = validated([make_item("a"), deep, make_item("b")], "landcover")
    assert [i["id"] for i in valid] == ["a", "b"]
    assert [r.item_id for r in rejected] == ["deep"] and "nested more than" in rejected[0].reason
    assert list(split(valid, max_items=10, max_bytes=1_000_000))  # what planning does next no longer breaks
    assert item_problem(make_item("ok", properties={"datetime": "2023-01-01T00:00:00Z", "x": nested(50)}), "landcover") is None
    deep_geometry = make_item("g", geometry={"type": "Polygon", "coordinates": nested(300)})
    assert "nested more than" in (item_problem(deep_geometry, "landcover") or "")  # the geometry counts too


def test_depth_between_our_limit_and_orjsons_is_read_off_the_brackets_and_many_shallow_brackets_pass() -> None:
    deeper_than_ours = make_item("d", properties={"datetime": "2023-01-01T00:00:00Z", "x": nested(120)})
    assert "nested more than" in (item_problem(deeper_than_ours, "landcover") or "")
    ring = [[float(n), float(n % 7)] for n in range(400)] + [[0.0, 0.0]]  # 400+ brackets, 4 levels deep
    many = make_item("m", properties={"datetime": "2023-01-01T00:00:00Z", "ring": [ring], "note": "[[[[" * 50})
    assert item_problem(many, "landcover") is None


def test_an_item_too_big_for_one_post_is_rejected() -> None:
    big = make_item("big", properties={"datetime": "2023-01-01T00:00:00Z", "blob": "x" * (MAX_ITEM_BYTES + 1)})
    assert "bytes serialized" in (item_problem(big, "landcover") or "")


# ----- repair: ["bbox"] ---------------------------------------------------------------------------

LANDSAT = "pystac-client-cassette-pc-landsat-8-c2-l2-first50.json"
ANTIMERIDIAN = [
    "stactools-s2-ANTIMERIDIAN-L1C-T01LAC-1.1.0.json",
    "stactools-s2-ANTIMERIDIAN-L2A-T01KAB-1.0.0.json",
    "stactools-s2-ANTIMERIDIAN-L2A-T01WCP-1.1.0.json",
    "stactools-s2-ANTIMERIDIAN-L2A-T60CWS-antarctic-1.0.0.json",
    "stactools-s2-EDGE-L2A-T01VCG-bbox-minx-minus180.json",
    "pc-examples-sentinel-5p-antimeridian-fixed.json",
]


def test_without_repair_a_missing_bbox_is_rejected_with_the_way_to_repair_it() -> None:
    result = validate_job(corpus_items(LANDSAT), "landsat")
    assert (len(result.valid), len(result.rejected)) == (42, 8)
    assert {r.reason for r in result.rejected} == {'has a geometry but no bbox; send with repair: ["bbox"] to compute it from the geometry'}


def test_repair_bbox_computes_the_box_from_the_geometry_and_changes_nothing_else() -> None:
    items = corpus_items(LANDSAT)
    result = validate_job(items, "landsat", repair={"bbox"})
    assert (len(result.valid), len(result.rejected), len(result.repaired_ids)) == (50, 0, 8)
    originals = {item["id"]: item for item in items}
    for sent in result.valid:
        original = originals[sent["id"]]
        assert {k: v for k, v in sent.items() if k not in ("bbox", "collection")} == {
            k: v for k, v in original.items() if k not in ("bbox", "collection")}
        if sent["id"] in result.repaired_ids:
            assert "bbox" not in original  # the input item is never modified
            west, south, east, north = sent["bbox"]
            points = sent["geometry"]["coordinates"][0]
            assert (west, east) == (min(p[0] for p in points), max(p[0] for p in points))
            assert (south, north) == (min(p[1] for p in points), max(p[1] for p in points))
        else:
            assert sent["bbox"] == original["bbox"]  # an item that has a bbox keeps it


@pytest.mark.parametrize("name", ANTIMERIDIAN)
def test_antimeridian_geometries_get_their_own_box_not_the_whole_world(name: str) -> None:
    (item,) = corpus_items(name)
    declared = item.pop("bbox")
    box = validate_job([item], "target", repair={"bbox"}).valid[0]["bbox"]
    assert box == pytest.approx(declared[:2] + declared[len(declared) // 2:][:2], abs=1e-6)
    if "ANTIMERIDIAN" in name:
        assert box[0] > box[2]  # west > east (RFC 7946 §5.2), where plain min/max would give -180..180


def test_a_split_geometry_crossing_the_antimeridian_has_west_greater_than_east() -> None:
    split_square = {"type": "MultiPolygon", "coordinates": [
        [[[179.0, 10.0], [180.0, 10.0], [180.0, 11.0], [179.0, 11.0], [179.0, 10.0]]],
        [[[-180.0, 10.0], [-179.5, 10.0], [-179.5, 11.0], [-180.0, 11.0], [-180.0, 10.0]]],
    ]}
    assert bbox_of(split_square) == [179.0, 10.0, -179.5, 11.0]
    assert bbox_of({"type": "Point", "coordinates": [5, 6]}) == [5.0, 6.0, 5.0, 6.0]
    with pytest.raises(GeometryError):
        bbox_of({"type": "Polygon", "coordinates": "nope"})


def test_repair_only_when_asked_and_only_the_bbox() -> None:
    item = make_item("a")
    del item["bbox"]
    assert "repair" in (item_problem(item, "landcover") or "")
    assert repaired(item, frozenset()) == (item, False)
    fixed, changed = repaired(item, frozenset({"bbox"}))
    assert changed and fixed["bbox"] == [-122.5, 47.5, -122.0, 48.0] and {**fixed, "bbox": None} == {**item, "bbox": None}


# ----- an id repeated within one job -------------------------------------------------------------


def test_upsert_keeps_the_last_copy_and_records_the_earlier_as_superseded() -> None:
    items = corpus_items("pc-ingest-items-dupe.ndjson")  # item1 and item2 appear twice
    labels = [f"line {n}" for n in range(1, len(items) + 1)]
    result = validate_job(items, "landcover", labels=labels, mode="upsert")
    assert sorted(i["id"] for i in result.valid) == ["item1", "item2", "item3"] and result.rejected == []
    assert [(s.item_id, s.label) for s in result.superseded] == [("item1", "line 1"), ("item2", "line 2")]
    last = {item["id"]: item for item in items}
    assert all(sent == {**last[sent["id"]], "collection": "landcover"} for sent in result.valid)


def test_upsert_supersedes_only_by_a_valid_later_copy_and_create_still_rejects_the_repeat() -> None:
    broken = {**make_item("a"), "properties": {}}
    result = validate_job([make_item("a", title="first"), broken], "landcover", mode="upsert")
    assert [i.get("title") for i in result.valid] == ["first"] and len(result.rejected) == 1 and result.superseded == []
    created = validate_job([make_item("a"), make_item("a")], "landcover")
    assert len(created.valid) == 1 and "more than once" in created.rejected[0].reason and created.superseded == []


@pytest.mark.parametrize("document", [
    {"a": "[[[{{{", "b": [1, [2, {"c": "\"]]]"}]]}, {"a": "x\\", "b": [[["]"]]]}, [], 1, "}", {"k": [[[[[]]]]]},
    {"quote\"key": {"q": "\\\"[", "r": [[]]}},
])
def test_depth_is_read_off_the_brackets_outside_strings(document) -> None:
    def walked(value) -> int:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        return 0 if children is None else 1 + max((walked(c) for c in children), default=0)

    assert json_depth(orjson.dumps(document)) == walked(document)
