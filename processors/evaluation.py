"""Offline quality metrics: next-item ranking (HitRate, MRR, coverage, popularity bias) and
click-model calibration (log loss, AUC), plus latency percentiles; pure functions over numbers.

The definitions follow the session-based evaluation framework session-rec (Ludewig, Latifi,
Jannach et al.), whose published figures the issue compares against: HitRate@k counts a hit when
the actual next item is among the top ``k``; MRR@k adds ``1 / rank`` for a hit; coverage is the
share of known items that appear in at least one top-``k`` list; popularity bias is the mean,
over lists, of the items' training popularity divided by the most popular item's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CUTOFFS",
    "BinaryEvaluator",
    "NextItemEvaluator",
    "auc",
    "log_loss",
    "percentiles_ms",
    "rank_of",
]

#: List lengths every next-item report covers.
CUTOFFS: tuple[int, ...] = (5, 10, 20)
#: Probabilities are clipped to [eps, 1 - eps] in the log loss so one confident mistake is
#: large but finite (scikit-learn's convention).
_EPS = 1e-15


def rank_of(ranked_items: Sequence[str], target: str) -> int:
    """1-based rank of ``target`` in ``ranked_items``, or ``0`` when it is absent.

    Examples
    --------
    >>> rank_of(["a", "b", "c"], "b")
    2
    >>> rank_of(["a", "b"], "z")
    0
    """
    for position, item_id in enumerate(ranked_items, start=1):
        if item_id == target:
            return position
    return 0


class NextItemEvaluator:
    """Accumulates next-item predictions and reports HitRate@k, MRR@k, coverage and popularity.

    Parameters
    ----------
    cutoffs
        List lengths to report (each ``<=`` the length of the lists passed to :meth:`add`).
    popularity
        Item → count in the training data, for the popularity bias; items absent count 0.
    n_items
        Size of the item universe for coverage (default: the number of items in
        ``popularity``).

    Examples
    --------
    >>> ev = NextItemEvaluator(cutoffs=(1, 2), popularity={"a": 4, "b": 2, "c": 1})
    >>> ev.add(["a", "b"], "b")
    2
    >>> ev.add(["c", "a"], "c")
    1
    >>> ev.add(["a", "c"], "z")
    0
    >>> r = ev.result()
    >>> r["predictions"], r["hr@1"], r["hr@2"], r["mrr@2"]
    (3, 0.333333, 0.666667, 0.5)
    >>> r["coverage@2"]
    1.0
    """

    def __init__(
        self,
        cutoffs: Sequence[int] = CUTOFFS,
        popularity: Mapping[str, int] | None = None,
        n_items: int | None = None,
    ) -> None:
        if not cutoffs or min(cutoffs) < 1:
            raise ValueError(f"cutoffs must be positive, got {cutoffs!r}")
        self.cutoffs = tuple(sorted(set(cutoffs)))
        self._popularity = dict(popularity or {})
        top = max(self._popularity.values(), default=0)
        self._max_popularity = float(top) if top > 0 else 1.0
        self._n_items = n_items if n_items is not None else len(self._popularity)
        self.predictions = 0
        self._hits = dict.fromkeys(self.cutoffs, 0)
        self._reciprocal = dict.fromkeys(self.cutoffs, 0.0)
        self._seen: dict[int, set[str]] = {k: set() for k in self.cutoffs}
        self._popularity_sum = dict.fromkeys(self.cutoffs, 0.0)

    def add(self, ranked_items: Sequence[str], target: str) -> int:
        """Score one list against the actual next item; returns the target's rank (0: miss)."""
        self.predictions += 1
        rank = rank_of(ranked_items[: self.cutoffs[-1]], target)
        popularity = self._popularity
        top = self._max_popularity
        for k in self.cutoffs:
            if 0 < rank <= k:
                self._hits[k] += 1
                self._reciprocal[k] += 1.0 / rank
            head = ranked_items[:k]
            self._seen[k].update(head)
            if head:
                self._popularity_sum[k] += sum(popularity.get(i, 0) for i in head) / (
                    len(head) * top
                )
        return rank

    def result(self, digits: int = 6) -> dict[str, Any]:
        """The metrics as a flat dict (``hr@k``, ``mrr@k``, ``coverage@k``,
        ``popularity_bias@k``, ``predictions``), rounded to ``digits`` so reports are stable
        text."""
        n = self.predictions
        out: dict[str, Any] = {"predictions": n}
        for k in self.cutoffs:
            out[f"hr@{k}"] = round(self._hits[k] / n, digits) if n else None
            out[f"mrr@{k}"] = round(self._reciprocal[k] / n, digits) if n else None
        for k in self.cutoffs:
            out[f"coverage@{k}"] = (
                round(len(self._seen[k]) / self._n_items, digits) if self._n_items else None
            )
            out[f"popularity_bias@{k}"] = round(self._popularity_sum[k] / n, digits) if n else None
        return out


