"""The embedded broker answers, round-trips records, and Faust consumes through our transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream import kafka_transport
from stream.broker import EmbeddedBroker, TopicPartitionMismatch, create_topics, free_port
from tests.conftest import BrokerEndpoint

pytestmark = pytest.mark.integration

FAUST_TIMEOUT_S = 60.0


def _faust_app(app_id: str, broker_url: str, datadir: Path, **overrides: Any) -> faust.App:
    settings: dict[str, Any] = {
        "broker": broker_url,
        "datadir": str(datadir),  # not the working directory
        "store": "memory://",
        "web_enabled": False,
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 0.5,
        "broker_rebalance_timeout": 6.0,
        "table_standby_replicas": 0,
        "topic_partitions": 1,
        "producer_linger_ms": 5,
        "consumer_auto_offset_reset": "earliest",
    }
    settings.update(overrides)
    return faust.App(app_id, **settings)


def test_broker_answers_metadata(broker: BrokerEndpoint) -> None:
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    advertised = {f"{b.host}:{b.port}" for b in metadata.brokers.values()}
    assert broker.bootstrap in advertised


def test_embedded_broker_starts_and_stops_on_its_own_port() -> None:
    port = free_port()
    with EmbeddedBroker(port) as embedded:
        assert embedded.bootstrap == f"127.0.0.1:{port}"
        assert embedded.is_running()
        assert embedded.version().startswith("tansu")
        metadata = AdminClient({"bootstrap.servers": embedded.bootstrap}).list_topics(timeout=10)
        assert metadata.brokers
    assert not embedded.is_running()
    assert embedded.log_path is None  # the temporary log is removed on stop


def test_create_topics_sets_partitions_and_is_idempotent(
    bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    events, pages = unique_name("events"), unique_name("pages")

    assert sorted(create_topics(bootstrap, {events: 8, pages: 3})) == sorted([events, pages])
    assert create_topics(bootstrap, {events: 8}) == []  # already there: fine
    with pytest.raises(TopicPartitionMismatch):
        create_topics(bootstrap, {events: 4})

    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert len(topics[events].partitions) == 8
    assert len(topics[pages].partitions) == 3


def test_produce_consume_round_trip_keeps_headers_and_create_time(
    bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("roundtrip")
    create_topics(bootstrap, {topic: 1})
    created_ms = int(time.time() * 1000) - 12_345  # clearly not the append time
    headers = [("trace-id", b"abc123"), ("schema", b"click.v1")]

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    producer.produce(topic, key=b"user-1", value=b"hello", headers=headers, timestamp=created_ms)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("group"),
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "enable.auto.commit": False,
        }
    )
    try:
        # assign(), not subscribe(): no group join (about half the session timeout on Tansu).
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            if polled is not None:
                assert polled.error() is None, polled.error()
                message = polled
    finally:
        consumer.close()

    assert message is not None, "no message within 30 s"
    assert (message.key(), message.value()) == (b"user-1", b"hello")
    assert message.headers() == headers
    assert message.timestamp() == (TIMESTAMP_CREATE_TIME, created_ms)


async def test_transport_builds_consumer_with_configured_fetch_wait() -> None:
    # No connection happens here: aiokafka only connects in start().
    stock = faust.App("stock-app", broker="kafka://127.0.0.1:9", web_enabled=False)
    ours = faust.App("ours-app", broker="insession://127.0.0.1:9", web_enabled=False)
    ours.insession_fetch_max_wait_ms = 120  # type: ignore[attr-defined]
    default = faust.App("default-app", broker="insession://127.0.0.1:9", web_enabled=False)
    installed = faust.App("installed-app", broker="kafka://127.0.0.1:9", web_enabled=False)
    kafka_transport.install(installed)

    assert type(stock.transport) is faust_aiokafka.Transport
    for app in (ours, default, installed):
        assert isinstance(app.transport, kafka_transport.Transport)
        assert isinstance(app.consumer._thread, kafka_transport.AIOKafkaConsumerThread)

    expected = {stock: 1500, ours: 120, default: 50, installed: 50}
    for app, wait_ms in expected.items():
        aiokafka_consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            assert aiokafka_consumer._fetch_max_wait_ms == wait_ms, app.conf.id
        finally:
            await aiokafka_consumer.stop()

    ours.insession_fetch_max_wait_ms = "50"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="insession_fetch_max_wait_ms"):
        ours.consumer._thread._create_worker_consumer(ours.transport)


@pytest.fixture
async def received_by_agent(
    bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[tuple[faust.App, str, asyncio.Future[bytes]]]:
    """A started Faust app whose one agent resolves the future with the first value it sees."""
    topic_name = unique_name("faust-in")
    create_topics(bootstrap, {topic_name: 1})
    app = _faust_app(unique_name("faust-app"), f"insession://{bootstrap}", tmp_path)
    app.insession_fetch_max_wait_ms = 50  # type: ignore[attr-defined]
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    @app.agent(app.topic(topic_name, value_serializer="raw"))
    async def collect(stream: faust.Stream[bytes]) -> None:
        async for value in stream:
            if not received.done():
                received.set_result(value)

    await asyncio.wait_for(app.start(), FAUST_TIMEOUT_S)
    try:
        yield app, topic_name, received
    finally:
        await asyncio.wait_for(app.stop(), FAUST_TIMEOUT_S)


async def test_faust_agent_receives_message_through_insession_transport(
    bootstrap: str, received_by_agent: tuple[faust.App, str, asyncio.Future[bytes]]
) -> None:
    app, topic_name, received = received_by_agent

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    producer.produce(topic_name, key=b"user-1", value=b"viewed item-7")
    assert producer.flush(10) == 0

    assert await asyncio.wait_for(received, FAUST_TIMEOUT_S) == b"viewed item-7"

    aiokafka_consumer = app.consumer._thread._consumer
    assert aiokafka_consumer is not None
    assert aiokafka_consumer._fetch_max_wait_ms == 50
    assert aiokafka_consumer._fetcher._fetch_max_wait_ms == 50  # what FetchRequests carry
