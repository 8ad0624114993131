"""A personalized page's order, "Top picks" spread and row arrangement in one compiled pass.

`PageBuilder` orders the candidates by ``(-score, item_id)``, spreads the genres over the
first slots of "Top picks" (`PageBuilder._diversified`) and places rows greedily, each title
once (`PageBuilder._arrange`). Those are the reference implementations, in plain Python over
item ids; here the same three steps run over candidate indices in one numba kernel, because
on a ~100-candidate page the dicts, sets and sorts of the Python version cost ~100 µs, about
a sixth of the page. Each step does the same operations in the same order (`math.log` is the
C library's in both), so the pages are identical; a test compares the two on random pages.

Ties between scores are broken by item id, as ``(-score, item_id)`` orders them, from the
ids' integer keys in `ItemTable` (``id_prefix``, ``id_length``); the rare ties those cannot
decide (titles unknown to the catalog, ids sharing their first 16 bytes) and NaN scores are
reported, and the caller takes the Python path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from processors.compiled import kernel
from processors.features import ItemTable

__all__ = ["ArrangedPage", "arrange"]

#: Items whose scores decide a row's place on the page.
ROW_SCORE_TOP = 3
#: Slots of "Top picks" whose genres are spread (`PageBuilder._diversified`): what a row
#: shows without sideways scrolling (3 titles on a phone, 5 on a TV, 6 on the web).
SPREAD_SLOTS = 6
#: `_arrange_kernel`'s status when two candidates' scores tie (or one is NaN).
_TIED = -1


class ArrangedPage:
    """The kernel's answer: the rows as plan indices, and each row's candidate indices."""

    __slots__ = ("lengths", "placed", "plans", "top_picks")

    def __init__(
        self, plans: list[int], lengths: list[int], placed: np.ndarray, top_picks: list[int]
    ) -> None:
        #: Index into the caller's plans of each row, in page order ("Top picks" is the last).
        self.plans = plans
        #: How many titles each row shows.
        self.lengths = lengths
        #: Candidate indices of every placed title, row after row, in display order (an
        #: array: the caller gathers the placed titles' rows, scores and features with it).
        self.placed = placed
        #: Candidate indices of the "Top picks" plan (before placement).
        self.top_picks = top_picks

    @property
    def positions(self) -> list[list[int]]:
        """Candidate indices of each row's titles, in display order."""
        placed = self.placed.tolist()
        rows = []
        start = 0
        for length in self.lengths:
            rows.append(placed[start : start + length])
            start += length
        return rows


#: A page's row ids (top picks last) → each row's rank among them; pages repeat a few
#: combinations (the genre rows vary), so the sort of the ids is done once per combination.
_ID_RANKS: dict[tuple[str, ...], np.ndarray] = {}
_MAX_ID_RANKS = 4096


def _id_rank(row_ids: Sequence[str]) -> np.ndarray:
    """Each row's rank among the row ids and "top-picks" (ties between row scores)."""
    key = (*row_ids, "top-picks")
    id_rank = _ID_RANKS.get(key)
    if id_rank is None:
        id_rank = np.empty(len(key), dtype=np.intp)
        id_rank[sorted(range(len(key)), key=key.__getitem__)] = np.arange(len(key))
        if len(_ID_RANKS) >= _MAX_ID_RANKS:
            _ID_RANKS.clear()
        _ID_RANKS[key] = id_rank
    return id_rank


