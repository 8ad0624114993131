"""Engine settings: every knob of the pure engine in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tunables of the deterministic engine; the stream layer builds one from the environment.

    Times are event-time milliseconds. Every per-user collection has a bound here, because a
    streaming worker that holds one unbounded list per user eventually runs out of memory.
    """

    #: A session ends after this much inactivity (event time).
    session_gap_ms: int = 30 * 60_000
    #: Events up to this far behind a user's latest event are applied; older ones are dead-lettered.
    late_grace_ms: int = 5 * 60_000
    #: Events this far ahead of the wall clock (``now``) are dead-lettered as clock errors.
    max_future_skew_ms: int = 24 * 3_600_000
    #: Event ids remembered per user to drop redeliveries.
    dedup_window: int = 64
    #: Items of the session remembered for session-kNN and "Because you watched".
    last_items: int = 20
    #: Genre affinity half-life inside a session.
    genre_half_life_ms: int = 10 * 60_000
    #: Genres tracked per user.
    max_genres: int = 16
    #: Paused, unfinished titles kept for "Continue watching" (survive across sessions).
    continue_watching: int = 10
    #: Shown-but-unanswered impressions kept per user waiting for a click or a scroll-past.
    pending_impressions: int = 24
    #: An impression with no click after this long is learned as a negative.
    impression_timeout_ms: int = 60_000
    #: Rows per page and items per row.
    page_rows: int = 6
    row_size: int = 10
    #: Session-kNN: neighbours, recent sessions sampled, sessions held.
    knn_k: int = 500
    knn_sample_size: int = 5000
    knn_max_sessions: int = 100_000
    #: Session-kNN weight of a neighbour by how recent the shared click is (``div`` is
    #: published V-SKNN) and STAN's decay of a neighbour's items by their distance in clicks
    #: from the shared one (``None`` or ``0``: off). Chosen on a validation split of the
    #: YOOCHOOSE-100k training data; see BENCHMARKS.md, "Offline evaluation (issue 4)".
    knn_weighting_score: str = "quadratic"
    knn_neighbour_item_decay: float | None = 4.0
    #: Trending popularity half-life (event time).
    trending_half_life_ms: int = 3_600_000
    #: Candidates asked from each source before ranking.
    knn_candidates: int = 60
    trending_candidates: int = 40
    genre_candidates: int = 20
    #: The ranker's SGD learning rate and L2 penalty (``online_models.logistic``).
    ranker_lr: float = 0.01
    ranker_l2: float = 0.0001
    #: Labels are clicks (positive) and scroll-pasts (negative): titles the user looked at. An
    #: impression nobody answered was most often never looked at (position bias), so it is not
    #: a negative unless this is set (then it becomes one after ``impression_timeout_ms``).
    learn_unanswered_impressions: bool = False
    #: Taste evidence (``processors.taste``) kept when a session ends, as a share of its weight.
    taste_carry_over: float = 0.8
    #: Pseudo-examinations of the population's rate behind a user's genre and style rates and
    #: behind each title's click rate: how much evidence it takes to move them.
    genre_taste_strength: float = 2.0
    style_taste_strength: float = 10.0
    item_rate_strength: float = 20.0
    #: Artwork style by a Thompson draw from the user's style posterior (True) or by its mean.
    style_exploration: bool = True
    #: Log-score a title loses in "Top picks" per title of its genre already ahead of it.
    genre_diversity: float = 0.5
    #: Titles of every genre added to the candidates so an unexplored taste can be found.
    explore_per_genre: int = 3
    #: Alert when churn risk reaches the threshold; re-arm once it falls below ``churn_rearm``.
    churn_threshold: float = 0.7
    churn_rearm: float = 0.5
    #: No churn alerts until the churn model has learned this many labelled session snapshots.
    churn_min_labels: int = 100
    #: Churn feature snapshots kept per session for learning when the session ends.
    churn_snapshots: int = 4
    #: Event types that trigger a new page. Impressions are left out by default: they are what a
    #: page produces, and re-paging on each would make the page chase its own exposure log.
    page_trigger_types: frozenset[str] = frozenset(
        {
            "session_start",
            "hover",
            "click",
            "scroll_past",
            "play",
            "pause",
            "completion",
            "drop_off",
        }
    )
    #: Experiment name and arms with traffic shares (normalised; see processors.experiments).
    experiment_name: str = "page-personalization"
    arms: tuple[tuple[str, float], ...] = (("personalized", 0.9), ("holdout", 0.1))
    #: Seed for every random draw (artwork sampling); replays with the same seed are identical.
    seed: int = 7
