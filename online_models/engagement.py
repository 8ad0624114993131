"""How engaging each title is once looked at: clicks per examination, learned from every label.

Popularity (``Trending``) counts what gets clicked and played, so it mixes how good a title is
with how often it was shown; a title nobody was shown stays unpopular forever. The rate of
clicks per examination (click or scroll-past: the user looked and decided) separates the two,
and it is what the ranker needs next to the user's taste: in the response models of click
logs, the probability of a click on a looked-at title is its appeal times the user's taste.

The rates are Beta-smoothed toward the population's rate with ``strength`` pseudo-examinations
and reported as a log-lift (``0`` for an unknown title). Counts are capped per title (both
halved past ``max_examined``) so a title whose appeal changes is re-learned, and the table is
bounded (the least examined tenth goes when it is full). River has no keyed Beta-rate model;
this is a few dict operations per label.

Examples
--------
>>> rates = EngagementRates(strength=10.0)
>>> for k in range(200):
...     rates.observe(f"t{k % 4}", clicked=(k % 4 == 0) or (k % 8 == 1))
>>> lifts = rates.item_lifts(["t0", "t1", "t3", "never-seen"]).round(2).tolist()
>>> lifts[0] > lifts[1] > lifts[2], lifts[3]
(True, 0.0)
>>> round(rates.click_rate, 3), round(rates.taste_rate, 3)  # 75 of 200, a 0.1 prior of 20
(0.35, 0.35)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["EngagementRates"]

_STATE_KIND = "engagement_rates"
_STATE_VERSION = 1
_EVICTION_FRACTION = 10
#: Until this many labels are in, the population's rates are this prior (typical click rates).
_PRIOR_RATE = 0.1
_PRIOR_WEIGHT = 20.0
#: Genres tracked (a catalog has tens; the bound only guards against garbage tags).
_MAX_GENRES = 1_024
_NO_COUNTS = (0.0, 0.0)


class EngagementRates:
    """Per-title clicks per examination, and the population's click and engagement rates.

    Parameters
    ----------
    strength
        Pseudo-examinations at the population's rate behind every title's rate.
    max_items
        Titles tracked.
    max_examined
        Per-title examinations kept before both counts are halved (forgetting old evidence).
    """

    def __init__(
        self, *, strength: float = 20.0, max_items: int = 200_000, max_examined: float = 5_000.0
    ) -> None:
        if not (math.isfinite(strength) and strength > 0):
            raise ValueError(f"strength must be positive and finite, got {strength!r}")
        if max_items < 1 or not max_examined > 0:
            raise ValueError("max_items must be >= 1 and max_examined > 0")
        self.strength = float(strength)
        self.max_items = int(max_items)
        self.max_examined = float(max_examined)
        #: item id → [clicks, examinations]
        self._items: dict[str, list[float]] = {}
        #: genre → [engagement, examinations] of every user's taste evidence
        self._genres: dict[str, list[float]] = {}
        self._clicks = 0.0
        self._examined = 0.0
        self._engaged = 0.0
        self._looked = 0.0
        self.n_learned = 0

    def __repr__(self) -> str:
        return f"EngagementRates({len(self._items)} titles, click_rate={self.click_rate:.4f})"

    # -- learning ------------------------------------------------------------------------

    def observe(self, item_id: str, *, clicked: bool) -> None:
        """One label: the user looked at ``item_id`` and clicked it (or scrolled past)."""
        counts = self._items.get(item_id)
        if counts is None:
            if len(self._items) >= self.max_items:
                self._evict()
            counts = self._items[item_id] = [0.0, 0.0]
        click = 1.0 if clicked else 0.0
        counts[0] += click
        counts[1] += 1.0
        if counts[1] > self.max_examined:
            counts[0] *= 0.5
            counts[1] *= 0.5
        self._clicks += click
        self._examined += 1.0
        self._engaged += click
        self._looked += 1.0
        self.n_learned += 1

    def observe_taste(self, engaged: float, examined: float, genres: Sequence[str] = ()) -> None:
        """Taste evidence any user gave (``processors.taste.engagement_of``): hovers count too.

        Per genre as well (shared among a title's genres, as users' evidence is): how much a
        genre engages the people who look at it is the prior of each user's taste for it, and
        it is higher for genres many people love.
        """
        if examined <= 0.0:
            return
        self._engaged += engaged
        self._looked += examined
        if genres:
            share = 1.0 / len(genres)
            table = self._genres
            for genre in genres:
                counts = table.get(genre)
                if counts is None:
                    if len(table) >= _MAX_GENRES:
                        continue
                    counts = table[genre] = [0.0, 0.0]
                counts[0] += engaged * share
                counts[1] += examined * share

    def genre_rate(self, genre: str) -> float:
        """One genre's engagement per examination, smoothed toward `taste_rate`."""
        base = self.taste_rate
        engaged, examined = self._genres.get(genre, _NO_COUNTS)
        return (engaged + _PRIOR_WEIGHT * base) / (examined + _PRIOR_WEIGHT)

    def genre_rates(self) -> dict[str, float]:
        """Each genre's engagement per examination, smoothed toward `taste_rate`."""
        base = self.taste_rate
        prior = _PRIOR_WEIGHT * base
        return {
            genre: (engaged + prior) / (examined + _PRIOR_WEIGHT)
            for genre, (engaged, examined) in self._genres.items()
        }

    # -- reading -------------------------------------------------------------------------

    @property
    def click_rate(self) -> float:
        """The population's clicks per examination (a weak prior until labels arrive)."""
        return (self._clicks + _PRIOR_WEIGHT * _PRIOR_RATE) / (self._examined + _PRIOR_WEIGHT)

    @property
    def taste_rate(self) -> float:
        """The population's engagement per examination: the base of every user's taste rate."""
        return (self._engaged + _PRIOR_WEIGHT * _PRIOR_RATE) / (self._looked + _PRIOR_WEIGHT)

    def item_lifts(self, item_ids: Sequence[str]) -> np.ndarray:
        """``log(rate / click_rate)`` of each title (0 for titles never examined)."""
        base = self.click_rate
        strength = self.strength
        prior = strength * base
        # Rates over the base in a list, then one array: a numpy scalar store per title cost
        # more; the lookups run in C (map), the log in place. An unknown title's ratio is
        # ``base / base``: exactly 1.0.
        ratios = np.array(
            [
                1.0 if counts is None else (counts[0] + prior) / (counts[1] + strength) / base
                for counts in map(self._items.get, item_ids)
            ],
            dtype=np.float64,
        )
        return np.log(ratios, out=ratios)

    # -- state -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Counts and settings as JSON-safe plain data (items in insertion order)."""
        return {
            "kind": _STATE_KIND,
            "state_version": _STATE_VERSION,
            "strength": self.strength,
            "max_items": self.max_items,
            "max_examined": self.max_examined,
            "totals": [self._clicks, self._examined, self._engaged, self._looked],
            "n_learned": self.n_learned,
            "items": [[item_id, c, n] for item_id, (c, n) in self._items.items()],
            "genres": [[genre, e, n] for genre, (e, n) in self._genres.items()],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EngagementRates:
        """Rebuild from `to_state` output; ValueError for anything else."""
        if state.get("kind") != _STATE_KIND or state.get("state_version") != _STATE_VERSION:
            raise ValueError(
                f"not a {_STATE_KIND} v{_STATE_VERSION} state: kind={state.get('kind')!r}, "
                f"version={state.get('state_version')!r}"
            )
        try:
            rates = cls(
                strength=float(state["strength"]),
                max_items=int(state["max_items"]),
                max_examined=float(state["max_examined"]),
            )
            clicks, examined, engaged, looked = (float(v) for v in state["totals"])
            for item_id, c, n in state["items"]:
                if not 0.0 <= float(c) <= float(n):
                    raise ValueError(f"clicks {c!r} outside [0, examined={n!r}]")
                rates._items[str(item_id)] = [float(c), float(n)]
            for genre, e, n in state["genres"]:
                if not 0.0 <= float(e) <= float(n):
                    raise ValueError(f"engagement {e!r} outside [0, examined={n!r}]")
                rates._genres[str(genre)] = [float(e), float(n)]
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed {_STATE_KIND} state: {error!r}") from error
        if not (0.0 <= clicks <= examined and 0.0 <= engaged <= looked):
            raise ValueError(f"malformed {_STATE_KIND} totals: {state['totals']!r}")
        rates._clicks, rates._examined, rates._engaged, rates._looked = (
            clicks,
            examined,
            engaged,
            looked,
        )
        rates.n_learned = int(state["n_learned"])
        return rates

    def _evict(self) -> None:
        count = max(1, self.max_items // _EVICTION_FRACTION)
        for item_id, _ in heapq.nsmallest(count, self._items.items(), key=lambda kv: kv[1][1]):
            del self._items[item_id]
