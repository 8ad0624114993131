"""Make the engine's compiled kernels ready before the first real batch arrives.

numba compiles a kernel (or loads it from its cache) on its first call: ~0.4 s for all of
them from the cache, 10-20 s after an install or a change. Left to the first batch, that
lands on the first users' pages; a worker pays it at start-up instead, on a throwaway engine fed two
short synthetic sessions that take every compiled path (page features, kNN query, artworks).
"""

from __future__ import annotations

import dataclasses
import time

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from processors.experiments import PERSONALIZED
from processors.user_state import UserState
from schemas.messages import BehaviourEvent
from stream.demo_traffic import demo_catalog

__all__ = ["warm_up_engine"]

_TS = 1_700_000_000_000


def warm_up_engine(config: EngineConfig) -> float:
    """Run a throwaway engine (same settings, every user personalized) through two users'
    two sessions that share titles, acting on the pages served; returns the seconds it took.
    The worker's own engine is untouched."""
    started = time.perf_counter()
    engine = Engine(dataclasses.replace(config, arms=((PERSONALIZED, 1.0),)), build_models(config))
    for item in demo_catalog(n_items=24):
        engine.apply_catalog(item)
    states: dict[str, UserState] = {}
    script = (
        ("session_start", None),
        ("impression", "title-0001"),
        ("click", "title-0001"),  # a label: the ranker learns
        ("play", "title-0001"),
        ("scroll_past", "title-0002"),
        ("click", "title-0003"),
    )
    step = 0
    # Two sessions each: the second one's churn check scores with a learned churn model.
    for session in range(2):
        for user in ("warm-up-a", "warm-up-b"):
            recommendation_id = None
            for kind, item_id in script:
                step += 1
                ts = _TS + step * 1_000 + session * 10 * config.session_gap_ms
                event = BehaviourEvent(
                    event_id=f"{user}-{step}",
                    user_id=user,
                    type=kind,
                    ts=ts,
                    item_id=item_id,
                    session_id=f"{user}-session-{session}",
                    device="tv",
                    recommendation_id=recommendation_id,
                )
                effects = engine.process(event, states.get(user), now=ts)
                if effects.state is not None:
                    states[user] = effects.state
                if effects.page is not None:
                    recommendation_id = effects.page.recommendation_id
    return time.perf_counter() - started
