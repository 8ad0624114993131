"""``insession demo``: broker + worker + synthetic users for about a minute, printed live."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("demo", help="run broker + worker + synthetic traffic, printed live")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (60)")
    parser.add_argument("--users", type=int, default=60, help="synthetic users (60)")
    parser.add_argument("--rate", type=float, default=150.0, help="events per second (150)")
    parser.add_argument("--seed", type=int, default=7)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from stream.demo import run_demo

    return run_demo(args.duration, args.users, args.rate, args.seed)
