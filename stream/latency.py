"""Latency histograms (HDR) for the worker's own processing time and for benchmarks."""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

__all__ = ["GcPauses", "LatencyRecorder", "percentiles_us"]

_LOWEST_US = 1
_HIGHEST_US = 60 * 1_000_000


class LatencyRecorder:
    """Microsecond HDR histogram with 3 significant digits, from 1 µs to 60 s.

    Examples
    --------
    >>> recorder = LatencyRecorder()
    >>> for ms in (1, 2, 3, 4, 100):
    ...     recorder.record_us(ms * 1000)
    >>> round(recorder.percentile_ms(50))
    3
    """

    __slots__ = ("histogram",)

    def __init__(self) -> None:
        self.histogram = HdrHistogram(_LOWEST_US, _HIGHEST_US, 3)

    def record_us(self, micros: float, count: int = 1) -> None:
        """Record a latency in microseconds (clamped into the histogram's range)."""
        value = min(max(int(micros), _LOWEST_US), _HIGHEST_US)
        self.histogram.record_value(value, count)

    def record_ns(self, nanos: int, count: int = 1) -> None:
        """Record a batch's duration once per event it covered."""
        self.record_us(nanos / 1000.0, count)

    @property
    def count(self) -> int:
        """Values recorded."""
        return int(self.histogram.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        """The value at a percentile, in milliseconds."""
        return self.histogram.get_value_at_percentile(percentile) / 1000.0

    def summary_ms(self) -> dict[str, float]:
        """p50/p90/p99/p99.9/max in milliseconds, and the count.

        The worker publishes several summaries every second on its event loop: hdrh's own
        lookup walks the 17,408 buckets in Python (~1.2 ms a summary, a stall a batch
        waits behind), `percentiles_us` does it in numpy with the same answers.
        """
        values = percentiles_us(self.histogram, (50.0, 90.0, 99.0, 99.9))
        return {
            "count": self.count,
            "p50_ms": values.get(50.0, 0) / 1000.0,
            "p90_ms": values.get(90.0, 0) / 1000.0,
            "p99_ms": values.get(99.0, 0) / 1000.0,
            "p999_ms": values.get(99.9, 0) / 1000.0,
            "max_ms": self.histogram.get_max_value() / 1000.0,
        }

    def reset(self) -> None:
        """Start a new measurement window."""
        self.histogram.reset()


def percentiles_us(histogram: HdrHistogram, percentiles: tuple[float, ...]) -> dict[float, int]:
    """``histogram.get_percentile_to_value_dict(percentiles)``, the same values from a cumulative
    sum in numpy instead of a Python loop over every bucket (tested against it)."""
    counts = np.ctypeslib.as_array(histogram.counts)[: histogram.counts_len]
    cumulative = np.cumsum(counts)
    out: dict[float, int] = {}
    for percentile in sorted(set(percentiles)):
        if percentile > 100:
            break
        target = histogram.get_target_count_at_percentile(percentile)
        index = int(np.searchsorted(cumulative, target, side="left"))
        if index >= histogram.counts_len:
            break  # fewer values recorded than the target: hdrh leaves it out too
        value = histogram.get_value_from_index(index)
        out[percentile] = (
            histogram.get_highest_equivalent_value(value)
            if percentile
            else histogram.get_lowest_equivalent_value(value)
        )
    return out


class GcPauses:
    """How long the garbage collector stops the process, per generation (``gc.callbacks``),
    and optionally what it has to walk next time.

    A full (generation 2) collection walks every tracked object: with a worker's states,
    models, caches and the runtime's objects that measured 120-200 ms on an idle core and up to
    550 ms on the shared one, during which no event is processed; it showed in the tail of
    every latency histogram. With ``freeze_survivors``, :meth:`freeze_if_due` moves everything
    that survived the last full collection to the permanent generation (``gc.freeze``), so the
    next one walks only what was created since: in-process on the benchmark traffic, full
    pauses went from ~130-200 ms to ~30-80 ms. Frozen objects are still freed by reference
    counting; only garbage *cycles* among them wait, until :meth:`unfreeze` (the worker calls
    it hourly) lets the next full collection walk everything again. The engine makes ~24
    cyclic garbage objects per 20,000 events, so that wait costs little memory.

    With ``freeze_young`` the survivors of every young collection are frozen as it ends, so
    no collection ever walks more than what one young collection left: the generation-1
    collections (3-16 ms in-process, every tenth young one, inside a batch) and the full ones
    walk nearly nothing. The price is that a garbage cycle older than one young collection
    waits for :meth:`sweep_cycles` (the worker calls it hourly), one full walk of everything.
    """

    def __init__(self, *, freeze_survivors: bool = False, freeze_young: bool = False) -> None:
        self.by_generation = [LatencyRecorder() for _ in range(3)]
        self.freeze_survivors = freeze_survivors
        self.freeze_young = freeze_young
        #: Unreachable objects the sweeps found (cycles that waited frozen), in all.
        self.swept = 0
        self.freezes = 0
        self._started_ns = 0
        self._full_collection_done = False
        self._summaries: dict[str, dict[str, float]] = {}

    def install(self) -> GcPauses:
        """Start recording (idempotent); with ``freeze_survivors``, freeze what lives now."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        if self.freeze_survivors:
            gc.collect()
            self._full_collection_done = False
            self._freeze()
        return self

    def uninstall(self) -> None:
        """Stop recording."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def freeze_if_due(self) -> bool:
        """After a full collection, freeze its survivors (call from the event loop, not GC)."""
        if not (self.freeze_survivors and self._full_collection_done):
            return False
        self._full_collection_done = False
        self._freeze()
        return True

    def unfreeze(self) -> None:
        """Let the next full collection walk (and free cycles among) everything again."""
        gc.unfreeze()

    def sweep_cycles(self) -> int:
        """Free the garbage cycles among frozen objects now (one full walk), then freeze the
        survivors again; returns how many objects were found unreachable.

        With ``freeze_young`` no full collection ever comes by itself (nothing is promoted
        to the oldest generation), so unfreezing alone would free nothing.
        """
        self.unfreeze()
        found = gc.collect()
        self._full_collection_done = False
        self._freeze()
        self.swept += found
        return found

    def release_frozen_cycles(self) -> int | None:
        """What the worker's hourly timer calls: with ``freeze_young`` a sweep (returns what
        it found), with ``freeze_survivors`` an unfreeze for the next full collection (None),
        without freezing nothing (None)."""
        if self.freeze_young:
            return self.sweep_cycles()
        if self.freeze_survivors:
            self.unfreeze()
        return None

    def _freeze(self) -> None:
        gc.freeze()
        self.freezes += 1

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_ns = time.perf_counter_ns()
        elif self._started_ns:
            generation = min(int(info.get("generation", 2)), 2)
            self.by_generation[generation].record_ns(time.perf_counter_ns() - self._started_ns)
            self._started_ns = 0
            if generation == 2:
                self._full_collection_done = True
            elif self.freeze_young:
                # The collection is over (this is its "stop"): merging the generations into
                # the permanent one is a constant-time list splice, safe here.
                self._freeze()

    def summary_ms(self) -> dict[str, Any]:
        """Pause percentiles per generation, in milliseconds, and the freezes so far.

        The worker publishes this every second: a generation is summarized again only when
        it collected since.
        """
        cached = self._summaries
        for generation, recorder in enumerate(self.by_generation):
            key = f"gen{generation}"
            summary = cached.get(key)
            if summary is None or summary["count"] != recorder.count:
                cached[key] = recorder.summary_ms()
        out: dict[str, Any] = dict(cached)
        out["freezes"] = self.freezes
        out["swept"] = self.swept
        # Not gc.get_freeze_count(): it walks the whole frozen generation (~10 ms for the
        # worker's ~1M frozen objects), which stalled the event loop once a second.
        return out
