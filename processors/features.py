"""The read half of the features: session features and session-by-item ranking features.

Feature names say what they hold and where they come from; the tuples below fix the order of
the vectors the learners see, so a model snapshot and the code that feeds it always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from processors.config import EngineConfig
from processors.session_window import decayed_affinity
from processors.user_state import UserState
from schemas.messages import CatalogItem

__all__ = [
    "RANK_FEATURE_NAMES",
    "SESSION_FEATURE_NAMES",
    "CandidateSignals",
    "RankingContext",
    "public_session_features",
    "rank_features",
    "ranking_context",
    "session_features",
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
    "genre_affinity_share",
    "genre_affinity_tanh",
    "knn_score_norm",
    "knn_hit",
    "trending_log",
    "resume_progress",
    "impressions_item_session_log",
    "scroll_pasts_item_session_log",
    "clicked_item_session",
    "mobile_x_duration_log",
    "unknown_item",
)

_MOBILE = frozenset({"mobile", "phone", "ios", "android", "tablet"})
_TV = frozenset({"tv", "smart_tv", "console", "stb"})
_TWO_PI = 2.0 * math.pi


def session_features(state: UserState, now: int, config: EngineConfig) -> list[float]:
    """Session feature vector in ``SESSION_FEATURE_NAMES`` order."""
    counts = state.type_counts
    log1p = math.log1p
    impressions, hovers, clicks, scrolls = counts[0], counts[1], counts[2], counts[3]
    age_ms = max(state.last_ts - state.session_start, 0)
    age_min = age_ms / 60_000.0
    speed = state.session_events / max(age_min, 0.5)  # events per minute, floor avoids blow-ups
    affinity = decayed_affinity(state, now, config.genre_half_life_ms)
    positive = [w for w in affinity.values() if w > 0]
    focus = max(positive) / sum(positive) if positive else 0.0
    device = (state.device or "").lower()
    hour_angle = _TWO_PI * state.local_hour / 24.0
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
        1.0 if device in _MOBILE else 0.0,
        1.0 if device in _TV else 0.0,
        math.sin(hour_angle),
        math.cos(hour_angle),
        1.0 if state.sessions_total > 0 else 0.0,
    ]


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
        "continue_watching": dict(state.continue_watching),
        "device": state.device,
        "local_hour": state.local_hour,
        "churn_risk": state.churn_risk,
        "sessions_total": state.sessions_total,
    }


@dataclass(slots=True)
class CandidateSignals:
    """What the candidate sources said about one item."""

    knn_score: float = 0.0
    trending_score: float = 0.0
    resume_progress: float = 0.0


@dataclass(frozen=True, slots=True)
class RankingContext:
    """Per-page values shared by every candidate's feature row (computed once per page)."""

    affinity: dict[str, float]
    positive_affinity_total: float
    knn_max: float
    device_is_mobile: bool


def ranking_context(
    state: UserState, now: int, config: EngineConfig, knn_max: float
) -> RankingContext:
    """Compute the per-page part of the ranking features."""
    affinity = decayed_affinity(state, now, config.genre_half_life_ms)
    positive_total = sum(w for w in affinity.values() if w > 0)
    return RankingContext(
        affinity=affinity,
        positive_affinity_total=positive_total,
        knn_max=knn_max,
        device_is_mobile=(state.device or "").lower() in _MOBILE,
    )


def rank_features(
    state: UserState,
    context: RankingContext,
    item_id: str,
    item: CatalogItem | None,
    signals: CandidateSignals,
) -> list[float]:
    """Session-by-item feature row in ``RANK_FEATURE_NAMES`` order."""
    log1p = math.log1p
    if item is not None and item.genres:
        affinity = context.affinity
        item_affinity = sum(affinity.get(genre, 0.0) for genre in item.genres) / len(item.genres)
        duration_log = log1p(item.duration_s / 60.0)
    else:
        item_affinity = 0.0
        duration_log = 0.0
    return [
        item_affinity / (context.positive_affinity_total + 1.0),
        math.tanh(item_affinity),
        signals.knn_score / context.knn_max if context.knn_max > 0 else 0.0,
        1.0 if signals.knn_score > 0 else 0.0,
        log1p(signals.trending_score),
        signals.resume_progress,
        log1p(state.session_impressed.get(item_id, 0)),
        log1p(state.session_scrolled.get(item_id, 0)),
        1.0 if item_id in state.session_clicked else 0.0,
        duration_log if context.device_is_mobile else 0.0,
        1.0 if item is None else 0.0,
    ]
