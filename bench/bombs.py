"""Issue 23's bombs against the bounded readers: the planner's peak RSS for each, beside a normal job's.

Each case runs in a fresh child process that plans one job exactly as the submit function does
(`plan_job`, then every plan message it hands on, by `plan_segment`, in the same process), against
Azurite and the GeoCatalog emulator, with the default caps:
- baseline: an `items_ref` NDJSON blob of 100 real Sentinel-2 items;
- ndjson.gz bomb: a ~300 KiB `.ndjson.gz` that inflates to one 300 MiB line (cap MAX_LINE_BYTES);
- json.gz bomb: a ~200 KiB `.json.gz` holding one 200 MiB string (cap MAX_ITEM_BYTES);
- search, streamed: a STAC search (a local server of Sentinel-2 items, 250 per page) with
  `max_items` N and 5N, planned page by page into batches: RSS should not grow with N;
- search, collected: the same 5N results gathered into one list, as the search used to be.

    .venv/bin/python -m bench.bombs [--search-items 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT.parent / "shared" / "data" / "stac-real" / "pc-sentinel-2-l2a-single-item.json"
PAGE = 250


def sentinel_item(n: int) -> bytes:
    return orjson.dumps({**orjson.loads(TEMPLATE.read_bytes()), "id": f"s2-{n:08d}"})


class _Pages(BaseHTTPRequestHandler):
    """`/search?offset=O`: PAGE Sentinel-2 items, then a `next` link, forever."""

    template = b""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        offset = int(parse_qs(urlsplit(self.path).query).get("offset", ["0"])[0])
        host = f"http://127.0.0.1:{self.server.server_address[1]}"
        features = b",".join(self.template.replace(b"__ID__", b"s2-%08d" % n) for n in range(offset, offset + PAGE))
        links = orjson.dumps([{"rel": "next", "href": f"{host}/search?offset={offset + PAGE}"}])
        body = b'{"type":"FeatureCollection","features":[' + features + b'],"links":' + links + b"}"
        self.send_response(200)
        self.send_header("Content-Type", "application/geo+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_search() -> ThreadingHTTPServer:
    item = orjson.loads(TEMPLATE.read_bytes())
    _Pages.template = orjson.dumps({**item, "id": "__ID__"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def gzip_bomb(head: bytes, size: int, tail: bytes) -> bytes:
    """gzip of head + size bytes of "a" + tail, compressed a MiB at a time (never held whole)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"a" * (1 << 20)
    parts = [compressor.compress(head)] + [compressor.compress(chunk) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.compress(tail), compressor.flush()])


