"""The ``insession`` command: broker, worker, topics, demo and the operator tools."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]

#: Operator tools live in scripts/ as thin wrappers; each module adds its own sub-command.
_TOOL_MODULES = (
    "scripts.demo",
    "scripts.send",
    "scripts.tail",
    "scripts.simulate",
    "scripts.snapshot",
    "scripts.replay",
    "scripts.evaluate",
    "scripts.bench",
)


def _cmd_broker(args: argparse.Namespace) -> int:
    from stream.broker import run_broker_foreground

    return run_broker_foreground(args.port)


def _cmd_worker(args: argparse.Namespace) -> int:
    from stream.worker import run_worker

    return run_worker()


def _cmd_topics(args: argparse.Namespace) -> int:
    from stream.broker import create_topics
    from stream.config import Settings

    settings = Settings.from_env()
    create_topics(settings.bootstrap_servers, settings.output_topics())
    for name, partitions in settings.output_topics().items():
        print(f"{name}\t{partitions} partitions")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="insession",
        description="Streaming engine for real-time, in-session personalization.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu)")
    broker.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (9092)")
    broker.set_defaults(func=_cmd_broker)

    worker = sub.add_parser(
        "worker", help="run a worker (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, INSESSION_*)"
    )
    worker.set_defaults(func=_cmd_worker)

    topics = sub.add_parser("topics", help="create the topics with their partition counts")
    topics.set_defaults(func=_cmd_topics)

    for module_name in _TOOL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # tool not built yet
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``insession`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