def arrange(
    scores: np.ndarray,
    table_rows: np.ndarray,
    table: ItemTable,
    plan_positions: Sequence[int] | np.ndarray,
    plan_sizes: Sequence[int],
    plan_ordered: Sequence[bool],
    row_ids: Sequence[str],
    *,
    genre_diversity: float,
    top_picks_limit: int,
    page_rows: int,
    row_size: int,
) -> ArrangedPage | None:
    """Order, spread and arrange a page; None when two scores tie (the caller's Python path
    decides ties by item id).

    ``plan_positions`` are the row plans' candidate indices one plan after the other,
    ``plan_sizes`` how many each plan has, ``plan_ordered`` whether a plan is already in
    display order, ``row_ids`` the plans' ids (ties between rows go to the
    smaller id); a "Top picks" plan of ``top_picks_limit`` titles is appended last.
    ``table_rows`` are the candidates' rows in ``table`` (their ids' order for ties, their
    genres for the spread).
    """
    # One output buffer: row plans, row lengths, placed candidates, top picks.
    out = np.empty(2 * page_rows + page_rows * row_size + top_picks_limit, dtype=np.intp)
    status = _arrange_kernel(
        np.asarray(scores, dtype=np.float64),
        table_rows,
        table.id_prefix,
        table.id_length,
        table.genre_hits,
        table.genre_count,
        np.asarray(plan_positions, dtype=np.intp),  # read only
        np.array([*plan_sizes, *plan_ordered], dtype=np.intp),
        _id_rank(row_ids),
        float(genre_diversity),
        top_picks_limit,
        page_rows,
        row_size,
        out,
    )
    if status == _TIED:
        return None
    n_top, n_rows = divmod(status, page_rows + 1)
    values = out.tolist()
    lengths = values[page_rows : page_rows + n_rows]
    placed_from = 2 * page_rows
    top_from = placed_from + page_rows * row_size
    return ArrangedPage(
        values[:n_rows],
        lengths,
        out[placed_from : placed_from + sum(lengths)],  # ``out`` is this call's own
        values[top_from : top_from + n_top],
    )


