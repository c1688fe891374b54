"""Write the GeoParquet and static-catalog examples from real NAIP items of the corpus.

    .venv/bin/python -m tools.make_examples [--corpus ../shared/data/stac-real] [--out examples]

Reads the first ITEM_COUNT items of `pgstac-pc-naip-items-300.ndjson` (Planetary Computer NAIP items, as
pgstac's test data holds them; see SOURCES.md beside the corpus) and the `naip` Collection, and writes:
- `examples/naip-items.parquet`: the items as STAC GeoParquet, written by rustac (the reader's library;
  its writer migrates the items to STAC 1.1.0);
- `examples/naip-catalog/`: a self-contained static catalog written by pystac, `catalog.json` ->
  `naip/collection.json` -> `naip/<id>/<id>.json`, every link relative.
The outputs are what `make demo FILES=examples/naip-items.parquet` and the tests read.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import orjson
import pystac
import rustac

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "stac-real"
ITEMS_FILE = "pgstac-pc-naip-items-300.ndjson"
COLLECTION_FILE = "pgstac-pc-naip-collection.json"
ITEM_COUNT = 5
PARQUET_NAME = "naip-items.parquet"
CATALOG_DIR = "naip-catalog"


def corpus_items(corpus: Path, count: int = ITEM_COUNT) -> list[dict]:
    lines = (corpus / ITEMS_FILE).read_bytes().splitlines()
    return [orjson.loads(line) for line in lines[:count]]


def write_parquet(items: list[dict], path: Path) -> None:
    path.unlink(missing_ok=True)
    rustac.write_sync(str(path), items)


def write_catalog(items: list[dict], collection: dict, directory: Path) -> None:
    """A self-contained catalog: relative links only, no absolute self links."""
    shutil.rmtree(directory, ignore_errors=True)
    catalog = pystac.Catalog(id="naip-sample", description="A handful of Planetary Computer NAIP items "
                                                         "(from the geocatalog-ingest corpus), as a static catalog.")
    stac_collection = pystac.Collection.from_dict(_without_links_and_assets(collection))
    for item in items:
        stac_collection.add_item(pystac.Item.from_dict(_without_links(item)))
    catalog.add_child(stac_collection)
    catalog.normalize_hrefs(str(directory))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)


def _without_links(document: dict) -> dict:
    return {**document, "links": []}


def _without_links_and_assets(collection: dict) -> dict:
    """The collection's description and extent; its links and assets point into the Planetary Computer."""
    return {key: value for key, value in _without_links(collection).items() if key not in ("assets", "item_assets")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_examples", description=__doc__)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--out", type=Path, default=ROOT / "examples")
    args = parser.parse_args(argv)
    items = corpus_items(args.corpus)
    collection = orjson.loads((args.corpus / COLLECTION_FILE).read_bytes())
    args.out.mkdir(parents=True, exist_ok=True)
    write_parquet(items, args.out / PARQUET_NAME)
    write_catalog(items, collection, args.out / CATALOG_DIR)
    print(f"wrote {args.out / PARQUET_NAME} and {args.out / CATALOG_DIR}/ ({len(items)} items)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
