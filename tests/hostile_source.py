"""A tiny STAC-API-like server on 127.0.0.1 that answers the way an attacker (or a broken API) would.

Routes (GET or POST; a POST body is read and ignored):
- `/pages?total=T&limit=L&offset=O`: T generated items, L per page, with `next` links (a well-behaved search);
- `/empty?n=K`: a page with no features that links to `/empty?n=K+1`, forever;
- `/repeat`: the same two items on every page, linking to itself, forever;
- `/null`: a page whose `features` is null;
- `/then-null`: a page of items whose `next` page has `features: null`;
- `/trickle?size=N&every=S`: a 200 with Content-Length N, sent one byte every S seconds.
`requests` counts the requests per route; `trickles_finished` counts trickles sent to their last byte.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from tests.helpers import make_item


class HostileSource(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: Counter[str] = Counter()
        self.trickles_finished = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def page(features: Any, next_href: str | None = None) -> dict[str, Any]:
    links = [{"rel": "next", "href": next_href, "method": "GET"}] if next_href else []
    return {"type": "FeatureCollection", "features": features, "links": links}


class _Handler(BaseHTTPRequestHandler):
    server: HostileSource

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = parts.path
        self.server.requests[route] += 1
        base = self.server.url
        if route == "/pages":
            total, limit, offset = int(query.get("total", 10)), int(query.get("limit", 10)), int(query.get("offset", 0))
            features = [make_item(f"p{n:06d}") for n in range(offset, min(offset + limit, total))]
            following = f"{base}/pages?total={total}&limit={limit}&offset={offset + limit}" if offset + limit < total else None
            self._json(page(features, following))
        elif route == "/empty":
            self._json(page([], f"{base}/empty?n={int(query.get('n', 0)) + 1}"))
        elif route == "/repeat":
            self._json(page([make_item("again-1"), make_item("again-2")], f"{base}/repeat"))
        elif route == "/null":
            self._json(page(None, f"{base}/null"))
        elif route == "/then-null":
            self._json(page([make_item("before-null")], f"{base}/null"))
        elif route == "/trickle":
            self._trickle(int(query.get("size", 100)), float(query.get("every", 0.2)))
        else:
            self.send_error(404)

    def _json(self, body: dict[str, Any]) -> None:
        data = orjson.dumps(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/geo+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _trickle(self, size: int, every: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            for _ in range(size):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(every)
        except OSError:
            return  # the client hung up: what a deadline does
        self.server.trickles_finished += 1


@contextmanager
def hostile_source() -> Iterator[HostileSource]:
    server = HostileSource()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