def child(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.hand_on import HandOnInProcess
    from shared.inputs.search import BoundedSearch, SearchBounds
    from shared.messages import JobRequest, PlanMessage
    from shared.services import build_services
    from shared.settings import Settings
    from shared.steps.job_claims import JobClaim
    from shared.steps.planning import plan_job
    from shared.steps.segments import plan_segment

    services = build_services(Settings.from_env(spec["env"]))
    started = time.perf_counter()
    body = spec["body"]
    if spec.get("collect"):  # the search as it was: every result in one list
        search = body["search"]
        pages = lambda deadline: services.sources.search_pages(search["url"], {}, method="GET", deadline=deadline)  # noqa: E731
        found = list(BoundedSearch(pages, SearchBounds.of(services.settings, search["max_items"])))
        return {"outcome": f"{len(found)} items in memory", "seconds": time.perf_counter() - started}
    sender = services.queues = HandOnInProcess(services.queues)
    now = datetime.now(UTC)
    job_id = body["job_id"]
    plan_job(JobRequest.from_json(body), job_id=job_id, claim=JobClaim.of_delivery(body, "bench-message"), services=services, now=now)
    while sender.plans:
        plan_segment(PlanMessage.from_json(orjson.loads(sender.plans.pop())), services=services, now=now)
    job = services.status.get_job(job_id)
    rejected = [row.rejected_items for row in services.status.batches(job_id) if row.batch_id.startswith("rejected-")]
    state = "planned" if job.state.value == "Running" else job.state.value
    outcome = f"{state}, {job.item_count} items, {job.batch_count} batches"
    detail = "; ".join(rejected) or job.error_message
    return {"outcome": outcome + (f": {detail[:110]}" if detail else ""), "seconds": time.perf_counter() - started}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    output = subprocess.run([sys.executable, "-m", "bench.bombs", "--child", json.dumps(spec)], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search-items", type=int, default=500, help="N: searches of N and 5N items")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        figures = child(json.loads(args.child))
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return

    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from emulator import EmulatorServer
    from shared.settings import DEFAULTS

    line_cap, item_cap = int(DEFAULTS["MAX_LINE_BYTES"][0]), int(DEFAULTS["MAX_ITEM_BYTES"][0])
    print(f"machine: {os.cpu_count()} cores; default caps MAX_LINE_BYTES {line_cap >> 20} MiB, MAX_ITEM_BYTES {item_cap >> 20} MiB")
    server = serve_search()
    with Azurite() as azurite, EmulatorServer() as emulator:
        emulator.call(lambda: emulator.catalog.put_collection({"type": "Collection", "id": "bench", "stac_version": "1.1.0",
                                                               "description": "bench", "license": "other", "links": [],
                                                               "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                                                          "temporal": {"interval": [[None, None]]}}}))
        env = {"AzureWebJobsStorage": azurite.connection_string, "GEOCATALOG_ENDPOINT": emulator.url,
               "GEOCATALOG_TOKEN": "unused", "ITEMS_REF_CONTAINERS": "bench",
               "SOURCE_URL_ALLOWLIST": "127.0.0.1", "SOURCE_ALLOW_LOOPBACK": "true"}
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        service.create_container("bench")

        def blob(name: str, data: bytes) -> str:
            service.get_blob_client("bench", name).upload_blob(data, overwrite=True)
            return f"bench/{name}"

        normal = b"".join(sentinel_item(n) + b"\n" for n in range(100))
        head = b'{"type":"Feature","id":"bomb","properties":{"s":"'
        line_bomb, string_bomb = gzip_bomb(head, 300 << 20, b'"}}\n'), gzip_bomb(head, 200 << 20, b'"}}')
        n = args.search_items
        search_url = f"http://127.0.0.1:{server.server_address[1]}/search"
        cases = [
            ("baseline: 100-item NDJSON job", "-", {"items_ref": {"blob": blob("normal.ndjson", normal)}}),
            (f"ndjson.gz bomb ({len(line_bomb) >> 10} KiB -> 300 MiB line)", "MAX_LINE_BYTES",
             {"items_ref": {"blob": blob("bomb.ndjson.gz", line_bomb)}}),
            (f"json.gz bomb ({len(string_bomb) >> 10} KiB -> 200 MiB string)", "MAX_ITEM_BYTES",
             {"items_ref": {"blob": blob("bomb.json.gz", string_bomb)}}),
            (f"search streamed, max_items {n}", "pages", {"search": {"url": search_url, "method": "GET", "max_items": n}}),
            (f"search streamed, max_items {5 * n}", "pages", {"search": {"url": search_url, "method": "GET", "max_items": 5 * n}}),
        ]
        rows = []
        for number, (name, cap, source) in enumerate(cases):
            body = {"v": 1, "job_id": f"bomb-{number}", "collection": "bench", **source}
            rows.append((name, cap, run_child({"env": env, "body": body})))
        collect = {"v": 1, "job_id": "collect", "search": {"url": search_url, "max_items": 5 * n}}
        rows.append((f"search collected (as before), {5 * n} items", "none", run_child({"env": env, "body": collect, "collect": True})))
    server.shutdown()
    print(f"{'case':52}{'cap':>16}{'peak RSS MB':>13}{'seconds':>9}  outcome")
    for name, cap, figures in rows:
        print(f"{name:52}{cap:>16}{figures['peak_rss_mb']:>13.0f}{figures['seconds']:>9.1f}  {figures['outcome']}")
    print("goal: every bomb's peak RSS within a few tens of MB of the baseline (the cap's size at most), "
          "and the streamed search flat as max_items grows 5x")


if __name__ == "__main__":
    main()
