"""What the Functions host would index from function_app.py: names, triggers, queues, connections."""

from __future__ import annotations

import json
import re

import function_app
from devhost.queue_host import QueueOptions, functions_of, resolve_setting_names
from tests.conftest import ROOT


def bindings() -> dict[str, list[dict]]:
    return {f.get_function_name(): json.loads(f.get_function_json())["bindings"] for f in functions_of(function_app.app)}


def test_the_queue_functions_and_their_queues() -> None:
    found = {name: (b[0]["type"], b[0]["queueName"], b[0]["connection"], b[0]["direction"])
             for name, b in bindings().items() if b[0]["type"] == "queueTrigger"}
    assert found == {
        "submit": ("queueTrigger", "%SUBMIT_QUEUE%", "AzureWebJobsStorage", "IN"),
        "work": ("queueTrigger", "%WORK_QUEUE%", "AzureWebJobsStorage", "IN"),
        "poll": ("queueTrigger", "%POLL_QUEUE%", "AzureWebJobsStorage", "IN"),
        "blob_created": ("queueTrigger", "%DROP_EVENTS_QUEUE%", "AzureWebJobsStorage", "IN"),
    }
    assert all(len(b) == 1 for b in bindings().values())  # no output bindings: clients are SDK-based


def test_the_sweeper_runs_on_a_timer_from_settings() -> None:
    timer = bindings()["sweep"][0]
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "%SWEEP_SCHEDULE%")
    assert set(bindings()) == {"submit", "work", "poll", "blob_created", "sweep"}  # the sweeper drains the poison queues


def test_binding_expressions_resolve_from_settings() -> None:
    env = {"SUBMIT_QUEUE": "stac-submit"}
    assert resolve_setting_names("%SUBMIT_QUEUE%-poison", env) == "stac-submit-poison"


def test_host_json_queue_settings_are_what_the_app_assumes() -> None:
    options = QueueOptions.from_host_json(ROOT / "host.json")
    assert options.message_encoding == "none"  # we decode raw and base64 bodies ourselves
    assert options.max_dequeue_count == 5  # == MAX_DEQUEUE_COUNT's default
    assert options.max_polling_seconds <= 5
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"


def test_local_settings_example_lists_every_setting() -> None:
    from shared.settings import DEFAULTS

    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert example["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert set(DEFAULTS) <= set(example)


def documented_settings() -> dict[str, str]:
    """docs/configuration.md's settings table: name -> default as written."""
    page = (ROOT / "docs" / "configuration.md").read_text().split("## App settings")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([A-Za-z0-9_]+)` \| ([^|]+) \|", page, re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_the_configuration_page_documents_every_setting_with_its_default() -> None:
    from shared.settings import DEFAULTS, STORAGE_CONNECTION

    def written(default: str | None) -> str:
        return "(required)" if default is None else "(empty)" if default == "" else f"`{default}`"

    documented = documented_settings()
    assert documented.pop(STORAGE_CONNECTION) == "(required)"
    assert documented == {name: written(default) for name, (default, _) in DEFAULTS.items()}
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert set(documented) | {STORAGE_CONNECTION} <= set(example)
