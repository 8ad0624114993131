"""Steady event streams with exact accounting, and the probes the reliability tests assert with.

The fault tests need to know, for every user, exactly which events reached the broker (so the
per-user counts in Redis can be compared with them), which of those should have caused a page,
and how far the worker group has committed. This module keeps that bookkeeping out of the
tests themselves.

- :class:`EventScript` makes deterministic per-user event sequences (ids ``{user}-{seq}``, event
  time strictly increasing per user, one session per user).
- :class:`StreamSender` produces them from a background thread at a steady rate, counting only
  events the broker acknowledged (delivery reports), and remembers the end offset it produced
  to in every partition.
- :func:`committed_offsets` / :func:`wait_caught_up` read the worker group's committed offsets:
  the worker commits an offset only after the outputs and the Redis checkpoint of the events
  before it are done, so "committed == produced" means the worker is finished with them. (The
  broker's ListOffsets(latest) is wrong on Tansu, see BROKER-NOTES.md, so produced end offsets
  come from delivery reports, never from the broker.)
- :func:`state_mismatches` compares the per-user counts in Redis with what was sent;
  :func:`page_audit` checks the pages against the trigger events (every trigger answered, as a
  page's trigger or among its ``coalesced_event_ids``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from processors.config import EngineConfig
from schemas.codec import encode_event
from schemas.messages import BehaviourEvent, CatalogItem

__all__ = [
    "CATALOG",
    "TRIGGER_TYPES",
    "EventScript",
    "PageAudit",
    "PrivateRedis",
    "RssSampler",
    "StreamSender",
    "committed_offsets",
    "lag",
    "missing_in_window",
    "page_audit",
    "record_figures",
    "state_mismatches",
    "unexpected_tracebacks",
    "wait_caught_up",
]

T0 = 1_700_000_000_000
GENRES = ("horror", "comedy", "drama", "scifi")
CATALOG = [
    CatalogItem(f"{genre}-{i}", f"{genre.title()} {i}", (genre,), 5400, (f"{genre}-{i}-art",))
    for genre in GENRES
    for i in range(10)
]
#: The per-user cycle after ``session_start``: every type, impressions included (they do not
#: trigger pages by default, which the page audit must account for).
_CYCLE = (
    "impression",
    "hover",
    "click",
    "play",
    "pause",
    "impression",
    "scroll_past",
    "completion",
    "impression",
    "drop_off",
)
TRIGGER_TYPES = EngineConfig().page_trigger_types
#: Public session-feature name of each counted event type (see processors.features).
FEATURE_OF_TYPE = {
    "impression": "impressions_count_session",
    "hover": "hovers_count_session",
    "click": "clicks_count_session",
    "scroll_past": "scroll_pasts_count_session",
    "play": "plays_count_session",
    "pause": "pauses_count_session",
    "completion": "completions_count_session",
    "drop_off": "drop_offs_count_session",
}


@dataclass(frozen=True)
class EventScript:
    """Deterministic event sequences: ``event(user, seq)`` is always the same event.

    Event time advances 50 ms per event and one user's events never leave one session, so the
    engine accepts all of them in order and the session counters equal the number applied.
    """

    run: str
    users: int
    items: tuple[str, ...] = tuple(item.item_id for item in CATALOG)
    #: Event types after ``session_start``, repeated.
    cycle: tuple[str, ...] = _CYCLE

    def user(self, index: int) -> str:
        return f"{self.run}-u{index:03d}"

    def event(self, user_index: int, seq: int) -> BehaviourEvent:
        user = self.user(user_index)
        kind = "session_start" if seq == 0 else self.cycle[(seq - 1) % len(self.cycle)]
        item = None if kind == "session_start" else self.items[(user_index * 7 + seq) % 40]
        return BehaviourEvent(
            event_id=f"{user}-{seq}",
            user_id=user,
            type=kind,
            ts=T0 + seq * 50,
            item_id=item,
            session_id=f"{user}-s",
            dwell_ms=700 if kind == "hover" else None,
            progress=0.4
            if kind in ("pause", "drop_off")
            else (1.0 if kind == "completion" else None),
        )


class StreamSender:
    """Produces an :class:`EventScript` round-robin over its users, at a steady rate.

    Only broker-acknowledged events count as sent (``sent`` per user, ``triggers`` for the ones
    that must cause a page, ``end_offsets`` per partition). An idempotent producer keeps each
    user's events in order and never writes one twice, so "sent" is exact.
    """

    def __init__(
        self, bootstrap: str, topic: str, script: EventScript, *, linger_ms: int = 5
    ) -> None:
        self.topic = topic
        self.script = script
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": linger_ms,
                "enable.idempotence": True,
                "acks": "all",
            }
        )
        self.next_seq = [0] * script.users
        self.sent: dict[str, list[BehaviourEvent]] = defaultdict(list)
        self.end_offsets: dict[int, int] = {}
        #: event id → (partition, offset), for diagnosing a mismatch.
        self.positions: dict[str, tuple[int, int]] = {}
        self.failed = 0
        self.produced = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor = 0

    # -- producing -------------------------------------------------------------------------

    def send_n(self, count: int) -> None:
        """Produce the next ``count`` events (round-robin over users); does not wait for acks."""
        script = self.script
        for _ in range(count):
            user_index = self._cursor % script.users
            self._cursor += 1
            seq = self.next_seq[user_index]
            self.next_seq[user_index] = seq + 1
            event = script.event(user_index, seq)
            self._produce(event)

    def _produce(self, event: BehaviourEvent) -> None:
        def delivered(
            error: KafkaError | None, message: Any, event: BehaviourEvent = event
        ) -> None:
            if error is not None:
                self.failed += 1
                return
            with self._lock:
                partition, offset = message.partition(), message.offset()
                self.end_offsets[partition] = max(self.end_offsets.get(partition, 0), offset + 1)
                self.sent[event.user_id].append(event)
                self.positions[event.event_id] = (partition, offset)
                self.produced += 1

        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=event.user_id.encode(),
                    value=encode_event(event),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def start(self, rate_per_s: float) -> None:
        """Produce at ``rate_per_s`` from a background thread until :meth:`stop`."""
        self._stop.clear()

        def run() -> None:
            tick = 0.02
            per_tick = rate_per_s * tick
            owed = 0.0
            next_at = time.monotonic()
            while not self._stop.is_set():
                owed += per_tick
                whole = int(owed)
                owed -= whole
                self.send_n(whole)
                next_at += tick
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.monotonic()  # fell behind: do not burst to catch up

        self._thread = threading.Thread(target=run, name="stream-sender", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout: float = 30.0) -> None:
        """Stop producing and wait until every produced event is acknowledged (or failed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        remaining = self.producer.flush(flush_timeout)
        assert remaining == 0, f"{remaining} events still unacknowledged after {flush_timeout}s"

    # -- what was sent -----------------------------------------------------------------------

    def sent_counts(self) -> dict[str, Counter[str]]:
        """Per user: how many events of each type the broker acknowledged."""
        with self._lock:
            return {user: Counter(e.type for e in events) for user, events in self.sent.items()}

    def trigger_event_ids(self) -> set[str]:
        """Ids of acknowledged events whose type triggers a page."""
        with self._lock:
            return {
                e.event_id
                for events in self.sent.values()
                for e in events
                if e.type in TRIGGER_TYPES
            }

    def total_sent(self) -> int:
        with self._lock:
            return sum(len(events) for events in self.sent.values())

    def produced_end_offsets(self) -> dict[int, int]:
        with self._lock:
            return dict(self.end_offsets)


def committed_offsets(bootstrap: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (missing when nothing is committed yet)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False}
    )
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def lag(produced: dict[int, int], committed: dict[int, int]) -> int:
    """Events produced but not yet committed by the group, summed over partitions."""
    return sum(end - committed.get(p, 0) for p, end in produced.items())


