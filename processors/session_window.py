"""The write half of the session features: how one event changes a user's session window.

Each feature has a write half (here: what an event changes) and a read half
(``processors.features``: its value at scoring time), the split metarank uses, so serving and
learning read the same numbers.
"""

from __future__ import annotations

import math

from processors.config import EngineConfig
from processors.taste import TASTE_TYPES, add_evidence, engagement_of
from processors.user_state import EVENT_TYPE_INDEX, UserState
from schemas.messages import BehaviourEvent, CatalogItem

__all__ = [
    "AFFINITY_WEIGHTS",
    "artwork_style",
    "decay_factor",
    "decayed_affinity",
    "update_window",
]

#: How much each event type says about liking an item's genres. Scroll-pasts and drop-offs are
#: evidence against: behaviour, not demographics, is the signal.
AFFINITY_WEIGHTS: dict[str, float] = {
    "impression": 0.0,
    "hover": 0.5,  # scaled by dwell, see _affinity_weight
    "click": 1.0,
    "scroll_past": -0.25,
    "play": 2.0,
    "pause": 0.5,  # scaled by progress
    "completion": 3.0,
    "drop_off": -0.5,  # scaled by how early they dropped
    "session_start": 0.0,
}
#: Events that put an item into the session's item sequence (used by session-kNN).
SEQUENCE_TYPES = frozenset({"click", "play", "completion"})
#: Dwell at which a hover counts fully.
_FULL_DWELL_MS = 3_000.0
#: Items tracked per session in the exposure maps.
_MAX_EXPOSURE_ITEMS = 128
_MIN_RESUME_PROGRESS = 0.02
#: Events whose progress counts (the session's mean progress, continue watching).
_PROGRESS_TYPES = frozenset({"pause", "completion", "drop_off"})
_LN2 = math.log(2.0)
_MAX_RESUME_PROGRESS = 0.95


def decayed_affinity(state: UserState, now: int, half_life_ms: int) -> dict[str, float]:
    """Genre affinities decayed to ``now`` (read-only; the state keeps undecayed values)."""
    if not state.genre_affinity:
        return {}
    factor = decay_factor(now - state.affinity_ts, half_life_ms)
    return {genre: weight * factor for genre, weight in state.genre_affinity.items()}


