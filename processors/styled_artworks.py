"""Each title's artwork in the style that pulls a user most, remembered by the pulls' order.

A page shows each placed title with the artwork whose style has the highest pull (the first
such artwork on ties; ``ArtworkBandit.choose_styled``). Which artwork that is depends on the
pulls only through their order: which styles pull more than which, and which pull equally.
With a handful of styles there are few orders (541 for five styles, ties included), and
consecutive pages mostly share one, so the choice is remembered per order and title: a page
looks its ~60 titles up in one dict instead of gathering, comparing and indexing per title
(~10 µs a page).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import repeat

import numpy as np

from processors.features import ItemTable

__all__ = ["StyledArtworks"]

#: Stands for a title whose artworks have no style tags: the per-artwork bandit chooses.
_UNTAGGED = object()
#: Stands for a title not yet remembered under the page's order.
_MISS = object()
_NEG_INF = -math.inf


def _order_key(values: Sequence[float]) -> tuple[int, ...]:
    """Each value's rank, as how many values are below it (the index of its first equal in
    sorted order): equal for two vectors exactly when every comparison between their
    entries (``<``, ``==``) comes out the same. Values must not be NaN."""
    return tuple(map(sorted(values).index, values))


class StyledArtworks:
    """The artwork choice of `processors.page_builder.PageBuilder._artworks`, remembered.

    What a title shows under an order of the style pulls is fixed while the `ItemTable` is
    (its version: the catalog's), so the memory is dropped when the table changes, and when
    a page finds it holding ``max_entries`` choices or more (a bound on memory with large
    catalogs, overshot by at most one page; a full memory is rebuilt from the pages that
    follow). Pulls that are not all finite (a NaN or
    an infinity would make the order say less than the values) take the array path, which
    is the reference the memory reproduces.
    """

    __slots__ = ("_entries", "_memo", "_version", "items", "max_entries")

    def __init__(self, items: ItemTable, *, max_entries: int = 1 << 16) -> None:
        self.items = items
        self.max_entries = max_entries
        self._memo: dict[tuple[int, ...], dict[str, object]] = {}
        self._entries = 0
        self._version = items.version

    def choose(
        self, item_ids: Sequence[str], rows: np.ndarray, pulls: Mapping[str, float]
    ) -> tuple[list[str | None], list[int]]:
        """Each title's artwork (None when it has none, or no style tags) and the indices of
        the titles whose artworks have no style tags (for the per-artwork bandit).

        ``rows`` are the titles' `ItemTable` rows.
        """
        items = self.items
        if self._version != items.version:
            self._memo.clear()
            self._entries = 0
            self._version = items.version
        # By column: `ItemTable` numbers a new style with the next column, so its keys are in
        # column order.
        values = [float(pulls.get(style, _NEG_INF)) for style in items.style_col]
        if not all(map(math.isfinite, values)):
            return self.choose_by_arrays(item_ids, rows, pulls)
        key = _order_key(values)
        memo = self._memo.get(key)
        if memo is None:
            memo = self._memo[key] = {}
        chosen: list[object] = list(map(memo.get, item_ids, repeat(_MISS)))
        if _MISS in chosen:
            self._fill(chosen, item_ids, rows, values, key)
        untagged = []
        if _UNTAGGED in chosen:
            untagged = [index for index, value in enumerate(chosen) if value is _UNTAGGED]
            for index in untagged:
                chosen[index] = None
        return chosen, untagged  # type: ignore[return-value]

    def choose_by_arrays(
        self, item_ids: Sequence[str], rows: np.ndarray, pulls: Mapping[str, float]
    ) -> tuple[list[str | None], list[int]]:
        """`choose` computed from the pulls' values with numpy, for every title (the
        reference, and the path for pulls that are not all finite)."""
        items = self.items
        pull = items.style_vector(pulls, absent=-np.inf)[items.style_idx[rows]]
        best = pull.argmax(axis=1).tolist()
        styled = np.isfinite(pull.max(axis=1)).tolist()
        artworks_of = items.artworks.get
        chosen: list[str | None] = []
        untagged: list[int] = []
        for index, item_id in enumerate(item_ids):
            artworks = artworks_of(item_id, ())
            if styled[index]:
                chosen.append(artworks[best[index]])
            else:
                chosen.append(None)
                if artworks:
                    untagged.append(index)
        return chosen, untagged

    def _fill(
        self,
        chosen: list[object],
        item_ids: Sequence[str],
        rows: np.ndarray,
        values: list[float],
        key: tuple[int, ...],
    ) -> None:
        """Work out and remember the choices ``chosen`` lacks (`_MISS`), as the arrays do:
        the first artwork of the highest pull; none styled when every pull is padding."""
        memo = self._memo[key]
        if self._entries >= self.max_entries:
            memo.clear()
            self._memo = {key: memo}
            self._entries = 0
        missing = [index for index, value in enumerate(chosen) if value is _MISS]
        # The missing titles' pulls by artwork in one gather (the padding column -1 picks the
        # -inf appended), then each one's first highest (``argmax``); none styled when every
        # pull is padding.
        pull = np.array([*values, _NEG_INF])[self.items.style_idx[rows[missing]]]
        best = pull.argmax(axis=1).tolist()
        styled = (pull.max(axis=1) > _NEG_INF).tolist()
        artworks_of = self.items.artworks.get
        for index, column, has_style in zip(missing, best, styled, strict=True):
            item_id = item_ids[index]
            artworks = artworks_of(item_id, ())
            value = artworks[column] if has_style else (_UNTAGGED if artworks else None)
            chosen[index] = memo[item_id] = value
        self._entries += len(missing)
