"""Offered-load statistics: intended send times, latency from them, warm-up excluded.

A benchmark that sends the next message only after the previous answer (or that times each
message from when it was really sent) hides every stall: while the system is stuck, the
messages that should have been sent are not, so the stall is measured once instead of once
per message it delayed (coordinated omission). Here message ``seq`` is *due* at
``start + seq / rate`` whatever happens; its latency is ``received - due``, so a sender that
fell behind, a slow broker or a slow worker all show up in the percentiles. The histograms
are HDR (``stream.latency.LatencyRecorder``: 1 µs to 60 s, 3 significant digits).

Pure: clocks are passed in, so ``tests/unit/test_bench_stats.py`` checks the statistics on
synthetic, known delays.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from stream.latency import LatencyRecorder

__all__ = [
    "Drain",
    "LatencyTracker",
    "Schedule",
    "histogram_difference",
    "run_paced",
    "summary_ms",
]


@dataclass(frozen=True, slots=True)
class Schedule:
    """``rate`` messages per second for ``warmup_s`` then ``duration_s``; only the latter count.

    Examples
    --------
    >>> schedule = Schedule(rate=1000.0, duration_s=2.0, warmup_s=0.5)
    >>> schedule.count, schedule.warmup_count
    (2500, 500)
    >>> schedule.due_ns(1000, start_ns=0)
    1000000000
    """

    rate: float
    duration_s: float
    warmup_s: float = 0.0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number, got {self.rate!r}")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration_s must be > 0 and warmup_s >= 0")

    @property
    def count(self) -> int:
        """Messages sent in all (warm-up included)."""
        return round(self.rate * (self.warmup_s + self.duration_s))

    @property
    def warmup_count(self) -> int:
        """Messages of the warm-up (sequence numbers below this are not measured)."""
        return round(self.rate * self.warmup_s)

    def due_ns(self, seq: int, start_ns: int) -> int:
        """When message ``seq`` is due (the intended send time)."""
        return start_ns + round(seq * 1e9 / self.rate)


class LatencyTracker:
    """Latency of each measured message from its intended send time, in an HDR histogram.

    ``sent`` and ``received`` may be called from different threads (one sender, one receiver).
    A message received twice counts once (``duplicates`` says how often it happened); one
    never received by :meth:`summary` time is ``missing``.
    """

    def __init__(self, schedule: Schedule, start_ns: int) -> None:
        self.schedule = schedule
        self.start_ns = start_ns
        self.latency = LatencyRecorder()
        #: How late the sender itself was (actual send - due): large means the load generator,
        #: not the system under test, could not keep the rate.
        self.send_lag = LatencyRecorder()
        self.sent = 0
        self.received = 0
        self.duplicates = 0
        self.last_received_ns = 0
        self.expected_total = 0
        self._seen: bytearray = bytearray(schedule.count)
        self._lock = threading.Lock()

    def on_sent(self, seq: int, sent_ns: int) -> None:
        """Record that ``seq`` left at ``sent_ns``."""
        self.sent += 1
        if seq >= self.schedule.warmup_count:
            self.send_lag.record_ns(max(sent_ns - self.schedule.due_ns(seq, self.start_ns), 0))

    def on_received(self, seq: int, received_ns: int) -> None:
        """Record the answer to ``seq`` seen at ``received_ns``; unknown sequences are ignored."""
        if not 0 <= seq < len(self._seen):
            return
        with self._lock:
            if self._seen[seq]:
                self.duplicates += 1
                return
            self._seen[seq] = 1
            self.received += 1
            self.last_received_ns = max(self.last_received_ns, received_ns)
            if seq >= self.schedule.warmup_count:
                due = self.schedule.due_ns(seq, self.start_ns)
                self.latency.record_ns(max(received_ns - due, 0))

    def received_count(self, *, measured_only: bool = False) -> int:
        """Answers received (in the measured window only, if asked)."""
        if not measured_only:
            return self.received
        return sum(self._seen[self.schedule.warmup_count :])

    def summary(self, expected: Callable[[int], bool] | None = None) -> dict[str, Any]:
        """Percentiles plus what was sent, received and missing in the measured window.

        ``expected(seq)`` says whether a message should have had an answer (an insession
        event that triggers no page has none); default: every message.
        """
        warm = self.schedule.warmup_count
        measured = range(warm, self.schedule.count)
        want = [seq for seq in measured if expected is None or expected(seq)]
        missing = sum(1 for seq in want if not self._seen[seq])
        return {
            "offered_rate": self.schedule.rate,
            "measured_s": self.schedule.duration_s,
            "warmup_s": self.schedule.warmup_s,
            "sent": self.sent,
            "expected_answers": len(want),
            "answers": len(want) - missing,
            "missing": missing,
            "duplicates": self.duplicates,
            "latency": summary_ms(self.latency),
            "sender_lag": summary_ms(self.send_lag),
        }


def summary_ms(recorder: LatencyRecorder) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in ms with the count, rounded for reading."""
    return {key: round(value, 3) for key, value in recorder.summary_ms().items()}


def run_paced(
    schedule: Schedule,
    send: Callable[[int], None],
    *,
    start_ns: int,
    clock: Callable[[], int],
    sleep: Callable[[float], None],
    tracker: LatencyTracker | None = None,
    max_sleep_s: float = 0.001,
) -> int:
    """Send every message of the schedule at (or as soon as possible after) its due time.

    A sender that falls behind catches up by sending everything already due at once, never
    by moving the schedule, so the delay it caused stays in the latency. Returns the last
    send time.
    """
    seq = 0
    total = schedule.count
    period_ns = 1e9 / schedule.rate
    now = clock()
    while seq < total:
        now = clock()
        # Everything due by now goes out in one burst.
        due_by_now = min(total, int((now - start_ns) / period_ns) + 1) if now >= start_ns else 0
        while seq < due_by_now:
            send(seq)
            if tracker is not None:
                tracker.on_sent(seq, clock())
            seq += 1
        if seq < total:
            wait_s = (schedule.due_ns(seq, start_ns) - clock()) / 1e9
            if wait_s > 0:
                sleep(min(wait_s, max_sleep_s))
    return now


def histogram_difference(later: HdrHistogram, earlier: HdrHistogram) -> LatencyRecorder:
    """What was recorded between two snapshots of one cumulative histogram.

    The worker publishes its processing histogram cumulatively; a phase of the benchmark is
    the difference between the snapshots taken at its end and at its start.
    """
    difference = LatencyRecorder()
    for bucket in later.get_recorded_iterator():
        value = bucket.value_iterated_to
        count = bucket.count_at_value_iterated_to - earlier.get_count_at_value(value)
        if count > 0:
            difference.histogram.record_value(value, count)
    return difference


@dataclass(slots=True)
class Drain:
    """A backlog sent at once, and when its last expected answer arrived."""

    messages: int
    first_sent_ns: int
    last_answer_ns: int = 0
    answers: int = 0
    expected: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.expected > 0 and self.answers >= self.expected

    @property
    def events_per_s(self) -> float:
        """Messages of the backlog processed per second, first send to last answer.

        A drain cut short counts the answered share of the backlog as processed (answers
        come in roughly the backlog's order, partition by partition).
        """
        elapsed = (self.last_answer_ns - self.first_sent_ns) / 1e9
        if elapsed <= 0 or not self.expected:
            return 0.0
        return self.messages * min(self.answers / self.expected, 1.0) / elapsed
