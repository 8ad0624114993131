"""The worker's GC pause recorder and its freezing of what survived a full collection."""

from __future__ import annotations

import gc

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
