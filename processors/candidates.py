"""Compiled helpers of the page's candidate sources (`PageBuilder._explore_items` and
`PageBuilder._genre_items` over the trending order's `ItemTable` rows).

Both run once per trending order (`PageBuilder._from_trending`), which changes on about a
third of the pages; as numpy expressions over the ~100 trending rows they were a handful of
calls each (a 2-D gather, a cumulative sum, reductions), ~50 µs a miss; here one loop.
"""

from __future__ import annotations

import numpy as np

from processors.compiled import kernel

__all__ = ["explore_positions", "genre_positions"]


@kernel
def explore_positions(
    trending_rows: np.ndarray, genre_hits: np.ndarray, limit: int, counts: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled (tests compare pages with the numpy version)
    """Trending positions holding one of the first ``limit`` titles of any genre column, in
    trending order; ``counts`` (zero on entry, one per genre column) gets each column's
    number of trending titles.

    The same selection as ``hits & (cumsum(hits, axis=0) <= limit)`` with ``hits`` the
    rows' ``genre_hits > 0``, then the rows with any kept column.
    """
    n_genres = genre_hits.shape[1]
    out = np.empty(trending_rows.shape[0], dtype=np.intp)
    count = 0
    for k in range(trending_rows.shape[0]):
        row = trending_rows[k]
        take = False
        for g in range(n_genres):
            if genre_hits[row, g] > 0.0:
                counts[g] += 1
                if counts[g] <= limit:
                    take = True
        if take:
            out[count] = k
            count += 1
    return out[:count]


@kernel
def genre_positions(
    trending_rows: np.ndarray, genre_hits: np.ndarray, column: int, limit: int
) -> np.ndarray:  # pragma: no cover - compiled (tests compare pages with the numpy version)
    """The first ``limit`` trending positions whose row has genre ``column`` (as
    ``np.flatnonzero(genre_hits[trending_rows, column])[:limit]``)."""
    out = np.empty(min(limit, trending_rows.shape[0]), dtype=np.intp)
    count = 0
    for k in range(trending_rows.shape[0]):
        if count >= limit:
            break
        if genre_hits[trending_rows[k], column] != 0.0:
            out[count] = k
            count += 1
    return out[:count]
