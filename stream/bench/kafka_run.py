"""Offered load through Kafka: a paced sender, a receiver thread, and the phases of one system.

Each system under test (the broker relay, the Faust forwarder, the insession worker) reads
events from an input topic and writes one output per answered event to an output topic. The
sender produces the shared demo-like traffic at a fixed offered rate (``stats.run_paced``);
the receiver reads the output topic (assigned partitions, the worker's fetch wait, ``poll``
then ``consume(n, 0)``), finds the event id in each output and records its latency from the
intended send time. A page answers its ``trigger_event_id`` and every id in its
``coalesced_event_ids`` (the worker serves one page per user per batch): each of those events
is answered at that page's arrival, its latency taken from its own intended send time. A drain
phase sends a backlog at once and times it to its last answer: the system's maximum
throughput.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas.codec import encode_event
from stream.bench.stats import Drain, LatencyTracker, Schedule, run_paced
from stream.bench.traffic import EventTemplate, Traffic, seq_of_event_id

__all__ = [
    "COALESCED_FIELD",
    "AnswerRouter",
    "OutputReceiver",
    "PhaseRunner",
    "coalesced_ids_in",
    "event_id_in",
]

_PROBE = "probe"
#: Where a page (JSON) lists the earlier trigger events it answers as well.
COALESCED_FIELD = b'"coalesced_event_ids":['


def event_id_in(value: bytes, field: bytes) -> str | None:
    """The string value of a JSON field such as ``"trigger_event_id":"`` without parsing.

    Pages are ~4 KB of JSON; finding one key is ~20x cheaper than decoding them, and keeps
    the receiver (which shares a core with the sender) from becoming the bottleneck.

    Examples
    --------
    >>> event_id_in(b'{"a":1,"trigger_event_id":"run-7","b":2}', b'"trigger_event_id":"')
    'run-7'
    """
    start = value.find(field)
    if start < 0:
        return None
    start += len(field)
    end = value.find(b'"', start)
    return value[start:end].decode() if end > start else None


def coalesced_ids_in(value: bytes, field: bytes = COALESCED_FIELD) -> list[str]:
    """The ids of a JSON array field such as ``"coalesced_event_ids":[...]`` (no full parse).

    Examples
    --------
    >>> coalesced_ids_in(b'{"trigger_event_id":"r-9","coalesced_event_ids":["r-7","r-8"]}')
    ['r-7', 'r-8']
    >>> coalesced_ids_in(b'{"coalesced_event_ids":[]}'), coalesced_ids_in(b'{}')
    ([], [])
    """
    start = value.find(field)
    if start < 0:
        return []
    start += len(field) - 1
    end = value.find(b"]", start)
    if end < 0:
        return []
    ids = orjson.loads(value[start : end + 1])
    return [i for i in ids if isinstance(i, str)]


class AnswerRouter:
    """Credits the events an output answers to the tracker of each event's phase.

    An output answers the id in ``id_field`` and, when ``coalesced_field`` is given, every id
    in that array (a page's ``coalesced_event_ids``): all at the output's arrival, each with
    its own sequence number, so each event's latency runs from its own intended send time.
    Thread-safe: phases are added by the sender's thread, outputs credited by the receiver's.
    """

    def __init__(self, *, id_field: bytes, run_id: str, coalesced_field: bytes | None = None):
        self.id_field = id_field
        self.coalesced_field = coalesced_field
        self.run_prefix = f"{run_id}-"
        self.probe_prefix = f"{run_id}{_PROBE}-"
        self.probe_answered = threading.Event()
        self._phases: list[tuple[int, LatencyTracker]] = []  # (first seq, tracker), sorted
        self._lock = threading.Lock()

    def track(self, first_seq: int, tracker: LatencyTracker) -> None:
        """Route answers for ``first_seq`` onwards (until the next phase) to ``tracker``."""
        with self._lock:
            self._phases.append((first_seq, tracker))
            self._phases.sort(key=lambda pair: pair[0])

    def answer(self, value: bytes, received_ns: int) -> None:
        """One output seen at ``received_ns``: credit every event it answers."""
        event_id = event_id_in(value, self.id_field)
        if event_id is None:
            return
        self._credit(event_id, received_ns)
        if self.coalesced_field is not None:
            for coalesced_id in coalesced_ids_in(value, self.coalesced_field):
                self._credit(coalesced_id, received_ns)

    def _credit(self, event_id: str, received_ns: int) -> None:
        if event_id.startswith(self.probe_prefix):
            self.probe_answered.set()
            return
        if not event_id.startswith(self.run_prefix):
            return
        seq = seq_of_event_id(event_id)
        with self._lock:
            index = bisect.bisect_right(self._phases, seq, key=lambda pair: pair[0]) - 1
            if index < 0:
                return
            first_seq, tracker = self._phases[index]
        tracker.on_received(seq - first_seq, received_ns)


class OutputReceiver(threading.Thread):
    """Reads an output topic and hands every output to an :class:`AnswerRouter`."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        *,
        id_field: bytes,
        run_id: str,
        fetch_wait_ms: int,
        coalesced_field: bytes | None = None,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name=f"receiver-{topic}", daemon=True)
        self.consumer = Consumer(
            (client_config or {})
            | {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-receiver-{topic}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
            }
        )
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.router = AnswerRouter(
            id_field=id_field, run_id=run_id, coalesced_field=coalesced_field
        )
        self.probe_answered = self.router.probe_answered
        self.outputs = 0
        self._stopping = threading.Event()

    def track(self, first_seq: int, tracker: LatencyTracker) -> None:
        """Route answers for ``first_seq`` onwards (until the next phase) to ``tracker``."""
        self.router.track(first_seq, tracker)

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)
        self.consumer.close()

    def run(self) -> None:
        consumer = self.consumer
        clock = time.perf_counter_ns
        answer = self.router.answer
        while not self._stopping.is_set():
            first = consumer.poll(0.05)
            if first is None:
                continue
            received_ns = clock()
            batch = [first, *consumer.consume(2000, 0)]
            for message in batch:
                if message.error() is not None:
                    continue
                self.outputs += 1
                answer(message.value(), received_ns)


