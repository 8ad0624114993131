"""The callgrind harness's own parts: the replay it counts and the totals it reads."""

from __future__ import annotations

import pytest

from stream.bench.engine_instructions import replay, total_instructions


def test_replay_switches_on_once_after_the_warm_up_and_counts_the_measured_events() -> None:
    switched: list[int] = []
    measured = replay(100, 120, lambda: switched.append(1))
    assert switched == [1]
    assert measured == 150  # whole batches of 50 until 120 are measured


def test_total_instructions_reads_the_totals_line() -> None:
    out = "version: 1\nevents: Ir\nsummary: 42\nfn=(1) f\n16 7\ntotals: 42\n"
    assert total_instructions(out) == 42
    with pytest.raises(ValueError):
        total_instructions("events: Ir\n")
