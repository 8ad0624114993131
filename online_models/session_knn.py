"""V-SKNN: vector-multiplied session-based kNN whose session index is updated one event at a time.

Ludewig & Jannach ("Evaluation of session-based recommendation algorithms", 2018) found this
simple nearest-neighbour method on par with or better than recurrent networks for next-click
prediction. The algorithm follows ``VMContextKNN`` of the public session-rec framework; the index
is built for streaming instead of a batch ``fit``: events are appended as they arrive, memory is
bounded (oldest sessions evicted by event time, long sessions truncated) and the inverted index
stays consistent through every eviction.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from itertools import chain
from operator import lt
from typing import Any

import numpy as np

from processors.compiled import kernel

__all__ = ["SessionKNN"]

_STATE_VERSION = 1
#: Smallest score worth recommending: anything positive.
_TINY = 5e-324
#: Low 32 bits of a packed ``click_no << 32 | item`` pair.
_ITEM_MASK = np.int64(0xFFFFFFFF)
#: Up to this many changed sessions, `SessionKNN._refresh` stores scalars, not arrays.
_FEW_DIRTY = 4
#: "No query item yet" in the per-slot scratch array of the first shared query item.
_NO_PART = np.iinfo(np.int64).max
#: The neighbour item decay table when there is none.
_NO_DECAY = np.zeros(0, dtype=np.float64)


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices of the concatenated ranges ``[start, start + size)`` (sizes >= 1)."""
    index = (starts - (sizes.cumsum() - sizes)).repeat(sizes)
    index += np.arange(len(index))
    return index


