"""Splitting into batches by count and by bytes; deterministic ids."""

from __future__ import annotations

import orjson

from shared.batching import batch_id, child_batch_id, feature_collection, split
from tests.helpers import make_item


def test_split_by_count() -> None:
    items = [make_item(f"i{n}") for n in range(250)]
    batches = list(split(items, max_items=100, max_bytes=10**9))
    assert [len(b) for b in batches] == [100, 100, 50]
    assert [i for b in batches for i in b] == items


def test_split_by_bytes_keeps_each_post_under_the_limit() -> None:
    items = [make_item(f"i{n}", properties={"datetime": "2023-01-01T00:00:00Z", "pad": "x" * 1000}) for n in range(40)]
    limit = 10_000
    batches = list(split(items, max_items=100, max_bytes=limit))
    assert len(batches) > 4
    assert all(len(feature_collection(b)) <= limit for b in batches)
    assert sum(len(b) for b in batches) == 40


def test_an_item_larger_than_the_byte_limit_goes_alone() -> None:
    big = make_item("big", properties={"datetime": "2023-01-01T00:00:00Z", "pad": "x" * 5000})
    batches = list(split([make_item("a"), big, make_item("b")], max_items=100, max_bytes=2000))
    assert [[i["id"] for i in b] for b in batches] == [["a"], ["big"], ["b"]]


def test_feature_collection_body_and_ids() -> None:
    body = orjson.loads(feature_collection([make_item("a")]))
    assert body["type"] == "FeatureCollection" and body["features"][0]["id"] == "a"
    assert batch_id(7) == "batch-000007" and child_batch_id("batch-000007", 2) == "batch-000007.2"
    assert sorted([batch_id(10), batch_id(9)]) == [batch_id(9), batch_id(10)]


def test_a_big_plan_sends_its_first_batch_at_once_then_ever_larger_groups() -> None:
    from shared.steps.segments import ROWS_PER_FLUSH, flush_due

    sizes, pending, written = [], 0, 0
    for _ in range(1000):  # plan 1,000 batches one by one
        pending += 1
        if flush_due(pending, written=written):
            sizes.append(pending)
            written, pending = written + pending, 0
    assert sizes[:7] == [1, 1, 2, 4, 8, 16, 16]
    assert max(sizes) == ROWS_PER_FLUSH and len(sizes) <= 1000 / ROWS_PER_FLUSH + 5  # a transaction per 16 batches
