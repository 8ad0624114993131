"""The Faust-agent floor: a stock Faust agent that forwards every event unchanged.

This is the floor issue 5 names (a Faust agent forwarding each event): Faust's own stream
machinery (``stream.take_events`` batches, ``Topic.send``, per-message delivery through the
conductor), on the worker's Faust app (``make_faust_app``: our ``insession://`` transport with
its fetch wait, the producer's linger and acks, uvloop), every output awaited to the broker's
ack before the next batch. The worker itself no longer runs on agents: it consumes with
``stream.kafka_transport.consume_in_batches`` because this machinery cost more CPU per event
than the engine (BENCHMARKS.md), so the bench reports both floors: this one, and the batch
runtime the worker uses (``stream.bench.faust_forward``). Runs as its own process:
``python -m stream.bench.faust_agent_forward worker`` with the same environment as
``stream.bench.faust_forward``.
"""

from __future__ import annotations

import sys
from typing import Any

import faust

from stream.app import make_faust_app, raw_topic
from stream.bench.faust_forward import run_forwarder
from stream.config import Settings

__all__ = ["create_agent_forwarder", "main"]

#: ``take_events``' wait for a batch to fill, as the worker's agents used before batch delivery.
_BATCH_WITHIN_S = 0.002


def create_agent_forwarder(settings: Settings, in_topic: str, out_topic: str, app_id: str) -> Any:
    """The Faust app with its one forwarding agent."""
    app = make_faust_app(settings, app_id)
    source = raw_topic(app, in_topic, settings.partitions)
    sink = raw_topic(app, out_topic, settings.partitions)

    async def forward_events(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_max, within=_BATCH_WITHIN_S):
            acks = [
                await sink.send(key=event.message.key, value=event.message.value) for event in batch
            ]
            for ack in acks:
                await ack

    app.agent(source, name="forward_events", concurrency=1)(forward_events)
    return app


def main() -> int:
    return run_forwarder(create_agent_forwarder)


if __name__ == "__main__":
    sys.exit(main())
