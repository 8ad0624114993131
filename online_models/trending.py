"""Trending items: popularity that decays exponentially in event time, with a cheap top-n.

Exponential decay has a property this module is built on: it multiplies every item's score by
the same factor as time passes, so it never changes the ranking. Scores are therefore stored
relative to a fixed *landmark* time (``value = sum(weight * 2 ** ((ts - landmark) / half_life))``)
and only turned into scores at ``now`` when read; ranking needs no clock at all, and a ranking
kept up to date at insert time stays valid forever.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

__all__ = ["Trending"]

_STATE_VERSION = 1
#: Re-anchor the landmark after this many half-lives, long before 2 ** x overflows a float.
_RELANDMARK_HALF_LIVES = 256.0
#: Cap on the decay factor's exponent: with values up to 2^256 (the landmark rule above),
#: 2^512 more keeps every product far from float overflow.
_MAX_GROWTH_EXP2 = 512.0


class Trending:
    """Windowed popularity with exponential decay in event time and a bounded item set.

    ``score(item, now) = sum(weight * 2 ** (-(now - ts) / half_life_ms))`` over the item's
    events. At most ``max_items`` items are held: adding a new item beyond the bound evicts the
    item with the lowest score, the smaller id among exact ties (a min-heap with lazy deletion
    finds it in ``O(log n)``).

    Top-n is served from a *leaderboard*: the ``top_cache_size`` best items, kept sorted as
    events arrive. Because scores only grow between evictions (weights are positive) and decay
    keeps the order, an item can enter or move up the leaderboard only when it gets an event, so
    each :meth:`add` costs ``O(log C)`` search plus a short list move and :meth:`top` is a slice,
    even with 50,000 items. Asking for more than ``top_cache_size`` items falls back to a full
    sort. Ties go to the smaller item id, so the order is deterministic.

    Parameters
    ----------
    half_life_ms
        Time after which an event counts half, in event-time milliseconds.
    max_items
        Items held; the lowest-scoring one is evicted to make room.
    top_cache_size
        Length of the leaderboard kept for :meth:`top`.

    Examples
    --------
    >>> trending = Trending(half_life_ms=1_000)
    >>> trending.add("a", ts=0)
    >>> trending.add("b", ts=1_000)
    >>> trending.score("a", now=1_000)
    0.5
    >>> trending.top(2, now=2_000)
    [('b', 0.5), ('a', 0.25)]
    """

    def __init__(
        self,
        half_life_ms: int = 3_600_000,
        max_items: int = 50_000,
        top_cache_size: int = 1_000,
    ) -> None:
        if half_life_ms <= 0:
            raise ValueError(f"half_life_ms must be > 0, got {half_life_ms}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if top_cache_size < 1:
            raise ValueError(f"top_cache_size must be >= 1, got {top_cache_size}")
        self.half_life_ms = half_life_ms
        self.max_items = max_items
        self.top_cache_size = top_cache_size
        self._landmark_ts: int | None = None
        self._value_of: dict[str, float] = {}  # score at the landmark time
        self._by_value: list[tuple[float, str]] = []  # min-heap, stale entries skipped
        # The best ``top_cache_size`` items as sorted (-value, item_id) pairs.
        self._leaders: list[tuple[float, str]] = []
        self._leader_ids: set[str] = set()

    def __len__(self) -> int:
        """Number of items held."""
        return len(self._value_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._value_of

    def add(self, item_id: str, ts: int, weight: float = 1.0) -> None:
        """Count one event of ``item_id`` at event time ``ts`` (ms) with ``weight`` (> 0).

        Events may arrive out of order: an old event simply counts for less.
        """
        if not weight > 0.0 or math.isinf(weight):
            raise ValueError(f"weight must be positive and finite, got {weight}")
        if self._landmark_ts is None:
            self._landmark_ts = ts
        elif (ts - self._landmark_ts) / self.half_life_ms > _RELANDMARK_HALF_LIVES:
            self._move_landmark(ts)
        old = self._value_of.get(item_id)
        value = weight * math.exp2((ts - self._landmark_ts) / self.half_life_ms)
        if old is not None:
            value += old
        self._value_of[item_id] = value
        heapq.heappush(self._by_value, (value, item_id))
        self._promote(item_id, old, value)
        if old is None and len(self._value_of) > self.max_items:
            self._evict_lowest()
        if len(self._by_value) > 2 * len(self._value_of) + 1024:
            self._by_value = [(v, i) for i, v in self._value_of.items()]
            heapq.heapify(self._by_value)

    def score(self, item_id: str, now: int) -> float:
        """Decayed score of ``item_id`` at event time ``now`` (ms); ``0.0`` for unknown items."""
        value = self._value_of.get(item_id)
        if value is None:
            return 0.0
        return value * self._decay_to(now)

    def scores(self, item_ids: Sequence[str], now: int) -> np.ndarray:
        """`score` of each item at ``now``, as one float64 array (a page asks for ~70 at once).

        The stored values are read into the array in C (``np.fromiter`` over ``dict.get``)
        and decayed by one multiplication: the same products as `score`'s, at a third of the
        cost of a list of them that the page's feature matrix then converted to an array.
        """
        if self._landmark_ts is None:
            return np.zeros(len(item_ids))
        values = np.fromiter(
            map(self._value_of.get, item_ids, repeat(0.0)), np.float64, len(item_ids)
        )
        values *= self._decay_to(now)
        return values

    def top(self, n: int, now: int) -> list[tuple[str, float]]:
        """The ``n`` highest-scoring items at ``now`` as ``(item_id, score)``, best first."""
        if n <= 0 or not self._value_of:
            return []
        factor = self._decay_to(now)
        if n <= self.top_cache_size:
            ranked = self._leaders[:n]
        else:
            ranked = sorted((-v, i) for i, v in self._value_of.items())[:n]
        return [(item_id, -neg * factor) for neg, item_id in ranked]

    def top_ids(self, n: int) -> list[str]:
        """The ids of `top` (the order does not depend on ``now``), without the scores.

        A page reads only the order of its trending candidates; the decayed score of each is
        another multiplication and tuple per item, ~100 per page.
        """
        if n <= 0 or not self._value_of:
            return []
        if n <= self.top_cache_size:
            return [item_id for _, item_id in self._leaders[:n]]
        return [item_id for _, item_id in sorted((-v, i) for i, v in self._value_of.items())[:n]]

    def _decay_to(self, now: int) -> float:
        assert self._landmark_ts is not None
        # A query far before the landmark (a clock behind the events by more than 512
        # half-lives) would overflow: the factor is capped, scores stay finite and ordered.
        return math.exp2(min((self._landmark_ts - now) / self.half_life_ms, _MAX_GROWTH_EXP2))

    def _promote(self, item_id: str, old: float | None, value: float) -> None:
        """Keep the leaderboard the top ``top_cache_size`` items after ``item_id`` went up."""
        leaders = self._leaders
        entry = (-value, item_id)
        if item_id in self._leader_ids:
            assert old is not None
            del leaders[bisect.bisect_left(leaders, (-old, item_id))]
            bisect.insort(leaders, entry)
        elif len(leaders) < self.top_cache_size:
            bisect.insort(leaders, entry)
            self._leader_ids.add(item_id)
        elif entry < leaders[-1]:
            bisect.insort(leaders, entry)
            self._leader_ids.add(item_id)
            self._leader_ids.discard(leaders.pop()[1])

    def _evict_lowest(self) -> None:
        while self._by_value:
            value, item_id = heapq.heappop(self._by_value)
            if self._value_of.get(item_id) == value:
                del self._value_of[item_id]
                if item_id in self._leader_ids:
                    # Only when every item fits on the leaderboard; the rest stay ranked.
                    self._leader_ids.discard(item_id)
                    del self._leaders[bisect.bisect_left(self._leaders, (-value, item_id))]
                return

    def _move_landmark(self, ts: int) -> None:
        """Re-express every value relative to ``ts``; rebuilds the heap and the leaderboard."""
        assert self._landmark_ts is not None
        factor = math.exp2((self._landmark_ts - ts) / self.half_life_ms)
        self._landmark_ts = ts
        self._value_of = {i: v * factor for i, v in self._value_of.items()}
        self._rebuild()

    def _rebuild(self) -> None:
        # Scaling can round two values to equal or to zero, so the order is recomputed, not
        # assumed; this runs once per ``_RELANDMARK_HALF_LIVES`` half-lives or on restore.
        self._by_value = [(v, i) for i, v in self._value_of.items()]
        heapq.heapify(self._by_value)
        self._leaders = sorted((-v, i) for i, v in self._value_of.items())[: self.top_cache_size]
        self._leader_ids = {i for _, i in self._leaders}

    def to_state(self) -> dict[str, Any]:
        """Return the model as plain JSON-safe data (no pickle)."""
        return {
            "version": _STATE_VERSION,
            "params": {
                "half_life_ms": self.half_life_ms,
                "max_items": self.max_items,
                "top_cache_size": self.top_cache_size,
            },
            "landmark_ts": self._landmark_ts,
            "items": sorted([i, v] for i, v in self._value_of.items()),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Trending:
        """Rebuild a model from :meth:`to_state` output; it answers exactly as the original.

        Raises
        ------
        ValueError
            If the state has an unknown version.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported Trending state version {state.get('version')!r}")
        model = cls(**state["params"])
        model._landmark_ts = state["landmark_ts"]
        model._value_of = {item_id: float(value) for item_id, value in state["items"]}
        model._rebuild()
        return model
