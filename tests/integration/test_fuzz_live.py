"""10,000 fuzzed messages mixed with good events through a live worker.

The worker must stay up; every bad message must come back on the dead-letter topic (matched by
its exact bytes) with a reason; every good event must have its effect (exact per-user counts
in Redis, each trigger event answered by exactly one page); redelivered copies of good events
must have none.

The messages come from a seeded generator (``FuzzGenerator``) rather than Hypothesis: the
test needs to know, for each message, whether it is bad, good or a duplicate, and to send
them in one stream. ``tests/unit/test_fuzz_engine.py`` explores the same space with
Hypothesis, in process.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from schemas.codec import decode_dead_letter, encode_event
from schemas.messages import BehaviourEvent
from stream.config import Settings
from tests.integration.fault_tools import (
    CATALOG,
    TRIGGER_TYPES,
    committed_offsets,
    lag,
    page_audit,
    record_figures,
    state_mismatches,
    unexpected_tracebacks,
)
from tests.integration.harness import Cluster, Topics, wait_until

FUZZED = int(os.environ.get("INSESSION_TEST_FUZZED", "10000"))
GOOD_EVERY = 4  # one good event per this many fuzzed messages
KNOWN_ITEMS = [item.item_id for item in CATALOG]
DEAD_LETTER_MAX_ORIGINAL = Settings().dead_letter_max_original_bytes
_GOOD_CYCLE = ("hover", "click", "impression", "play", "pause", "scroll_past", "completion")


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class FuzzGenerator:
    """Bad, duplicate and good messages, each labelled; deterministic for a seed."""

    run: str
    t0: int
    now: int
    users: int = 50
    seed: int = 20261123
    rng: random.Random = field(init=False)
    seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_ts: dict[str, int] = field(default_factory=dict)
    recent_good: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    good: dict[str, list[BehaviourEvent]] = field(default_factory=lambda: defaultdict(list))
    bad: Counter[bytes] = field(default_factory=Counter)
    bad_kinds: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    oversize: int = 0
    _nonce: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _id(self) -> str:
        self._nonce += 1
        return f"{self.run}-x{self._nonce}"

    def _user(self) -> str:
        return f"{self.run}-u{self.rng.randrange(self.users):02d}"

    # -- good -----------------------------------------------------------------------------

    def good_event(self) -> Message:
        user = self._user()
        seq = self.seq[user]
        self.seq[user] = seq + 1
        if seq == 0:
            kind, item = "session_start", None
        else:
            kind = _GOOD_CYCLE[seq % len(_GOOD_CYCLE)]
            unknown = self.rng.random() < 0.2  # events for items the catalog never heard of
            item = f"ghost-{self.rng.randrange(1000)}" if unknown else self.rng.choice(KNOWN_ITEMS)
        ts = self.t0 + seq * 100
        if seq > 2 and self.rng.random() < 0.1:
            ts = self.last_ts[user] - 2_000  # out of order, but within the 5 min grace
        self.last_ts[user] = max(ts, self.last_ts.get(user, 0))
        event = BehaviourEvent(
            event_id=f"{user}-{seq}",
            user_id=user,
            type=kind,
            ts=ts,
            item_id=item,
            session_id=f"{user}-s",
            dwell_ms=self.rng.randrange(5000) if kind == "hover" else None,
            progress=round(self.rng.random(), 3) if kind in ("pause", "completion") else None,
        )
        fmt = "avro" if self.rng.random() < 0.3 else "json"
        value = encode_event(event, fmt)
        self.good[user].append(event)
        recent = self.recent_good[user]
        recent.append(value)
        del recent[:-5]
        return Message(user.encode(), value)

    # -- duplicates ---------------------------------------------------------------------------

    def duplicate(self) -> Message | None:
        users = [u for u, values in self.recent_good.items() if values]
        if not users:
            return None
        user = self.rng.choice(sorted(users))
        self.duplicates += 1
        return Message(user.encode(), self.rng.choice(self.recent_good[user]))

    # -- bad --------------------------------------------------------------------------------

    def _valid_obj(self, user: str | None = None) -> dict[str, object]:
        return {
            "event_id": self._id(),
            "user_id": user or self._user(),
            "type": "click",
            "ts": self.t0 + self.rng.randrange(10_000),
            "item_id": self.rng.choice(KNOWN_ITEMS),
        }

    def bad_message(self) -> Message:
        kind = self.rng.choice(_BAD_KINDS)
        if kind == "huge_message" and self.rng.random() < 0.9:
            kind = "wrong_type"  # keep the 70 KB messages to a few hundred kilobytes in all
        if kind == "oversize" and self.oversize >= 3:
            kind = "not_json"  # three are enough (900 KB each)
        self.oversize += kind == "oversize"
        message = getattr(self, f"_bad_{kind}")()
        if message.value in self.bad and kind not in ("empty", "tombstone"):
            return self.bad_message()  # keep bad bytes unique (but for the empty ones)
        self.bad[message.value or b""] += 1
        self.bad_kinds[kind] += 1
        return message

    def _bad_garbage(self) -> Message:
        size = self.rng.randrange(1, 200)
        raw = bytes(self.rng.randrange(256) for _ in range(size))
        if raw[:1] in (b"{", b"\x00"):
            raw = b"\xff" + raw
        return Message(None, raw)

    def _bad_empty(self) -> Message:
        return Message(self._user().encode(), b"")

    def _bad_tombstone(self) -> Message:
        return Message(self._user().encode(), None)

    def _bad_not_json(self) -> Message:
        return Message(None, b"{" + self._id().encode() + b": nope")

    def _bad_not_an_object(self) -> Message:
        value: object = self.rng.choice([[1, 2, self._id()], self._id(), [{"id": self._id()}]])
        return Message(None, b" " + orjson.dumps(value))

    def _bad_missing_field(self) -> Message:
        obj = self._valid_obj()
        name = self.rng.choice(["user_id", "type", "ts", "item_id"])
        del obj[name]
        return Message(None, orjson.dumps(obj))

    def _bad_wrong_type(self) -> Message:
        obj = self._valid_obj()
        name, value = self.rng.choice(
            [
                ("ts", "yesterday"),
                ("ts", 1.7e12),
                ("ts", True),
                ("user_id", 12345),
                ("item_id", ["a", "b"]),
                ("position", -1),
                ("local_hour", 24),
                ("dwell_ms", -5),
                ("progress", 1.5),
                ("progress", "half"),
                ("type", None),
            ]
        )
        obj[name] = value
        return Message(None, orjson.dumps(obj))

    def _bad_nan_inf(self) -> Message:
        obj = self._valid_obj()
        obj["type"] = "pause"
        obj["progress"] = self.rng.choice([float("nan"), float("inf"), float("-inf")])
        return Message(None, json.dumps(obj, allow_nan=True).encode())

    def _bad_huge_string(self) -> Message:
        obj = self._valid_obj()
        name = self.rng.choice(["event_id", "user_id", "item_id", "session_id", "device"])
        obj[name] = self._id() + "y" * self.rng.choice([257, 257, 1000, 5000])
        return Message(None, orjson.dumps(obj))

    def _bad_huge_message(self) -> Message:
        obj = self._valid_obj()
        obj["padding"] = ["z" * 1000] * 70  # an unknown field, but 70 KB > max_message_bytes
        return Message(None, orjson.dumps(obj))

    def _bad_oversize(self) -> Message:
        # Near the broker's 1 MB limit: its dead letter must carry a truncated original.
        obj = self._valid_obj()
        obj["padding"] = "p" * 900_000
        return Message(None, orjson.dumps(obj))

    def _bad_far_past(self) -> Message:
        obj = self._valid_obj()
        obj["ts"] = self.rng.choice([5, 86_400_000, 946_684_799_999])
        return Message(None, orjson.dumps(obj))

    def _bad_far_future(self) -> Message:
        obj = self._valid_obj()
        obj["ts"] = self.now + self.rng.choice([2, 48, 24 * 365 * 10]) * 3_600_000 * 24
        return Message(None, orjson.dumps(obj))

    def _bad_beyond_epoch_range(self) -> Message:
        obj = self._valid_obj()
        obj["ts"] = self.rng.choice([2**53, 2**63 - 1, 0, -1])
        return Message(None, orjson.dumps(obj))

    def _bad_unknown_type(self) -> Message:
        obj = self._valid_obj()
        obj["type"] = self.rng.choice(["teleport", "CLICK", "", "purchase"])
        return Message(None, orjson.dumps(obj))

    def _bad_late(self) -> Message:
        users = [u for u in self.last_ts if self.seq[u] > 0]
        if not users:
            return self._bad_unknown_type()
        user = self.rng.choice(sorted(users))
        obj = self._valid_obj(user)
        obj["ts"] = self.last_ts[user] - 10 * 60_000  # 10 min behind this user's latest event
        return Message(user.encode(), orjson.dumps(obj))

    def _bad_avro(self) -> Message:
        event = BehaviourEvent(self._id(), self._user(), "click", self.t0, item_id="horror-1")
        raw = encode_event(event, "avro")
        variant = self.rng.choice(["schema_id", "truncated", "magic"])
        if variant == "schema_id":
            raw = raw[:1] + (3).to_bytes(4, "big") + raw[5:]  # a Page's schema id
        elif variant == "truncated":
            raw = raw[: self.rng.randrange(5, len(raw) - 1)]
        else:
            raw = b"\x01" + raw[1:]
        return Message(None, raw)

    def _bad_content_type(self) -> Message:
        obj = self._valid_obj()
        return Message(None, orjson.dumps(obj), [("content-type", b"text/plain")])

    def _bad_item_missing(self) -> Message:
        obj = self._valid_obj()
        obj["type"] = self.rng.choice(["click", "play", "hover"])
        obj["item_id"] = None
        return Message(None, orjson.dumps(obj))

    def stream(self, fuzzed: int) -> Iterator[Message]:
        """``fuzzed`` bad or duplicate messages with a good event every GOOD_EVERY of them."""
        for index in range(fuzzed):
            if index % GOOD_EVERY == 0:
                yield self.good_event()
            duplicate = self.duplicate() if self.rng.random() < 0.08 else None
            yield duplicate if duplicate is not None else self.bad_message()


_BAD_KINDS = tuple(
    name.removeprefix("_bad_") for name in vars(FuzzGenerator) if name.startswith("_bad_")
)


@pytest.fixture
def cluster(bootstrap: str, redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    run = uuid.uuid4().hex[:10]
    topics = Topics(
        *(
            f"{name}-{run}"
            for name in ("events", "catalog", "recommendations", "churn", "dead-letters")
        )
    )
    cluster = Cluster(bootstrap, redis_url, key_prefix, topics, f"insession-fuzz-{run}", tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()


def test_ten_thousand_fuzzed_messages_through_a_live_worker(cluster: Cluster) -> None:
    cluster.send_catalog(CATALOG)
    # Garbage in Redis too: a forged model snapshot must be refused at start, loudly.
    forged = b"INSNAP\x01" + bytes(32) + b'{"models": {"ranker": "mine"}}'
    cluster.redis.set(f"{cluster.key_prefix}models", forged)
    worker = cluster.start_worker()
    now = time.time_ns() // 1_000_000
    generator = FuzzGenerator(f"fz{uuid.uuid4().hex[:6]}", t0=now - 20 * 60_000, now=now)
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    produced: dict[int, int] = {}
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))
            return
        partition, offset = message.partition(), message.offset()  # type: ignore[attr-defined]
        produced[partition] = max(produced.get(partition, 0), offset + 1)

    sent = 0
    started = time.monotonic()
    for message in generator.stream(FUZZED):
        producer.produce(
            cluster.topics.events,
            key=message.key,
            value=message.value,
            headers=message.headers,
            on_delivery=delivered,
        )
        sent += 1
        producer.poll(0)
    assert producer.flush(30) == 0 and not failures, failures[:3]

    topics = cluster.topics

    def caught_up() -> bool:
        committed = committed_offsets(
            cluster.bootstrap, cluster.app_id, topics.events, topics.partitions
        )
        return lag(produced, committed) <= 0

    wait_until(caught_up, 240, lambda: f"worker did not finish\n{cluster.worker_logs()}")
    processed_s = time.monotonic() - started
    assert worker.process.poll() is None, "the worker must stay up"

    # Every good event has its effect, exactly once (duplicates have none).
    sent_counts = {user: Counter(e.type for e in events) for user, events in generator.good.items()}
    mismatches = state_mismatches(cluster.redis, cluster.key_prefix, sent_counts)
    assert not mismatches, dict(list(mismatches.items())[:5])
    triggers = {
        e.event_id for events in generator.good.values() for e in events if e.type in TRIGGER_TYPES
    }
    good_bytes = {
        encode
        for events in generator.recent_good.values()
        for encode in events  # the last few per user; enough to catch a good one dead-lettered
    }

    # Every bad message is on the dead-letter topic, with a reason.
    expected_dead = sum(generator.bad.values())
    letters = cluster.reader(topics.dead_letters)
    pages = cluster.reader(topics.recommendations)
    try:
        letters.wait(
            lambda r: len(r.messages) >= expected_dead,
            120,
            f"{expected_dead} dead letters",
            cluster.worker_logs,
        )
        letters.poll(0.5)
        dead = [decode_dead_letter(value) for _, value in letters.messages]
        pages.wait(
            lambda r: not page_audit((v for _, v in r.messages), triggers).missing,
            120,
            f"pages for {len(triggers)} good trigger events",
            cluster.worker_logs,
        )
        audit = page_audit((v for _, v in pages.messages), triggers)
    finally:
        letters.close()
        pages.close()
    assert all(letter.error.strip() for letter in dead), "every dead letter says why"
    truncated = [letter for letter in dead if "[original truncated" in letter.error]
    assert len(truncated) == generator.bad_kinds["oversize"]
    dead_originals = Counter(letter.original for letter in dead)
    for raw in [raw for raw in generator.bad if len(raw) > DEAD_LETTER_MAX_ORIGINAL]:
        dead_originals[raw] += dead_originals.pop(raw[:DEAD_LETTER_MAX_ORIGINAL], 0)
    missing = {raw: n for raw, n in generator.bad.items() if dead_originals[raw] < n}
    assert not missing, f"{len(missing)} bad messages not dead-lettered: {list(missing)[:3]}"
    assert len(dead) == expected_dead, "only bad messages are dead-lettered"
    assert not good_bytes & set(dead_originals), "a good event was dead-lettered"
    assert audit.exactly_once, (  # no redelivery here: one page per trigger, nothing else
        sorted(audit.missing)[:5],
        sorted(audit.duplicated)[:5],
        sorted(audit.unexpected)[:5],
        sorted(audit.inconsistent)[:5],
    )
    reasons = Counter(letter.error.split(":", 1)[0] for letter in dead)
    for reason in ("late_event", "ts_out_of_range", "ts", "progress", "type"):
        assert reasons[reason] > 0, (reason, reasons.most_common(20))
    log = cluster.worker_logs()
    assert not unexpected_tracebacks(log) and "engine failed" not in log
    assert "refusing model snapshot: " in log and "models restored=False" in log

    record_figures(
        "fuzz_live",
        {
            "fuzzed_messages": FUZZED,
            "bad_messages": expected_dead,
            "dead_lettered": len(dead),
            "duplicates_sent": generator.duplicates,
            "good_events": sum(len(v) for v in generator.good.values()),
            "messages_sent": sent,
            "bad_kinds": dict(generator.bad_kinds),
            "pages": audit.pages,
            "triggers_answered_by_coalesced_pages": len(audit.coalesced),
            "processed_s": round(processed_s, 1),
        },
    )


def test_a_batch_that_cannot_be_dead_lettered_stops_the_worker_uncommitted(
    cluster: Cluster,
) -> None:
    """Fail fast, lose nothing: when even the dead letter cannot be written (here: the
    truncation of originals is switched off, so a 900 KB message makes a dead letter larger
    than the producer accepts), the worker stops without committing the batch."""
    cluster.extra_env["INSESSION_DEAD_LETTER_MAX_ORIGINAL_BYTES"] = str(10**7)
    worker = cluster.start_worker()
    now = time.time_ns() // 1_000_000
    first = BehaviourEvent(f"ok-{uuid.uuid4().hex[:6]}", "u-ok", "session_start", now)
    cluster.send_events([first])
    pages = cluster.reader(cluster.topics.recommendations)
    try:
        pages.wait(lambda r: len(r.messages) >= 1, 90, "the first page", cluster.worker_logs)
    finally:
        pages.close()
    topics = cluster.topics
    wait_until(
        lambda: (
            sum(
                committed_offsets(
                    cluster.bootstrap, cluster.app_id, topics.events, topics.partitions
                ).values()
            )
            >= 1
        ),
        30,
        lambda: f"first event never committed\n{cluster.worker_logs()}",
    )
    cluster.send_raw(b"u-big", orjson.dumps({"event_id": "big", "padding": "p" * 900_000}))
    code = worker.process.wait(60)
    assert code != 0, "the worker must stop with an error"
    committed = committed_offsets(
        cluster.bootstrap, cluster.app_id, topics.events, topics.partitions
    )
    assert sum(committed.values()) == 1, f"the failed batch was committed: {committed}"
    assert "cannot dead-letter a failed batch" in worker.log_tail(400)
