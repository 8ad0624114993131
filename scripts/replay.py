"""``insession replay``: publish a snapshot again, per-key order and timestamps preserved."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser(
        "replay",
        help="re-publish an `insession snapshot` file (order per key, original timestamps)",
        description="Send every message of a snapshot with its key, value, headers and original "
        "timestamp, in timestamp order with each source partition's order kept, paced by "
        "--speed (relative timing kept), --max-rate or --as-fast-as-possible.",
    )
    parser.add_argument("file", help="snapshot file (.avro)")
    parser.add_argument("--topic", help="send everything to this topic (default: original topics)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed", type=float, help="time factor: 1 = real time (default), 10 = 10x faster"
    )
    pace.add_argument("--max-rate", type=float, metavar="N", help="at most N messages per second")
    pace.add_argument("--as-fast-as-possible", action="store_true", help="no pacing")
    parser.add_argument(
        "--keep-partitions",
        action="store_true",
        help="send each message to its original partition number (default: by key)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay and report; exit 1 if the broker did not acknowledge every message."""
    from stream.config import Settings
    from stream.topic_replay import replay_snapshot

    speed = None
    if not args.as_fast_as_possible and args.max_rate is None:
        speed = args.speed if args.speed is not None else 1.0
    try:
        stats = replay_snapshot(
            Settings.from_env(),
            args.file,
            topic=args.topic,
            speed=speed,
            max_rate=args.max_rate,
            keep_partitions=args.keep_partitions,
            progress=not args.quiet,
        )
    except (OSError, ValueError) as error:
        print(f"insession replay: {error}", file=sys.stderr)
        return 2
    per_topic = ", ".join(f"{t} {n}" for t, n in sorted(stats.per_topic.items())) or "none"
    print(f"sent {stats.sent} messages ({per_topic}) in {stats.seconds} s", file=sys.stderr)
    if stats.failed:
        print(f"{stats.failed} failed: {'; '.join(stats.errors)}", file=sys.stderr)
        return 1
    return 0
