"""Start and stop Azurite (npm package `azurite`, installed by `make setup` into node_modules)."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's published, well-known development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Azurite:
    """Azurite on free ports, in memory (or persisted in `location`). `connection_string` is valid once started."""

    def __init__(self, location: Path | None = None) -> None:
        self.location = location
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> Azurite:
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise FileNotFoundError(f"{binary} is missing: run `make setup` (npm ci) first")
        persistence = ["--location", str(self.location)] if self.location else ["--inMemoryPersistence"]
        self._process = subprocess.Popen(
            [str(binary), "--silent", *persistence, "--skipApiVersionCheck", "--disableTelemetry",
             "--loose", "--blobPort", "0", "--queuePort", "0", "--tablePort", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: list[str] = []
        ready = threading.Event()
        threading.Thread(target=self._read_ports, args=(ready,), daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("Azurite did not start: " + "".join(self.output[-20:]))
        return self

    def _read_ports(self, ready: threading.Event) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line)
            match = re.search(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[\d.]+:(\d+)", line)
            if match:
                self.ports[match.group(1).lower()] = int(match.group(2))
                if len(self.ports) == 3:
                    ready.set()

    @property
    def pid(self) -> int | None:
        """The Azurite process's id (benchmarks read its CPU time), None before start."""
        return self._process.pid if self._process is not None else None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.ports['blob']}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.ports['queue']}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.ports['table']}/{ACCOUNT};"
        )

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