def update_window(
    state: UserState, event: BehaviourEvent, item: CatalogItem | None, config: EngineConfig
) -> None:
    """Apply one accepted, in-session event to the user's window (in place)."""
    event_type = event.type
    state.session_events += 1
    state.type_counts[EVENT_TYPE_INDEX[event_type]] += 1
    if event.ts > state.last_ts:
        state.last_ts = event.ts
    if event.device:
        state.device = event.device
    local_hour = event.local_hour
    # (else the UTC hour of the event)
    state.local_hour = local_hour if local_hour is not None else (event.ts // 3_600_000) % 24

    # The catalog's copy of the id: per-session maps then share one string per title instead
    # of holding the one decoded from each event (memory per active session).
    item_id = item.item_id if item is not None else event.item_id
    if event_type == "hover":
        state.hover_dwell_ms += event.dwell_ms or 0
    elif event_type == "scroll_past":
        state.scroll_streak += 1
        state.max_scroll_streak = max(state.max_scroll_streak, state.scroll_streak)
        if item_id is not None:
            state.count_scroll_past(item_id, _MAX_EXPOSURE_ITEMS)
    elif event_type in SEQUENCE_TYPES:
        state.scroll_streak = 0
        if item_id is not None:
            state.session_clicked = _with_clicked(state.session_clicked, item_id)
            _append_item(state, item_id, config.last_items)
            state.share_clicked()
    elif event_type == "impression" and item_id is not None:
        state.count_impression(item_id, _MAX_EXPOSURE_ITEMS)

    progress_type = event_type in _PROGRESS_TYPES
    if progress_type and event.progress is not None:
        state.progress_sum += event.progress
        state.progress_n += 1
    if item_id is not None:
        if progress_type:  # (the only types `_update_continue_watching` acts on)
            _update_continue_watching(state, event, item_id, config.continue_watching)
        if item is not None:
            genres = item.genres
            if genres:
                weight = _affinity_weight(event)
                if weight:
                    _add_affinity(state, genres, weight, event.ts, config)
            if event_type in TASTE_TYPES:
                engaged, examined = engagement_of(event_type, event.dwell_ms)
                add_evidence(state.genre_evidence, genres, engaged, examined)
            if genres:
                state.genre_affinity.share_keys(state.genre_evidence)


def artwork_style(item: CatalogItem, artwork_id: str | None) -> str | None:
    """The catalog's style tag of one of the item's artworks (None when unknown)."""
    if artwork_id is None or not item.artwork_styles:
        return None
    try:
        return item.artwork_styles[item.artworks.index(artwork_id)]
    except ValueError:  # an artwork the catalog does not list for this item
        return None


def _affinity_weight(event: BehaviourEvent) -> float:
    base = AFFINITY_WEIGHTS[event.type]
    if event.type == "hover":
        return base * min((event.dwell_ms or 0) / _FULL_DWELL_MS, 1.0)
    if event.type == "pause":
        return base * (event.progress if event.progress is not None else 0.5)
    if event.type == "drop_off":
        return base * (1.0 - (event.progress if event.progress is not None else 0.0))
    return base


def _add_affinity(
    state: UserState, genres: tuple[str, ...], weight: float, ts: int, config: EngineConfig
) -> None:
    affinity = state.genre_affinity
    factor = 1.0
    if ts > state.affinity_ts:
        if affinity:
            factor = decay_factor(ts - state.affinity_ts, config.genre_half_life_ms)
        state.affinity_ts = ts
        age_factor = 1.0
    elif ts == state.affinity_ts:  # another event of the same moment (`decay_factor` of 0)
        age_factor = 1.0
    else:  # out-of-order event: add it as already decayed to the window's clock
        age_factor = decay_factor(state.affinity_ts - ts, config.genre_half_life_ms)
    share = weight * age_factor / len(genres)
    # (the size the update returns: `len` of the map is a call to its Python `__len__`)
    if affinity.decay_and_add(factor, genres, share) > config.max_genres:
        weakest = min(affinity, key=lambda genre: abs(affinity[genre]))
        del affinity[weakest]


def _update_continue_watching(
    state: UserState, event: BehaviourEvent, item_id: str, limit: int
) -> None:
    resume = state.continue_watching
    if event.type == "completion":
        resume.pop(item_id, None)
    elif event.type in ("pause", "drop_off") and event.progress is not None:
        if _MIN_RESUME_PROGRESS <= event.progress < _MAX_RESUME_PROGRESS:
            resume.pop(item_id, None)  # re-insert so the dict stays ordered by recency
            resume[item_id] = event.progress
            while len(resume) > limit:
                del resume[next(iter(resume))]
        elif event.progress >= _MAX_RESUME_PROGRESS:
            resume.pop(item_id, None)


def _append_item(state: UserState, item_id: str, limit: int) -> None:
    items = state.last_items
    if items and items[-1] == item_id:
        return  # a click followed by a play of the same title is one step of the sequence
    items = (*items, item_id)
    state.last_items = items[1:] if len(items) > limit else items


def _with_clicked(clicked: tuple[str, ...], item_id: str) -> tuple[str, ...]:
    """The session's clicked titles with one more: an ordered set, the oldest forgotten first."""
    if item_id in clicked:
        return clicked
    clicked = (*clicked, item_id)
    return clicked[1:] if len(clicked) > _MAX_EXPOSURE_ITEMS else clicked


def decay_factor(elapsed_ms: int, half_life_ms: int) -> float:
    """What a weight keeps after ``elapsed_ms`` (exactly 1.0 when no time passed, which
    lets `processors.features` skip multiplying by it)."""
    if elapsed_ms <= 0:
        return 1.0
    return math.exp(-_LN2 * elapsed_ms / half_life_ms)
