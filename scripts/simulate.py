"""``insession simulate``: closed-loop simulated users against a live worker (or in-process)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser(
        "simulate",
        help="simulated users with hidden tastes react to the pages the worker serves",
        description=(
            "Publish a synthetic catalog, then run simulated users in a closed loop: each reads "
            "the page the worker last served them and reacts (impressions, hovers, clicks, "
            "scroll-pasts, plays, pauses, completions, drop-offs). Prints per-arm outcomes next "
            "to the oracle. Needs a running broker and worker (same INSESSION_* settings), "
            "unless --in-process."
        ),
    )
    parser.add_argument("--users", type=int, default=2_000, help="simulated users (2000)")
    parser.add_argument("--items", type=int, default=400, help="catalog titles (400)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--rate",
        type=float,
        default=300.0,
        help="target events per second (300); the loop slows down when the worker lags",
    )
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="no pacing: as fast as the worker answers (the loop waits for each user's page)",
    )
    parser.add_argument("--duration", type=float, default=180.0, help="wall seconds (180)")
    parser.add_argument(
        "--sim-minutes", type=float, help="stop after this much simulated time (in-process: 60)"
    )
    parser.add_argument("--seed", type=int, default=7, help="world and users seed (7)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.3,
        help="share of simulated time treated as warm-up in 'after warm-up' numbers (0.3)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the engine in this process instead of against a worker (deterministic)",
    )
    parser.add_argument(
        "--arms", help="in-process only: arms like 'personalized=0.5,holdout=0.5' (engine default)"
    )
    parser.add_argument(
        "--run-id", help="user-id prefix (default: random when live, so runs never collide)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the simulation."""
    from stream.simulation.runner import SimulateOptions, run_simulate

    return run_simulate(
        SimulateOptions(
            users=args.users,
            items=args.items,
            rate=None if args.as_fast_as_possible else args.rate,
            duration_s=args.duration,
            sim_minutes=args.sim_minutes,
            seed=args.seed,
            warmup_fraction=args.warmup,
            json=args.json,
            bootstrap=args.bootstrap,
            in_process=args.in_process,
            arms=args.arms,
            run_id=args.run_id,
        )
    )
