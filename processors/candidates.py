"""Compiled helpers of the page's candidate sources (`PageBuilder._explore_items` and
`PageBuilder._genre_items` over the trending order's `ItemTable` rows).

Both run once per trending order (`PageBuilder._from_trending`), which changes on about a
third of the pages; as numpy expressions over the ~100 trending rows they were a handful of
calls each (a 2-D gather, a cumulative sum, reductions), ~50 µs a miss; here one loop.
"""

from __future__ import annotations

import numpy as np

from processors.compiled import kernel

__all__ = ["explore_positions", "first_seen", "genre_positions"]


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


@kernel
def first_seen(
    keys: np.ndarray, slots: np.ndarray, unknown: int, first: np.ndarray, positions: np.ndarray
) -> int:  # pragma: no cover - compiled (tests compare it with merging ids in a dict)
    """The candidates of a page from its sources' keys (`ItemTable` rows, one after the
    other): ``first`` gets where each candidate is first seen in ``keys`` and ``positions``
    each key's candidate index; returns the number of candidates.

    As merging the sources' ids into one dict in order: a row is an id (two ids never share
    one), except the sentinel row of every item the table does not know: a key equal to
    ``unknown`` stops the merge (returns -1) so that the caller can give those items keys of
    their own. ``slots`` (``-1`` on entry, longer than every key) is left so; the outputs are
    the caller's buffers (as long as ``keys`` at least): returning arrays costs more than
    the merge.
    """
    count = 0
    for j in range(keys.shape[0]):
        key = keys[j]
        if key == unknown:
            for c in range(count):
                slots[keys[first[c]]] = -1
            return -1
        slot = slots[key]
        if slot < 0:
            slot = count
            slots[key] = count
            first[count] = j
            count += 1
        positions[j] = slot
    for c in range(count):
        slots[keys[first[c]]] = -1
    return count
