"""``insession demo``: embedded broker + a real worker process + synthetic users, printed live.

Everything is real: the broker speaks Kafka, the worker is the same ``insession worker`` a
deployment runs, pages come back over the recommendations topic and from Redis.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from contextlib import ExitStack

from schemas.codec import decode_page, encode_catalog_item, encode_event
from schemas.messages import Page
from stream.broker import EmbeddedBroker, create_topics
from stream.config import Settings
from stream.demo_traffic import DEMO_GENRES, DemoUser, demo_catalog, react_to_page
from stream.kafka_clients import make_consumer, make_producer
from stream.latency import LatencyRecorder

__all__ = ["run_demo"]


class _PageListener(threading.Thread):
    """Consumes pages, keeps the latest per user and the event → page latency."""

    def __init__(self, settings: Settings, sent_at: dict[str, float]) -> None:
        super().__init__(daemon=True)
        self.consumer = make_consumer(settings, f"insession-demo-{uuid.uuid4().hex[:8]}")
        self.consumer.subscribe([settings.recommendations_topic])
        self.sent_at = sent_at
        self.latest: dict[str, Page] = {}
        self.latency = LatencyRecorder()
        self.pages = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.consumer.poll(0.1)
            if message is None or message.error():
                continue
            received = time.perf_counter()
            page = decode_page(message.value())
            sent = self.sent_at.pop(page.trigger_event_id, None)
            if sent is not None:
                self.latency.record_us((received - sent) * 1e6)
            self.latest[page.user_id] = page
            self.pages += 1
        self.consumer.close()


def _describe(page: Page | None, catalog: dict) -> str:
    if page is None:
        return "(no page yet)"
    parts = []
    for row in page.rows[:3]:
        genres = [catalog[i.item_id].genres[0] for i in row.items[:4] if i.item_id in catalog]
        parts.append(f"{row.title[:28]}: {', '.join(genres)}")
    return " | ".join(parts)


def run_demo(duration_s: float = 60.0, users: int = 60, rate: float = 150.0, seed: int = 7) -> int:
    """Run the demo; returns 0 when pages flowed, 1 otherwise."""
    rng = random.Random(seed)
    with ExitStack() as stack:
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if external:
            bootstrap = external
        else:
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap = broker.bootstrap
            print(f"embedded broker (Tansu) on {bootstrap}")
        run_id = uuid.uuid4().hex[:6]
        settings = Settings.from_env(bootstrap_servers=bootstrap, app_id=f"insession-demo-{run_id}")
        create_topics(bootstrap, settings.output_topics())

        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            INSESSION_APP_ID=settings.app_id,
            INSESSION_LOG_LEVEL="warning",
        )
        worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env)
        stack.callback(_stop, worker)
        print(f"worker started (pid {worker.pid}); Redis at {settings.redis_url}")

        producer = make_producer(settings)
        catalog_items = demo_catalog()
        catalog = {item.item_id: item for item in catalog_items}
        for item in catalog_items:
            producer.produce(
                settings.catalog_topic, key=item.item_id.encode(), value=encode_catalog_item(item)
            )
        producer.flush(10)
        print(f"published {len(catalog_items)} catalog items in {len(DEMO_GENRES)} genres")

        sent_at: dict[str, float] = {}
        listener = _PageListener(settings, sent_at)
        listener.start()
        stack.callback(listener.stopping.set)

        population = [
            DemoUser(
                f"demo-{run_id}-u{i:03d}",
                rng.choice(DEMO_GENRES),
                rng.choice(("tv", "mobile", "web")),
                random.Random(seed + i),
            )
            for i in range(users)
        ]
        sample = population[0]
        print(f"sample user {sample.user_id} secretly loves {sample.favourite}\n")

        started = time.perf_counter()
        shifted = False
        next_print = started + 1.0
        sent_total, last_sent, last_pages = 0, 0, 0
        interval = 1.0 / rate
        next_send = started
        turn = deque(population)
        while time.perf_counter() - started < duration_s:
            if worker.poll() is not None:
                print(f"worker exited with {worker.returncode}")
                return 1
            if not shifted and time.perf_counter() - started > duration_s / 2:
                old = sample.favourite
                sample.favourite = next(g for g in DEMO_GENRES if g != old)
                shifted = True
                print(f"\n>>> sample user's taste shifts: {old} -> {sample.favourite}\n")
            user = turn[0]
            turn.rotate(-1)
            page = listener.latest.get(user.user_id)
            now_ms = time.time_ns() // 1_000_000
            for event in react_to_page(user, page, catalog, now_ms):
                sent_at[event.event_id] = time.perf_counter()
                producer.produce(
                    settings.events_topic, key=user.user_id.encode(), value=encode_event(event)
                )
                sent_total += 1
                next_send += interval
            producer.poll(0)
            delay = next_send - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing the offered load, not synchronisation
            if time.perf_counter() >= next_print:
                summary = listener.latency.summary_ms()
                print(
                    f"[{time.perf_counter() - started:5.1f}s] events/s {sent_total - last_sent:5d}"
                    f"  pages/s {listener.pages - last_pages:5d}  event->page p50 "
                    f"{summary['p50_ms']:6.1f} ms p99 {summary['p99_ms']:6.1f} ms"
                )
                print(
                    f"   {sample.user_id} ({sample.favourite}): "
                    f"{_describe(listener.latest.get(sample.user_id), catalog)}"
                )
                last_sent, last_pages = sent_total, listener.pages
                next_print += 1.0
            if len(sent_at) > 200_000:
                sent_at.clear()
        producer.flush(10)
        summary = listener.latency.summary_ms()
        print(
            f"\nsent {sent_total} events, received {listener.pages} pages; event->page latency "
            f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
            f"p99.9 {summary['p999_ms']:.1f} ms"
        )
        return 0 if listener.pages else 1


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
