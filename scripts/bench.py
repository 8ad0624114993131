"""``insession bench``: latency and throughput, each beside its baseline, in one run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser(
        "bench",
        help="measure latency and throughput beside the broker and Faust floors",
        description=(
            "Broker floor (confluent-kafka relay), Faust floor (forwarding agent) and insession "
            "(a real worker: event -> page) at the same offered rates of the same traffic, "
            "maximum throughput of each, the engine alone in-process and memory per active "
            "session. Latency is measured from each event's intended send time (no coordinated "
            "omission), in HDR histograms, warm-up excluded. Starts its own embedded broker "
            "unless --bootstrap is given; the worker needs Redis (REDIS_URL)."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--bootstrap", help="use this Kafka instead of an embedded broker (host:port)"
    )
    parser.add_argument(
        "--rates", help="offered rates in events/s, comma-separated (200,1000,3000)"
    )
    parser.add_argument("--duration", type=float, help="measured seconds per rate")
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        help="consumers' fetch max wait for every system (50; Tansu can stall at 10 or less)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to leave out: broker,faust-agent,faust,insession,engine,memory",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    import orjson

    from stream.bench.report import render_table
    from stream.bench.runner import BenchOptions, run_bench

    overrides: dict[str, Any] = {
        "bootstrap": args.bootstrap,
        "redis_url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "skip": frozenset(part.strip() for part in args.skip.split(",") if part.strip()),
    }
    if args.rates:
        overrides["rates"] = tuple(float(rate) for rate in args.rates.split(","))
    if args.duration:
        overrides["duration_s"] = args.duration
    if args.fetch_wait_ms:
        overrides["fetch_wait_ms"] = args.fetch_wait_ms
    options = BenchOptions.quick(**overrides) if args.quick else BenchOptions(**overrides)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run_bench(options, progress)
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_table(result))
    failed = [
        name
        for name in ("broker_floor", "faust_agent_floor", "faust_floor", "insession")
        if "error" in result.get(name, {})
    ]
    return 1 if failed else 0
