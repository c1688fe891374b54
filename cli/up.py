"""`up`: the local stack, kept running until Ctrl-C or SIGTERM.

Azurite keeps its data under `<run dir>/azurite` (Azurite's `--location`), so jobs survive a restart;
the GeoCatalog emulator keeps its catalog in `<run dir>/emulator.sqlite` and takes the port it had
before when that port is free (poll messages in flight name it); `function_app.py` runs on the local
host with the drop-container watcher, which remembers the blob versions it announced in
`<run dir>/drop-events.json`, so uploads made while `up` was down get their events on restart.

Once everything runs it writes `<run dir>/up.json` (the settings the other commands read) and prints
one line starting `ready:`. On Ctrl-C or SIGTERM it stops what it started and removes that file.

The standard `OTEL_*` variables export the app's metrics and spans to the console or an OTLP endpoint
(`devhost.otel`; docs/observability.md); without them nothing is exported.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import orjson

from cli.context import UP_FILE, UpInfo
from devhost.azurite import Azurite
from devhost.otel import configure_from_env
from devhost.stack import LOCAL_SETTINGS, LocalStack
from emulator import EmulatorOptions, Timings
from shared.errors import ConfigurationError

PORTS_FILE = "ports.json"


def running_pid(run_dir: Path) -> int:
    """The pid of an `up` that still runs with this run dir, else 0."""
    info = UpInfo.read(run_dir)
    return info.pid if info is not None and info.is_running else 0


def emulator_port(run_dir: Path) -> int:
    path = run_dir / PORTS_FILE
    return int(orjson.loads(path.read_bytes()).get("emulator", 0)) if path.is_file() else 0


def start_stack(run_dir: Path, *, endpoint: str, atomic_batches: bool) -> tuple[Azurite, LocalStack]:
    azurite = Azurite(location=run_dir / "azurite").start()
    try:
        if endpoint:  # a real GeoCatalog: DefaultAzureCredential (az login), no emulator
            return azurite, LocalStack(emulator_options=None, azurite=azurite, watcher_state=run_dir / "drop-events.json",
                                       settings={"GEOCATALOG_ENDPOINT": endpoint, "GEOCATALOG_TOKEN": ""}).start()
        return azurite, _with_emulator(run_dir, azurite, atomic_batches)
    except BaseException:
        azurite.stop()
        raise


def _with_emulator(run_dir: Path, azurite: Azurite, atomic_batches: bool) -> LocalStack:
    def options(port: int) -> EmulatorOptions:
        return EmulatorOptions(port=port, timings=Timings(pending_seconds=0.5, running_seconds=1.0), atomic_batches=atomic_batches,
                               sqlite_path=str(run_dir / "emulator.sqlite"))

    previous = emulator_port(run_dir)
    try:
        stack = LocalStack(emulator_options=options(previous), azurite=azurite, watcher_state=run_dir / "drop-events.json").start()
    except OSError:  # the old port is taken: any free one (operations in flight then fail as not found)
        stack = LocalStack(emulator_options=options(0), azurite=azurite, watcher_state=run_dir / "drop-events.json").start()
    assert stack.emulator is not None
    port = int(stack.emulator.url.rsplit(":", 1)[1])
    (run_dir / PORTS_FILE).write_bytes(orjson.dumps({"emulator": port}))
    return stack


def up(run_dir: Path, *, endpoint: str = "", atomic_batches: bool = False) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code.

    Raises:
        ConfigurationError: another `up` already runs with this run dir.
    """
    run_dir = run_dir.resolve()
    if pid := running_pid(run_dir):
        raise ConfigurationError(f"`up` already runs (pid {pid}) with {run_dir}; stop it first")
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop_telemetry = configure_from_env()
    azurite, stack = start_stack(run_dir, endpoint=endpoint, atomic_batches=atomic_batches)
    try:
        emulator_url = stack.emulator.url if stack.emulator is not None else ""
        names = set(LOCAL_SETTINGS) | set(stack.settings) | {"AzureWebJobsStorage", "GEOCATALOG_ENDPOINT", "GEOCATALOG_TOKEN"}
        settings = {name: os.environ[name] for name in sorted(names) if name in os.environ}
        (run_dir / UP_FILE).write_bytes(UpInfo(settings, emulator_url, os.getpid()).to_json())
        catalog = f"GeoCatalog emulator at {emulator_url}" if emulator_url else f"GeoCatalog {endpoint}"
        print(f"ready: Azurite blob/queue/table ports {azurite.ports['blob']}/{azurite.ports['queue']}/{azurite.ports['table']} "
              f"(data in {run_dir / 'azurite'}), {catalog}, function_app.py running; settings in {run_dir / UP_FILE}",
              flush=True)
        stop.wait()
    finally:
        (run_dir / UP_FILE).unlink(missing_ok=True)
        stack.stop()
        azurite.stop()
        if stop_telemetry is not None:
            stop_telemetry()  # exports what is still buffered
    print("stopped", flush=True)
    return 0
