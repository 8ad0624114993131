"""The evaluator's metrics on hand-computed examples, and byte-identical reports per seed."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from processors.evaluation import (
    BinaryEvaluator,
    NextItemEvaluator,
    auc,
    log_loss,
    percentiles_ms,
    rank_of,
)
from stream.offline import TIMING_KEYS, deterministic_part

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_rank_of() -> None:
    assert rank_of(["a", "b", "c"], "a") == 1
    assert rank_of(["a", "b", "c"], "c") == 3
    assert rank_of(["a", "b", "c"], "d") == 0
    assert rank_of([], "a") == 0


def test_next_item_metrics_by_hand() -> None:
    # Popularity in training: a=10 (most popular), b=5, c=2, d=1, e=0 (never seen); 6 items.
    popularity = {"a": 10, "b": 5, "c": 2, "d": 1, "f": 1, "g": 1}
    ev = NextItemEvaluator(cutoffs=(1, 2, 3), popularity=popularity)
    assert ev.add(["b", "a", "c"], "a") == 2  # hit at rank 2
    assert ev.add(["c", "d", "e"], "c") == 1  # hit at rank 1
    assert ev.add(["a", "b", "c"], "d") == 0  # miss
    assert ev.add(["d", "e", "a"], "a") == 3  # hit at rank 3
    r = ev.result()
    assert r["predictions"] == 4
    # HitRate@k: hits with rank <= k over 4 predictions.
    assert r["hr@1"] == 0.25  # only the rank-1 hit
    assert r["hr@2"] == 0.5  # ranks 1 and 2
    assert r["hr@3"] == 0.75
    # MRR@k: sum of 1/rank for ranks <= k, over 4.
    assert r["mrr@1"] == 0.25
    assert r["mrr@2"] == round((1 / 2 + 1) / 4, 6)  # 0.375
    assert r["mrr@3"] == round((1 / 2 + 1 + 1 / 3) / 4, 6)  # 0.458333
    # Coverage@k: distinct items in top-k lists over the 6 known items.
    assert r["coverage@1"] == round(4 / 6, 6)  # b, c, a, d
    assert r["coverage@3"] == round(5 / 6, 6)  # a-e ("e" counts though unknown in training)
    # Popularity bias@1: mean of pop/10 of each list's first item: b .5, c .2, a 1, d .1.
    assert r["popularity_bias@1"] == round((0.5 + 0.2 + 1.0 + 0.1) / 4, 6)
    # @2: lists' mean of pop/10 over two items: (.5+1)/2, (.2+.1)/2, (1+.5)/2, (.1+0)/2.
    assert r["popularity_bias@2"] == round((0.75 + 0.15 + 0.75 + 0.05) / 4, 6)


def test_next_item_metrics_empty_and_invalid() -> None:
    r = NextItemEvaluator().result()
    assert r["predictions"] == 0 and r["hr@20"] is None and r["mrr@20"] is None
    with pytest.raises(ValueError):
        NextItemEvaluator(cutoffs=(0, 5))


def test_short_lists_count_as_misses_below_their_length() -> None:
    ev = NextItemEvaluator(cutoffs=(5,), popularity={"a": 1})
    ev.add(["a"], "b")
    ev.add([], "a")
    r = ev.result()
    assert r["hr@5"] == 0.0 and r["popularity_bias@5"] == 0.5  # the empty list adds nothing


def test_log_loss_by_hand() -> None:
    # -(ln .8 + ln .6) / 2
    assert log_loss([0.8, 0.4], [True, False]) == pytest.approx(0.3669845, abs=1e-7)
    # A certain, wrong prediction is clipped to a large finite loss.
    assert log_loss([0.0], [True]) == pytest.approx(-np.log(1e-15))
    with pytest.raises(ValueError):
        log_loss([0.5], [True, False])


def _auc_by_pairs(scores: list[float], labels: list[bool]) -> float:
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    )
    return wins / (len(positives) * len(negatives))


def test_auc_by_hand_and_against_all_pairs() -> None:
    assert auc([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == 0.75
    assert auc([0.1, 0.2], [True, False]) == 0.0
    assert auc([0.5, 0.5, 0.5], [True, False, False]) == 0.5
    assert auc([0.4, 0.6], [True, True]) is None  # one class only
    rng = random.Random(3)
    for _ in range(20):
        n = rng.randint(2, 60)
        scores = [round(rng.random(), 1) for _ in range(n)]  # many ties
        labels = [rng.random() < 0.4 for _ in range(n)]
        if all(labels) or not any(labels):
            continue
        assert auc(scores, labels) == pytest.approx(_auc_by_pairs(scores, labels), abs=1e-12)


def test_binary_evaluator() -> None:
    ev = BinaryEvaluator()
    assert ev.result() == {"labels": 0, "positives": 0, "logloss": None, "auc": None}
    for p, y in [(0.9, True), (0.8, False), (0.3, True), (0.1, False)]:
        ev.add(p, y)
    r = ev.result()
    assert r["labels"] == 4 and r["positives"] == 2 and r["auc"] == 0.75
    assert r["logloss"] == round(-(np.log(0.9) + np.log(0.2) + np.log(0.3) + np.log(0.9)) / 4, 6)


def test_percentiles_ms() -> None:
    durations = [n * 1_000_000 for n in range(1, 101)]  # 1..100 ms
    p = percentiles_ms(durations, (50, 90))
    assert p == {50: 50.5, 90: 90.1}
    assert percentiles_ms([], (50,)) == {50: None}


# -- determinism ---------------------------------------------------------------------------


def _write_sessions(path: Path, rng: random.Random, sessions: range, t0: float) -> None:
    """Clicks drawn from a few item "paths", so the kNN has something to find."""
    paths = [[f"{100 + p * 10 + i}" for i in range(6)] for p in range(8)]
    lines = ["SessionId\tItemId\tTime"]
    t = t0
    for session in sessions:
        route = rng.choice(paths)
        start = rng.randrange(3)
        for item in route[start : start + rng.randint(2, 4)]:
            t += rng.uniform(1, 90)
            lines.append(f"{session}\t{item}\t{t:.3f}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sessions")
    rng = random.Random(11)
    _write_sessions(root / "small_train_full.txt", rng, range(1, 301), 1_396_000_000.0)
    _write_sessions(root / "small_test.txt", rng, range(1001, 1081), 1_396_500_000.0)
    return root


def _evaluate_json(dataset: Path, *args: str, hash_seed: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "evaluate", str(dataset), "--json", *args],
        capture_output=True,
        check=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )
    return orjson.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["frozen", "streaming"])
def test_same_input_and_seed_give_identical_reports(small_dataset: Path, mode: str) -> None:
    """Two processes with different string-hash seeds (set iteration orders) agree byte for
    byte on everything but the timing fields."""
    first = _evaluate_json(small_dataset, "--mode", mode, "--seed", "5", hash_seed="1")
    second = _evaluate_json(small_dataset, "--mode", mode, "--seed", "5", hash_seed="2")
    assert set(first) >= TIMING_KEYS
    assert first["predictions"] > 100 and first["hr@20"] > 0.3
    stable = orjson.OPT_SORT_KEYS
    assert orjson.dumps(deterministic_part(first), option=stable) == orjson.dumps(
        deterministic_part(second), option=stable
    )


def test_deterministic_part_drops_only_timing() -> None:
    report = {"hr@20": 0.5, "p50_ms": 0.2, "events_per_s": 10.0, "predictions": 3}
    assert deterministic_part(report) == {"hr@20": 0.5, "predictions": 3}
