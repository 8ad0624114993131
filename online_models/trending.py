"""Trending: windowed popularity with exponential time decay in event time.

Forward decay (Cormode, Shkapenyuk, Srivastava, Xu 2009): an event at time ``ts`` adds
``weight * 2**((ts - landmark) / half_life)``, and the decayed score at ``now`` is that sum times
``2**(-(now - landmark) / half_life)``. The ranking of items never depends on ``now``, so the
top-n list is a sorted cache invalidated only by writes, not by the clock.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

__all__ = ["Trending"]

#: Re-base the landmark before forward weights overflow a float's comfortable range.
_MAX_EXPONENT = 600.0


class Trending:
    """Decayed popularity per item, bounded in the number of items.

    Examples
    --------
    >>> trending = Trending(half_life_ms=1000)
    >>> trending.add("a", ts=0)
    >>> trending.add("b", ts=1000)
    >>> round(trending.score("a", now=1000), 3), round(trending.score("b", now=1000), 3)
    (0.5, 1.0)
    >>> [item for item, _ in trending.top(2, now=1000)]
    ['b', 'a']
    """

    def __init__(self, half_life_ms: int = 3_600_000, max_items: int = 200_000) -> None:
        if half_life_ms <= 0:
            raise ValueError("half_life_ms must be positive")
        self.half_life_ms = half_life_ms
        self.max_items = max_items
        self._landmark: int | None = None
        self._forward: dict[str, float] = {}
        self._top_cache: list[tuple[str, float]] | None = None
        self._top_cache_n = 0

    def __len__(self) -> int:
        return len(self._forward)

    def add(self, item_id: str, ts: int, weight: float = 1.0) -> None:
        """Count one occurrence of the item at event time ``ts``."""
        if self._landmark is None:
            self._landmark = ts
        exponent = (ts - self._landmark) / self.half_life_ms
        if exponent > _MAX_EXPONENT:
            self._rebase(ts)
            exponent = 0.0
        forward = self._forward
        forward[item_id] = forward.get(item_id, 0.0) + weight * math.pow(2.0, exponent)
        if len(forward) > self.max_items:
            weakest = min(forward, key=forward.__getitem__)
            del forward[weakest]
        self._top_cache = None

    def score(self, item_id: str, now: int) -> float:
        """The item's decayed count at ``now``."""
        value = self._forward.get(item_id)
        if value is None or self._landmark is None:
            return 0.0
        return value * math.pow(2.0, -(now - self._landmark) / self.half_life_ms)

    def top(self, n: int, now: int) -> list[tuple[str, float]]:
        """The n most popular items at ``now``, best first (ties by item id)."""
        if self._landmark is None or n <= 0:
            return []
        if self._top_cache is None or self._top_cache_n < n:
            self._top_cache = heapq.nsmallest(
                n, self._forward.items(), key=lambda kv: (-kv[1], kv[0])
            )
            self._top_cache_n = n
        scale = math.pow(2.0, -(now - self._landmark) / self.half_life_ms)
        return [(item_id, value * scale) for item_id, value in self._top_cache[:n]]

    def _rebase(self, ts: int) -> None:
        assert self._landmark is not None
        shift = math.pow(2.0, -(ts - self._landmark) / self.half_life_ms)
        self._forward = {k: v * shift for k, v in self._forward.items() if v * shift > 1e-300}
        self._landmark = ts

    def to_state(self) -> dict[str, Any]:
        """Plain data for snapshots."""
        return {
            "half_life_ms": self.half_life_ms,
            "max_items": self.max_items,
            "landmark": self._landmark,
            "forward": self._forward,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Trending:
        """Rebuild from ``to_state`` output."""
        trending = cls(int(state["half_life_ms"]), int(state["max_items"]))
        trending._landmark = state["landmark"]
        trending._forward = {str(k): float(v) for k, v in state["forward"].items()}
        return trending