def _grown(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """``array`` extended to ``size`` entries with ``fill``."""
    grown = np.full(size, fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


# Position weights of the current session's clicks (session-rec's ``weighting``): ``position`` is
# 1-based, ``length`` the number of clicks, so the most recent click has ``position == length``.
def _same(position: int, length: int) -> float:
    return 1.0


def _div(position: int, length: int) -> float:
    return position / length


def _linear(position: int, length: int) -> float:
    # session-rec writes ``1 - 0.1 * (length - i) if i <= 10 else 0``, which zeroes every click
    # after the tenth, i.e. the most recent ones in long sessions; we keep the intended decay.
    return max(0.0, 1.0 - 0.1 * (length - position))


def _log(position: int, length: int) -> float:
    return 1.0 / math.log10(length - position + 1.7)


def _quadratic(position: int, length: int) -> float:
    return (position / length) ** 2


# Score weights by how far back (``step`` = 1 for the last click) the most recent click shared
# with a neighbour lies (session-rec's ``weighting_score``).
def _same_score(step: int) -> float:
    return 1.0


def _div_score(step: int) -> float:
    return 1.0 / step


def _linear_score(step: int) -> float:
    return max(0.0, 1.0 - 0.1 * step)


def _log_score(step: int) -> float:
    return 1.0 / math.log10(step + 1.7)


def _quadratic_score(step: int) -> float:
    return 1.0 / (step * step)


_POSITION_WEIGHTS: dict[str, Callable[[int, int], float]] = {
    "same": _same,
    "div": _div,
    "linear": _linear,
    "log": _log,
    "quadratic": _quadratic,
}
_STEP_WEIGHTS: dict[str, Callable[[int], float]] = {
    "same": _same_score,
    "div": _div_score,
    "linear": _linear_score,
    "log": _log_score,
    "quadratic": _quadratic_score,
}


# ---------------------------------------------------------------------- the compiled query
#
# A query touches a few hundred sessions and a few thousand (item, click) entries: at that size
# each numpy call costs more in dispatch and allocation than in arithmetic, so the query is one
# compiled call (`_query`) of plain loops. They do the IEEE operations of the plain Python
# loops the class docstring describes, in the same order, so scores are bit-identical to them.


@kernel
def _query(
    holders: np.ndarray,
    parts: np.ndarray,
    weights: np.ndarray,
    excluded: int,
    ts: np.ndarray,
    serial: np.ndarray,
    start: np.ndarray,
    n_items: np.ndarray,
    flat: np.ndarray,
    decay: np.ndarray,
    log_clicks: np.ndarray,
    similarity: np.ndarray,
    first: np.ndarray,
    score: np.ndarray,
    seen: np.ndarray,
    in_query: np.ndarray,
    k: int,
    sample_size: int,
    drop_zero_steps: bool,
    remind: bool,
    negative_idf_weighting: float,
    idf_base: float,
    n: int,
    out_items: np.ndarray,
    out_negated: np.ndarray,
) -> int:
    """The items worth ranking for one query (see `_best`) and their negated final scores,
    written to ``out_items`` and ``out_negated`` (one entry per interned item at least:
    returning two arrays cost more than a small query); returns how many.

    ``holders`` are the sessions holding each weighted query item, items most recent first,
    ``weights`` each item's position weight and step weight (two entries per item), ``parts``
    the number of holders of each weighted item then every known query item (one small array
    to build and pass rather than two). The scratch buffers (``similarity`` to ``in_query``)
    are zero (``first``: ``_NO_PART``) on entry and left so.
    """
    sizes, query_iids = parts[: len(weights) // 2], parts[len(weights) // 2 :]
    candidates, similar, contribution = _candidates(
        holders, sizes, weights, excluded, similarity, first
    )
    chosen = _neighbours(similar, ts[candidates], serial[candidates], k, sample_size)
    neighbours, gains = candidates[chosen], contribution[chosen]
    if drop_zero_steps:
        keep = gains > 0.0
        neighbours, gains = neighbours[keep], gains[keep]
    for iid in query_iids:
        in_query[iid] = True
    items, scores = _item_scores(
        neighbours, gains, start, n_items, flat, decay, in_query, score, seen
    )
    if not remind:
        for at in range(len(items)):
            if in_query[items[at]]:
                scores[at] = 0.0
    for iid in query_iids:
        in_query[iid] = False
    if negative_idf_weighting:
        _idf_boost(items, scores, log_clicks, negative_idf_weighting, idf_base)
    return _best(items, scores, n, out_items, out_negated)


@kernel(called_by_kernels_only=True)
def _candidates(
    holders: np.ndarray,
    sizes: np.ndarray,
    weights: np.ndarray,
    excluded: int,
    similarity: np.ndarray,
    first: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sessions sharing a weighted query item (but ``excluded``), their similarity and
    contribution (``weights``: see `_query`; one item's ``holders`` may go on past its size).

    A similarity is the sum of the shared items' position weights, added most recent item
    first (as session-rec), not divided by the number of distinct query items. The
    contribution is the similarity times the step weight of the most recent shared item.
    """
    if len(sizes) == 1:  # the usual one-item query: no sums, no scratch to touch
        held = holders[: sizes[0]]
        candidates = held[held != excluded]
        similar = np.full(len(candidates), weights[0])
        return candidates, similar, similar * weights[1]
    candidates = np.empty(len(holders), dtype=np.int64)
    count = 0
    at = 0
    for part in range(len(sizes)):
        weight = weights[2 * part]
        for slot in holders[at : at + sizes[part]]:
            if slot == excluded:
                continue
            if first[slot] == _NO_PART:
                first[slot] = part
                candidates[count] = slot
                count += 1
            similarity[slot] += weight
        at += sizes[part]
    candidates = candidates[:count]
    similar = np.empty(count, dtype=np.float64)
    contribution = np.empty(count, dtype=np.float64)
    for at in range(count):
        slot = candidates[at]
        similar[at] = similarity[slot]
        contribution[at] = weights[2 * first[slot] + 1] * similar[at]
        similarity[slot] = 0.0
        first[slot] = _NO_PART
    return candidates, similar, contribution


@kernel(called_by_kernels_only=True)
def _neighbours(
    similarity: np.ndarray, ts: np.ndarray, serial: np.ndarray, k: int, sample_size: int
) -> np.ndarray:
    """Indices of the ``k`` most similar of the ``sample_size`` most recent candidates, in
    creation order.

    Ties in similarity go to the more recent session, then the later created one: stable
    sorts by ``serial``, then ``ts``, then ``similarity`` (what ``np.lexsort`` does). The
    creation order is a total order that survives snapshots, so scores are summed in the same
    order whatever slots the sessions occupy.
    """
    count = len(serial)
    by_serial = _order_of_unique(serial)
    if count <= k and (not sample_size or count <= sample_size):
        return by_serial
    ts, similarity = ts[by_serial], similarity[by_serial]
    kept = np.arange(count)  # positions in creation order
    if sample_size and count > sample_size:
        kept = _last_in_order(kept[np.argsort(ts, kind="mergesort")], sample_size, count)
    if len(kept) > k:
        recent = kept[np.argsort(ts[kept], kind="mergesort")]
        closest = recent[np.argsort(similarity[recent], kind="mergesort")]
        kept = _last_in_order(closest, k, count)
    return by_serial[kept]


@kernel(called_by_kernels_only=True)
def _order_of_unique(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values)`` of distinct values (any sort gives that order), without the
    sort when they are already increasing: a title's holders are appended as sessions take
    it up, so about half of the queries find them in creation order."""
    for at in range(1, len(values)):
        if values[at] < values[at - 1]:
            return np.argsort(values)
    return np.arange(len(values))


@kernel(called_by_kernels_only=True)
def _last_in_order(ranked: np.ndarray, keep: int, count: int) -> np.ndarray:
    """The last ``keep`` of ``ranked`` (a permutation of ``range(count)``), in increasing order."""
    mask = np.zeros(count, dtype=np.bool_)
    mask[ranked[len(ranked) - keep :]] = True
    return np.flatnonzero(mask)


@kernel(called_by_kernels_only=True)
def _item_scores(
    neighbours: np.ndarray,
    gains: np.ndarray,
    start: np.ndarray,
    n_items: np.ndarray,
    flat: np.ndarray,
    decay: np.ndarray,
    in_query: np.ndarray,
    score: np.ndarray,
    seen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every item of the ``neighbours`` (in creation order) and the sum of their ``gains``.

    With a neighbour item decay (``decay`` not empty), a neighbour's item counts
    ``decay[d]`` times, ``d`` being its click number minus that of the neighbour's last click
    on a query item (``in_query``); negative ``d`` index from the end, where the table holds
    them.
    """
    total = 0
    for slot in neighbours:
        total += n_items[slot]
    items = np.empty(total, dtype=np.int64)
    count = 0
    for at in range(len(neighbours)):
        begin = start[neighbours[at]]
        end = begin + n_items[neighbours[at]]
        anchor = 0
        if len(decay):
            # Click numbers are >= 0 and every neighbour shares an item.
            for entry in range(begin, end):  # indices, not a view of ``flat`` per neighbour
                packed = flat[entry]
                if in_query[packed & _ITEM_MASK] and packed >> 32 > anchor:
                    anchor = packed >> 32
        for entry in range(begin, end):
            packed = flat[entry]
            iid = packed & _ITEM_MASK
            gain = gains[at]
            if len(decay):
                distance = (packed >> 32) - anchor
                gain *= decay[distance if distance >= 0 else distance + len(decay)]
            if not seen[iid]:
                seen[iid] = True
                items[count] = iid
                count += 1
            score[iid] += gain
    items = items[:count]
    scores = np.empty(count, dtype=np.float64)
    for at in range(count):
        iid = items[at]
        scores[at] = score[iid]
        score[iid] = 0.0
        seen[iid] = False
    return items, scores


@kernel(called_by_kernels_only=True)
def _idf_boost(
    items: np.ndarray,
    scores: np.ndarray,
    log_clicks: np.ndarray,
    negative_weight: float,
    base: float,
) -> None:
    """``scores *= max(1, base - weight * log(n_clicks))``, ``base`` being ``1 + weight *
    log(n_sessions)``: ``1 + weight * max(0, log(n_sessions / n_clicks))`` with the log of
    the clicks kept per item. session-rec counts clicks, not sessions, so an item clicked more
    often than there are sessions would get a negative idf; the clamp leaves real data
    unchanged. (``base + -weight * log`` is ``base - weight * log`` exactly: IEEE negation and
    products commute.)
    """
    for at in range(len(items)):
        boost = log_clicks[items[at]] * negative_weight + base
        scores[at] *= max(boost, 1.0)


@kernel(called_by_kernels_only=True)
def _best(
    items: np.ndarray, scores: np.ndarray, n: int, out_items: np.ndarray, out_negated: np.ndarray
) -> int:
    """The items scoring at least the ``n``-th best score, and positive (the ``n`` best and
    those tied with the last of them), and their negated scores, best first, written to
    ``out_items`` and ``out_negated``; returns how many.

    Ties are left in any order for the caller to break by item id string: sorting
    ``(negated score, item id)`` pairs that are already in score order is a single pass.
    """
    threshold = _TINY
    if len(scores) > n:
        threshold = max(np.partition(scores, len(scores) - n)[len(scores) - n], _TINY)
    best = np.flatnonzero(scores >= threshold)
    negated = -scores[best]
    order = np.argsort(negated)
    count = len(order)
    out_items[:count] = items[best][order]
    out_negated[:count] = negated[order]
    return count


class SessionKNN:
    """Recommend the next item of a session from the items of its most similar past sessions.

    For a current session of ``L`` clicks, click ``p`` (1-based) gets the weight
    ``weighting(p, L)`` (a repeated item keeps its most recent weight). A past session's
    similarity is the sum of the weights of the current items it contains, divided by the number
    of distinct current items. Among the past sessions sharing an item with the current one, the
    ``sample_size`` most recent (by last event time) are candidates and the ``k`` most similar
    are neighbours. Each neighbour adds ``similarity * weighting_score(step)`` to each of its
    items, ``step`` being how many clicks back the most recent shared click lies; an item's sum is
    multiplied by ``1 + idf_weighting * max(0, log(n_sessions / n_clicks(item)))`` so rare items
    shared with a neighbour count for more than ubiquitous ones; scores are divided by the best
    one.

    The index is online: :meth:`add_item` appends one event. Memory is bounded by
    ``max_sessions`` (the session with the oldest last event is evicted) and ``max_session_len``
    (only a session's most recent clicks are kept); the item-to-sessions index and the click
    counts behind the idf follow every eviction. Everything is deterministic: ties between
    neighbours go to the more recent session, ties between items to the smaller item id string,
    and no iteration order of a set or dict can change a result, so a model restored with
    :meth:`from_state` answers exactly as the original.

    Parameters
    ----------
    k
        Neighbours whose items are scored.
    sample_size
        Most recent candidate sessions among which the neighbours are chosen; bounds the work of
        a query on popular items. ``0`` means no sampling.
    max_sessions
        Sessions held; adding one more evicts the one with the oldest last event.
    max_session_len
        Most recent clicks kept per session.
    weighting
        Weight of a current click by its position: ``same``, ``div``, ``linear``, ``log`` or
        ``quadratic``.
    weighting_score
        Weight of a neighbour's items by the recency of the shared click: ``same``, ``div``,
        ``linear``, ``log`` or ``quadratic``.
    idf_weighting
        Strength of the inverse-document-frequency boost of rare items; ``0`` turns it off.
    remind
        Whether items already in the current session may be recommended (repeat views are
        frequent in e-commerce logs).
    normalize
        Divide scores by the top score, so the best item scores ``1.0``.
    neighbour_item_decay
        Optional, off by default (``None``), so the defaults reproduce published V-SKNN. When
        set to ``lambda`` (in clicks), a neighbour's item counts ``exp(-d / lambda)`` times,
        ``d`` being how many clicks separate its last click from the neighbour's last click on
        an item shared with the current session: the item-neighbourhood weighting of STAN
        (Garg et al., SIGIR 2019) and V-STAN. With ``weighting_score="quadratic"`` and
        ``neighbour_item_decay=4.0`` (chosen by MRR@20 on a validation split of the training
        data; the engine's default, see ``EngineConfig``) it lifts YOOCHOOSE-100k
        HitRate@20 / MRR@20 from 0.688 / 0.367 to 0.692 / 0.375.

    Notes
    -----
    Where this differs from session-rec's ``VMContextKNN``: ties at the ``k``-th neighbour go to
    the more recent session (session-rec's order depends on Python set iteration; on the
    YOOCHOOSE-100k reference lists this is the only source of differences); the idf counts the
    clicks the index holds now, not those of a fixed training set, and is clamped at zero;
    sessions longer than ``max_session_len`` are truncated; the ``linear`` weightings decay
    to zero and stay there (session-rec's position weighting zeroes every click after the
    tenth, its score weighting turns negative after ten steps).

    A query is one compiled call (`_query`, numba): the index keeps, beside its dictionaries,
    the sessions holding each item as an array (appended to as sessions take the item up), every
    session's distinct items and click numbers in one flat array (a changed session is
    re-appended lazily, dead entries are dropped when the array is reallocated), per-slot times
    and serials, and scratch accumulators; the kernel loops over them, and Python only maps the
    query to item ids before and the few selected items to their id strings after. (It was a
    chain of ~30 small numpy calls, each costing more in dispatch than in arithmetic: through
    the engine-alone loop a query went from ~157 to ~60 µs of CPU.) Similarities and item scores
    are summed in the order of the plain loop (query items most recent first; neighbours in
    creation order) with the same IEEE operations, so scores are bit-identical to it (a unit
    test holds the kernel to such a loop). This is hand-written rather than a ``scipy.sparse``
    product: the index changes with every event, which sparse matrices would rebuild each time,
    and a sparse product does not fix the summation order the bit-identical results rely on.

    Examples
    --------
    >>> knn = SessionKNN(k=10, idf_weighting=0.0)
    >>> knn.add_session("s1", ["a", "b", "c"], ts=1_000)
    >>> knn.add_session("s2", ["a", "d"], ts=2_000)
    >>> len(knn)
    2
    >>> knn.recommend(["a"], n=3)
    [('a', 1.0), ('b', 0.5), ('c', 0.5)]

    The idf boost (on by default) favours the rarer items shared with neighbours:

    >>> boosted = SessionKNN(k=10)
    >>> boosted.add_session("s1", ["a", "b", "c"], ts=1_000)
    >>> boosted.add_session("s2", ["a", "d"], ts=2_000)
    >>> boosted.recommend(["a"], n=3)
    [('b', 1.0), ('c', 1.0), ('d', 1.0)]
    """

    def __init__(
        self,
        k: int = 500,
        sample_size: int = 5000,
        max_sessions: int = 100_000,
        max_session_len: int = 50,
        weighting: str = "quadratic",
        weighting_score: str = "div",
        idf_weighting: float = 5.0,
        *,
        remind: bool = True,
        normalize: bool = True,
        neighbour_item_decay: float | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if sample_size < 0:
            raise ValueError(f"sample_size must be >= 0, got {sample_size}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if max_session_len < 1:
            raise ValueError(f"max_session_len must be >= 1, got {max_session_len}")
        if weighting not in _POSITION_WEIGHTS:
            raise ValueError(f"weighting must be one of {sorted(_POSITION_WEIGHTS)}")
        if weighting_score not in _STEP_WEIGHTS:
            raise ValueError(f"weighting_score must be one of {sorted(_STEP_WEIGHTS)}")
        if idf_weighting < 0:
            raise ValueError(f"idf_weighting must be >= 0, got {idf_weighting}")
        if neighbour_item_decay is not None and neighbour_item_decay <= 0:
            raise ValueError(f"neighbour_item_decay must be > 0, got {neighbour_item_decay}")
        self.k = k
        self.sample_size = sample_size
        self.max_sessions = max_sessions
        self.max_session_len = max_session_len
        self.weighting = weighting
        self.weighting_score = weighting_score
        self.idf_weighting = float(idf_weighting)
        self.remind = remind
        self.normalize = normalize
        self._position_weight = _POSITION_WEIGHTS[weighting]
        self._step_weight = _STEP_WEIGHTS[weighting_score]
        self.neighbour_item_decay = neighbour_item_decay
        # exp(-|d| / decay) for every signed distance d two kept clicks can have, laid out so
        # that negative indexing (numpy's too) finds -d: no abs() on the scoring path.
        # (Empty when there is no decay.)
        self._neighbour_decay = _NO_DECAY
        if neighbour_item_decay is not None:
            ahead = [math.exp(-d / neighbour_item_decay) for d in range(max_session_len)]
            self._neighbour_decay = np.array(ahead + ahead[:0:-1], dtype=np.float64)

        # Sessions live in slots: small ints reused after an eviction, so the per-session numpy
        # arrays stay as long as the number of sessions held. ``_serial_of`` numbers sessions in
        # creation order and is never reused: ties and summation orders follow it, so results
        # do not depend on which slot a session landed in.
        self._slot_of: dict[str, int] = {}
        self._key_of: dict[int, str] = {}
        self._serial_of: dict[int, int] = {}
        self._next_serial = 0
        self._free_slots: list[int] = []
        self._clicks_of: dict[int, deque[int]] = {}  # the kept clicks, oldest first
        # Distinct kept items -> number (since the session began) of the item's last click;
        # differences of these numbers are distances in clicks, whatever was truncated.
        self._items_of: dict[int, dict[int, int]] = {}
        self._clicks_total_of: dict[int, int] = {}  # clicks ever appended
        self._ts_of: dict[int, int] = {}  # last event time, ms
        # Min-heap of (last ts, serial, slot) with lazy deletion: stale entries are skipped.
        self._by_age: list[tuple[int, int, int]] = []

        # Items: external key <-> internal int id, reused once no kept click refers to it.
        self._iid_of: dict[str, int] = {}
        self._item_key_of: dict[int, str] = {}
        self._free_iids: list[int] = []
        self._sessions_of: dict[int, set[int]] = {}  # inverted index: item -> slots
        self._clicks_count: dict[int, int] = {}  # kept clicks per item, for the idf

        # Query-side mirrors of the index as numpy arrays, which the compiled query loops over
        # instead of Python looping over every neighbour's items.
        # By slot: last event time, creation serial, and where the session's distinct items lie
        # in ``_flat`` (``_start``, ``_n_items``). ``_flat`` holds them packed as
        # ``click_no << 32 | item`` (so up to 2**31 clicks per session, 2**32 items held); a
        # changed session is appended again at query time (the ``_dirty`` slots) and dead
        # entries are dropped when the array is reallocated.
        self._next_slot = 0
        self._ts = np.zeros(0, dtype=np.int64)
        self._serial = np.zeros(0, dtype=np.int64)
        self._start = np.zeros(0, dtype=np.int64)
        self._n_items = np.zeros(0, dtype=np.int64)
        self._flat = np.zeros(0, dtype=np.int64)
        self._flat_used = 0  # entries written, dead ones included
        self._flat_live = 0  # sum of _n_items
        self._dirty: set[int] = set()
        # Item -> its slots: the first ``_holders_n[item]`` entries of ``_holders[item]``, built
        # from ``_sessions_of`` when a query needs them, appended to as sessions take up the
        # item (with spare room, as a list grows) and dropped when a session lets it go.
        self._holders: dict[int, np.ndarray] = {}
        self._holders_n: dict[int, int] = {}
        # By item: log of the kept clicks (idf).
        self._log_clicks = np.zeros(0, dtype=np.float64)
        # Scratch buffers, all zero (``_first``: _NO_PART) between queries.
        self._similarity = np.zeros(0, dtype=np.float64)  # by slot
        self._first = np.zeros(0, dtype=np.int64)  # by slot: first query item shared
        self._score = np.zeros(0, dtype=np.float64)  # by item
        self._seen = np.zeros(0, dtype=np.bool_)  # by item: already scored in this query
        # A query's answer (`_query` writes it): one entry per interned item at most.
        self._out_items = np.zeros(0, dtype=np.int64)
        self._out_negated = np.zeros(0, dtype=np.float64)
        self._in_query = np.zeros(0, dtype=np.bool_)  # by item

    # ------------------------------------------------------------------ index updates

    def __len__(self) -> int:
        """Number of sessions held."""
        return len(self._ts_of)

    def add_item(self, session_key: str, item_id: str, ts: int) -> None:
        """Append one click to ``session_key`` (creating the session), at event time ``ts`` ms.

        The session's last event time becomes ``max(old, ts)``, so a late event never makes a
        session look older. Adding a new session beyond ``max_sessions`` evicts the session with
        the oldest last event (which may be this one, if its event is older than all others).
        """
        slot = self._slot_of.get(session_key)
        if slot is None:
            slot = self._new_session(session_key, ts)
        elif ts > self._ts_of[slot]:
            self._ts_of[slot] = ts
            self._ts[slot] = ts
            heapq.heappush(self._by_age, (ts, self._serial_of[slot], slot))
        self._append_click(slot, self._intern(item_id))
        if len(self._ts_of) > self.max_sessions:
            self._evict_oldest()
        if len(self._by_age) > 2 * len(self._ts_of) + 1024:
            serial_of = self._serial_of
            self._by_age = [(t, serial_of[s], s) for s, t in self._ts_of.items()]
            heapq.heapify(self._by_age)

    def add_session(self, session_key: str, items: Sequence[str], ts: int) -> None:
        """Append several clicks to ``session_key``, all at event time ``ts`` ms."""
        for item_id in items:
            self.add_item(session_key, item_id, ts)

    def _new_session(self, session_key: str, ts: int) -> int:
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            slot = self._next_slot
            self._next_slot += 1
            if slot >= len(self._ts):
                self._grow_slots(slot + 1)
        serial = self._next_serial
        self._next_serial += 1
        self._slot_of[session_key] = slot
        self._key_of[slot] = session_key
        self._serial_of[slot] = serial
        self._clicks_of[slot] = deque()
        self._items_of[slot] = {}
        self._clicks_total_of[slot] = 0
        self._ts_of[slot] = ts
        self._ts[slot] = ts
        self._serial[slot] = serial
        heapq.heappush(self._by_age, (ts, serial, slot))
        return slot

    def _grow_slots(self, needed: int) -> None:
        size = max(needed, 2 * len(self._ts), 64)
        self._ts = _grown(self._ts, size, 0)
        self._serial = _grown(self._serial, size, 0)
        self._start = _grown(self._start, size, 0)
        self._n_items = _grown(self._n_items, size, 0)
        self._similarity = _grown(self._similarity, size, 0.0)
        self._first = _grown(self._first, size, _NO_PART)

    def _intern(self, item_id: str) -> int:
        iid = self._iid_of.get(item_id)
        if iid is None:
            if self._free_iids:
                iid = self._free_iids.pop()
            else:
                iid = len(self._item_key_of)
                if iid >= len(self._log_clicks):
                    self._grow_items(iid + 1)
            self._iid_of[item_id] = iid
            self._item_key_of[iid] = item_id
            self._sessions_of[iid] = set()
            self._clicks_count[iid] = 0
        return iid

    def _grow_items(self, needed: int) -> None:
        size = max(needed, 2 * len(self._log_clicks), 64)
        self._log_clicks = _grown(self._log_clicks, size, 0.0)
        self._score = _grown(self._score, size, 0.0)
        self._seen = _grown(self._seen, size, False)
        self._in_query = _grown(self._in_query, size, False)
        self._out_items = np.empty(size, dtype=np.int64)
        self._out_negated = np.empty(size, dtype=np.float64)

    def _append_click(self, slot: int, iid: int) -> None:
        clicks = self._clicks_of[slot]
        items = self._items_of[slot]
        click_no = self._clicks_total_of[slot]
        self._clicks_total_of[slot] = click_no + 1
        clicks.append(iid)
        if iid not in items:
            self._sessions_of[iid].add(slot)
            holders = self._holders.get(iid)
            if holders is not None:
                self._add_holder(iid, holders, slot)
        items[iid] = click_no
        self._dirty.add(slot)
        count = self._clicks_count[iid] + 1
        self._clicks_count[iid] = count
        self._log_clicks[iid] = math.log(count)
        if len(clicks) > self.max_session_len:
            self._drop_oldest_click(slot)

    def _drop_oldest_click(self, slot: int) -> None:
        """Forget the oldest kept click of ``slot`` everywhere it counts."""
        clicks = self._clicks_of[slot]
        click_no = self._clicks_total_of[slot] - len(clicks)
        iid = clicks.popleft()
        items = self._items_of[slot]
        if items[iid] == click_no:  # it was the item's last click in the session
            del items[iid]
            self._sessions_of[iid].discard(slot)
            if self._holders.pop(iid, None) is not None:
                del self._holders_n[iid]
            self._dirty.add(slot)
        count = self._clicks_count[iid] - 1
        if count:
            self._clicks_count[iid] = count
            self._log_clicks[iid] = math.log(count)
        else:
            del self._clicks_count[iid], self._sessions_of[iid]
            del self._iid_of[self._item_key_of.pop(iid)]
            self._free_iids.append(iid)

    def _evict_oldest(self) -> None:
        while self._by_age:
            ts, serial, slot = heapq.heappop(self._by_age)
            if self._ts_of.get(slot) == ts and self._serial_of[slot] == serial:
                self._evict(slot)
                return

    def _evict(self, slot: int) -> None:
        while self._clicks_of[slot]:
            self._drop_oldest_click(slot)
        del self._clicks_of[slot], self._items_of[slot], self._clicks_total_of[slot]
        del self._ts_of[slot], self._serial_of[slot]
        del self._slot_of[self._key_of.pop(slot)]
        self._dirty.discard(slot)
        self._flat_live -= int(self._n_items[slot])
        self._n_items[slot] = 0
        self._free_slots.append(slot)

    def _refresh(self) -> None:
        """Append the distinct items of the sessions changed since the last query to ``_flat``."""
        dirty = self._dirty
        if len(dirty) <= _FEW_DIRTY:
            while dirty:
                self._refresh_one(dirty.pop())
            return
        slots = list(dirty)
        dirty.clear()
        items_of = self._items_of
        sizes = np.fromiter(map(len, map(items_of.__getitem__, slots)), np.int64, len(slots))
        total = int(sizes.sum())
        packed = np.fromiter(
            chain.from_iterable(
                [(click_no << 32) | iid for iid, click_no in items_of[slot].items()]
                for slot in slots
            ),
            np.int64,
            total,
        )
        if self._flat_used + total > len(self._flat):
            self._compact(2 * (self._flat_live + total) + 1024)
        where = np.asarray(slots, dtype=np.int64)
        self._flat[self._flat_used : self._flat_used + total] = packed
        self._start[where] = self._flat_used + np.cumsum(sizes) - sizes
        self._flat_live += total - int(self._n_items[where].sum())
        self._n_items[where] = sizes
        self._flat_used += total

    def _refresh_one(self, slot: int) -> None:
        """`_refresh` of one of a handful of changed sessions (between two pages, usually just
        the user's own): a few scalar stores instead of a dozen whole-array numpy calls."""
        entries = [(click_no << 32) | iid for iid, click_no in self._items_of[slot].items()]
        size = len(entries)
        used = self._flat_used
        if used + size > len(self._flat):
            self._compact(2 * (self._flat_live + size) + 1024)
            used = self._flat_used
        self._flat[used : used + size] = entries
        self._start[slot] = used
        self._flat_live += size - int(self._n_items[slot])
        self._n_items[slot] = size
        self._flat_used = used + size

    def _compact(self, size: int) -> None:
        """Reallocate ``_flat`` with ``size`` entries, keeping only the live ones."""
        slots = np.flatnonzero(self._n_items)
        flat = np.zeros(size, dtype=np.int64)
        sizes = self._n_items[slots]
        live = int(sizes.sum())
        if live:
            flat[:live] = self._flat[_ranges(self._start[slots], sizes)]
        self._start[slots] = np.cumsum(sizes) - sizes
        self._flat = flat
        self._flat_used = live

    def _add_holder(self, iid: int, holders: np.ndarray, slot: int) -> None:
        """Append ``slot`` to the built holders of ``iid``: one store instead of rebuilding
        them from the set at the next query (sessions take up popular items all the time)."""
        count = self._holders_n[iid]
        if count == len(holders):
            holders = self._holders[iid] = _grown(holders, 2 * count + 8, 0)
        holders[count] = slot
        self._holders_n[iid] = count + 1

    def _build_holders(self, iid: int) -> np.ndarray:
        """The holders of ``iid`` as an array, built from the set (none since it changed)."""
        slots = self._sessions_of[iid]
        self._holders_n[iid] = len(slots)
        holders = self._holders[iid] = np.fromiter(slots, np.int64, len(slots))
        return holders

    # ------------------------------------------------------------------ scoring

    def recommend(
        self,
        session_items: Sequence[str],
        n: int = 100,
        *,
        exclude_session: str | None = None,
    ) -> list[tuple[str, float]]:
        """Return up to ``n`` ``(item_id, score)`` pairs for the next click, best first.

        Only items with a positive score are returned, so the list is shorter than ``n`` (empty
        for an empty session or one of unknown items) when the neighbours do not supply enough.

        Parameters
        ----------
        session_items
            The current session's clicks, oldest first; items unknown to the index count for the
            session length but match no neighbour.
        n
            Length of the list.
        exclude_session
            Key of a session in the index that must not be its own neighbour (the live session,
            when its clicks are also added to the index).
        """
        length = len(session_items)
        if not length or n <= 0:
            return []
        # Last position of each known item (a repeated item keeps its most recent weight),
        # most recent first.
        last_position: dict[int, int] = {}
        iid_of = self._iid_of
        for position in range(length - 1, -1, -1):
            iid = iid_of.get(session_items[position])
            if iid is not None and iid not in last_position:
                last_position[iid] = position
        if not last_position:
            return []
        if self._dirty:
            self._refresh()
        query = self._query_items(last_position, length, len(set(session_items)))
        if query is None:
            return []
        holders, parts, weights = query
        excluded = -1
        if exclude_session is not None:
            excluded = self._slot_of.get(exclude_session, -1)
        items, negated = self._out_items, self._out_negated
        count = _query(
            holders,
            parts,
            weights,
            excluded,
            self._ts,
            self._serial,
            self._start,
            self._n_items,
            self._flat,
            self._neighbour_decay,
            self._log_clicks,
            self._similarity,
            self._first,
            self._score,
            self._seen,
            self._in_query,
            self.k,
            self.sample_size,
            self.weighting_score == "linear",  # the one step weight that reaches zero
            self.remind,
            -self.idf_weighting,
            1.0 + self.idf_weighting * math.log(len(self._ts_of)),
            n,
            items,
            negated,
        )
        return self._top(items[:count], negated[:count], n)

    def _query_items(
        self, last_position: dict[int, int], length: int, distinct: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """`_query`'s ``holders``, ``parts`` and ``weights``: the sessions holding each weighted
        query item (concatenated; a single item's array as it is stored, spare room
        included), their counts then every known query item, and by item its position weight
        and step weight, most recent item first.

        session-rec divides similarities by the number of ``distinct`` current items (unknown
        ones included); a common factor, so it is applied to the step weight instead, which
        leaves the neighbours' order unchanged.
        """
        position_weight = self._position_weight
        step_weight = self._step_weight
        per_distinct = 1.0 / distinct
        holders_of = self._holders
        holders: list[np.ndarray] = []
        sizes: list[int] = []
        weights: list[float] = []
        for iid, position in last_position.items():
            weight = position_weight(position + 1, length)
            if weight > 0.0:
                held = holders_of.get(iid)
                if held is None:
                    held = self._build_holders(iid)
                holders.append(held)
                sizes.append(self._holders_n[iid])
                weights += (weight, step_weight(length - position) * per_distinct)
        if not holders:
            return None
        if len(holders) == 1:
            slots = holders[0]
        else:
            slots = np.concatenate([held[:size] for held, size in zip(holders, sizes, strict=True)])
        return slots, np.array(sizes + list(last_position)), np.array(weights)

    def _top(self, items: np.ndarray, negated: np.ndarray, n: int) -> list[tuple[str, float]]:
        """Best ``n`` of the items `_best` kept (with their negated scores, best first), ties to
        the smaller item id string."""
        key_of = self._item_key_of
        values = negated.tolist()
        if not values:
            return []
        if all(map(lt, values, values[1:])):  # no ties (nor NaN): already in order
            ranked = zip(values[:n], map(key_of.__getitem__, items[:n].tolist()))  # noqa: B905
        else:
            ranked = sorted(zip(values, map(key_of.__getitem__, items.tolist()), strict=True))[:n]
            values = [ranked[0][0]]
        top = -values[0] if self.normalize else 1.0
        return [(item_id, -neg / top) for neg, item_id in ranked]

    # ------------------------------------------------------------------ snapshots

    def to_state(self) -> dict[str, Any]:
        """Return the model as plain JSON-safe data (no pickle): parameters and kept sessions.

        Sessions are listed in creation order with their last event time and kept clicks; the
        inverted index and click counts are derived, so they are rebuilt rather than stored.
        """
        key_of = self._item_key_of
        return {
            "version": _STATE_VERSION,
            "params": {
                "k": self.k,
                "sample_size": self.sample_size,
                "max_sessions": self.max_sessions,
                "max_session_len": self.max_session_len,
                "weighting": self.weighting,
                "weighting_score": self.weighting_score,
                "idf_weighting": self.idf_weighting,
                "remind": self.remind,
                "normalize": self.normalize,
                "neighbour_item_decay": self.neighbour_item_decay,
            },
            "sessions": [
                [
                    self._key_of[slot],
                    self._ts_of[slot],
                    [key_of[iid] for iid in self._clicks_of[slot]],
                ]
                for slot in sorted(self._clicks_of, key=self._serial_of.__getitem__)
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SessionKNN:
        """Rebuild a model from :meth:`to_state` output; it recommends exactly as the original.

        Raises
        ------
        ValueError
            If the state has an unknown version.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported SessionKNN state version {state.get('version')!r}")
        model = cls(**state["params"])
        for session_key, ts, items in state["sessions"]:
            slot = model._new_session(session_key, ts)
            for item_id in items:
                model._append_click(slot, model._intern(item_id))
        return model
