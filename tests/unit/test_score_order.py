"""The page's one candidate sort: ``(-score, item_id)`` order, by argsort when it can."""

from __future__ import annotations

import random

import numpy as np

from processors.page_builder import _by_score


def _reference(scores: np.ndarray, item_ids: list[str]) -> list[str]:
    return [item_id for _, item_id in sorted(zip((-scores).tolist(), item_ids, strict=True))]


def test_distinct_scores_sort_by_score_alone() -> None:
    rng = random.Random(5)
    for size in (0, 1, 2, 57, 200):
        item_ids = [f"item-{rng.randrange(10**6):07d}" for _ in range(size)]
        scores = np.array([rng.random() for _ in range(size)])
        assert _by_score(scores, item_ids) == _reference(scores, item_ids)


def test_ties_go_to_the_smaller_item_id_whatever_the_candidate_order() -> None:
    item_ids = ["c", "a", "d", "b"]
    scores = np.array([0.5, 0.2, 0.5, 0.5])
    assert _by_score(scores, item_ids) == ["b", "c", "d", "a"]
    zeros = np.array([0.0, -0.0, 0.0, 0.1])  # -0.0 == 0.0: a tie, decided by the ids
    assert _by_score(zeros, item_ids) == _reference(zeros, item_ids) == ["b", "a", "c", "d"]


def test_a_nan_score_orders_as_the_tuple_sort_does() -> None:
    item_ids = ["x", "y", "z"]
    scores = np.array([0.3, float("nan"), 0.9])
    assert _by_score(scores, item_ids) == _reference(scores, item_ids)
