"""Snapshot → replay → snapshot on the real broker: same messages, order per key, pacing."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream.broker import create_topics
from stream.cli import main
from stream.config import Settings
from stream.topic_replay import replay_snapshot
from stream.topic_snapshot import read_snapshot, snapshot_topics

_KEYS = [f"user-{n}".encode() for n in range(6)]


def _produce(bootstrap: str, topic: str, count: int, base_ts: int, step_ms: int = 7) -> None:
    """Keyed messages with headers and explicit timestamps, in multi-record batches (linger):
    the case where Tansu's ListOffsets(latest) stops short of the end."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for n in range(count):
        key = None if n % 25 == 24 else _KEYS[n % len(_KEYS)]
        headers: list[tuple[str, bytes | None]] = [("content-type", b"application/json")]
        if n % 3 == 0:
            headers.append(("trace", f"t{n}".encode()))
        producer.produce(
            topic,
            key=key,
            value=f'{{"n": {n}}}'.encode(),
            headers=headers,
            timestamp=base_ts + n * step_ms,
        )
    assert producer.flush(30) == 0


def _by_key(records: list[dict[str, Any]]) -> dict[bytes | None, list[tuple[Any, ...]]]:
    """Per key, the (value, headers, timestamp) sequence in partition-offset order."""
    ordered = sorted(records, key=lambda r: (r["topic"], r["partition"], r["offset"]))
    out: dict[bytes | None, list[tuple[Any, ...]]] = defaultdict(list)
    for r in ordered:
        headers = tuple((h["key"], h["value"]) for h in r["headers"])
        out[r["key"]].append((r["value"], headers, r["timestamp"]))
    return out


def test_snapshot_replay_snapshot_round_trip(
    bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, copy = unique_name("snap-src"), unique_name("snap-dst")
    create_topics(bootstrap, {source: 3, copy: 3})
    count = 300
    base_ts = int(time.time() * 1000) - 3_600_000
    _produce(bootstrap, source, count, base_ts)

    # A "live" group with committed offsets: the snapshot must not move them.
    live = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("live")})
    live.commit(offsets=[TopicPartition(source, p, 5) for p in range(3)], asynchronous=False)

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    first, second = tmp_path / "first.avro", tmp_path / "second.avro"
    assert main(["snapshot", source, "--out", str(first), "--quiet"]) == 0
    original = list(read_snapshot(first))
    assert len(original) == count
    for p in range(3):  # every partition read to its end, no gaps
        offsets = sorted(r["offset"] for r in original if r["partition"] == p)
        assert offsets == list(range(len(offsets)))
    assert sorted(int(r["value"][6:-1]) for r in original) == list(range(count))

    assert main(["replay", str(first), "--topic", copy, "--as-fast-as-possible", "--quiet"]) == 0
    stats = snapshot_topics(Settings(bootstrap_servers=bootstrap), [copy], second)
    assert stats.written == count and not stats.timed_out
    replayed = list(read_snapshot(second))

    before, after = _by_key(original), _by_key(replayed)
    assert set(before) == set(after)
    for key in before:
        if key is None:  # unkeyed messages carry no order guarantee: compare as multisets
            assert sorted(before[key]) == sorted(after[key])
        else:  # same messages, same order per key, same headers and timestamps
            assert before[key] == after[key], key
    # Per-key order is the production order (timestamps rise with n for every key).
    for key, sequence in after.items():
        if key is not None:
            stamps = [ts for _, _, ts in sequence]
            assert stamps == sorted(stamps)

    # (TopicPartition equality ignores the offset: compare offsets explicitly.)
    still = live.committed([TopicPartition(source, p) for p in range(3)], timeout=10)
    assert [(tp.partition, tp.offset) for tp in still] == [(p, 5) for p in range(3)]
    live.close()


def test_snapshot_time_window(
    bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = unique_name("snap-window")
    create_topics(bootstrap, {topic: 2})
    base_ts = int(time.time() * 1000) - 600_000
    _produce(bootstrap, topic, 100, base_ts, step_ms=10)
    out = tmp_path / "window.avro"
    since, until = base_ts + 200, base_ts + 499  # n = 20 .. 49
    stats = snapshot_topics(
        Settings(bootstrap_servers=bootstrap), [topic], out, since_ms=since, until_ms=until
    )
    assert stats.read == 100 and stats.written == 30
    assert sorted(int(r["value"][6:-1]) for r in read_snapshot(out)) == list(range(20, 50))


def test_snapshot_refuses_unknown_topic(bootstrap: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        snapshot_topics(
            Settings(bootstrap_servers=bootstrap), ["no-such-topic-x"], tmp_path / "x.avro"
        )
    assert not (tmp_path / "x.avro").exists()


def test_replay_speed_keeps_relative_timing(
    bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    source, copy = unique_name("pace-src"), unique_name("pace-dst")
    create_topics(bootstrap, {source: 1, copy: 1})
    base_ts = int(time.time() * 1000) - 60_000
    gaps_ms = [0, 400, 100, 600, 200, 700]  # 2.0 s of event time
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    ts = base_ts
    for n, gap in enumerate(gaps_ms):
        ts += gap
        producer.produce(source, key=b"k", value=str(n).encode(), timestamp=ts)
    assert producer.flush(30) == 0
    snapshot = tmp_path / "pace.avro"
    snapshot_topics(Settings(bootstrap_servers=bootstrap), [source], snapshot)

    sent_at: list[float] = []
    stats = replay_snapshot(
        Settings(bootstrap_servers=bootstrap),
        snapshot,
        topic=copy,
        speed=4.0,
        on_send=lambda index, t: sent_at.append(t),
    )
    assert stats.sent == len(gaps_ms) and stats.failed == 0
    expected = [g / 1000 / 4.0 for g in gaps_ms[1:]]
    actual = [b - a for a, b in pairwise(sent_at)]
    errors = [a - e for a, e in zip(actual, expected, strict=True)]
    # Never early by more than timer granularity; late by little (2 noisy shared cores).
    total_late = (sent_at[-1] - sent_at[0]) - sum(expected)
    assert -0.01 <= total_late < 0.25, (actual, expected)
    assert statistics.median(abs(e) for e in errors) < 0.05, (actual, expected)
