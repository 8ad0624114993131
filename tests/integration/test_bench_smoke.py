"""``insession bench --quick`` runs end to end against the test broker: a smoke run.

No thresholds: targets belong in the benchmark (BENCHMARKS.md), not in timed tests. This only
checks that every measurement ran and reported numbers with their baselines beside them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from tests.integration.harness import REPO_ROOT


def test_quick_bench_reports_every_measurement(bootstrap: str, redis_url: str) -> None:
    env = dict(os.environ, REDIS_URL=redis_url)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "bench",
            "--quick",
            "--json",
            "--bootstrap",
            bootstrap,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=280,
    )
    stderr = completed.stderr.decode(errors="replace")
    assert completed.returncode == 0, stderr[-3000:]
    result = orjson.loads(completed.stdout)

    for system in ("broker_floor", "faust_agent_floor", "faust_floor", "insession"):
        assert "error" not in result[system], result[system]
        lowest = result[system]["offered"][0]
        assert lowest["latency"]["count"] > 0, (system, lowest)
        assert lowest["missing"] == 0, (system, lowest)
        assert result[system]["max_throughput"]["events"] > 0
    lowest = result["insession"]["offered"][0]
    assert lowest["in_worker_processing"]["count"] > 0
    # consumed → page produced: one value per page the worker made in the phase
    assert lowest["in_worker_page_produced"]["count"] == lowest["in_worker_pages"] > 0
    # consumed → batch starts: one value per event the worker processed in the phase
    assert lowest["in_worker_batch_wait"]["count"] == lowest["in_worker_events"] > 0
    assert lowest["in_worker_batch_wait"]["p50_ms"] <= lowest["in_worker_processing"]["p50_ms"]
    # The sustained rate is searched downwards from the drain rate until a share keeps up,
    # then once between that share and the one above it (when there is one).
    attempts = result["insession"]["sustained_attempts"]
    kept = [a["kept_up"] for a in attempts]
    for attempt in attempts:  # the worker's own part is reported beside end to end
        assert attempt["in_worker_page_produced_p99_ms"] > 0, attempt
    first_kept = kept.index(True) if True in kept else len(kept)
    assert attempts and kept[:first_kept] == [False] * first_kept
    if 0 < first_kept < len(kept):
        assert len(attempts) == first_kept + 2
        above, below = attempts[first_kept - 1], attempts[first_kept]
        middle = attempts[-1]["share_of_drain_rate"]
        assert below["share_of_drain_rate"] < middle < above["share_of_drain_rate"]
    else:  # the first share kept up, or none did: nothing to bisect
        assert len(attempts) == max(first_kept, 1)
    if True in kept:
        best = max(a["offered_rate"] for a in attempts if a["kept_up"])
        assert result["insession"]["at_sustained_rate"]["offered_rate"] == best
    assert result["engine_alone"]["events"] > 0
    assert result["engine_alone"]["events_per_s"] > 0
    batched = result["engine_alone"]["batched"]
    assert [run["batch_events"] for run in batched] == [50, 500]
    for run in batched:  # beside the one-page-per-trigger baseline, fewer pages
        assert run["events_per_cpu_s"] > 0
        assert 0 < run["pages"] < run["triggers"]
    assert [p["users"] for p in result["memory"]["populations"]] == [1_000, 10_000]
    assert result["memory"]["populations"][0]["state_bytes_per_session"] > 0
    assert result["ratios"]["latency"], "insession latency is reported beside its floors"
    assert "throughput_over_faust" in result["ratios"]
    assert "throughput_over_faust_agent" in result["ratios"]
