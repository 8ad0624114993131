"""Running real ``insession worker`` processes against the test broker and Redis, and reading
what they produce. Every wait has a deadline and ends as soon as its condition holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.codec import decode_dead_letter, decode_page, encode_catalog_item, encode_event
from schemas.messages import BehaviourEvent, CatalogItem, DeadLetter, Page
from stream.broker import create_topics

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Topics:
    """Fresh topic names for one worker group."""

    events: str
    catalog: str
    recommendations: str
    churn: str
    dead_letters: str
    partitions: int = 4

    def env(self) -> dict[str, str]:
        return {
            "INSESSION_EVENTS_TOPIC": self.events,
            "INSESSION_CATALOG_TOPIC": self.catalog,
            "INSESSION_RECOMMENDATIONS_TOPIC": self.recommendations,
            "INSESSION_CHURN_TOPIC": self.churn,
            "INSESSION_DEAD_LETTER_TOPIC": self.dead_letters,
            "INSESSION_PARTITIONS": str(self.partitions),
        }

    def all(self) -> dict[str, int]:
        names = (self.events, self.catalog, self.recommendations, self.churn, self.dead_letters)
        return dict.fromkeys(names, self.partitions)


@dataclass
class WorkerProcess:
    """One ``insession worker`` subprocess."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """A worker group under test: its topics, Redis prefix and environment."""

    bootstrap: str
    redis_url: str
    key_prefix: str
    topics: Topics
    app_id: str
    tmp_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        create_topics(self.bootstrap, self.topics.all())
        self.producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        self.redis = redis.Redis.from_url(self.redis_url)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "REDIS_URL": self.redis_url,
                "INSESSION_REDIS_PREFIX": self.key_prefix,
                "INSESSION_APP_ID": self.app_id,
                "INSESSION_ARMS": "personalized=1",
                "INSESSION_LOG_LEVEL": "info",
                "INSESSION_SNAPSHOT_KEY": "test-key",
            }
        )
        env.update(self.topics.env())
        env.update(self.extra_env)
        return env

    def start_worker(self) -> WorkerProcess:
        log_path = self.tmp_dir / f"worker-{len(self.workers)}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                env=self.env(),
                cwd=self.tmp_dir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(process, log_path)
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.producer.flush(5)
        self.redis.close()

    # -- producing -----------------------------------------------------------------------

    def send_catalog(self, items: list[CatalogItem]) -> None:
        for item in items:
            self.producer.produce(
                self.topics.catalog, key=item.item_id.encode(), value=encode_catalog_item(item)
            )
        self.producer.flush(10)

    def send_events(self, events: list[BehaviourEvent], fmt: str = "json") -> None:
        for event in events:
            self.producer.produce(
                self.topics.events, key=event.user_id.encode(), value=encode_event(event, fmt)
            )
        self.producer.flush(10)

    def send_raw(self, key: bytes, value: bytes, headers: list | None = None) -> None:
        self.producer.produce(self.topics.events, key=key, value=value, headers=headers)
        self.producer.flush(10)

    # -- reading -------------------------------------------------------------------------

    def reader(self, topic: str) -> TopicReader:
        return TopicReader(self.bootstrap, topic, self.topics.partitions)

    def wait_for_catalog(self, count: int, timeout: float = 60.0) -> None:
        key = f"{self.key_prefix}catalog"
        wait_until(
            lambda: self.redis.hlen(key) >= count,
            timeout,
            lambda: (
                f"catalog has {self.redis.hlen(key)} of {count} items; "
                f"worker log:\n{self.worker_logs()}"
            ),
        )

    def worker_logs(self) -> str:
        return "\n---\n".join(w.log_tail() for w in self.workers)

    def redis_json(self, kind: str, user_id: str) -> Any:
        import orjson

        raw = self.redis.get(f"{self.key_prefix}{kind}:{user_id}")
        return None if raw is None else orjson.loads(raw)


class TopicReader:
    """Reads a topic from the beginning with assigned partitions (no group join to wait for)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{topic}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.messages: list[tuple[bytes | None, bytes]] = []

    def poll(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.05)
            if message is not None and not message.error():
                self.messages.append((message.key(), message.value()))

    def pages(self) -> list[Page]:
        return [decode_page(value) for _, value in self.messages]

    def dead_letters(self) -> list[DeadLetter]:
        return [decode_dead_letter(value) for _, value in self.messages]

    def wait(
        self,
        condition: Callable[[TopicReader], bool],
        timeout: float,
        what: str,
        logs: Callable[[], str] = lambda: "",
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; got {len(self.messages)} messages\n{logs()}"
                )
            self.poll(0.2)

    def close(self) -> None:
        self.consumer.close()


def wait_until(condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    """Poll a condition that has no event to await (Redis state) until it holds or time is up."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {describe()}")
        time.sleep(0.05)
