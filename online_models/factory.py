"""Builds the engine's models from its configuration, fresh or from a snapshot's states."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from online_models.artwork_bandit import ArtworkBandit
from online_models.blended_ranker import BlendedRanker
from online_models.engagement import EngagementRates
from online_models.logistic import OnlineLogistic
from online_models.session_knn import SessionKNN
from online_models.trending import Trending
from processors.config import EngineConfig
from processors.engine import EngineModels
from processors.features import RANK_FEATURE_NAMES, SESSION_FEATURE_NAMES

__all__ = ["build_models", "restore_models"]


def build_models(config: EngineConfig) -> EngineModels:
    """Fresh, untrained models configured for the engine."""
    return EngineModels(
        knn=SessionKNN(
            k=config.knn_k,
            sample_size=config.knn_sample_size,
            max_sessions=config.knn_max_sessions,
            weighting_score=config.knn_weighting_score,
            neighbour_item_decay=config.knn_neighbour_item_decay or None,
        ),
        trending=Trending(half_life_ms=config.trending_half_life_ms),
        ranker=BlendedRanker(
            RANK_FEATURE_NAMES,
            prior_column="click_model_logit",
            lr=config.ranker_lr,
            l2=config.ranker_l2,
        ),
        # Most sessions end with a play: start from that prior so untrained risk stays low.
        churn=OnlineLogistic(SESSION_FEATURE_NAMES, lr=0.05, prior_intercept=-1.0),
        bandit=ArtworkBandit(seed=config.seed),
        engagement=EngagementRates(strength=config.item_rate_strength),
    )


def restore_models(states: Mapping[str, dict[str, Any]], config: EngineConfig) -> EngineModels:
    """Models rebuilt from ``Engine.model_states()`` output; missing parts start fresh."""
    fresh = build_models(config)
    return EngineModels(
        knn=SessionKNN.from_state(states["knn"]) if "knn" in states else fresh.knn,
        trending=Trending.from_state(states["trending"])
        if "trending" in states
        else fresh.trending,
        ranker=BlendedRanker.from_state(states["ranker"]) if "ranker" in states else fresh.ranker,
        churn=OnlineLogistic.from_state(states["churn"]) if "churn" in states else fresh.churn,
        bandit=ArtworkBandit.from_state(states["bandit"]) if "bandit" in states else fresh.bandit,
        engagement=EngagementRates.from_state(states["engagement"])
        if "engagement" in states
        else fresh.engagement,
    )
