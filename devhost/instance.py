"""More Functions instances: `function_app.py` on the local host, each in its own process.

The local stack runs the app in the test's own process, where every function shares one set of
clients (`services_from_env` is cached per process). Anything an instance keeps to itself, such as
its call pacer, needs real separate processes to be tested honestly: `InstanceProcess` starts one,
configured by the environment it is given (the same settings as the stack's), and stops it.

    python -m devhost.instance [--functions poll,sweep]   # until SIGTERM; prints "ready" once listening

`--functions` runs only those functions, as a Flex instance runs one function's scaling group
(`FUNCTION_GROUPS` names Flex's groups for this app).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Collection, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "ready"
# Flex scales each queue-triggered function on instances of its own; the timer is a singleton anywhere.
# Three groups stand in for that here: planning (blob_created) shares the submit instance, as on an instance
# of its own it measured no faster on two cores (docs/performance.md). No function reads the poison queues
# but the sweep timer, which drains them.
FUNCTION_GROUPS = {
    "submit": ("submit", "blob_created"),
    "work": ("work",),
    "poll": ("poll", "sweep"),
}


class InstanceProcess:
    """One local Functions instance in a child process (`with InstanceProcess(env) as instance:`)."""

    def __init__(self, env: Mapping[str, str], functions: Collection[str] | None = None) -> None:
        self._env = dict(env)
        self._functions = functions
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> InstanceProcess:
        only = ["--functions", ",".join(self._functions)] if self._functions else []
        self._process = subprocess.Popen([sys.executable, "-m", "devhost.instance", *only], cwd=ROOT, env=self._env,
                                         stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if line != READY:
            self.stop()
            raise RuntimeError(f"local instance did not start: {line!r}")
        return self

    @property
    def pid(self) -> int | None:
        """The instance's process id (benchmarks read its CPU time), None before start."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> InstanceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    from devhost.queue_host import LocalFunctionsHost

    logging.basicConfig(level=logging.WARNING, format=f"[instance {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="one local Functions instance")
    parser.add_argument("--functions", default="", help="comma-separated function names (default: all)")
    only = [name for name in parser.parse_args().functions.split(",") if name] or None
    function_app = importlib.import_module("function_app")
    host = LocalFunctionsHost(function_app.app, host_json=ROOT / "host.json", env=os.environ, functions=only).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sys.stdout.write(f"{READY}\n")  # the parent waits for this line
    sys.stdout.flush()
    stop.wait()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
