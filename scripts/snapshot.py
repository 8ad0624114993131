"""``insession snapshot``: copy topics to an Avro file without touching any consumer group."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser(
        "snapshot",
        help="write the messages of topics to an Avro container file (for replay / evaluate)",
        description="Read topics by direct partition assignment (no group join, no commits) and "
        "write key, value, timestamp, headers, partition and offset of every message to an Avro "
        "object container file with the SnapshotRecord schema embedded.",
    )
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="topics to snapshot")
    parser.add_argument("--out", required=True, help="output file (.avro)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="every message (the default)")
    start.add_argument(
        "--since", metavar="TS", help="messages with timestamp >= TS (epoch ms/s or ISO-8601)"
    )
    end = parser.add_mutually_exclusive_group()
    end.add_argument(
        "--until-end",
        action="store_true",
        help="stop at each partition's end when reached (the default)",
    )
    end.add_argument(
        "--until",
        metavar="TS",
        help="messages with timestamp <= TS; a future TS keeps following the topics until then",
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=10.0, help="give up on a silent partition (10 s)"
    )
    parser.add_argument(
        "--codec", choices=("null", "deflate"), default="deflate", help="Avro block codec"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Take the snapshot and say what was written."""
    from stream.config import Settings
    from stream.topic_snapshot import parse_timestamp, snapshot_topics

    try:
        since = parse_timestamp(args.since) if args.since else None
        until = parse_timestamp(args.until) if args.until else None
        stats = snapshot_topics(
            Settings.from_env(),
            args.topics,
            args.out,
            since_ms=since,
            until_ms=until,
            idle_timeout_s=args.idle_timeout,
            codec=args.codec,
            progress=not args.quiet,
        )
    except ValueError as error:
        print(f"insession snapshot: {error}", file=sys.stderr)
        return 2
    per_topic = ", ".join(f"{t} {n}" for t, n in sorted(stats.per_topic.items())) or "none"
    print(
        f"wrote {stats.written} messages ({per_topic}) to {stats.path} in {stats.seconds} s",
        file=sys.stderr,
    )
    if stats.timed_out:
        print(
            f"warning: no end reached (idle timeout) on {', '.join(stats.timed_out)}",
            file=sys.stderr,
        )
        return 1
    return 0