def log_loss(probabilities: Iterable[float], labels: Iterable[bool]) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to ``[1e-15, 1 - 1e-15]``.

    Examples
    --------
    >>> round(log_loss([0.8, 0.4], [True, False]), 6)
    0.366985
    """
    p = np.clip(np.asarray(list(probabilities), dtype=np.float64), _EPS, 1.0 - _EPS)
    y = np.asarray(list(labels), dtype=np.float64)
    if p.shape != y.shape or not p.size:
        raise ValueError("log_loss needs as many labels as probabilities, at least one")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def auc(scores: Iterable[float], labels: Iterable[bool]) -> float | None:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, ties counting one half; ``None`` when one class is missing.

    Hand-written (Mann-Whitney U over average ranks, numpy only) because scikit-learn is not a
    dependency and River's ``ROCAUC`` is an approximation over a fixed set of thresholds.

    Examples
    --------
    >>> auc([0.9, 0.8, 0.3, 0.1], [True, False, True, False])
    0.75
    >>> auc([0.5, 0.5], [True, False])
    0.5
    """
    s = np.asarray(list(scores), dtype=np.float64)
    y = np.asarray(list(labels), dtype=bool)
    if s.shape != y.shape:
        raise ValueError("auc needs as many labels as scores")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    # Average 1-based ranks over runs of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], sorted_scores.size]
    average = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(average, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


class BinaryEvaluator:
    """Collects ``(predicted probability, outcome)`` pairs; reports log loss and AUC.

    Examples
    --------
    >>> ev = BinaryEvaluator()
    >>> for p, y in [(0.9, True), (0.8, False), (0.3, True), (0.1, False)]:
    ...     ev.add(p, y)
    >>> ev.result()
    {'labels': 4, 'positives': 2, 'logloss': 0.756033, 'auc': 0.75}
    """

    def __init__(self) -> None:
        self._p: list[float] = []
        self._y: list[bool] = []

    def add(self, probability: float, label: bool) -> None:
        """Record one prediction made before its label was learned."""
        self._p.append(float(probability))
        self._y.append(bool(label))

    def __len__(self) -> int:
        return len(self._p)

    def result(self, digits: int = 6) -> dict[str, Any]:
        """``labels``, ``positives``, ``logloss`` and ``auc`` (``None`` where undefined)."""
        n = len(self._p)
        area = auc(self._p, self._y) if n else None
        return {
            "labels": n,
            "positives": sum(self._y),
            "logloss": round(log_loss(self._p, self._y), digits) if n else None,
            "auc": round(area, digits) if area is not None else None,
        }


def percentiles_ms(
    durations_ns: Sequence[int] | np.ndarray, quantiles: Sequence[int] = (50, 90, 99)
) -> dict[int, float | None]:
    """Percentiles (linear interpolation, numpy's default) of durations in ns, as milliseconds.

    Examples
    --------
    >>> percentiles_ms([1_000_000, 2_000_000, 3_000_000], (50,))
    {50: 2.0}
    """
    values = np.asarray(durations_ns, dtype=np.float64)
    if not values.size:
        return dict.fromkeys(quantiles)
    points = np.percentile(values, list(quantiles)) / 1e6
    return {q: round(float(v), 4) for q, v in zip(quantiles, points, strict=True)}
