"""Three local instances (separate processes) share one Azurite and one emulator that allows 5 calls/s.

Each instance paces itself at its share of GEOCATALOG_MAX_CALLS_PER_SECOND, so together they stay
under the service's limit: every item is ingested and hardly any call is answered 429. (Without
pacing the same job draws dozens of 429s: `bench/pacing.py` prints both.)
"""

from __future__ import annotations

import os
from contextlib import ExitStack

from devhost.instance import InstanceProcess
from devhost.jobs import send_items, wait_for_jobs
from emulator import EmulatorOptions, Faults, Timings
from shared.store.status import JobState
from tests.helpers import make_collection, make_item

SERVICE_LIMIT = 5
APP_LIMIT = 4  # headroom under the service's limit, as in production (40 against about 50)
# Each process hosts submit, work and poll (which Flex runs on separate instances) and paces each
# group's calls at its part of APP_LIMIT / 3: the three together pace at APP_LIMIT.


def test_three_paced_instances_stay_under_the_service_limit(make_stack) -> None:
    faults = Faults(rate_limit_per_second=SERVICE_LIMIT, retry_after_seconds=1)
    stack = make_stack(
        settings={"GEOCATALOG_MAX_CALLS_PER_SECOND": str(APP_LIMIT), "GEOCATALOG_MAX_INSTANCES": "3", "BATCH_MAX_ITEMS": "1"},
        emulator_options=EmulatorOptions(timings=Timings(0.1, 0.2), faults=faults),
    )
    stack.pause_functions()  # the stack's in-process host would be a fourth, unaccounted instance
    stack.emulator.call(lambda: stack.emulator.catalog.put_collection(make_collection("paced")))
    items = [make_item(f"paced-{n}") for n in range(40)]
    with ExitStack() as instances:
        for _ in range(3):
            instances.enter_context(InstanceProcess(os.environ))
        send_items(stack.services, items, collection="paced", job_id="paced-1")
        job = wait_for_jobs(stack.services, ["paced-1"], timeout=180)["paced-1"]
    assert (job.state, job.items_succeeded, job.batch_count) == (JobState.SUCCEEDED, 40, 40)
    held = stack.emulator.call(lambda: sorted(stack.emulator.catalog.items["paced"]))
    assert held == sorted(item["id"] for item in items)
    posts = sum(n for key, n in stack.emulator.app.stats.by_route.items() if key.startswith("POST"))
    assert posts >= 40
    assert stack.emulator.app.stats.throttled <= 3  # unpaced (GEOCATALOG_MAX_CALLS_PER_SECOND=0), this job drew 10
