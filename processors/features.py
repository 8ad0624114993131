"""The read half of the features: session features and session-by-item ranking features.

Feature names say what they hold and where they come from; the tuples below fix the order of
the vectors the learners see, so a model snapshot and the code that feeds it always agree.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from processors.catalog import Catalog
from processors.compiled import kernel
from processors.config import EngineConfig
from processors.session_window import decay_factor, decayed_affinity
from processors.taste import NO_EVIDENCE
from processors.user_state import UserState, append_row
from schemas.messages import CatalogItem

__all__ = [
    "CLICK_MODEL_COLUMN",
    "RANK_FEATURE_NAMES",
    "SESSION_FEATURE_NAMES",
    "CandidateSignals",
    "ItemTable",
    "RankingContext",
    "genre_taste_rates",
    "public_session_features",
    "rank_feature_matrix",
    "rank_features",
    "ranking_context",
    "session_features",
    "write_session_snapshot",
]

SESSION_FEATURE_NAMES: tuple[str, ...] = (
    "events_count_session_log",
    "impressions_count_session_log",
    "hovers_count_session_log",
    "clicks_count_session_log",
    "scroll_pasts_count_session_log",
    "pauses_count_session_log",
    "drop_offs_count_session_log",
    "hover_dwell_mean_s",
    "scroll_past_streak_log",
    "browsing_speed_epm_log",
    "session_age_min_log",
    "click_through_rate_session",
    "progress_mean_session",
    "genre_focus_session",
    "device_is_mobile",
    "device_is_tv",
    "local_hour_sin",
    "local_hour_cos",
    "returning_user",
)

RANK_FEATURE_NAMES: tuple[str, ...] = (
    "genre_taste_lift",
    "genre_affinity_tanh",
    "item_click_lift",
    "artwork_style_lift",
    "knn_score_norm",
    "knn_hit",
    "trending_log",
    "resume_progress",
    "impressions_item_session_log",
    "scroll_pasts_item_session_log",
    "clicked_item_session",
    "mobile_x_duration_log",
    "unknown_item",
    "click_model_logit",
)
#: Index of the click model's logit (see `click_model_logit`), the ranker's prior.
CLICK_MODEL_COLUMN = RANK_FEATURE_NAMES.index("click_model_logit")

_MOBILE = frozenset({"mobile", "phone", "ios", "android", "tablet"})
_TV = frozenset({"tv", "smart_tv", "console", "stb"})
_TWO_PI = 2.0 * math.pi


def session_features(state: UserState, now: int, config: EngineConfig) -> list[float]:
    """Session feature vector in ``SESSION_FEATURE_NAMES`` order.

    Computed for every event of a session without a play (the churn check), so the parts
    that depend on one small input are looked up (`_device_flags`, `_hour_waves`) and the
    genre focus reads the affinity's values without building the decayed dict: each
    value is what ``decayed_affinity`` gives (``w * factor``, summed in the same order).
    """
    counts = state.type_counts
    log1p = math.log1p
    impressions, hovers, clicks, scrolls = counts[0], counts[1], counts[2], counts[3]
    # (`max(age, 0)` and `max(age_min, 0.5)` as comparisons: the same values, no calls)
    age_ms = state.last_ts - state.session_start
    age_min = (age_ms if age_ms > 0 else 0) / 60_000.0
    # events per minute, the floor avoids blow-ups
    speed = state.session_events / (0.5 if age_min < 0.5 else age_min)
    focus = _genre_focus(state, now, config.genre_half_life_ms)
    # The memoized lookups first (`_device_flags` and `_hour_waves` compute what they miss).
    device = state.device
    flags = _DEVICE_FLAGS.get(device)
    is_mobile, is_tv = flags if flags is not None else _device_flags(device)
    waves = _HOUR_WAVES.get(state.local_hour)
    hour_sin, hour_cos = waves if waves is not None else _hour_waves(state.local_hour)
    return [
        log1p(state.session_events),
        log1p(impressions),
        log1p(hovers),
        log1p(clicks),
        log1p(scrolls),
        log1p(counts[5]),
        log1p(counts[7]),
        (state.hover_dwell_ms / hovers / 1000.0) if hovers else 0.0,
        log1p(state.scroll_streak),
        log1p(speed),
        log1p(age_min),
        clicks / (impressions + 1.0),
        state.progress_sum / state.progress_n if state.progress_n else 0.0,
        focus,
        is_mobile,
        is_tv,
        hour_sin,
        hour_cos,
        1.0 if state.sessions_total > 0 else 0.0,
    ]


def write_session_snapshot(
    row: np.ndarray, state: UserState, now: int, config: EngineConfig, scratch: bytearray
) -> None:
    """`session_features` written into ``row`` (float64, one value a feature) and kept as the
    state's churn snapshot (``state.add_churn_snapshot(row, config.churn_snapshots)``) by one
    compiled call, `_session_snapshot`: the churn check's path, every event of a session
    without a play.

    The list of 19 floats, its nine ``math.log1p`` calls and the genre focus's loop cost more
    in Python calls than in arithmetic, and the list was then packed into the float64 row the
    snapshot and the model read (~15k instructions a check). The kernel does the
    same IEEE operations in the same order (numba's ``log1p`` is the C library's, as
    ``math.log1p`` is; integers become floats where Python's true division makes them so).
    One call instead of a second for the snapshot saves its dispatch and Python wrapper (~1%
    of the engine's instructions). ``scratch`` receives the records (grown here when short):
    the caller's own buffer, never a module-level one, since kernels run without the GIL.
    """
    room = state.churn_record_room(len(row))  # (the width checks of `add_churn_snapshot`)
    if len(scratch) < room:
        scratch.extend(bytes(room - len(scratch)))
    counts = state.type_counts
    affinity = state.genre_affinity
    packed = affinity.packed_values()
    elapsed = now - state.affinity_ts
    # (`decay_factor` is computed in Python, as `_genre_focus` does: only when it is used)
    factor = decay_factor(elapsed, config.genre_half_life_ms) if packed and elapsed > 0 else 1.0
    device = state.device
    flags = _DEVICE_FLAGS.get(device)
    is_mobile, is_tv = flags if flags is not None else _device_flags(device)
    waves = _HOUR_WAVES.get(state.local_hour)
    hour_sin, hour_cos = waves if waves is not None else _hour_waves(state.local_hour)
    size = _session_snapshot(
        row,
        state.churn_snapshots,
        config.churn_snapshots,
        scratch,
        state.session_events,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[5],
        counts[7],
        state.hover_dwell_ms,
        state.scroll_streak,
        state.last_ts - state.session_start,
        state.progress_sum,
        state.progress_n,
        packed,
        factor,
        is_mobile,
        is_tv,
        hour_sin,
        hour_cos,
        state.sessions_total > 0,
    )
    state.churn_snapshots = bytes(scratch[:size])


@kernel
def _session_snapshot(
    row: np.ndarray,
    snapshots: bytes,
    limit: int,
    out: bytearray,
    events: int,
    impressions: int,
    hovers: int,
    clicks: int,
    scrolls: int,
    pauses: int,
    drop_offs: int,
    hover_dwell_ms: int,
    scroll_streak: int,
    age_ms: int,
    progress_sum: float,
    progress_n: int,
    affinity: bytes,
    factor: float,
    is_mobile: float,
    is_tv: float,
    hour_sin: float,
    hour_cos: float,
    returning: bool,
) -> int:  # pragma: no cover - compiled (tests compare it with `session_features`)
    """`_session_row` into ``row``, then `append_row` of it to ``snapshots`` in ``out``;
    returns the length of the records written."""
    _session_row(
        row,
        events,
        impressions,
        hovers,
        clicks,
        scrolls,
        pauses,
        drop_offs,
        hover_dwell_ms,
        scroll_streak,
        age_ms,
        progress_sum,
        progress_n,
        affinity,
        factor,
        is_mobile,
        is_tv,
        hour_sin,
        hour_cos,
        returning,
    )
    return append_row(snapshots, row, limit, out)


@kernel(called_by_kernels_only=True)
def _session_row(
    row: np.ndarray,
    events: int,
    impressions: int,
    hovers: int,
    clicks: int,
    scrolls: int,
    pauses: int,
    drop_offs: int,
    hover_dwell_ms: int,
    scroll_streak: int,
    age_ms: int,
    progress_sum: float,
    progress_n: int,
    affinity: bytes,
    factor: float,
    is_mobile: float,
    is_tv: float,
    hour_sin: float,
    hour_cos: float,
    returning: bool,
) -> None:  # pragma: no cover - compiled (tests compare it with `session_features`)
    """`session_features`' expressions, in its order, into ``row``; ``affinity`` is the genre
    affinity's float64 values as bytes, ``factor`` their decay (`_genre_focus`)."""
    age_min = (age_ms if age_ms > 0 else 0) / 60_000.0
    speed = events / (0.5 if age_min < 0.5 else age_min)
    top = total = 0.0
    for weight in np.frombuffer(affinity, dtype=np.float64):
        if factor != 1.0:
            weight *= factor
        if weight > 0:
            total += weight
            if weight > top:
                top = weight
    row[0] = math.log1p(events)
    row[1] = math.log1p(impressions)
    row[2] = math.log1p(hovers)
    row[3] = math.log1p(clicks)
    row[4] = math.log1p(scrolls)
    row[5] = math.log1p(pauses)
    row[6] = math.log1p(drop_offs)
    row[7] = (hover_dwell_ms / hovers / 1000.0) if hovers else 0.0
    row[8] = math.log1p(scroll_streak)
    row[9] = math.log1p(speed)
    row[10] = math.log1p(age_min)
    row[11] = clicks / (impressions + 1.0)
    row[12] = progress_sum / progress_n if progress_n else 0.0
    row[13] = top / total if total else 0.0
    row[14] = is_mobile
    row[15] = is_tv
    row[16] = hour_sin
    row[17] = hour_cos
    row[18] = 1.0 if returning else 0.0


def _genre_focus(state: UserState, now: int, half_life_ms: int) -> float:
    """The strongest positive decayed genre affinity's share of all positive ones.

    One pass instead of lists of the decayed and the positive weights, ``max`` and ``sum``
    (every churn check): the same values, the largest the first of equals as ``max`` keeps
    it and the sum added up in order from 0.0 as Python 3.11's ``sum`` of floats adds it
    (3.12's compensates). The weights decay only
    when time passed since the affinity's clock (`decay_factor` is exactly 1.0 otherwise,
    and ``w * 1.0`` is ``w``): usually the event just added to it.
    """
    weights = state.genre_affinity.values()  # (a list: no call to the map's `__len__`)
    if not weights:
        return 0.0
    elapsed = now - state.affinity_ts
    factor = decay_factor(elapsed, half_life_ms) if elapsed > 0 else 1.0
    top = total = 0.0
    for weight in weights:
        if factor != 1.0:
            weight *= factor
        if weight > 0:
            total += weight
            if weight > top:
                top = weight
    return top / total if total else 0.0


def _device_flags(device: str | None) -> tuple[float, float]:
    """``(device_is_mobile, device_is_tv)``, memoized: a handful of device names repeat."""
    flags = _DEVICE_FLAGS.get(device)
    if flags is None:
        name = (device or "").lower()
        flags = (1.0 if name in _MOBILE else 0.0, 1.0 if name in _TV else 0.0)
        if len(_DEVICE_FLAGS) < _MAX_DEVICE_NAMES:  # clients may send anything: bounded
            _DEVICE_FLAGS[device] = flags
    return flags


def _hour_waves(local_hour: int) -> tuple[float, float]:
    """Sine and cosine of the local hour's angle (the table holds the same expressions'
    values for the 24 hours; any other value is computed)."""
    waves = _HOUR_WAVES.get(local_hour)
    if waves is None:
        angle = _TWO_PI * local_hour / 24.0
        waves = (math.sin(angle), math.cos(angle))
    return waves


_DEVICE_FLAGS: dict[str | None, tuple[float, float]] = {}
_MAX_DEVICE_NAMES = 256
_HOUR_WAVES: dict[int, tuple[float, float]] = {
    hour: (math.sin(_TWO_PI * hour / 24.0), math.cos(_TWO_PI * hour / 24.0)) for hour in range(24)
}


def public_session_features(state: UserState, now: int, config: EngineConfig) -> dict[str, Any]:
    """The session window as services read it from Redis: readable names and raw values."""
    counts = state.type_counts
    affinity = decayed_affinity(state, now, config.genre_half_life_ms)
    top_genres = sorted(affinity.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    age_min = max(state.last_ts - state.session_start, 0) / 60_000.0
    return {
        "user_id": state.user_id,
        "session_id": state.session_id,
        "variant": state.variant,
        "session_start": state.session_start,
        "last_event_ts": state.last_ts,
        "events_count_session": state.session_events,
        "impressions_count_session": counts[0],
        "hovers_count_session": counts[1],
        "clicks_count_session": counts[2],
        "scroll_pasts_count_session": counts[3],
        "plays_count_session": counts[4],
        "pauses_count_session": counts[5],
        "completions_count_session": counts[6],
        "drop_offs_count_session": counts[7],
        "hover_dwell_mean_ms": state.hover_dwell_ms / counts[1] if counts[1] else 0.0,
        "scroll_past_streak": state.scroll_streak,
        "browsing_speed_epm": state.session_events / max(age_min, 0.5),
        "progress_mean_session": state.progress_sum / state.progress_n if state.progress_n else 0.0,
        "completion_ratio_session": counts[6] / counts[4] if counts[4] else 0.0,
        "genre_affinity": dict(top_genres),
        "last_items": list(state.last_items),
        "continue_watching": dict(state.continue_watching.items()),
        "device": state.device,
        "local_hour": state.local_hour,
        "churn_risk": state.churn_risk,
        "sessions_total": state.sessions_total,
    }


@dataclass(slots=True)
class CandidateSignals:
    """What the candidate sources and the global models said about one item."""

    knn_score: float = 0.0
    trending_score: float = 0.0
    resume_progress: float = 0.0
    #: ``log(clicks per examination / population rate)`` of the title (``EngagementRates``).
    item_lift: float = 0.0


@dataclass(frozen=True, slots=True)
class RankingContext:
    """Per-page values shared by every candidate's feature row (computed once per page)."""

    affinity: dict[str, float]
    #: The user's taste per genre and per artwork style as log-lifts over the population's
    #: engagement rate (``processors.taste``); absent keys are neutral (0).
    genre_lift: dict[str, float]
    style_lift: dict[str, float]
    knn_max: float
    device_is_mobile: bool
    #: Log-odds of the population's click rate: the click model's starting point.
    click_logit: float = 0.0


def ranking_context(
    state: UserState,
    now: int,
    config: EngineConfig,
    knn_max: float,
    *,
    taste_rate: float = 0.0,
    genre_prior: Mapping[str, float] | None = None,
    style_pull: Mapping[str, float] | None = None,
    click_rate: float = 0.1,
    only_genres: Collection[str] | None = None,
) -> RankingContext:
    """Compute the per-page part of the ranking features.

    ``taste_rate`` is the population's engagement per examination; ``genre_prior`` each
    genre's rate among everyone who looked at it (the user's own evidence is weighed against
    it: `genre_taste_rates`); ``style_pull`` each artwork style's multiplier for this user
    (``ArtworkBandit.user_style_multipliers``). Without a base rate the genre lifts are all
    neutral. ``only_genres`` limits the genre lifts to those genres (one item's row needs no
    more; each genre's lift is computed on its own, so the values are the same).
    """
    affinity = decayed_affinity(state, now, config.genre_half_life_ms)
    genre_lift: dict[str, float] = {}
    style_lift: dict[str, float] = {}
    if taste_rate > 0.0:
        genre_lift = {
            genre: math.log(rate / taste_rate)
            for genre, rate in genre_taste_rates(
                state, genre_prior or {}, taste_rate, config.genre_taste_strength, only_genres
            ).items()
        }
    if style_pull:
        style_lift = {style: math.log(pull) for style, pull in style_pull.items() if pull > 0.0}
    return RankingContext(
        affinity=affinity,
        genre_lift=genre_lift,
        style_lift=style_lift,
        knn_max=knn_max,
        device_is_mobile=(state.device or "").lower() in _MOBILE,
        click_logit=_logit(click_rate),
    )


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def click_model_logit(row: Sequence[float], base_logit: float) -> float:
    """The click model: log-odds that a looked-at title is clicked.

    A click on a looked-at title is, in the position-based click models of search and
    recommendation logs, the title's attractiveness to this user: the population's rate
    times the user's genre taste, the title's appeal and the poster's pull (the three
    log-lifts), raised by the session's kNN signal and a paused title, lowered by each
    scroll-past of the title this session (users pass over what they passed before).
    """
    return base_logit + row[0] + row[2] + row[3] + row[4] + row[7] - row[9]


def genre_taste_rates(
    state: UserState,
    genre_prior: Mapping[str, float],
    taste_rate: float,
    strength: float,
    only_genres: Collection[str] | None = None,
) -> dict[str, float]:
    """The user's engagement rate per genre: own evidence over ``strength`` looks at the
    genre's population rate (``taste_rate`` for a genre without one). Every genre of the
    prior gets a rate, so a genre the user never saw starts where the population is;
    ``only_genres`` keeps just those of them."""
    rates = {}
    evidence = state.genre_evidence
    # The user's few genres once: a state's `PairMap` is asked only about those.
    own = set(evidence)
    genres = own.union(genre_prior)
    if only_genres is not None:
        genres &= set(only_genres)
    prior_of = genre_prior.get
    for genre in sorted(genres):
        engaged, examined = evidence.get(genre, NO_EVIDENCE) if genre in own else NO_EVIDENCE
        # `processors.taste.rate` written out: its keyword call was half the loop's cost
        rates[genre] = (engaged + strength * prior_of(genre, taste_rate)) / (examined + strength)
    return rates


def rank_features(
    state: UserState,
    context: RankingContext,
    item_id: str,
    item: CatalogItem | None,
    signals: CandidateSignals,
) -> list[float]:
    """Session-by-item feature row in ``RANK_FEATURE_NAMES`` order."""
    log1p = math.log1p
    impressions, scroll_pasts = state.exposure(item_id)
    if item is not None and item.genres:
        affinity = context.affinity
        item_affinity = sum(affinity.get(genre, 0.0) for genre in item.genres) / len(item.genres)
        genre_lift = context.genre_lift
        taste = max(genre_lift.get(genre, 0.0) for genre in item.genres)
        duration_log = log1p(item.duration_s / 60.0)
    else:
        item_affinity = taste = duration_log = 0.0
    if item is not None and item.artwork_styles:
        style_lift = context.style_lift
        style = max(style_lift.get(name, 0.0) for name in item.artwork_styles)
    else:
        style = 0.0
    row = [
        taste,
        math.tanh(item_affinity),
        signals.item_lift,
        style,
        signals.knn_score / context.knn_max if context.knn_max > 0 else 0.0,
        1.0 if signals.knn_score > 0 else 0.0,
        log1p(signals.trending_score),
        signals.resume_progress,
        log1p(impressions),
        log1p(scroll_pasts),
        1.0 if item_id in state.session_clicked else 0.0,
        duration_log if context.device_is_mobile else 0.0,
        1.0 if item is None else 0.0,
    ]
    row.append(click_model_logit(row, context.click_logit))
    return row


class ItemTable:
    """The item half of the ranking features as arrays, one row per catalog item.

    Scoring a page means a feature row for every candidate (~70); built one Python call per
    candidate that was most of the engine's time, so the per-item parts (genre membership,
    duration) live here as arrays and `rank_feature_matrix` computes a page in a few numpy
    operations. Kept in step with the catalog through ``Catalog.changes_since`` (rows are
    updated in place or appended; a full rebuild only when the change log has moved on).
    The last row is a sentinel for items the catalog does not know.

    Examples
    --------
    >>> from schemas.messages import CatalogItem
    >>> catalog = Catalog()
    >>> catalog.upsert(CatalogItem("i1", "Alien", ("scifi", "horror"), 7000, ("a1",)))
    >>> table = ItemTable()
    >>> table.sync(catalog)
    >>> table.rows(["i1", "nope"]).tolist() == [0, table.unknown_row]
    True
    """

    __slots__ = (
        "_size",
        "artwork_styles",
        "artworks",
        "duration_log",
        "genre_col",
        "genre_count",
        "genre_hits",
        "id_length",
        "id_prefix",
        "row_of",
        "style_col",
        "style_idx",
        "unknown",
        "unknown_row",
        "version",
    )

    def __init__(self) -> None:
        self.version = -1
        self.row_of: dict[str, int] = {}
        self.genre_col: dict[str, int] = {}
        #: Artwork style → column of the per-page style lift vector.
        self.style_col: dict[str, int] = {}
        #: Artwork ids of each known item and their style tags (the artwork draw reads them).
        self.artworks: dict[str, tuple[str, ...]] = {}
        self.artwork_styles: dict[str, tuple[str, ...]] = {}
        self._size = 0
        self._allocate(16, 4, 2)

    def sync(self, catalog: Catalog) -> None:
        """Bring the arrays up to date with ``catalog`` (cheap when nothing changed)."""
        if self.version == catalog.version:
            return
        changed = catalog.changes_since(self.version) if self.version >= 0 else None
        if changed is None or len(changed) > len(catalog):
            self.row_of.clear()
            self.genre_col.clear()
            self.style_col.clear()
            self.artworks.clear()
            self.artwork_styles.clear()
            self._size = 0
            self._allocate(len(catalog) + 16, 4, 2)
            changed = [item.item_id for item in catalog]
        get = catalog.get
        for item_id in changed:
            item = get(item_id)
            row = self.row_of.get(item_id)
            if item is None:
                if row is not None:  # evicted: the row stays, as an unknown item
                    del self.row_of[item_id]
                    self.artworks.pop(item_id, None)
                    self.artwork_styles.pop(item_id, None)
                    self._fill(row, None)
                continue
            if row is None:
                row = self._append(item_id)
            self._fill(row, item)
            self.artworks[item_id] = item.artworks
            self.artwork_styles[item_id] = item.artwork_styles
        self.version = catalog.version

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Row of each item (the sentinel row for unknown items)."""
        get = self.row_of.get
        unknown = self.unknown_row
        # np.array of a list: ~3x faster than np.fromiter for integer lists this short.
        return np.array([get(item_id, unknown) for item_id in item_ids], dtype=np.intp)

    def affinity_vector(self, affinity: Mapping[str, float]) -> np.ndarray:
        """Genre affinities by genre column (genres no item has are irrelevant and dropped)."""
        # A list, then one array: a numpy scalar store per genre cost more.
        vector = [0.0] * self.genre_hits.shape[1]
        col = self.genre_col.get
        for genre, weight in affinity.items():
            index = col(genre)
            if index is not None:
                vector[index] = weight
        return np.array(vector, dtype=np.float64)

    def style_vector(self, values: Mapping[str, float], absent: float = 0.0) -> np.ndarray:
        """``values`` by `style_col`, ``absent`` for styles without one, and a last entry of
        -inf that `style_idx`'s padding (-1) picks, so a row's max ignores missing artworks."""
        vector = [absent] * len(self.style_col)
        vector.append(-math.inf)
        col = self.style_col.get
        for style, value in values.items():
            index = col(style)
            if index is not None:
                vector[index] = value
        return np.array(vector, dtype=np.float64)

    # -- storage ---------------------------------------------------------------------------

    def _allocate(self, rows: int, genres: int, artworks: int) -> None:
        """(Re)allocate for ``rows`` items plus the sentinel, keeping what is stored."""
        old = self._size
        capacity = rows + 1
        hits = np.zeros((capacity, genres))
        count = np.ones(capacity)
        duration = np.zeros(capacity)
        unknown = np.ones(capacity)
        styles = np.full((capacity, artworks), -1, dtype=np.intp)
        prefix = np.zeros((capacity, 2), dtype=np.uint64)
        length = np.full(capacity, -1, dtype=np.intp)
        if old and hasattr(self, "genre_hits"):
            prev_genres = self.genre_hits.shape[1]
            hits[:old, :prev_genres] = self.genre_hits[:old]
            count[:old] = self.genre_count[:old]
            duration[:old] = self.duration_log[:old]
            unknown[:old] = self.unknown[:old]
            styles[:old, : self.style_idx.shape[1]] = self.style_idx[:old]
            prefix[:old] = self.id_prefix[:old]
            length[:old] = self.id_length[:old]
        self.id_prefix, self.id_length = prefix, length
        self.genre_hits, self.genre_count = hits, count
        self.duration_log, self.unknown = duration, unknown
        self.style_idx = styles
        self.unknown_row = capacity - 1

    def _append(self, item_id: str) -> int:
        row = self._size
        if row >= self.unknown_row:
            self._allocate(
                2 * self.unknown_row + 16, self.genre_hits.shape[1], self.style_idx.shape[1]
            )
        self._size = row + 1
        self.row_of[item_id] = row
        return row

    def _fill_id_key(self, row: int, item_id: str) -> None:
        """The id's order as integers: its first 16 UTF-8 bytes as two big-endian words, and
        its length in bytes, capped at 17 ("longer than the prefix").

        UTF-8 byte order is code point order, Python's string order, so two ids compare as
        ``(prefix, length)`` do, except two ids longer than 16 bytes with the same prefix:
        compiled code that orders items by id (``processors.arrangement``) reports those.
        """
        raw = item_id.encode()
        head = raw[:16].ljust(16, b"\0")
        self.id_prefix[row, 0] = int.from_bytes(head[:8], "big")
        self.id_prefix[row, 1] = int.from_bytes(head[8:], "big")
        self.id_length[row] = min(len(raw), 17)

    def _fill(self, row: int, item: CatalogItem | None) -> None:
        """Write one item's values; None (evicted) makes the row look like an unknown item."""
        self.genre_hits[row] = 0.0
        self.style_idx[row] = -1
        if item is not None and item.artwork_styles:
            if len(item.artwork_styles) > self.style_idx.shape[1]:
                self._allocate(self.unknown_row, self.genre_hits.shape[1], len(item.artwork_styles))
            for k, style in enumerate(item.artwork_styles):
                column = self.style_col.get(style)
                if column is None:
                    column = self.style_col[style] = len(self.style_col)
                self.style_idx[row, k] = column
        if item is None:
            self.genre_count[row], self.duration_log[row], self.unknown[row] = 1.0, 0.0, 1.0
            self.id_length[row] = -1
            return
        self.unknown[row] = 0.0
        self._fill_id_key(row, item.item_id)
        if not item.genres:  # rank_features: no genres, no affinity and no duration signal
            self.genre_count[row], self.duration_log[row] = 1.0, 0.0
            return
        for genre in item.genres:
            column = self.genre_col.get(genre)
            if column is None:
                column = self.genre_col[genre] = len(self.genre_col)
                if column >= self.genre_hits.shape[1]:
                    self._allocate(
                        self.unknown_row, 2 * self.genre_hits.shape[1], self.style_idx.shape[1]
                    )
            self.genre_hits[row, column] += 1.0
        self.genre_count[row] = float(len(item.genres))
        self.duration_log[row] = math.log1p(item.duration_s / 60.0)


def rank_feature_matrix(
    state: UserState,
    context: RankingContext,
    item_ids: Sequence[str],
    rows: np.ndarray,
    table: ItemTable,
    trending_scores: Sequence[float],
    knn: Sequence[tuple[str, float]] = (),
    position: Mapping[str, int] | None = None,
    item_lifts: np.ndarray | None = None,
) -> np.ndarray:
    """`rank_features` for many candidates at once: float64, one row per candidate.

    ``rows`` are the candidates' `ItemTable` rows, ``trending_scores`` their popularity,
    ``knn`` the ``(item_id, score)`` pairs of the session-kNN candidates, ``position`` the
    index of each candidate id (built here when not given) and ``item_lifts`` their click
    lifts (`CandidateSignals.item_lift`; 0 when not given). Row ``k`` equals
    ``rank_features(state, context, item_ids[k], ...)`` for the same signals (a unit test
    checks it, bit for bit).

    The per-page values are gathered here into arrays (the context's dicts by genre and
    style column, the session's sparse per-title signals by candidate index), then one
    compiled pass (`_fill_rank_features`) writes every cell: as numpy operations on ~100
    rows this was ~30 calls, each costing more than its arithmetic.
    """
    n = len(item_ids)
    features = np.zeros((n, len(RANK_FEATURE_NAMES)))
    if not n:
        return features
    if position is None:
        position = {item_id: k for k, item_id in enumerate(item_ids)}
    get = position.get
    knn_at: list[int] = []
    knn_scores: list[float] = []
    if knn and context.knn_max > 0:
        knn_at = [position[item_id] for item_id, _ in knn]
        knn_scores = [score for _, score in knn]
    resume_at: list[int] = []
    resume: list[float] = []
    for item_id, progress in state.continue_watching.items():
        k = get(item_id)
        if k is not None:
            resume_at.append(k)
            resume.append(progress)
    exposed_at: list[int] = []
    impressions: list[int] = []
    scroll_pasts: list[int] = []
    if state.session_exposed:
        for item_id, impressed, scrolled in state.exposure_counts():
            k = get(item_id)
            if k is not None:
                exposed_at.append(k)
                impressions.append(impressed)
                scroll_pasts.append(scrolled)
    clicked_at = [k for item_id in state.session_clicked if (k := get(item_id)) is not None]
    _fill_rank_features(
        features,
        rows,
        table.genre_hits,
        table.genre_count,
        table.duration_log,
        table.unknown,
        table.style_idx,
        table.affinity_vector(context.genre_lift),
        table.affinity_vector(context.affinity),
        bool(context.affinity),
        table.style_vector(context.style_lift),
        np.zeros(n) if item_lifts is None else np.asarray(item_lifts, dtype=np.float64),
        np.asarray(trending_scores, dtype=np.float64),
        len(knn_at),
        float(context.knn_max),
        len(resume_at),
        len(exposed_at),
        # The sparse signals' candidate indices and values, one array each (see the kernel).
        np.array(knn_at + resume_at + exposed_at + clicked_at, dtype=np.intp),
        np.array(knn_scores + resume + impressions + scroll_pasts, dtype=np.float64),
        bool(context.device_is_mobile),
        float(context.click_logit),
    )
    return features


@kernel
def _fill_rank_features(
    features: np.ndarray,
    rows: np.ndarray,
    genre_hits: np.ndarray,
    genre_count: np.ndarray,
    duration_log: np.ndarray,
    unknown: np.ndarray,
    style_idx: np.ndarray,
    genre_lift: np.ndarray,
    affinity: np.ndarray,
    has_affinity: bool,
    style_lift: np.ndarray,
    item_lifts: np.ndarray,
    trending_scores: np.ndarray,
    n_knn: int,
    knn_max: float,
    n_resume: int,
    n_exposed: int,
    sparse_at: np.ndarray,
    sparse_values: np.ndarray,
    device_is_mobile: bool,
    click_logit: float,
) -> None:  # pragma: no cover - compiled (tests compare it with rank_features)
    """Every cell of the candidates' feature rows, as `rank_features` computes one row.

    ``genre_lift``/``affinity`` are by genre column, ``style_lift`` by style column with a
    last -inf entry that the style padding (-1) reads; the sparse per-title signals come as
    candidate indices (``sparse_at``: ``n_knn`` kNN candidates, ``n_resume`` resumable
    titles, ``n_exposed`` titles shown this session, then the clicked ones) and values
    (``sparse_values``: the kNN scores, resume progress, impressions, then scroll-pasts).
    ``math.tanh``/``math.log1p`` are the C library's, as in `rank_features`; sums run over
    genre columns in order, adding exact zeros for the genres an item lacks.
    """
    n_genres = genre_hits.shape[1]
    n_styles = style_idx.shape[1]
    for k in range(rows.shape[0]):
        row = rows[k]
        taste = -np.inf
        total = 0.0
        for g in range(n_genres):
            hit = genre_hits[row, g]
            if hit > 0.0:
                lift = genre_lift[g]
                if lift > taste:
                    taste = lift
            total += hit * affinity[g]
        features[k, 0] = 0.0 if taste == -np.inf else taste
        if has_affinity:
            features[k, 1] = math.tanh(total / genre_count[row])
        features[k, 2] = item_lifts[k]
        style = -np.inf
        for a in range(n_styles):
            value = style_lift[style_idx[row, a]]
            if value > style:
                style = value
        features[k, 3] = 0.0 if style == -np.inf else style
        features[k, 6] = math.log1p(trending_scores[k])
        if device_is_mobile:
            features[k, 11] = duration_log[row]
        features[k, 12] = unknown[row]
    for j in range(n_knn):
        score = sparse_values[j]
        features[sparse_at[j], 4] = score / knn_max
        features[sparse_at[j], 5] = 1.0 if score > 0 else 0.0
    for j in range(n_knn, n_knn + n_resume):
        features[sparse_at[j], 7] = sparse_values[j]
    first = n_knn + n_resume
    for j in range(n_exposed):
        k = sparse_at[first + j]
        impressions = sparse_values[first + j]
        scroll_pasts = sparse_values[first + n_exposed + j]
        if impressions:
            features[k, 8] = math.log1p(impressions)
        if scroll_pasts:
            features[k, 9] = math.log1p(scroll_pasts)
    for j in range(first + n_exposed, sparse_at.shape[0]):
        features[sparse_at[j], 10] = 1.0
    for k in range(rows.shape[0]):
        # click_model_logit, in its order of additions
        features[k, 13] = (
            click_logit
            + features[k, 0]
            + features[k, 2]
            + features[k, 3]
            + features[k, 4]
            + features[k, 7]
            - features[k, 9]
        )
