"""The real-world STAC corpus beside the repo (`../shared/data/stac-real/`), read in place, never copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from shared.items import items_from_document

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "stac-real"


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the corpus must sit beside the repo in ../shared/data/")
    return path


def corpus_items(name: str) -> list[Any]:
    """The Feature-level objects of a corpus file (JSON or NDJSON)."""
    data = corpus_file(name).read_bytes()
    if name.endswith(".ndjson"):
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return items_from_document(orjson.loads(data))
