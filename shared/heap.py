"""The worker's garbage collector: leave alone what lives as long as the process, and collect the young less often.

A batch is some 100 parsed items, tens of thousands of short-lived dicts and lists, and a worker
handles a dozen at once. At the default threshold (a young collection every 700 allocations) the
collector ran about 60 times a second on the submit instance of `bench.pipeline_vs_pool`, each
pass walking every in-flight batch and, in older generations, every object imported at start-up:
1.5 of its 8.5 CPU-seconds. Freezing the start-up objects (modules, clients) takes them out of
every later pass, and a higher young threshold makes the passes rarer: 0.7 s in the same run.
Objects are still freed by reference counting the moment they are dropped; the collector only
looks for cycles, so this changes when cycles are found, not what is kept.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)


_settled = False


def settle_worker_heap() -> None:
    """Call once the worker's modules and clients are loaded: freeze them, and space young collections out.

    Only the first call does anything: objects frozen later (when a test process rebuilds its
    clients) would never be collected if they became garbage.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)
