"""The Faust floor: a Faust agent that forwards every event unchanged, nothing else.

Same runtime settings as the insession worker (``stream.app.WorkerApp``): our ``insession://``
transport with the same consumer fetch wait, producer linger and acks, uvloop, ``take_events``
batches, every output awaited to the broker's ack before the batch counts as done. What the
worker adds on top of this (decode, engine, encode, Redis checkpoint) is what the ratio
insession / Faust measures. Runs as its own process:
``python -m stream.bench.faust_forward worker`` with ``BENCH_BOOTSTRAP``, ``BENCH_IN_TOPIC``,
``BENCH_OUT_TOPIC``, ``BENCH_APP_ID``, ``BENCH_PARTITIONS`` and ``INSESSION_*`` (fetch wait,
linger, batch size) in the environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import faust
import uvloop

from stream.app import make_faust_app, raw_topic
from stream.config import Settings

__all__ = ["create_forwarder", "main"]


def create_forwarder(settings: Settings, in_topic: str, out_topic: str, app_id: str) -> Any:
    """The Faust app with its one forwarding agent."""
    app = make_faust_app(settings, app_id)
    source = raw_topic(app, in_topic, settings.partitions)
    sink = raw_topic(app, out_topic, settings.partitions)

    async def forward_events(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            acks = [
                await sink.send(key=event.message.key, value=event.message.value) for event in batch
            ]
            for ack in acks:
                await ack

    app.agent(source, name="forward_events", concurrency=1)(forward_events)
    return app


def main() -> int:
    env = os.environ
    settings = Settings.from_env(
        bootstrap_servers=env["BENCH_BOOTSTRAP"], partitions=int(env.get("BENCH_PARTITIONS", "8"))
    )
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_forwarder(
        settings, env["BENCH_IN_TOPIC"], env["BENCH_OUT_TOPIC"], env["BENCH_APP_ID"]
    )
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
