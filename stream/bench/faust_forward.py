"""The Faust floor: a Faust app that forwards every event unchanged, nothing else.

Same runtime as the insession worker (``stream.app.WorkerApp``): ``make_faust_app`` (our
``insession://`` transport, fetch wait, producer linger and acks), uvloop, the same batch
delivery (``consume_in_batches`` with ``INSESSION_BATCH_MAX``), the same producer path
(``producer_send``), and the same completion discipline: each batch's input is acknowledged
only after every output of it is acknowledged by the broker, in batch order, with at most
``INSESSION_MAX_BATCHES_IN_FLIGHT`` batches waiting (``stream.inflight``). What the worker adds
on top of this (decode, engine, encode, Redis checkpoint) is what the ratio insession / Faust
measures. Runs as its own process: ``python -m stream.bench.faust_forward worker`` with
``BENCH_BOOTSTRAP``, ``BENCH_IN_TOPIC``, ``BENCH_OUT_TOPIC``, ``BENCH_APP_ID``,
``BENCH_PARTITIONS`` and ``INSESSION_*`` (fetch wait, linger, batch size) in the environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import faust
import uvloop

from stream.app import make_faust_app, raw_topic
from stream.config import Settings
from stream.inflight import InFlight
from stream.kafka_transport import consume_in_batches, producer_send

__all__ = ["create_forwarder", "main", "run_forwarder"]


def create_forwarder(settings: Settings, in_topic: str, out_topic: str, app_id: str) -> Any:
    """The Faust app with its one forwarding batch handler."""
    app = make_faust_app(settings, app_id)
    source = raw_topic(app, in_topic, settings.partitions)
    inflight: InFlight | None = None

    async def forward_events(batch: Sequence[Any], received: float) -> None:
        nonlocal inflight
        if inflight is None:  # created in the running loop
            inflight = InFlight(settings.max_batches_in_flight)
        acks = [await producer_send(app, out_topic, m.key, m.value) for m in batch]

        async def complete() -> None:
            for ack in acks:
                await ack
            for message in batch:
                app.consumer.ack(message)

        await inflight.submit(complete)

    consume_in_batches(app, source, forward_events, batch_max=settings.batch_max)
    return app


def run_forwarder(create: Callable[[Settings, str, str, str], Any]) -> int:
    """Run the forwarder ``create`` builds, configured from the bench's environment
    (``BENCH_BOOTSTRAP``, ``BENCH_PARTITIONS``, ``BENCH_IN_TOPIC``, ``BENCH_OUT_TOPIC``,
    ``BENCH_APP_ID``): shared by both Faust floors, so they differ only in their app."""
    env = os.environ
    settings = Settings.from_env(
        bootstrap_servers=env["BENCH_BOOTSTRAP"], partitions=int(env.get("BENCH_PARTITIONS", "8"))
    )
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create(settings, env["BENCH_IN_TOPIC"], env["BENCH_OUT_TOPIC"], env["BENCH_APP_ID"])
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    worker.execute_from_commandline()
    return 0


def main() -> int:
    return run_forwarder(create_forwarder)


if __name__ == "__main__":
    sys.exit(main())
