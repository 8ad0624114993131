"""A Faust transport (aiokafka driver): a configurable fetch wait, and batch delivery.

Faust 0.15.3's aiokafka driver builds its consumer with a hard-coded ``fetch_max_wait_ms=1500``
that no setting exposes (``AIOKafkaConsumerThread._create_worker_consumer``). A broker that
waits out the full max wait on every fetch (Tansu does) then adds ~0.4 s to every event.

This transport builds the consumer exactly as Faust does and then replaces the wait before
``AIOKafkaConsumer.start()`` hands it to the ``Fetcher``. The value comes from the Faust app:
``app.insession_fetch_max_wait_ms`` (an int, milliseconds; default 50).

Select it in either of two ways:

- ``faust.App(..., broker="insession://host:9092")``: the ``faust.transports`` entry point
  named ``insession`` in ``pyproject.toml`` maps the URL scheme to :class:`Transport`.
- keep ``broker="kafka://host:9092"`` and call :func:`install` on the app before it starts
  (it replaces the consumer transport; producers are unaffected by the fetch wait).

**Batch delivery** (:func:`consume_in_batches`). Faust hands every message to its streams one
at a time: ``Consumer._drain_messages`` awaits ``wait_first(callback(message), ...)`` per
message (four tasks and an ``asyncio.wait`` each), then the conductor, the topic's queue, the
stream iterator, ``take_events``' buffer and the sensors each touch it again. Profiled on the
embedded broker, that costs 230-380 µs of CPU per forwarded event and capped a forwarding agent
near 1,500-2,500 events/s (BENCHMARKS.md, "Where the time goes"). A topic registered with
:func:`consume_in_batches` skips all of it: the consumer's drain loop keeps Faust's offset
bookkeeping (read offsets, gaps, ``broker_commit_every``) and hands each fetched round of that
topic's messages to one async handler, in slices of at most ``batch_max``, with the time the
round's first fetch response was received. Everything else stays Faust's: the consumer group,
rebalances and their signals, seeking to committed offsets, the commit loop and the producer.
The handler acknowledges messages itself (``consumer.ack``) once their effects are durable;
an unacknowledged message is never committed and comes again after a restart or rebalance.

**Sending** (:func:`producer_send`): straight to Faust's producer, not through ``Topic.send``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerT, Message, TopicT

__all__ = [
    "BATCH_TOPICS_ATTR",
    "DEFAULT_FETCH_MAX_WAIT_MS",
    "FETCH_MAX_WAIT_ATTR",
    "AIOKafkaConsumerThread",
    "BatchHandler",
    "Consumer",
    "Transport",
    "consume_in_batches",
    "fetch_max_wait_ms",
    "install",
    "producer_send",
]

#: Name of the Faust app attribute that holds the fetch wait in milliseconds.
FETCH_MAX_WAIT_ATTR = "insession_fetch_max_wait_ms"
#: 50 ms: low latency on Tansu without the stalls seen at 10 ms or less (see BROKER-NOTES.md).
DEFAULT_FETCH_MAX_WAIT_MS = 50
#: Name of the Faust app attribute that maps topic names to their batch handlers.
BATCH_TOPICS_ATTR = "insession_batch_topics"

#: ``handler(messages, received)``: one slice of a fetched round of one topic, in partition
#: order, and the ``time.monotonic()`` at which the round's first fetch response arrived.
BatchHandler = Callable[[Sequence[Message], float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _BatchTopic:
    handler: BatchHandler
    batch_max: int


def consume_in_batches(
    app: faust.App, topic: TopicT, handler: BatchHandler, *, batch_max: int
) -> None:
    """Subscribe to ``topic`` and deliver its messages to ``handler`` in batches (no stream).

    Call before the app starts. The app must use this module's :class:`Transport`.
    """
    if batch_max < 1:
        raise ValueError(f"batch_max must be >= 1, got {batch_max}")
    topics: dict[str, _BatchTopic] = getattr(app, BATCH_TOPICS_ATTR, None) or {}
    for name in topic.topics:
        topics[name] = _BatchTopic(handler, batch_max)
    setattr(app, BATCH_TOPICS_ATTR, topics)
    app.topics.add(topic)  # the conductor subscribes to it and tracks its acks


def fetch_max_wait_ms(app: Any) -> int:
    """The fetch wait configured on ``app`` (``app.insession_fetch_max_wait_ms``), validated."""
    value = getattr(app, FETCH_MAX_WAIT_ATTR, DEFAULT_FETCH_MAX_WAIT_MS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{FETCH_MAX_WAIT_ATTR} must be an int >= 0 (ms), got {value!r}")
    return value


def _set_fetch_max_wait(consumer: aiokafka.AIOKafkaConsumer, wait_ms: int) -> None:
    # aiokafka 0.14 stores the constructor argument on the consumer and passes it to the
    # Fetcher it creates in ``start()``; the fetcher copies it, so this must happen before.
    if getattr(consumer, "_fetcher", None) is not None:
        raise RuntimeError("the aiokafka consumer is already started; too late to set the wait")
    if not hasattr(consumer, "_fetch_max_wait_ms"):
        raise RuntimeError(
            "aiokafka.AIOKafkaConsumer has no _fetch_max_wait_ms: aiokafka changed; "
            "revisit stream/kafka_transport.py"
        )
    consumer._fetch_max_wait_ms = wait_ms


async def producer_send(
    app: faust.App, topic: str, key: bytes | None, value: bytes
) -> Awaitable[object]:
    """Hand one record to Faust's producer; returns the future of the broker's ack.

    ``Topic.send`` goes through channels, ``FutureMessage`` objects, codecs and two sensor
    calls first: ~300 µs per record against ~30 µs here, measured in the Faust forwarder on
    the embedded broker (BENCHMARKS.md). The producer, its settings (linger, acks) and its
    partitioner (murmur2 of the key, as Kafka's: pages stay co-partitioned with their user's
    events) are the same.
    """
    return await app.producer.send(topic, key, value, None, None, None)


class AIOKafkaConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait taken from the app.

    It also notes when the records it returns arrived (``last_received``, ``time.monotonic()``):
    the oldest fetch response among those drained, or now if it had to wait for a fresh one.
    """

    last_received: float = 0.0

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        buffered = getattr(consumer._fetcher, "_records", None) or {}
        arrived = [getattr(result, "_created", None) for result in buffered.values()]
        earliest = min((t for t in arrived if isinstance(t, float)), default=None)
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        self.last_received = earliest if earliest is not None else time.monotonic()
        return records

    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        wait_ms = fetch_max_wait_ms(self.app)  # validate before building a consumer to close
        consumer = super()._create_worker_consumer(transport)
        _set_fetch_max_wait(consumer, wait_ms)
        return consumer

    def _create_client_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        wait_ms = fetch_max_wait_ms(self.app)
        consumer = super()._create_client_consumer(transport)
        _set_fetch_max_wait(consumer, wait_ms)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, running :class:`AIOKafkaConsumerThread`, delivering batches."""

    _thread: AIOKafkaConsumerThread

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - live only
        """Faust's drain loop (faust-streaming 0.15.3), with batch topics delivered in bulk.

        Per message it does what Faust's loop does (skip offsets below the read offset, record
        gaps so commits can pass them, commit every ``broker_commit_every`` acks, yield to the
        loop every 100 messages); messages of other topics still go to Faust's callback.
        Batch topics' messages of one round are handed over after the round, unless a
        rebalance changed the generation meanwhile (then they are dropped unacknowledged: the
        consumer seeks back to the committed offsets and fetches them again).
        """
        batch_topics: dict[str, _BatchTopic] = getattr(self.app, BATCH_TOPICS_ATTR, None) or {}
        if not batch_topics:
            await super()._drain_messages(fetcher)
            return
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(faust_consumer.CONSUMER_FETCHING)
                fetched = await self._drain_round(batch_topics)
                self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)
                if fetched is not None:
                    await self._deliver(batch_topics, *fetched)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)

    async def _drain_round(
        self, batch_topics: dict[str, _BatchTopic]
    ) -> tuple[dict[str, list[Message]], float, int] | None:
        """One ``getmany`` round: batch topics' messages collected, others delivered by Faust.

        Returns them with the time they arrived and the consumer generation they were fetched
        in (Faust's ``getmany`` stops yielding when the generation changes mid-round).
        """
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        callback = self.callback
        pending: dict[str, list[Message]] = {}
        generation: int | None = None
        since_yield = 0
        await self.sleep(0)  # as Faust: getmany may return at once, round after round
        if self.should_stop:
            return None
        async for tp, message in self.getmany(timeout=1.0):
            if generation is None:
                generation = self.app.consumer_generation_id
            since_yield += 1
            if since_yield > 100:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is not None and offset < r_offset:
                continue  # already seen (Faust logs these as dropped)
            if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            if tp.topic in batch_topics:
                pending.setdefault(tp.topic, []).append(message)
            else:
                await self.wait_first(callback(message), self.suspend_flow.wait())
            set_read_offset(tp, offset)
        if generation is None:
            return None
        return pending, self._thread.last_received or time.monotonic(), generation

    async def _deliver(
        self,
        batch_topics: dict[str, _BatchTopic],
        pending: dict[str, list[Message]],
        received: float,
        generation: int,
    ) -> None:
        """Hand each topic's messages to its handler, ``batch_max`` at a time.

        After a rebalance (the generation moved on) the rest is dropped unacknowledged and
        forgotten: the read offsets of its partitions are cleared, so the messages are taken
        again when the consumer, which seeks to the committed offsets on assignment, fetches
        them again; in order, after whatever of their partition was handled before.
        """
        slices = [
            (batch_topics[name], messages[start : start + batch_topics[name].batch_max])
            for name, messages in pending.items()
            for start in range(0, len(messages), batch_topics[name].batch_max)
        ]
        for index, (batch, messages) in enumerate(slices):
            if self.app.consumer_generation_id != generation or self.should_stop:
                self._forget_read(message for _, rest in slices[index:] for message in rest)
                return
            await batch.handler(messages, received)

    def _forget_read(self, messages: Iterable[Message]) -> None:
        """Undo the read offsets of dropped messages' partitions (they must come again)."""
        for tp in {message.tp for message in messages}:
            self._read_offset[tp] = None


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a configurable consumer fetch wait.

    Any URL scheme works once the class is chosen (only host and port are used).
    """

    Consumer: ClassVar[type[ConsumerT]] = Consumer


def install(app: faust.App) -> Transport:
    """Make ``app`` consume through :class:`Transport` whatever its broker URL scheme is.

    Call before the app's consumer is created (before ``app.start()`` / the worker starts).
    """
    if app._consumer is not None:
        raise RuntimeError("install() must run before the app creates its consumer")
    transport = Transport(app.conf.broker_consumer, app)
    app.transport = transport
    return transport
