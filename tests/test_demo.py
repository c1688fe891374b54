"""`make demo` itself (tools/demo.py), by queue message and by upload, ends with the promised line."""

from __future__ import annotations

import re

import pytest

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


def test_demo_quickstart_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--scenario", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert "left in the collection: 17L-2023, 18K-2023, 18L-2023" in out
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
