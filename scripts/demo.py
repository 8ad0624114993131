"""``insession demo``: broker + worker + closed-loop simulated users for a few minutes, live."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser(
        "demo",
        help="run broker + worker + simulated users, with a live view and a summary (~3 min)",
    )
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of traffic (180)")
    parser.add_argument("--users", type=int, default=1_500, help="simulated users (1500)")
    parser.add_argument("--items", type=int, default=400, help="catalog titles (400)")
    parser.add_argument("--rate", type=float, default=250.0, help="events per second (250)")
    parser.add_argument("--seed", type=int, default=7)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from stream.demo import run_demo

    return run_demo(args.duration, args.users, args.rate, args.seed, args.items)
