"""Snapshot Kafka topics to an Avro object container file (schema ``SnapshotRecord`` embedded).

Every record is kept byte for byte with its position: topic, partition, offset, timestamp, key,
value and headers. The reader assigns partitions directly (``assign``, never ``subscribe``) in a
throwaway group id and never commits, so it joins no group, triggers no rebalance and moves no
live consumer's offsets.

Where a partition ends. "Until the end" means the end as of when the snapshot reaches each
partition. It is *not* taken from ``ListOffsets(latest)``
(``Consumer.get_watermark_offsets(cached=False)``): on the embedded broker (Tansu) that answer is
the last batch's base offset + 1, short of the real end after multi-record batches (30 records
in 3 batches → 21; see BROKER-NOTES.md). Instead the high watermark that comes back in every
Fetch response is used, which is right on Tansu and on Kafka: librdkafka raises
``_PARTITION_EOF`` when its fetch position reaches that watermark
(``enable.partition.eof``), and the first watermark seen for a partition
(``get_watermark_offsets(cached=True)``, filled from Fetch responses) is frozen as the
partition's target, so records produced while the snapshot runs cannot keep it going forever.
An idle timeout (no record and no EOF for ``idle_timeout_s``) is the last resort, reported.

``--since TS`` reads from the beginning and keeps records with ``timestamp >= TS``: the
offset-by-time lookup (``offsets_for_times``) matches append time on Tansu, not record time, and
a scan is correct on both brokers. ``--until TS`` keeps records with ``timestamp <= TS`` and, if
``TS`` is still ahead of the wall clock, keeps following the topics until it has passed.
"""

from __future__ import annotations

import heapq
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from schemas.codec import load_schema
from stream.config import Settings
from stream.kafka_clients import make_consumer

__all__ = [
    "SnapshotStats",
    "parse_timestamp",
    "read_snapshot",
    "snapshot_topics",
    "time_ordered",
]

_NO_WATERMARK = -1001  # librdkafka's OFFSET_INVALID: no Fetch response seen yet
#: When following until a future ``--until``, keep reading this long after it for records
#: still in flight (produce + fetch wait).
_FOLLOW_GRACE_MS = 1_000


@dataclass(slots=True)
class SnapshotStats:
    """What a snapshot read and wrote."""

    path: Path
    written: int = 0
    read: int = 0
    #: Partitions (``topic/partition``) that ended by idle timeout, not at their high watermark.
    timed_out: list[str] = field(default_factory=list)
    per_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from ``1700000000000`` (ms), ``1700000000`` / ``1700000000.5`` (s) or
    an ISO-8601 date-time (``2026-11-23T14:00:00+00:00``; no zone means UTC).

    Examples
    --------
    >>> parse_timestamp("1700000000000"), parse_timestamp("1700000000")
    (1700000000000, 1700000000000)
    >>> parse_timestamp("2023-11-14T22:13:20Z")
    1700000000000
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return round(moment.timestamp() * 1000)
    # Below 1e11 it cannot be milliseconds of this century: read it as seconds.
    return round(number * 1000) if number < 1e11 else round(number)


def snapshot_topics(
    settings: Settings,
    topics: Sequence[str],
    out: str | os.PathLike[str],
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    idle_timeout_s: float = 10.0,
    codec: str = "deflate",
    progress: bool = False,
    clock: Callable[[], float] = time.time,
) -> SnapshotStats:
    """Write every record of ``topics`` (from the beginning, up to each partition's end) to
    ``out``; the file appears atomically when complete."""
    from fastavro import writer

    path = Path(out)
    stats = SnapshotStats(path)
    consumer = make_consumer(
        settings,
        f"insession-snapshot-{uuid.uuid4().hex[:12]}",
        **{"enable.partition.eof": True, "enable.auto.commit": False},
    )
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    try:
        assignment = _partitions(consumer, topics)
        consumer.assign(
            [TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in assignment]
        )
        records = _read(consumer, assignment, stats, since_ms, until_ms, idle_timeout_s, clock)
        if progress:
            records = _with_progress(records, consumer, assignment)
        with open(partial, "wb") as stream:
            writer(
                stream,
                load_schema("SnapshotRecord"),
                records,
                codec=codec,
                metadata={"insession.topics": ",".join(topics)},
            )
        os.replace(partial, path)
    finally:
        consumer.close()
        if partial.exists():
            partial.unlink()
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


