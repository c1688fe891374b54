"""The worker's garbage collector settings (shared.heap)."""

import gc

import shared.heap
from shared.heap import YOUNG_THRESHOLD, settle_worker_heap


def test_settling_freezes_what_is_loaded_and_raises_only_the_young_threshold(monkeypatch):
    monkeypatch.setattr(shared.heap, "_settled", False)
    before = gc.get_threshold()
    try:
        settle_worker_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (max(YOUNG_THRESHOLD, before[0]), before[1], before[2])
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles are still found
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_only_the_first_call_freezes(monkeypatch):
    monkeypatch.setattr(shared.heap, "_settled", True)
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    settle_worker_heap()
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)
