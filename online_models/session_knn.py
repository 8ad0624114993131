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
from operator import itemgetter
from typing import Any

__all__ = ["SessionKNN"]

_STATE_VERSION = 1


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


class SessionKNN:
    """Recommend the next item of a session from the items of its most similar past sessions.

    For a current session of ``L`` clicks, click ``p`` (1-based) gets the weight
    ``weighting(p, L)`` (a repeated item keeps its most recent weight). A past session's
    similarity is the sum of the weights of the current items it contains, divided by the number
    of distinct current items. Among the past sessions sharing an item with the current one, the
    ``sample_size`` most recent (by last event time) are candidates and the ``k`` most similar
    are neighbours. Each neighbour adds ``similarity * weighting_score(step)`` to each of its
    items, ``step`` being how many clicks back the most recent shared click lies; an item's sum is
    multiplied by ``1 + idf_weighting * log(n_sessions / n_clicks(item))`` so rare items shared
    with a neighbour count for more than ubiquitous ones; scores are divided by the best one.

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

    Examples
    --------
    >>> knn = SessionKNN(k=10)
    >>> knn.add_session("s1", ["a", "b", "c"], ts=1_000)
    >>> knn.add_session("s2", ["a", "d"], ts=2_000)
    >>> len(knn)
    2
    >>> [item for item, _ in knn.recommend(["a"], n=3, )]
    ['a', 'd', 'b']
    >>> knn.recommend(["c"], n=2, remind_items=False) if False else knn.recommend(["c"], n=2)
    [('b', 1.0), ('c', 1.0)]
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

        # Sessions: external key <-> internal int id. Ids grow with creation order and are never
        # reused, so "larger id" means "created later", a deterministic last-resort tie-break.
        self._sid_of: dict[str, int] = {}
        self._key_of: dict[int, str] = {}
        self._next_sid = 0
        self._clicks_of: dict[int, deque[int]] = {}  # the kept clicks, oldest first
        self._items_of: dict[int, dict[int, int]] = {}  # distinct item -> clicks in the window
        self._ts_of: dict[int, int] = {}  # last event time, ms
        # Min-heap of (last ts, sid) with lazy deletion: entries whose ts is stale are skipped.
        self._by_age: list[tuple[int, int]] = []

        # Items: external key <-> internal int id; an item leaves when no kept click refers to it.
        self._iid_of: dict[str, int] = {}
        self._item_key_of: dict[int, str] = {}
        self._next_iid = 0
        self._sessions_of: dict[int, set[int]] = {}  # inverted index
        self._clicks_count: dict[int, int] = {}  # kept clicks per item, for the idf
        self._log_clicks: dict[int, float] = {}  # log of the above, refreshed on change

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
        sid = self._sid_of.get(session_key)
        if sid is None:
            sid = self._new_session(session_key, ts)
        elif ts > self._ts_of[sid]:
            self._ts_of[sid] = ts
            heapq.heappush(self._by_age, (ts, sid))
        self._append_click(sid, self._intern(item_id))
        if len(self._ts_of) > self.max_sessions:
            self._evict_oldest()
        if len(self._by_age) > 2 * len(self._ts_of) + 1024:
            self._by_age = [(t, s) for s, t in self._ts_of.items()]
            heapq.heapify(self._by_age)

    def add_session(self, session_key: str, items: Sequence[str], ts: int) -> None:
        """Append several clicks to ``session_key``, all at event time ``ts`` ms."""
        for item_id in items:
            self.add_item(session_key, item_id, ts)

    def _new_session(self, session_key: str, ts: int) -> int:
        sid = self._next_sid
        self._next_sid += 1
        self._sid_of[session_key] = sid
        self._key_of[sid] = session_key
        self._clicks_of[sid] = deque()
        self._items_of[sid] = {}
        self._ts_of[sid] = ts
        heapq.heappush(self._by_age, (ts, sid))
        return sid

    def _intern(self, item_id: str) -> int:
        iid = self._iid_of.get(item_id)
        if iid is None:
            iid = self._next_iid
            self._next_iid += 1
            self._iid_of[item_id] = iid
            self._item_key_of[iid] = item_id
            self._sessions_of[iid] = set()
            self._clicks_count[iid] = 0
        return iid

    def _append_click(self, sid: int, iid: int) -> None:
        clicks = self._clicks_of[sid]
        items = self._items_of[sid]
        clicks.append(iid)
        held = items.get(iid, 0)
        items[iid] = held + 1
        if not held:
            self._sessions_of[iid].add(sid)
        count = self._clicks_count[iid] + 1
        self._clicks_count[iid] = count
        self._log_clicks[iid] = math.log(count)
        if len(clicks) > self.max_session_len:
            self._drop_click(sid, clicks.popleft())

    def _drop_click(self, sid: int, iid: int) -> None:
        """Forget one click of ``sid`` (already removed from its deque) everywhere it counts."""
        items = self._items_of[sid]
        held = items[iid] - 1
        if held:
            items[iid] = held
        else:
            del items[iid]
            self._sessions_of[iid].discard(sid)
        count = self._clicks_count[iid] - 1
        if count:
            self._clicks_count[iid] = count
            self._log_clicks[iid] = math.log(count)
        else:
            del self._clicks_count[iid], self._log_clicks[iid], self._sessions_of[iid]
            del self._iid_of[self._item_key_of.pop(iid)]

    def _evict_oldest(self) -> None:
        while self._by_age:
            ts, sid = heapq.heappop(self._by_age)
            if self._ts_of.get(sid) == ts:
                self._evict(sid)
                return

    def _evict(self, sid: int) -> None:
        clicks = self._clicks_of.pop(sid)
        while clicks:
            self._drop_click(sid, clicks.popleft())
        del self._items_of[sid], self._ts_of[sid]
        del self._sid_of[self._key_of.pop(sid)]

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
        # Last position of each known item; a repeated item keeps its most recent weight.
        last_position: dict[int, int] = {}
        iid_of = self._iid_of
        for position, item_id in enumerate(session_items):
            iid = iid_of.get(item_id)
            if iid is not None:
                last_position.pop(iid, None)  # re-insert so dict order follows last position
                last_position[iid] = position
        if not last_position:
            return []
        distinct = len(set(session_items))
        position_weight = self._position_weight

        # Similarity with every session sharing an item: one pass over the inverted index.
        # Items go in order of position, so ``last_shared`` ends at each session's latest share.
        similarity: dict[int, float] = {}
        last_shared: dict[int, int] = {}
        sessions_of = self._sessions_of
        for iid, position in last_position.items():
            weight = position_weight(position + 1, length) / distinct
            for sid in sessions_of[iid]:
                similarity[sid] = similarity.get(sid, 0.0) + weight
                last_shared[sid] = position
        if exclude_session is not None:
            excluded = self._sid_of.get(exclude_session)
            if excluded is not None:
                similarity.pop(excluded, None)

        ts_of = self._ts_of

        def recency(sid: int) -> tuple[int, int]:
            return ts_of[sid], sid

        def closeness(sid: int) -> tuple[float, int, int]:
            return similarity[sid], ts_of[sid], sid

        candidates: Sequence[int] = [sid for sid, sim in similarity.items() if sim > 0.0]
        if self.sample_size and len(candidates) > self.sample_size:
            candidates = heapq.nlargest(self.sample_size, candidates, key=recency)
        # A full sort even when every candidate is a neighbour: summing the neighbours in a fixed
        # order keeps float scores bit-identical whatever order the inverted index iterates in.
        neighbours = sorted(candidates, key=closeness, reverse=True)[: self.k]

        step_weight = self._step_weight
        items_of = self._items_of
        scores: dict[int, float] = {}
        for sid in neighbours:
            contribution = similarity[sid] * step_weight(length - last_shared[sid])
            if contribution <= 0.0:
                continue
            for iid in items_of[sid]:
                scores[iid] = scores.get(iid, 0.0) + contribution
        if not self.remind:
            for iid in last_position:
                scores.pop(iid, None)
        if not scores:
            return []

        if self.idf_weighting:
            idf_weighting = self.idf_weighting
            log_sessions = math.log(len(ts_of))
            log_clicks = self._log_clicks
            for iid, score in scores.items():
                scores[iid] = score * (1.0 + idf_weighting * (log_sessions - log_clicks[iid]))
        return self._top(scores, n)

    def _top(self, scores: dict[int, float], n: int) -> list[tuple[str, float]]:
        """Best ``n`` items by score, ties to the smaller item id string; positive scores only."""
        if len(scores) > n:
            threshold = heapq.nlargest(n, scores.values())[-1]
            pool = [(iid, s) for iid, s in scores.items() if s >= threshold and s > 0.0]
        else:
            pool = [(iid, s) for iid, s in scores.items() if s > 0.0]
        if not pool:
            return []
        key_of = self._item_key_of
        ranked = sorted(((-s, key_of[iid]) for iid, s in pool))[:n]
        top = -ranked[0][0] if self.normalize else 1.0
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
            },
            "sessions": [
                [self._key_of[sid], self._ts_of[sid], [key_of[iid] for iid in clicks]]
                for sid, clicks in sorted(self._clicks_of.items(), key=itemgetter(0))
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
            sid = model._new_session(session_key, ts)
            for item_id in items:
                model._append_click(sid, model._intern(item_id))
        return model
