"""Replay a topic snapshot into Kafka: per-key order, original timestamps and relative timing.

Records are sent in :func:`stream.topic_snapshot.time_ordered` order (merged by timestamp, each
source partition in offset order), each with its original key, value, headers and timestamp
(``CreateTime``). Per-key order holds because records of one key come from one source
partition, are sent in that partition's order, go to one target partition (same key, or
``keep_partitions``) and the producer is idempotent (ordered even across retries).

Pacing, one of:

- ``speed=X``: a record whose timestamp is ``d`` ms after the first one is sent ``d / X`` ms
  after the start (``X = 1`` is real time, ``X = 10`` ten times faster);
- ``max_rate=N``: at most ``N`` records per second, evenly spaced (timing not kept);
- neither: as fast as possible.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from stream.config import Settings
from stream.kafka_clients import make_producer
from stream.topic_snapshot import read_snapshot, time_ordered

__all__ = ["ReplayStats", "replay_snapshot", "send_schedule"]


@dataclass(slots=True)
class ReplayStats:
    """What a replay sent."""

    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    per_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def send_schedule(
    timestamps: Sequence[int], *, speed: float | None = None, max_rate: float | None = None
) -> list[float]:
    """Seconds after the start at which each record is due.

    With ``speed`` the gaps between timestamps are divided by ``speed``; a timestamp earlier
    than one already scheduled (timestamps may go backwards across partitions) is due at once,
    after it. With ``max_rate`` records are spaced ``1 / max_rate`` s apart. Neither: all at 0.

    Examples
    --------
    >>> send_schedule([1_000, 1_500, 1_200, 3_000], speed=2.0)
    [0.0, 0.25, 0.25, 1.0]
    >>> send_schedule([5, 5, 5], max_rate=10)
    [0.0, 0.1, 0.2]
    """
    if speed is not None and max_rate is not None:
        raise ValueError("speed and max_rate exclude each other")
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    if max_rate is not None and not max_rate > 0:
        raise ValueError(f"max_rate must be > 0, got {max_rate}")
    if max_rate is not None:
        return [index / max_rate for index in range(len(timestamps))]
    if speed is None or not timestamps:
        return [0.0] * len(timestamps)
    first = timestamps[0]
    due = []
    latest = 0.0
    for timestamp in timestamps:
        latest = max(latest, (timestamp - first) / 1000.0 / speed)
        due.append(latest)
    return due


def replay_snapshot(
    settings: Settings,
    path: str | os.PathLike[str],
    *,
    topic: str | None = None,
    speed: float | None = None,
    max_rate: float | None = None,
    keep_partitions: bool = False,
    progress: bool = False,
    on_send: Callable[[int, float], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> ReplayStats:
    """Publish every record of the snapshot at ``path`` (to ``topic``, or each record's own
    topic) and wait for the broker's acknowledgements.

    ``on_send(index, t)`` is called after each record is handed to the producer, with ``t``
    the ``monotonic()`` time, so callers can check the pacing.
    """
    records = time_ordered(read_snapshot(path))
    due = send_schedule([r["timestamp"] for r in records], speed=speed, max_rate=max_rate)
    stats = ReplayStats()
    producer = make_producer(settings)

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            stats.failed += 1
            if len(stats.errors) < 10:
                stats.errors.append(str(error))

    advance = _progress(len(records)) if progress else None
    started = monotonic()
    try:
        for index, record in enumerate(records):
            wait = started + due[index] - monotonic()
            while wait > 0:  # serve delivery callbacks while waiting for the record's time
                producer.poll(min(wait, 0.05))
                wait = started + due[index] - monotonic()
            target = topic or record["topic"]
            _produce(producer, target, record, keep_partitions, delivered)
            if on_send is not None:
                on_send(index, monotonic())
            stats.sent += 1
            stats.per_topic[target] = stats.per_topic.get(target, 0) + 1
            if advance is not None:
                advance(1)
        remaining = producer.flush(60)
    finally:
        if advance is not None:
            advance(0, done=True)
    if remaining:
        stats.failed += remaining
        stats.errors.append(f"{remaining} messages not acknowledged within 60 s")
    stats.seconds = round(monotonic() - started, 3)
    return stats


def _produce(
    producer: Producer,
    target: str,
    record: dict[str, Any],
    keep_partitions: bool,
    delivered: Callable[[KafkaError | None, Message], None],
) -> None:
    options: dict[str, Any] = {"on_delivery": delivered}
    if record["timestamp"] >= 0:
        options["timestamp"] = record["timestamp"]
    if record["headers"]:
        options["headers"] = [(h["key"], h["value"]) for h in record["headers"]]
    if keep_partitions:
        options["partition"] = record["partition"]
    while True:
        try:
            producer.produce(target, value=record["value"], key=record["key"], **options)
            break
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.05)
    producer.poll(0)


def _progress(total: int) -> Callable[..., None]:
    """A stderr progress bar; call ``advance(n)`` per record and ``advance(0, done=True)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("replay"), BarColumn(), MofNCompleteColumn(), console=Console(stderr=True)
    )
    bar.start()
    task = bar.add_task("replay", total=total)

    def advance(n: int, *, done: bool = False) -> None:
        bar.advance(task, n)
        if done:
            bar.stop()

    return advance
