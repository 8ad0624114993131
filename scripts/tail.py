"""``insession tail``: print what arrives on an output topic (pages, churn alerts, dead letters)."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

__all__ = ["add_parser"]

_TOPICS = ("recommendations", "churn-alerts", "dead-letters", "events", "catalog")


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("tail", help="print messages of a topic as JSON lines")
    parser.add_argument("which", choices=_TOPICS, help="which insession topic")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest")
    parser.add_argument("--max", type=int, default=0, help="stop after N messages (0: never)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Consume in a throwaway group and print each value (dead letters decoded for reading)."""
    import orjson

    from schemas.codec import decode_dead_letter
    from stream.config import Settings
    from stream.kafka_clients import make_consumer

    settings = Settings.from_env()
    topic = {
        "recommendations": settings.recommendations_topic,
        "churn-alerts": settings.churn_topic,
        "dead-letters": settings.dead_letter_topic,
        "events": settings.events_topic,
        "catalog": settings.catalog_topic,
    }[args.which]
    consumer = make_consumer(
        settings,
        f"insession-tail-{uuid.uuid4().hex[:8]}",
        **{"auto.offset.reset": "earliest" if args.from_beginning else "latest"},
    )
    consumer.subscribe([topic])
    seen = 0
    try:
        while not args.max or seen < args.max:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = message.value() or b""
            if args.which == "dead-letters":
                dead_letter = decode_dead_letter(value)
                value = orjson.dumps(
                    {
                        "error": dead_letter.error,
                        "source": f"{dead_letter.source_topic}/{dead_letter.source_partition}"
                        f"@{dead_letter.source_offset}",
                        "original": dead_letter.original.decode(errors="replace")[:500],
                    }
                )
            sys.stdout.write(value.decode(errors="replace") + "\n")
            sys.stdout.flush()
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