def wait_caught_up(
    bootstrap: str,
    group_id: str,
    topic: str,
    partitions: int,
    produced: dict[int, int],
    timeout: float,
    logs: Callable[[], str] = lambda: "",
) -> float:
    """Wait until the group committed everything produced; returns the seconds it took."""
    started = time.monotonic()
    committed: dict[int, int] = {}
    while True:
        committed = committed_offsets(bootstrap, group_id, topic, partitions)
        if lag(produced, committed) <= 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"group {group_id} not caught up after {timeout}s: produced {produced}, "
                f"committed {committed}\n{logs()}"
            )
        time.sleep(0.25)


def missing_in_window(
    client: redis.Redis, prefix: str, user: str, sent: list[BehaviourEvent]
) -> list[str]:
    """Sent event ids absent from the user's checkpointed dedup window, within its span.

    The window holds the ids of the last events applied; an id inside its span that is not
    in it was never applied (lost). Used to say which event went missing.
    """
    raw = client.get(f"{prefix}state:{user}")
    if raw is None:
        return [e.event_id for e in sent]
    window = orjson.loads(raw)["recent_event_ids"]
    if not window:
        return []
    ids = [e.event_id for e in sent]
    seen = set(window)
    first = min((ids.index(i) for i in window if i in ids), default=0)
    return [i for i in ids[first:] if i not in seen]