@kernel
def _arrange_kernel(
    scores: np.ndarray,
    table_rows: np.ndarray,
    id_prefix: np.ndarray,
    id_length: np.ndarray,
    genre_hits: np.ndarray,
    genre_count: np.ndarray,
    flat: np.ndarray,
    plan_info: np.ndarray,
    id_rank: np.ndarray,
    genre_diversity: float,
    top_picks_limit: int,
    page_rows: int,
    row_size: int,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled (tests compare it with the Python path)
    """The three steps; returns ``n_top * (page_rows + 1) + n_rows``, or `_TIED`.

    ``plan_info`` holds the plans' sizes, then their "already ordered" flags; ``out`` gets
    the rows' plans (``page_rows``), lengths (``page_rows``), placed candidates
    (``page_rows * row_size``) and the top picks (``top_picks_limit``).
    """
    n_plans = plan_info.shape[0] // 2
    sizes = plan_info[:n_plans]
    ordered = plan_info[n_plans:]
    out_plans = out[:page_rows]
    out_lengths = out[page_rows : 2 * page_rows]
    out_lengths[:] = 0
    out_positions = out[2 * page_rows : 2 * page_rows + page_rows * row_size]
    top_picks = out[2 * page_rows + page_rows * row_size :]
    n = scores.shape[0]
    # 1. (-score, item_id) order: a stable sort of the negated scores, then each run of
    # equal scores by id key (insertion sort: runs are short).
    negated = -scores
    for k in range(n):
        if negated[k] != negated[k]:
            return _TIED  # NaN
    order = np.argsort(negated, kind="mergesort")
    begin = 0
    while begin < n:
        end = begin + 1
        while end < n and negated[order[end]] == negated[order[begin]]:
            end += 1
        for r in range(begin + 1, end):
            moving = order[r]
            q = r
            while q > begin:
                verdict = _id_before(
                    table_rows[moving], table_rows[order[q - 1]], id_prefix, id_length
                )
                if verdict == 0:
                    return _TIED
                if verdict > 0:
                    break
                order[q] = order[q - 1]
                q -= 1
            order[q] = moving
        begin = end

    # 2. "Top picks": the best titles with genres spread over the first slots.
    n_top = _spread(scores, order, table_rows, genre_hits, genre_count, genre_diversity, top_picks)

    # 3. Rows, greedily: the plan whose best three unplaced titles score highest goes next.
    total_plans = n_plans + 1  # the top picks last
    items = np.empty(flat.shape[0] + n_top, dtype=np.intp)
    starts = np.empty(total_plans + 1, dtype=np.intp)
    starts[0] = 0
    # How many times each candidate is in the plan at hand (zero between plans): a plan's
    # items by rank are the (-score, item_id) order filtered by it, with no sort or array
    # per plan (ranks are unique, so this is the order any sort by rank gives).
    times = np.zeros(n, dtype=np.intp)
    for p in range(n_plans):
        begin = starts[p]
        end = begin + sizes[p]
        if ordered[p] != 0:
            items[begin:end] = flat[begin:end]
        else:
            for index in range(begin, end):
                times[flat[index]] += 1
            written = begin
            r = 0
            while written < end:
                k = order[r]
                while times[k] > 0:
                    items[written] = k
                    written += 1
                    times[k] -= 1
                r += 1
        starts[p + 1] = end
    items[flat.shape[0] : flat.shape[0] + n_top] = top_picks[:n_top]
    starts[total_plans] = flat.shape[0] + n_top
    placed = np.zeros(n, dtype=np.bool_)
    remaining = np.zeros(total_plans, dtype=np.bool_)
    for p in range(total_plans):
        remaining[p] = starts[p + 1] > starts[p]
    n_rows = 0
    written = 0
    while n_rows < page_rows:
        best = -1
        best_score = 0.0
        for p in range(total_plans):
            if not remaining[p]:
                continue
            total = 0.0
            count = 0
            for index in range(starts[p], starts[p + 1]):
                k = items[index]
                if not placed[k]:
                    total += scores[k]
                    count += 1
                    if count == ROW_SCORE_TOP:
                        break
            score = total / count if count else -1.0
            if (
                best < 0
                or -score < -best_score
                or (-score == -best_score and id_rank[p] < id_rank[best])
            ):
                best, best_score = p, score
        if best < 0:
            break
        remaining[best] = False
        length = 0
        for index in range(starts[best], starts[best + 1]):
            k = items[index]
            if not placed[k]:
                placed[k] = True
                out_positions[written + length] = k
                length += 1
                if length >= row_size:
                    break
        if length:
            out_plans[n_rows] = best
            out_lengths[n_rows] = length
            written += length
            n_rows += 1
    return n_top * (page_rows + 1) + n_rows


@kernel(called_by_kernels_only=True)
def _spread(
    scores: np.ndarray,
    order: np.ndarray,
    table_rows: np.ndarray,
    genre_hits: np.ndarray,
    genre_count: np.ndarray,
    penalty: float,
    out: np.ndarray,
) -> int:  # pragma: no cover - compiled (tests compare it with PageBuilder._diversified)
    """`PageBuilder._diversified` over candidate indices; returns how many it wrote."""
    n = order.shape[0]
    limit = out.shape[0]
    slots = min(SPREAD_SLOTS, limit)
    if penalty <= 0.0 or n <= 1:
        count = min(limit, n)
        out[:count] = order[:count]
        return count
    pool_size = min(slots * 3, n)
    values = np.empty(pool_size)
    share = np.empty(pool_size)
    for j in range(pool_size):
        k = order[j]
        values[j] = math.log(max(scores[k], 1e-12))
        row = table_rows[k]
        share[j] = penalty / genre_count[row]
    n_genres = genre_hits.shape[1]
    taken = np.zeros(n, dtype=np.bool_)  # by rank
    count = 0
    for _ in range(min(slots, pool_size)):
        best = 0
        for j in range(1, pool_size):
            if values[j] > values[best]:
                best = j
        out[count] = order[best]
        count += 1
        taken[best] = True
        values[best] = -np.inf
        best_row = table_rows[order[best]]
        for g in range(n_genres):
            in_best = genre_hits[best_row, g]
            if in_best <= 0.0:
                continue
            for j in range(pool_size):
                times = genre_hits[table_rows[order[j]], g] * in_best
                while times > 0.0:  # a genre listed twice counts twice, as in the loop
                    values[j] -= share[j]
                    times -= 1.0
    for r in range(min(limit + slots, n)):
        if count >= limit:
            break
        if not taken[r]:
            out[count] = order[r]
            count += 1
    return count


@kernel(called_by_kernels_only=True)
def _id_before(
    row: int, other: int, id_prefix: np.ndarray, id_length: np.ndarray
) -> int:  # pragma: no cover - compiled
    """-1 if ``row``'s id sorts before ``other``'s, 1 if after, 0 if the keys cannot tell
    (an id unknown to the table, or two ids longer than their shared 16-byte prefix)."""
    length, other_length = id_length[row], id_length[other]
    if length < 0 or other_length < 0:
        return 0
    for word in range(2):
        if id_prefix[row, word] != id_prefix[other, word]:
            return -1 if id_prefix[row, word] < id_prefix[other, word] else 1
    if length == other_length:
        return 0  # equal ids, or both longer than the prefix
    return -1 if length < other_length else 1
