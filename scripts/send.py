"""``insession send``: publish JSON-lines events or catalog items to Kafka, keyed correctly."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser(
        "send", help="publish JSON lines (events or --catalog items) from a file or stdin"
    )
    parser.add_argument("file", nargs="?", default="-", help="JSON-lines file (default stdin)")
    parser.add_argument("--catalog", action="store_true", help="lines are catalog items")
    parser.add_argument("--topic", help="override the topic")
    parser.add_argument(
        "--format", choices=("json", "avro"), default="json", help="wire format to publish"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Publish every line; lines that are not JSON are sent as-is (they will be dead-lettered)."""
    from schemas.codec import (
        DecodeError,
        decode_catalog_item,
        decode_event,
        encode_catalog_item,
        encode_event,
    )
    from stream.config import Settings
    from stream.kafka_clients import make_producer

    settings = Settings.from_env()
    topic = args.topic or (settings.catalog_topic if args.catalog else settings.events_topic)
    key_field = "item_id" if args.catalog else "user_id"
    producer = make_producer(settings)
    stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    sent = 0
    with stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            value, key = line, None
            try:
                key = str(orjson.loads(line).get(key_field, "")).encode() or None
                if args.format == "avro":
                    value = (
                        encode_catalog_item(decode_catalog_item(line), "avro")
                        if args.catalog
                        else encode_event(decode_event(line), "avro")
                    )
            except (orjson.JSONDecodeError, AttributeError, DecodeError):
                pass  # publish as-is: the worker dead-letters it with the reason
            producer.produce(topic, value=value, key=key)
            producer.poll(0)
            sent += 1
    producer.flush(30)
    print(f"sent {sent} messages to {topic}", file=sys.stderr)
    return 0
