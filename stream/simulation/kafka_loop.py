"""The closed loop over Kafka: simulated users read the pages a real worker serves them.

The simulator publishes the catalog, then advances users in simulated-time order. Before a user
looks at a page, the loop makes sure it holds the page the worker served in answer to that
user's latest page-triggering event (a consumer thread reads ``insession.recommendations``).
If it has not arrived yet, the user waits (``PAGE_LOAD_MS`` of simulated time at a time, while
the others go on); after ``page_wait_s`` of wall time they see the last page they got, and
``stale_page_views`` counts it. Events go to ``insession.events`` keyed by user, paced to a
target rate or as fast as the closed loop allows; when ``max_in_flight`` users are waiting for
their pages the loop pauses (backpressure), so a slow worker slows the users down instead of
serving them stale pages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, TopicPartition

from schemas.codec import DecodeError, decode_page, encode_catalog_item, encode_event
from schemas.messages import CatalogItem, Page
from stream.broker import create_topics
from stream.config import Settings
from stream.kafka_clients import client_config, make_producer
from stream.latency import LatencyRecorder
from stream.simulation.population import Simulation

__all__ = ["ClosedLoop", "LoopStats", "PageListener", "read_worker_metrics"]

_PROGRESS_EVERY_S = 0.5
#: Simulated time a user waits each time their page has not arrived yet.
PAGE_LOAD_MS = 300
#: A page not here after this long is not coming (its event was dead-lettered, say).
_PAGE_LOST_AFTER_S = 30.0
#: Behind the target rate by more than this, the pacing restarts from now.
_MAX_CATCH_UP_S = 1.0


@dataclass(slots=True)
class LoopStats:
    """What the live loop measured (wall-clock side; the simulation holds the outcomes)."""

    events_sent: int = 0
    steps: int = 0
    wall_s: float = 0.0
    #: Page views that had to wait for their page, and wall time the loop spent blocked.
    page_waits: int = 0
    page_wait_s: float = 0.0
    stale_page_views: int = 0
    #: Times the loop paused because ``max_in_flight`` users were waiting for their pages.
    backpressure_waits: int = 0
    #: Pages given up on after ``_PAGE_LOST_AFTER_S``.
    lost_pages: int = 0
    catalog_ready: bool = False
    stopped_by: str = ""
    #: Events per second over the last progress interval.
    recent_rate: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events_sent / self.wall_s if self.wall_s else 0.0


class PageListener(threading.Thread):
    """Reads pages for this run's users, keeps the latest per user, measures event → page.

    Partitions are assigned directly (no group join to wait for) from the end of the topic;
    on the embedded broker "the end" can be a little early (see BROKER-NOTES), which only means
    reading a few old pages, skipped by their key.
    """

    def __init__(self, settings: Settings, user_prefix: str) -> None:
        super().__init__(name="page-listener", daemon=True)
        self.consumer = Consumer(
            client_config(settings)
            | {
                "group.id": f"insession-simulate-{user_prefix}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            }
        )
        topic = settings.recommendations_topic
        metadata = self.consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        assignment = []
        for partition in partitions:
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            assignment.append(TopicPartition(topic, partition, max(high, 0)))
        self.consumer.assign(assignment)
        self.prefix = user_prefix.encode()
        self.latest: dict[str, Page] = {}
        self.awaited: dict[str, str] = {}
        self.sent_at: dict[str, float] = {}
        self.latency = LatencyRecorder()
        self.pages = 0
        self.undecodable = 0
        self.changed = threading.Condition()
        self.stopping = threading.Event()

    def expect(self, user_id: str, trigger_event_id: str) -> None:
        """The user's next page is the answer to this event (call before sending it)."""
        with self.changed:
            self.awaited[user_id] = trigger_event_id
            self.sent_at[trigger_event_id] = time.perf_counter()

    def wait_fresh(self, user_id: str, timeout: float) -> bool:
        """Block until the awaited page of the user arrived; False when it timed out."""
        with self.changed:
            return self.changed.wait_for(lambda: user_id not in self.awaited, timeout)

    def wait_any(self, timeout: float) -> None:
        """Block until any page arrives (or the timeout passes)."""
        with self.changed:
            self.changed.wait(timeout)

    def outstanding(self) -> int:
        """Users waiting for a page."""
        return len(self.awaited)

    def prune(self, max_age_s: float) -> int:
        """Stop waiting for pages older than ``max_age_s`` (never coming); returns how many."""
        cutoff = time.perf_counter() - max_age_s
        with self.changed:
            lost = [u for u, t in self.awaited.items() if self.sent_at.get(t, cutoff) <= cutoff]
            for user_id in lost:
                self.sent_at.pop(self.awaited.pop(user_id), None)
            if lost:
                self.changed.notify_all()
        return len(lost)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                first = self.consumer.poll(0.1)
                if first is None:
                    continue
                batch = [first, *self.consumer.consume(500, 0)]
                self._take(batch)
        finally:
            self.consumer.close()

    def _take(self, batch: list[Any]) -> None:
        received = time.perf_counter()
        pages = []
        for message in batch:
            key = message.key()
            if message.error() or not key or not key.startswith(self.prefix):
                continue
            try:
                pages.append(decode_page(message.value()))
            except DecodeError:
                self.undecodable += 1
        if not pages:
            return
        with self.changed:
            for page in pages:
                self.latest[page.user_id] = page
                self.pages += 1
                sent = self.sent_at.pop(page.trigger_event_id, None)
                if sent is not None:
                    self.latency.record_us((received - sent) * 1e6)
                if self.awaited.get(page.user_id) == page.trigger_event_id:
                    del self.awaited[page.user_id]
            self.changed.notify_all()