def _partitions(consumer: Consumer, topics: Sequence[str]) -> list[tuple[str, int]]:
    # list_topics() without a name: naming an unknown topic would create it on Tansu.
    metadata = consumer.list_topics(timeout=10)
    found = []
    for topic in topics:
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise ValueError(f"topic {topic!r} does not exist")
        found.extend((topic, partition) for partition in sorted(described.partitions))
    return found


def _read(
    consumer: Consumer,
    assignment: list[tuple[str, int]],
    stats: SnapshotStats,
    since_ms: int | None,
    until_ms: int | None,
    idle_timeout_s: float,
    clock: Callable[[], float],
) -> Iterator[dict[str, Any]]:
    """Yield SnapshotRecord dicts until every partition reached its frozen high watermark, or,
    when ``until_ms`` is still in the future, until the wall clock has passed it."""
    follow = until_ms is not None and until_ms > clock() * 1000
    pending = set(assignment)
    target: dict[tuple[str, int], int] = {}
    last_progress = time.monotonic()
    while True:
        if follow:
            assert until_ms is not None
            if clock() * 1000 > until_ms + _FOLLOW_GRACE_MS:
                return
        elif not pending:
            return
        message = consumer.poll(0.2)
        if message is None:
            if not follow and time.monotonic() - last_progress > idle_timeout_s:
                stats.timed_out = sorted(f"{t}/{p}" for t, p in pending)
                return
            continue
        last_progress = time.monotonic()
        key = (message.topic(), message.partition())
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.discard(key)
                continue
            raise RuntimeError(f"snapshot of {key[0]}/{key[1]} failed: {error}")
        offset = message.offset()
        if not follow:
            if key not in pending:
                continue  # produced after this partition's end was reached
            if key not in target:
                high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)[1]
                if high != _NO_WATERMARK:
                    target[key] = high
            if key in target and offset + 1 >= target[key]:
                pending.discard(key)
        stats.read += 1
        timestamp = message.timestamp()[1]
        if since_ms is not None and timestamp < since_ms:
            continue
        if until_ms is not None and timestamp > until_ms:
            continue
        stats.written += 1
        stats.per_topic[key[0]] = stats.per_topic.get(key[0], 0) + 1
        yield {
            "topic": key[0],
            "partition": key[1],
            "offset": offset,
            "timestamp": timestamp,
            "key": message.key(),
            "value": message.value(),
            "headers": [{"key": k, "value": v} for k, v in (message.headers() or [])],
        }


def _with_progress(
    records: Iterator[dict[str, Any]], consumer: Consumer, assignment: list[tuple[str, int]]
) -> Iterator[dict[str, Any]]:
    """Pass records through while drawing a progress bar on stderr (total: the watermarks
    known so far)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("snapshot"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task("snapshot", total=None)
        for count, record in enumerate(records, start=1):
            if count % 500 == 1:
                total = 0
                for topic, partition in assignment:
                    high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), cached=True
                    )[1]
                    total += max(high, 0)
                bar.update(task, total=max(total, count))
            bar.update(task, completed=count)
            yield record


def read_snapshot(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a snapshot file, in file order (fastavro reads the embedded schema)."""
    from fastavro import reader

    with open(path, "rb") as stream:
        yield from reader(stream)


def time_ordered(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records merged across partitions by timestamp, each partition keeping its offset order.

    This is the order a consumer of all partitions could have seen, and it keeps what Kafka
    guarantees (order per partition, hence per key) even where timestamps within a partition
    go backwards (several producers, clock skew). Holds the file in memory.
    """
    partitions: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        partitions.setdefault((record["topic"], record["partition"]), []).append(record)
    return list(heapq.merge(*(partitions[key] for key in sorted(partitions)), key=_timestamp_of))


def _timestamp_of(record: dict[str, Any]) -> int:
    return int(record["timestamp"])
