"""A plain file server on 127.0.0.1 for sources that live on a web server (static catalogs, GeoParquet URLs).

`served(directory)` serves the directory's files as they are; `server.requests` lists the paths asked for.
`delay_seconds` holds each answer back that long (a stand-in for a remote host's round trip, for benchmarks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class StaticFiles(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops connections a parallel client opens at once (each then waits 1 s)

    def __init__(self, directory: Path, *, delay_seconds: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))
        self.requests: list[str] = []
        self.delay_seconds = delay_seconds

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(SimpleHTTPRequestHandler):
    server: StaticFiles

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests.append(self.path)
        if self.server.delay_seconds:
            time.sleep(self.server.delay_seconds)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass


@contextmanager
def served(directory: Path, *, delay_seconds: float = 0.0) -> Iterator[StaticFiles]:
    server = StaticFiles(directory, delay_seconds=delay_seconds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
