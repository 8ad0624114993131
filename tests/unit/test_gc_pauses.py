"""The worker's GC pause recorder and its freezing of what survived a full collection."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from stream.latency import GcPauses


def test_pauses_are_recorded_per_generation() -> None:
    pauses = GcPauses().install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    summary = pauses.summary_ms()
    assert summary["gen0"]["count"] >= 1 and summary["gen2"]["count"] >= 1
    assert summary["freezes"] == 0
    assert pauses.freeze_if_due() is False, "freezing is off unless asked for"


def test_survivors_of_a_full_collection_are_frozen_until_unfrozen() -> None:
    pauses = GcPauses(freeze_survivors=True)
    try:
        pauses.install()  # freezes what lives at start-up
        assert pauses.freezes == 1 and gc.get_freeze_count() > 0
        assert pauses.freeze_if_due() is False, "no full collection since"
        survivors = [[n] for n in range(1_000)]  # new objects, tracked, alive
        before = gc.get_freeze_count()
        gc.collect(2)
        assert pauses.freeze_if_due() is True
        assert gc.get_freeze_count() >= before + len(survivors)
        assert pauses.freeze_if_due() is False, "once per full collection"
        pauses.unfreeze()
        assert gc.get_freeze_count() == 0
    finally:
        pauses.uninstall()
        gc.unfreeze()


def test_the_summary_does_not_walk_the_frozen_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker publishes the summary every second from its event loop; counting the frozen
    objects walks all of them (~10 ms for a worker's million), a stall once a second."""
    pauses = GcPauses(freeze_survivors=True)
    try:
        pauses.install()

        def walk() -> int:
            raise AssertionError("summary_ms walked the frozen generation")

        monkeypatch.setattr(gc, "get_freeze_count", walk)
        summary = pauses.summary_ms()
    finally:
        pauses.uninstall()
        gc.unfreeze()
    assert summary["freezes"] == 1


class _Node:
    """A cyclic-garbage probe (weak-referenceable)."""

    def __init__(self) -> None:
        self.peer: _Node | None = None


def test_freeze_young_freezes_every_young_collections_survivors() -> None:
    pauses = GcPauses(freeze_survivors=True, freeze_young=True)
    try:
        pauses.install()
        before = gc.get_freeze_count()
        survivors = [[n] for n in range(1_000)]
        gc.collect(0)
        assert gc.get_freeze_count() >= before + len(survivors), "young survivors frozen"
        assert len(gc.get_objects(generation=1)) == 0, "nothing was promoted to generation 1"
        assert pauses.summary_ms()["gen0"]["count"] >= 1
    finally:
        pauses.uninstall()
        gc.unfreeze()


def test_the_sweep_frees_cycles_that_were_frozen() -> None:
    import weakref

    pauses = GcPauses(freeze_survivors=True, freeze_young=True)
    try:
        pauses.install()
        first, second = _Node(), _Node()
        first.peer, second.peer = second, first
        probe = weakref.ref(first)
        gc.collect(0)  # the cycle is alive: it survives, and is frozen
        del first, second
        gc.collect()  # a full collection does not walk the frozen generation
        assert probe() is not None, "the frozen cycle waits for the sweep"
        assert pauses.sweep_cycles() >= 2
        assert probe() is None
        assert gc.get_freeze_count() > 0, "the survivors of the sweep are frozen again"
    finally:
        pauses.uninstall()
        gc.unfreeze()


def test_the_hourly_release_sweeps_or_unfreezes_as_configured() -> None:
    try:
        assert GcPauses().release_frozen_cycles() is None
        gc.freeze()
        GcPauses(freeze_survivors=True).release_frozen_cycles()
        assert gc.get_freeze_count() == 0, "unfrozen for the next full collection"
        swept = GcPauses(freeze_young=True).release_frozen_cycles()
        assert swept is not None and swept >= 0
        assert gc.get_freeze_count() > 0, "the sweep freezes its survivors again"
    finally:
        gc.unfreeze()


def test_engine_alone_collects_garbage_as_the_worker_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine-alone bench runs under the worker's collector (young survivors frozen), and
    leaves nothing frozen behind for what runs next in the process."""
    import stream.bench.engine_alone as engine_alone

    frozen_during: list[int] = []
    batched = engine_alone._run_batched

    def recording(*args: Any) -> Any:
        run = batched(*args)
        frozen_during.append(gc.get_freeze_count())
        return run

    monkeypatch.setattr(engine_alone, "_run_batched", recording)
    assert gc.get_freeze_count() == 0
    worker = engine_alone.run_engine_alone(batch_events=50, warmup_events=500, events=500)
    plain = engine_alone.run_engine_alone(
        batch_events=50, warmup_events=500, events=500, worker_gc=False
    )
    assert frozen_during[0] > 0 and frozen_during[1] == 0
    assert gc.get_freeze_count() == 0
    assert (
        worker.to_dict()["gc"].startswith("worker") and plain.to_dict()["gc"] == "Python's default"
    )