class ClosedLoop:
    """Runs a ``Simulation`` against a live worker through Kafka."""

    def __init__(
        self,
        settings: Settings,
        sim: Simulation,
        *,
        rate: float | None,
        duration_s: float,
        sim_minutes: float | None = None,
        page_wait_s: float = 2.0,
        catalog_wait_s: float = 30.0,
        no_pages_timeout_s: float = 30.0,
        max_in_flight: int = 50,
        on_progress: Callable[[ClosedLoop], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sim = sim
        self.rate = rate
        self.duration_s = duration_s
        self.sim_minutes = sim_minutes
        self.page_wait_s = page_wait_s
        self.catalog_wait_s = catalog_wait_s
        self.no_pages_timeout_s = no_pages_timeout_s
        self.max_in_flight = max_in_flight
        self._next_progress = 0.0
        self._last_progress = (0, 0.0)
        self.on_progress = on_progress
        self.stats = LoopStats()
        self.listener: PageListener | None = None
        self.started = 0.0
        self.stop_requested = threading.Event()

    def run(self) -> LoopStats:
        """Publish the catalog, run the users until time is up, return the wall-side stats."""
        settings, sim, stats = self.settings, self.sim, self.stats
        # Same topics, same partition counts as the worker: producing to a missing topic would
        # let the broker create it with its own default count.
        create_topics(settings.bootstrap_servers, settings.output_topics())
        producer = make_producer(settings)
        for item in sim.catalog():
            producer.produce(
                settings.catalog_topic, key=item.item_id.encode(), value=encode_catalog_item(item)
            )
        producer.flush(30)
        stats.catalog_ready = _wait_for_catalog(settings, sim.catalog(), self.catalog_wait_s)
        listener = self.listener = PageListener(settings, f"{sim.config.run_id}-u")
        listener.start()
        end_ts = (
            sim.start_ms + int(self.sim_minutes * 60_000) if self.sim_minutes is not None else None
        )
        self.started = started = time.perf_counter()
        self._next_progress = started + _PROGRESS_EVERY_S
        self._last_progress = (0, started)
        waiting_since: dict[str, float] = {}
        pace_origin, pace_sent = started, 0
        deferred_in_a_row = 0
        try:
            while True:
                now = time.perf_counter()
                if now - started >= self.duration_s:
                    stats.stopped_by = "duration"
                    break
                if self.stop_requested.is_set():
                    stats.stopped_by = "stopped"
                    break
                if not listener.pages and now - started > self.no_pages_timeout_s:
                    stats.stopped_by = "no pages from the worker"
                    break
                head = sim.peek()
                if head is None:
                    stats.stopped_by = "everyone left"
                    break
                due_ts, user_id = head
                if end_ts is not None and due_ts >= end_ts:
                    stats.stopped_by = "simulated minutes"
                    break
                if listener.outstanding() >= self.max_in_flight:
                    # The worker is behind: slow down rather than show users stale pages.
                    blocked = time.perf_counter()
                    listener.wait_any(0.05)
                    stats.page_wait_s += time.perf_counter() - blocked
                    stats.backpressure_waits += 1
                    self._tick(time.perf_counter())
                    continue
                if sim.needs_page(user_id) and user_id in listener.awaited:
                    first_wait = waiting_since.setdefault(user_id, now)
                    if now - first_wait < self.page_wait_s:
                        # The page is still loading: the user waits, the others go on.
                        sim.defer(user_id, PAGE_LOAD_MS)
                        deferred_in_a_row += 1
                        if deferred_in_a_row > listener.outstanding():
                            # Everyone due next is waiting: block until some page arrives.
                            blocked = time.perf_counter()
                            listener.wait_any(0.05)
                            stats.page_wait_s += time.perf_counter() - blocked
                            deferred_in_a_row = 0
                        self._tick(time.perf_counter())
                        continue
                    stats.stale_page_views += 1
                if waiting_since.pop(user_id, None) is not None:
                    stats.page_waits += 1
                deferred_in_a_row = 0
                events = sim.act(user_id, listener.latest.get(user_id))
                trigger = sim.last_trigger(events)
                if trigger is not None:
                    listener.expect(user_id, trigger)
                key = user_id.encode()
                for event in events:
                    producer.produce(settings.events_topic, key=key, value=encode_event(event))
                producer.poll(0)
                stats.events_sent += len(events)
                stats.steps += 1
                now = time.perf_counter()
                if self.rate:
                    delay = pace_origin + (stats.events_sent - pace_sent) / self.rate - now
                    if delay > 0:
                        time.sleep(delay)  # pacing the offered load, not synchronisation
                        now = time.perf_counter()
                    elif delay < -_MAX_CATCH_UP_S:  # after a stall, no burst to catch up
                        pace_origin, pace_sent = now, stats.events_sent
                self._tick(now)
        finally:
            producer.flush(30)
            stats.wall_s = time.perf_counter() - started
            _drain(listener, timeout=3.0)
            listener.stopping.set()
            listener.join(5)
        return stats

    def _tick(self, now: float) -> None:
        """Every half second: rate, lost pages, the progress callback."""
        if now < self._next_progress:
            return
        stats, listener = self.stats, self.listener
        last_sent, last_time = self._last_progress
        stats.recent_rate = (stats.events_sent - last_sent) / max(now - last_time, 1e-9)
        self._last_progress = (stats.events_sent, now)
        stats.wall_s = now - self.started
        self._next_progress = now + _PROGRESS_EVERY_S
        if listener is not None:
            stats.lost_pages += listener.prune(_PAGE_LOST_AFTER_S)
        if self.on_progress is not None:
            self.on_progress(self)


def _drain(listener: PageListener, timeout: float) -> None:
    """Give the last pages a moment to arrive, so latency covers the whole run."""
    deadline = time.monotonic() + timeout
    with listener.changed:
        while listener.awaited and time.monotonic() < deadline:
            listener.changed.wait(0.1)


def _wait_for_catalog(settings: Settings, items: list[CatalogItem], timeout: float) -> bool:
    """Wait (polling, with a deadline) until the worker stored exactly this catalog in Redis.

    Events sent before the worker knows the titles would be ranked as unknown items. If Redis
    is not reachable the loop goes on without waiting.
    """
    if timeout <= 0 or not items:
        return False
    client = redis.Redis.from_url(
        settings.redis_url, password=settings.redis_password, socket_timeout=2.0
    )
    key = f"{settings.redis_prefix}catalog"
    item_ids = [item.item_id for item in items]
    expected = [encode_catalog_item(item) for item in items]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.hmget(key, item_ids) == expected:
                return True
            time.sleep(0.1)  # nothing to await: the worker writes Redis, we poll it
    except redis.RedisError:
        return False
    finally:
        client.close()
    return False


def read_worker_metrics(settings: Settings) -> dict[str, Any] | None:
    """The per-arm metrics the worker last published to ``{prefix}metrics:arms``."""
    client = redis.Redis.from_url(
        settings.redis_url, password=settings.redis_password, socket_timeout=2.0
    )
    try:
        raw = client.get(f"{settings.redis_prefix}metrics:arms")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return orjson.loads(raw) if raw else None