def state_mismatches(
    client: redis.Redis, prefix: str, sent: dict[str, Counter[str]]
) -> dict[str, str]:
    """Users whose Redis session features or state disagree with what was sent, and how."""
    users = sorted(sent)
    problems: dict[str, str] = {}
    sessions = client.mget([f"{prefix}session:{u}" for u in users]) if users else []
    states = client.mget([f"{prefix}state:{u}" for u in users]) if users else []
    for user, raw_session, raw_state in zip(users, sessions, states, strict=True):
        want = sent[user]
        total = sum(want.values())
        if raw_session is None or raw_state is None:
            problems[user] = f"no session/state in Redis, {total} events sent"
            continue
        session = orjson.loads(raw_session)
        state = orjson.loads(raw_state)
        got = {"events": session["events_count_session"], "state_events": state["session_events"]}
        expected = {"events": total, "state_events": total}
        for kind, name in FEATURE_OF_TYPE.items():
            got[kind] = session[name]
            expected[kind] = want.get(kind, 0)
        if got != expected:
            diff = {k: (got[k], expected[k]) for k in got if got[k] != expected[k]}
            problems[user] = f"(got, sent) {diff}"
    return problems


@dataclass
class PageAudit:
    """What the recommendations topic says about a set of trigger events.

    The contract: every trigger event is answered by a page, as the page's
    ``trigger_event_id`` or in its ``coalesced_event_ids`` (the worker serves one page per
    user per batch, ``INSESSION_COALESCE_PAGES``). Without redelivery each trigger is answered
    by exactly one page (:attr:`exactly_once`). A redelivery (restart, rebalance) can send a
    page again: a copy carries the same ``recommendation_id`` (ids derive from the user and the
    trigger); with coalescing, a redelivered batch cut differently can also answer a trigger by
    a second, different page (:attr:`reanswered`; see RELIABILITY.md).
    """

    pages: int = 0
    #: Pages with distinct ``recommendation_id`` s.
    distinct_pages: int = 0
    missing: set[str] = field(default_factory=set)
    #: trigger event id → number of pages answering it (only those with more than one).
    duplicated: dict[str, int] = field(default_factory=dict)
    #: trigger event ids answered by more than one distinct page (different recommendation ids).
    reanswered: set[str] = field(default_factory=set)
    #: recommendation ids whose copies differ in user or trigger event: never expected.
    inconsistent: set[str] = field(default_factory=set)
    #: ids answered that are not trigger events of the page's user (never expected).
    unexpected: set[str] = field(default_factory=set)
    #: triggers answered through ``coalesced_event_ids`` rather than as the page's trigger.
    coalesced: set[str] = field(default_factory=set)

    @property
    def duplicate_pages(self) -> int:
        """Pages beyond the first with the same recommendation id (suppressible by id)."""
        return self.pages - self.distinct_pages

    @property
    def exactly_once(self) -> bool:
        """Every trigger answered by exactly one page, and nothing else answered."""
        return not (self.missing or self.duplicated or self.unexpected or self.inconsistent)


