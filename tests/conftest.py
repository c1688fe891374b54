"""Fixtures compose: settings -> emulator -> clients -> (in test_pipeline_*) a running stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import EmulatorOptions, EmulatorServer, Timings
from emulator.tls import write_self_signed_pem
from shared.catalog.auth import StaticToken
from shared.catalog.client import GeoCatalogClient

FAST = Timings(pending_seconds=0.05, running_seconds=0.05)


@pytest.fixture(autouse=True)
def _isolated_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tls_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_self_signed_pem(tmp_path_factory.mktemp("tls") / "emulator.pem")


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(timings=Timings(0.05, 0.05))) as server:
        yield server


@pytest.fixture
def tls_emulator(tls_pem: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(timings=Timings(0.05, 0.05), tls_cert=str(tls_pem))) as server:
        yield server


@pytest.fixture(params=["2026-04-15", "2024-01-31-preview"])
def api_version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def client(emulator: EmulatorServer, api_version: str) -> GeoCatalogClient:
    return GeoCatalogClient(emulator.url, StaticToken("dev-token"), api_version=api_version, timeout=5)

ROOT = Path(__file__).resolve().parent.parent


# ----- Azurite and the local stack (integration and end-to-end tests) ----------------------------

import itertools  # noqa: E402

from devhost.azurite import Azurite  # noqa: E402
from devhost.stack import LocalStack  # noqa: E402

_stack_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as server:
        yield server


def unique_storage_names() -> dict[str, str]:
    """Fresh queue, container and table names, so tests share one Azurite without seeing each other."""
    n = next(_stack_numbers)
    return {"SUBMIT_QUEUE": f"t{n}-submit", "WORK_QUEUE": f"t{n}-work", "POLL_QUEUE": f"t{n}-poll",
            "DROP_EVENTS_QUEUE": f"t{n}-drop-events", "JOB_EVENTS_QUEUE": f"t{n}-job-events",
            "PAYLOAD_CONTAINER": f"t{n}-payloads", "DROP_CONTAINER": f"t{n}-drop", "STATUS_TABLE": f"Status{n}",
            "ITEM_INDEX_TABLE": f"Items{n}"}


@pytest.fixture
def make_stack(azurite: Azurite):
    """Build a running LocalStack: `make_stack(settings={...}, emulator_options=..., queue_overrides=...)`."""
    stacks: list[LocalStack] = []

    def build(*, settings: dict[str, str] | None = None, emulator_options: EmulatorOptions | None = None,
              queue_overrides: dict | None = None) -> LocalStack:
        stack = LocalStack(
            emulator_options=emulator_options or EmulatorOptions(timings=Timings(0.1, 0.2)),
            settings={**unique_storage_names(), **(settings or {})},
            azurite=azurite,
            queue_overrides=queue_overrides or {},
        )
        stacks.append(stack.start())
        return stack

    yield build
    for stack in stacks:
        stack.stop()
