"""The benchmark harness reports what it measures: synthetic, known delays in, percentiles out.

A fake clock drives the paced sender, so the tests are exact and take milliseconds; HDR
histograms keep 3 significant digits, hence the 0.1% tolerances.
"""

from __future__ import annotations

import random

import pytest

from schemas.codec import encode_event
from stream.bench.kafka_run import COALESCED_FIELD, AnswerRouter, coalesced_ids_in, event_id_in
from stream.bench.stats import LatencyTracker, Schedule, histogram_difference, run_paced
from stream.bench.traffic import Traffic, seq_of_event_id
from stream.demo_traffic import demo_catalog
from stream.latency import LatencyRecorder, percentiles_us

MS = 1_000_000  # ns


class FakeClock:
    """Nanosecond clock that only moves when the code under test sleeps or a send blocks."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(int(seconds * 1e9), 1)


def _paced_run(
    schedule: Schedule, delay_of: dict[int, int], stall_at: int | None = None, stall_ns: int = 0
) -> LatencyTracker:
    """Send the schedule; each answer arrives ``delay_of.get(seq, 0)`` ns after its real send."""
    clock = FakeClock()
    tracker = LatencyTracker(schedule, start_ns=0)

    def send(seq: int) -> None:
        if seq == stall_at:
            clock.now += stall_ns  # the system blocks the sender (a full queue, a GC pause)
        tracker.on_received(seq, clock.now + delay_of.get(seq, 0))

    run_paced(schedule, send, start_ns=0, clock=clock, sleep=clock.sleep, tracker=tracker)
    return tracker


def test_schedule_counts_and_due_times() -> None:
    schedule = Schedule(rate=200.0, duration_s=10.0, warmup_s=3.0)
    assert (schedule.count, schedule.warmup_count) == (2600, 600)
    assert schedule.due_ns(0, start_ns=5) == 5
    assert schedule.due_ns(200, start_ns=5) == 1_000_000_005
    with pytest.raises(ValueError):
        Schedule(rate=0.0, duration_s=1.0)


def test_a_constant_delay_is_every_percentile() -> None:
    schedule = Schedule(rate=1_000.0, duration_s=2.0, warmup_s=0.5)
    tracker = _paced_run(schedule, dict.fromkeys(range(schedule.count), 5 * MS))
    summary = tracker.summary()
    latency = summary["latency"]
    assert latency["count"] == 2_000  # the 500 warm-up messages are not counted
    for key in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
        assert latency[key] == pytest.approx(5.0, rel=1e-3)
    assert (summary["answers"], summary["missing"], summary["duplicates"]) == (2_000, 0, 0)
    assert summary["sender_lag"]["max_ms"] < 0.01


def test_percentiles_of_a_known_distribution() -> None:
    """Delays 1..1000 µs in a known order: p50 = 500 µs, p99 = 990 µs, max = 1 ms."""
    schedule = Schedule(rate=1_000.0, duration_s=1.0)
    delays = {seq: (seq % 1_000 + 1) * 1_000 for seq in range(schedule.count)}
    latency = _paced_run(schedule, delays).summary()["latency"]
    assert latency["p50_ms"] == pytest.approx(0.500, rel=2e-3)
    assert latency["p99_ms"] == pytest.approx(0.990, rel=2e-3)
    assert latency["max_ms"] == pytest.approx(1.000, rel=2e-3)


def test_warm_up_is_excluded() -> None:
    schedule = Schedule(rate=100.0, duration_s=1.0, warmup_s=1.0)
    delays = {seq: (900 * MS if seq < 100 else 2 * MS) for seq in range(schedule.count)}
    latency = _paced_run(schedule, delays).summary()["latency"]
    assert latency["count"] == 100
    assert latency["max_ms"] == pytest.approx(2.0, rel=1e-3)


def test_a_stall_counts_for_every_message_it_delayed() -> None:
    """Coordinated omission: a 100 ms stall at 1,000/s delays ~100 messages, not one.

    Timed from the real send, every answer here is instant (the stall would vanish); timed
    from the intended send, the messages due during the stall wait 100 ms down to 0 ms.
    """
    schedule = Schedule(rate=1_000.0, duration_s=1.0)
    tracker = _paced_run(schedule, {}, stall_at=500, stall_ns=100 * MS)
    histogram = tracker.latency.histogram
    assert tracker.latency.percentile_ms(100) == pytest.approx(100.0, rel=1e-3)
    delayed = sum(
        bucket.count_at_value_iterated_to
        for bucket in histogram.get_recorded_iterator()
        if bucket.value_iterated_to >= 1_000  # ≥ 1 ms
    )
    assert 99 <= delayed <= 101
    at_least_half = sum(
        bucket.count_at_value_iterated_to
        for bucket in histogram.get_recorded_iterator()
        if bucket.value_iterated_to >= 50_000
    )
    assert 49 <= at_least_half <= 51
    # The sender knows it was late too: that is the load generator's lag, reported beside.
    assert tracker.send_lag.percentile_ms(100) == pytest.approx(100.0, rel=1e-3)


def test_missing_and_duplicate_answers_are_counted_not_measured() -> None:
    schedule = Schedule(rate=10.0, duration_s=1.0)
    tracker = LatencyTracker(schedule, start_ns=0)
    for seq in range(10):
        if seq != 3:
            tracker.on_received(seq, schedule.due_ns(seq, 0) + MS)
    tracker.on_received(5, schedule.due_ns(5, 0) + 500 * MS)  # redelivered later: ignored
    tracker.on_received(99, 0)  # not part of this phase
    summary = tracker.summary(expected=lambda seq: seq != 7)
    assert summary["expected_answers"] == 9
    assert summary["missing"] == 1  # seq 3; seq 7 was never expected
    assert summary["duplicates"] == 1
    assert summary["latency"]["max_ms"] == pytest.approx(1.0, rel=1e-3)


def test_a_phase_is_the_difference_of_two_cumulative_snapshots() -> None:
    worker = LatencyRecorder()
    for micros in (100, 200, 300):
        worker.record_us(micros, count=10)
    start = worker.histogram.encode()
    for micros in (5_000, 7_000):
        worker.record_us(micros, count=4)
    end = worker.histogram.encode()

    from hdrh.histogram import HdrHistogram

    phase = histogram_difference(HdrHistogram.decode(end), HdrHistogram.decode(start))
    assert phase.count == 8
    assert phase.percentile_ms(0) == pytest.approx(5.0, rel=1e-3)
    assert phase.percentile_ms(100) == pytest.approx(7.0, rel=1e-3)


def test_outputs_are_matched_to_their_event() -> None:
    traffic = Traffic(demo_catalog(), users=50, run_id="b1a2")
    templates = traffic.templates(2_000)
    share = sum(t.triggers_page for t in templates) / len(templates)
    assert 0.4 < share < 0.8, share
    raw = encode_event(traffic.stamp(templates[7], "b1a2-1234", 1_700_000_000_000))
    event_id = event_id_in(raw, b'"event_id":"')
    assert event_id == "b1a2-1234"
    assert seq_of_event_id(event_id) == 1234
    again = Traffic(demo_catalog(), users=50, run_id="b1a2").templates(2_000)
    assert [t.event for t in again] == [t.event for t in templates], "deterministic"


def test_a_coalesced_page_answers_each_of_its_events_from_its_own_send_time() -> None:
    """No coordinated omission through coalescing: a page answering three triggers at 30 ms
    gives each of them its own latency (30, 20, 10 ms for sends due at 0, 10, 20 ms)."""
    schedule = Schedule(rate=100.0, duration_s=1.0)  # seq n due at n * 10 ms
    tracker = LatencyTracker(schedule, start_ns=0)
    router = AnswerRouter(
        id_field=b'"trigger_event_id":"', run_id="r1", coalesced_field=COALESCED_FIELD
    )
    router.track(0, tracker)
    page = b'{"trigger_event_id":"r1-2","coalesced_event_ids":["r1-0","r1-1"],"rows":[]}'
    router.answer(page, 30 * MS)
    assert coalesced_ids_in(page) == ["r1-0", "r1-1"]
    assert tracker.received == 3
    latencies = sorted(
        bucket.value_iterated_to for bucket in tracker.latency.histogram.get_recorded_iterator()
    )
    assert latencies == [pytest.approx(v, rel=1e-3) for v in (10_000, 20_000, 30_000)]  # µs
    # The same page again (a redelivered copy) is a duplicate, not three more answers.
    router.answer(page, 40 * MS)
    assert (tracker.received, tracker.duplicates) == (3, 3)
    # Without the coalesced field configured only the trigger counts (the floors' outputs).
    plain = AnswerRouter(id_field=b'"trigger_event_id":"', run_id="r1")
    other = LatencyTracker(schedule, start_ns=0)
    plain.track(0, other)
    plain.answer(page, 30 * MS)
    assert other.received == 1


def test_a_paced_phase_keeps_up_only_with_every_answer_and_a_bounded_p99() -> None:
    from stream.bench.runner import _kept_up

    served = {"missing": 0, "latency": {"p50_ms": 40.0, "p99_ms": 120.0}}
    assert _kept_up(served)
    assert not _kept_up({**served, "missing": 3})
    assert not _kept_up({**served, "latency": {"p50_ms": 500.0, "p99_ms": 1_800.0}})
    assert not _kept_up({"missing": 0, "latency": None})


@pytest.mark.parametrize("recorded", [0, 1, 7, 5_000])
def test_summary_percentiles_are_hdrhs_own(recorded: int) -> None:
    """The numpy lookup behind every summary gives hdrh's values, empty and sparse included."""
    rng = random.Random(recorded)
    recorder = LatencyRecorder()
    for _ in range(recorded):  # a body of milliseconds and a tail of seconds
        recorder.record_us(rng.expovariate(1 / 4_000) + rng.choice((0, 0, 0, 2_000_000)))
    wanted = [0.0, 50.0, 90.0, 99.0, 99.9, 100.0]
    expected = recorder.histogram.get_percentile_to_value_dict(wanted)
    assert percentiles_us(recorder.histogram, tuple(wanted)) == expected
    assert len(expected) == (len(wanted) if recorded else 0)