def page_audit(values: Iterable[bytes], triggers: set[str]) -> PageAudit:
    """Check pages (raw JSON values) against the trigger events that must be answered.

    Trigger ids look like ``{user}-{seq}`` (``EventScript``), so an answered id must also
    belong to the page's user.
    """
    answers: Counter[str] = Counter()
    answered_by: dict[str, set[str]] = defaultdict(set)
    copies: dict[str, set[tuple[str, str]]] = defaultdict(set)
    audit = PageAudit()
    for value in values:
        page = orjson.loads(value)
        user, trigger, rec_id = page["user_id"], page["trigger_event_id"], page["recommendation_id"]
        copies[rec_id].add((user, trigger))
        audit.pages += 1
        for event_id in (trigger, *page.get("coalesced_event_ids", ())):
            answers[event_id] += 1
            answered_by[event_id].add(rec_id)
            if event_id not in triggers or not event_id.startswith(f"{user}-"):
                audit.unexpected.add(event_id)
            if event_id != trigger:
                audit.coalesced.add(event_id)
    audit.distinct_pages = len(copies)
    audit.missing = triggers - answers.keys()
    audit.duplicated = {t: n for t, n in answers.items() if n > 1}
    audit.reanswered = {t for t, rec_ids in answered_by.items() if len(rec_ids) > 1}
    audit.inconsistent = {rec_id for rec_id, seen in copies.items() if len(seen) > 1}
    return audit


class RssSampler:
    """Samples a process's resident memory from a thread; ``peak_mb`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss / 2**20
            except psutil.Error:
                return
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mb(self) -> float:
        return max((rss for _, rss in self.samples), default=0.0)

    def current_mb(self) -> float:
        return self.process.memory_info().rss / 2**20


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Print the figures a test measured and append them to ``$INSESSION_FIGURES`` if set.

    RELIABILITY.md quotes these; ``make reliability`` (or the pytest command in that file)
    collects them in one JSON-lines file.
    """
    line = json.dumps({"test": name, **figures}, sort_keys=True)
    print(f"FIGURES {line}")
    path = os.environ.get("INSESSION_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


class PrivateRedis:
    """A ``redis-server`` of our own (free port, no persistence, a password) to stop and start.

    The shared Redis on 6379 serves every other test; outages are staged on this one only.
    Restarting it loses its data, as a crashed Redis without persistence would.
    """

    def __init__(self, port: int, password: str, work_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (make redis installs it)")
        self.binary = binary
        self.port = port
        self.password = password
        self.work_dir = work_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """URL without the password (the worker gets it from REDIS_PASSWORD)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.work_dir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                self.password,
                "--dir",
                str(self.work_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        client = self.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


#: Faust logs this when a graceful stop cancels an agent that awaits a broker ack: the batch is
#: then withheld from the commit (stream/app.py), so the traceback is noise, not an error.
_SHUTDOWN_NOISE = ("in _on_published", "asyncio.exceptions.CancelledError")


def unexpected_tracebacks(log_text: str) -> list[str]:
    """Tracebacks in a worker log, minus Faust's known shutdown noise (see above)."""
    blocks = []
    lines = log_text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            block = "\n".join(lines[index : index + 12])
            if not all(marker in block for marker in _SHUTDOWN_NOISE):
                blocks.append(block)
    return blocks
