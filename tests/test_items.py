"""Offline item validation, on hand-made items and on the real-world corpus."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared.items import item_problem, normalize, validated
from tests.conftest import ROOT
from tests.corpus import corpus_items
from tests.helpers import make_item


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
