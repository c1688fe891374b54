"""CPU cost of the submit path per item, on real NAIP items, against the floor of parsing them.

The path measured is what the app does to every item between the bytes it reads and the bytes it
POSTs: parse (orjson), validate (`shared.items.validated`), batch and serialize each item once
(`shared.batching.split_serialized` measures and joins the same bytes into the batch's body, from
which the payload blob is written), build the batch message (it names the batch only), and the
submitter's side (an unsigned batch POSTs the stored bytes as they are: no decode). Storage and
HTTP are left out: this is the CPU the app spends. The floor, printed beside it: `orjson.loads`
of the same lines. Target: <= 150 us per item.

    .venv/bin/python -m bench.submit_path [--items 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import orjson

from shared.batching import split_serialized
from shared.items import validated
from shared.messages import BatchMessage

ROOT = Path(__file__).resolve().parent.parent
NAIP = ROOT.parent / "shared" / "data" / "stac-real" / "pgstac-pc-naip-items-300.ndjson"


def naip_lines(count: int) -> list[bytes]:
    """`count` NDJSON lines of the corpus's real NAIP items, ids made unique."""
    items = [orjson.loads(line) for line in NAIP.read_bytes().splitlines() if line.strip()]
    return [orjson.dumps({**items[n % len(items)], "id": f"naip-{n:07d}"}) for n in range(count)]


def submit_path(lines: list[bytes], collection: str) -> int:
    items = [orjson.loads(line) for line in lines]
    valid, _ = validated(items, collection)
    messages = 0
    for number, _group in enumerate(split_serialized(valid, max_items=100, max_bytes=2_000_000), start=1):
        # _group.body: the payload blob's bytes, and what the submitter POSTs as stored
        BatchMessage("job", f"batch-{number:06d}").to_json()
        messages += 1
    return messages


def floor(lines: list[bytes]) -> int:
    return len([orjson.loads(line) for line in lines])


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lines = naip_lines(args.items)
    collection = "naip"
    submit_path(lines[:200], collection)  # warm up: compile the schema, load pystac's hooks
    path = statistics.median(timed(submit_path, lines, collection) for _ in range(args.rounds))
    base = statistics.median(timed(floor, lines) for _ in range(args.rounds))
    per_item, floor_per_item = 1e6 * path / args.items, 1e6 * base / args.items
    print(f"{args.items} real NAIP items, median of {args.rounds} rounds")
    print(f"submit path (parse, validate, batch, serialize, message): {per_item:7.1f} us/item (target <= 150)")
    print(f"floor (orjson.loads of the same lines):                   {floor_per_item:7.1f} us/item")
    print(f"ratio path / floor: {per_item / floor_per_item:.1f}x")


if __name__ == "__main__":
    main()
