"""`make demo` itself (tools/demo.py), by queue message and by upload, ends with the promised line."""

from __future__ import annotations

import re

import orjson
import pytest

from tests.conftest import ROOT
from tests.corpus import corpus_file
from tools import demo


@pytest.mark.parametrize("via", ["queue", "blob"])
def test_demo_ingests_the_samples(via: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--via", via]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "ingested 4 items: 4 succeeded, 0 failed, 0 rejected"


def test_demo_with_real_files_and_a_collection(capsys: pytest.CaptureFixture[str]) -> None:
    files = f"{corpus_file('pc-modis-14A1-items.ndjson')} {corpus_file('stac-validator-INVALID-v1.0.0-missing-id.json')}"
    assert demo.main(["--files", files, "--collection", "demo-real"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ingested 11 items: 10 succeeded, 0 failed, 1 rejected$", out, re.MULTILINE)
    assert "1 item(s) failed or were rejected:\n  #0 (" in out and "Rejected InvalidItem: has no id" in out


def test_demo_quickstart_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--scenario", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert "left in the collection: 23L-2023, 24M-2023, 24L-2023" in out
    assert out.strip().splitlines()[-1] == "ingested 4 items: 4 succeeded, 0 failed, 0 rejected"


def test_demo_refuses_what_it_cannot_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--scenario", "nonsense"]) == 2
    assert demo.main(["--files", "/no/such/file.json"]) == 2


def test_demo_repair_bbox_ingests_the_landsat_items_without_one(capsys: pytest.CaptureFixture[str]) -> None:
    landsat = str(corpus_file("pystac-client-cassette-pc-landsat-8-c2-l2-first50.json"))
    assert demo.main(["--files", landsat, "--repair", "bbox"]) == 0
    out = capsys.readouterr().out
    assert "8 item(s) had their bbox computed from their geometry" in out
    assert out.strip().splitlines()[-1] == "ingested 50 items: 50 succeeded, 0 failed, 0 rejected"
    assert demo.main(["--files", landsat, "--repair", "bbox", "--via", "blob"]) == 2  # uploads cannot opt in


def test_the_documented_quickstart_messages_are_the_ones_the_demo_sends() -> None:
    page = (ROOT / "docs" / "messages.md").read_text()
    section = page.split("## The quickstart as messages")[1].split("\n## ")[0]
    shown = [orjson.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    files = [orjson.loads(demo.QUICKSTART_INGEST.read_bytes()), orjson.loads(demo.QUICKSTART_DELETE.read_bytes())]
    assert shown == files
    ingest, delete = demo.quickstart_messages("http://127.0.0.1:9")
    assert ingest == {**files[0], "search": {**files[0]["search"], "url": "http://127.0.0.1:9/source/search"}}
    assert delete == files[1]
    # The bundled sample holds exactly the items the quickstart asks for, and the delete names the first of them.
    samples = orjson.loads(demo.SAMPLES.read_bytes())["features"]
    asked = ingest["search"]["params"]["ids"]
    assert [item["id"] for item in samples] == asked == ["23M-2023", "23L-2023", "24M-2023", "24L-2023"]
    assert {item["collection"] for item in samples} == set(ingest["search"]["params"]["collections"])
    assert delete["delete"]["ids"] == asked[:1]


@pytest.mark.parametrize("files", ["examples/naip-items.parquet", "examples/naip-catalog/catalog.json"])
def test_demo_ingests_the_geoparquet_and_static_catalog_examples(files: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--files", str(ROOT / files)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "ingested 5 items: 5 succeeded, 0 failed, 0 rejected"
