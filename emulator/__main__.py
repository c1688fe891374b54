"""`python -m emulator --port PORT [options]`: serve the GeoCatalog emulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from emulator.catalog import Timings
from emulator.faults import Faults
from emulator.server import EmulatorOptions, EmulatorServer
from emulator.tls import write_self_signed_pem
from shared.heap import settle_worker_heap


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed at start)")
    p.add_argument("--token", help="accept only this bearer token (default: any non-empty token)")
    p.add_argument("--pending-seconds", type=float, default=0.3, help="time an operation stays Pending")
    p.add_argument("--running-seconds", type=float, default=0.5, help="time an operation stays Running")
    p.add_argument("--seconds-per-item", type=float, default=0.0, help="extra Running time per item")
    p.add_argument("--moving-counters", action="store_true",
                   help="operation counters (TotalSuccessfulItems/TotalPendingItems) move while Running")
    p.add_argument("--atomic-batches", action="store_true",
                   help="a FeatureCollection with any bad item ingests nothing (default: the good items land)")
    p.add_argument("--sqlite", metavar="FILE", help="write state through to this SQLite file (and load it at start)")
    p.add_argument("--tls", metavar="PEM", help="serve https; the PEM (cert+key) is created if missing")
    p.add_argument("--rate-limit-fraction", type=float, default=0.0, help="fraction of requests answered 429")
    p.add_argument("--rate-limit-per-second", type=float, default=0.0,
                   help="answer 429 + Retry-After to API requests above this rate (a token bucket, 1 s of burst)")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 429/503")
    p.add_argument("--server-error-fraction", type=float, default=0.0, help="fraction of requests answered 5xx")
    p.add_argument("--latency-ms", type=int, default=0, help="latency added to every request")
    p.add_argument("--fail-operations", metavar="CODE", default="", help="operations fail with this error code")
    p.add_argument("--fail-operations-fraction", type=float, default=1.0)
    p.add_argument("--stuck-operations-fraction", type=float, default=0.0, help="operations that never finish")
    p.add_argument("--partial-failure-fraction", type=float, default=0.0, help="items of each batch that fail")
    p.add_argument("--require-signed-assets", action="store_true", help="fail items whose asset hrefs carry no SAS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source-items", metavar="FILE", help="FeatureCollection served by the source STAC API at /source/search")
    p.add_argument("--sas-token-seconds", type=float, default=3600.0, help="lifetime of tokens from /source/sas/token/{collection}")
    return p.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> EmulatorOptions:
    faults = Faults(
        rate_limit_fraction=args.rate_limit_fraction, rate_limit_per_second=args.rate_limit_per_second,
        retry_after_seconds=args.retry_after,
        server_error_fraction=args.server_error_fraction, latency_ms=args.latency_ms,
        fail_operations_code=args.fail_operations, fail_operations_fraction=args.fail_operations_fraction,
        stuck_operations_fraction=args.stuck_operations_fraction,
        partial_failure_fraction=args.partial_failure_fraction,
        require_signed_assets=args.require_signed_assets, seed=args.seed,
    )
    timings = Timings(args.pending_seconds, args.running_seconds, args.seconds_per_item)
    tls = None
    if args.tls:
        tls = str(Path(args.tls) if Path(args.tls).exists() else write_self_signed_pem(Path(args.tls)))
    return EmulatorOptions(host=args.host, port=args.port, token=args.token, timings=timings, faults=faults,
                           atomic_batches=args.atomic_batches, moving_counters=args.moving_counters,
                           sqlite_path=args.sqlite, tls_cert=tls,
                           source_items=args.source_items, sas_token_seconds=args.sas_token_seconds)


def main(argv: list[str]) -> int:
    server = EmulatorServer(options_from_args(parse_args(argv))).start()
    settle_worker_heap()  # it parses every posted item: the same garbage profile as a worker
    print(f"GeoCatalog emulator listening at {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
