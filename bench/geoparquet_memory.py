"""Reading a large STAC GeoParquet file with `shared.inputs.geoparquet`: items/s and peak RSS at 100k and 1M rows,
beside baselines from the same run.

Writes the files at run time in a temp dir from the real NAIP items of ../shared/data/stac-real/ (300
items, ids made unique), 10,000 rows per row group, and reads each in a fresh child process the way a
planner would: every row through `GeoParquetReader.rows()` and serialized again with orjson. Baselines:
- the same reader on 10,000 rows (one row group): what reading costs before the number of rows counts;
- the NDJSON of 100,000 of the same items through the NDJSON reader the planner uses today
  (`documents.open_chunks` over 1 MiB chunks, `documents.parse_line` per line).
Flat memory means: peak RSS at 1M rows is about that at 100k rows and at 10k rows.

    .venv/bin/python -m bench.geoparquet_memory [--sizes 100000,1000000] [--row-group 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "stac-real"
TEMPLATES = "pgstac-pc-naip-items-300.ndjson"


def templates() -> list[dict]:
    return [orjson.loads(line) for line in (CORPUS / TEMPLATES).read_bytes().splitlines() if line.strip()]


def write_geoparquet(path: Path, count: int, row_group: int) -> int:
    """`count` rows: rustac writes one row group of the templates, then pyarrow repeats it with new ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rustac

    items = templates()
    base_path = path.with_suffix(".base.parquet")
    rustac.write_sync(str(base_path), [items[n % len(items)] for n in range(row_group)])
    base = pq.read_table(base_path)
    base_path.unlink()
    column = base.schema.get_field_index("id")
    with pq.ParquetWriter(path, base.schema) as writer:
        for start in range(0, count, row_group):
            rows = min(row_group, count - start)
            ids = pa.array([f"bench-{n:08d}" for n in range(start, start + rows)])
            writer.write_table(base.slice(0, rows).set_column(column, "id", ids), row_group_size=row_group)
    return path.stat().st_size


def write_ndjson(path: Path, count: int) -> int:
    items = templates()
    with path.open("wb") as out:
        for n in range(count):
            out.write(orjson.dumps({**items[n % len(items)], "id": f"bench-{n:08d}"}) + b"\n")
    return path.stat().st_size


def child_geoparquet(path: str) -> dict[str, float]:
    from shared.inputs.geoparquet import GeoParquetReader, UnreadableRow

    started = time.perf_counter()
    rows = bad = 0
    with open(path, "rb") as file:
        for _, item in GeoParquetReader(file).rows():
            if isinstance(item, UnreadableRow):
                bad += 1
            else:
                orjson.dumps(item)
            rows += 1
    return {"items": rows, "bad": bad, "seconds": time.perf_counter() - started}


def child_ndjson(path: str) -> dict[str, float]:
    from shared.inputs.documents import open_chunks, parse_line

    def chunks():
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                yield chunk

    started = time.perf_counter()
    rows = 0
    for number, line in enumerate(open_chunks(chunks(), gzipped=False), start=1):
        orjson.dumps(parse_line(line, number))
        rows += 1
    return {"items": rows, "bad": 0, "seconds": time.perf_counter() - started}


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM starts anew at exec (ru_maxrss keeps the parent's peak across it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(kind: str, path: Path) -> dict[str, float]:
    output = subprocess.run([sys.executable, "-m", "bench.geoparquet_memory", "--child", kind, str(path)],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--row-group", type=int, default=10_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path = args.child
        result = (child_geoparquet if kind == "geoparquet" else child_ndjson)(path)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return 0
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{'what':<44}{'rows':>10}{'file MB':>9}{'items/s':>10}{'peak RSS MB':>13}")
    with tempfile.TemporaryDirectory() as folder:
        runs: list[tuple[str, int, Path, int]] = []
        for size in [args.row_group, *sizes]:
            path = Path(folder) / f"items-{size}.parquet"
            runs.append((f"GeoParquet, row groups of {args.row_group}", size, path, write_geoparquet(path, size, args.row_group)))
        baseline = min(sizes)
        ndjson = Path(folder) / f"items-{baseline}.ndjson"
        runs.append(("NDJSON baseline (documents.open_chunks)", baseline, ndjson, write_ndjson(ndjson, baseline)))
        for label, size, path, file_size in runs:
            result = run_child("ndjson" if path.suffix == ".ndjson" else "geoparquet", path)
            if result["items"] != size or result["bad"]:
                raise SystemExit(f"{label}: read {result}, expected {size} good rows")
            print(f"{label:<44}{size:>10,}{file_size / 1e6:>9.1f}{size / result['seconds']:>10,.0f}{result['peak_rss_mb']:>13,.0f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