@dataclass(slots=True)
class PhaseRunner:
    """Sends phases of the shared traffic to one system and measures its answers."""

    producer: Producer
    receiver: OutputReceiver
    in_topic: str
    traffic: Traffic
    templates: Sequence[EventTemplate]
    answers: Callable[[EventTemplate], bool]
    run_id: str
    next_seq: int = 0
    answer_timeout_s: float = 15.0
    #: Every phase's tracker with the answers it expects (warm-up included), for wait_idle.
    sent_phases: list[tuple[LatencyTracker, int]] = field(default_factory=list)

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Send probe events until one is answered (group joined, catalog loaded)."""
        started = time.monotonic()
        probe = next(t for t in self.templates if self.answers(t))
        count = 0
        while not self.receiver.probe_answered.is_set():
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"no answer to a probe event within {timeout_s:.0f} s")
            self._produce(probe, f"{self.run_id}{_PROBE}-{count}")
            count += 1
            self.producer.flush(1)
            self.receiver.probe_answered.wait(0.25)
        return time.monotonic() - started

    def offered(self, schedule: Schedule) -> dict[str, Any]:
        """One phase at a fixed offered rate; returns the tracker's summary."""
        first = self.next_seq
        self.next_seq += schedule.count
        start_ns = time.perf_counter_ns() + 20_000_000
        tracker = LatencyTracker(schedule, start_ns)
        self.receiver.track(first, tracker)
        producer = self.producer

        def send(seq: int) -> None:
            self._produce(self._template(first + seq), f"{self.run_id}-{first + seq}")
            producer.poll(0)

        run_paced(
            schedule,
            send,
            start_ns=start_ns,
            clock=time.perf_counter_ns,
            sleep=time.sleep,
            tracker=tracker,
        )
        producer.flush(10)
        self.sent_phases.append((tracker, self._expected(first, schedule.count, 0)))
        tracker.expected_total = self.sent_phases[-1][1]
        answered = self._expected(first, schedule.count, schedule.warmup_count)
        self._wait(lambda: tracker.received_count(measured_only=True) >= answered)
        return tracker.summary(lambda seq: self.answers(self._template(first + seq)))

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every phase sent so far is answered: the system has no backlog left."""
        return self._wait(
            lambda: all(tracker.received >= expected for tracker, expected in self.sent_phases),
            timeout_s=timeout_s,
        )

    def drain(self, messages: int, max_wait_s: float = 60.0) -> Drain:
        """Send ``messages`` at once and time them to the last answer (maximum throughput).

        Waits at most ``max_wait_s`` after sending; a drain cut short reports the rate of
        the part that was answered (``Drain.complete`` is then false).
        """
        first = self.next_seq
        self.next_seq += messages
        rate = 1e9  # everything is due at the start: latency = time into the backlog
        schedule = Schedule(rate=rate, duration_s=messages / rate)
        start_ns = time.perf_counter_ns()
        tracker = LatencyTracker(schedule, start_ns)
        self.receiver.track(first, tracker)
        expected = self._expected(first, messages, 0)
        for seq in range(messages):
            self._produce(self._template(first + seq), f"{self.run_id}-{first + seq}")
            if seq % 1000 == 0:
                self.producer.poll(0)
        self.producer.flush(30)
        sent_s = (time.perf_counter_ns() - start_ns) / 1e9
        self.sent_phases.append((tracker, expected))
        self._wait(lambda: tracker.received >= expected, timeout_s=max_wait_s)
        drain = Drain(
            messages=messages,
            first_sent_ns=start_ns,
            last_answer_ns=tracker.last_received_ns,
            answers=tracker.received,
            expected=expected,
        )
        drain.extra = {"send_s": round(sent_s, 3), "time_into_backlog": tracker.latency}
        return drain

    # -- helpers ----------------------------------------------------------------------------

    def _template(self, seq: int) -> EventTemplate:
        return self.templates[seq % len(self.templates)]

    def _expected(self, first: int, count: int, skip: int) -> int:
        return sum(
            1 for seq in range(first + skip, first + count) if self.answers(self._template(seq))
        )

    def _produce(self, template: EventTemplate, event_id: str) -> None:
        event = self.traffic.stamp(template, event_id, time.time_ns() // 1_000_000)
        raw = encode_event(event)
        while True:
            try:
                self.producer.produce(self.in_topic, key=event.user_id.encode(), value=raw)
                return
            except BufferError:  # local queue full: let librdkafka send some first
                self.producer.poll(0.01)

    def _wait(self, done: Callable[[], bool], timeout_s: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout_s or self.answer_timeout_s)
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True
