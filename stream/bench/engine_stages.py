"""Where the engine's time goes: CPU µs per event by stage, on the engine-alone traffic.

``python -m stream.bench.engine_stages [batch_events]`` runs the engine-alone closed loop
(``stream.bench.engine_alone``, batched as the worker feeds it; 0 for one page per trigger)
with a thread-CPU-time counter around each stage below, and prints each stage's µs per
measured event, its calls and µs per call. Stages nest (``_serve_page`` holds the page
builder's stages, the ranker's learning holds its regression's), so the rows do not add up;
``process`` is the whole of ``Engine.process``, ``decode`` is outside it.

Each counter costs ~0.3 µs per call, so the per-event total runs ~10% above the untimed
``engine_alone`` figure: read the rows as shares, not as the throughput. Stages a version of
the code does not have are skipped, so the same list profiles older trees.
"""

from __future__ import annotations

import functools
import gc
import importlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from processors.config import EngineConfig
from stream.bench.engine_alone import _collector, _process_batch, _World

__all__ = ["STAGES", "profile_stages"]

#: (module, attribute path, label): the stages timed, outermost first.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("processors.engine", "Engine.decode", "decode"),
    ("processors.engine", "Engine.process", "process"),
    ("processors.engine", "Engine._reject_reason", "reject checks"),
    ("processors.engine", "Engine._roll_session", "session roll"),
    ("processors.engine", "Engine._start_session", "session start"),
    ("processors.engine", "Engine._learn_from_outcome", "labels (learn from outcomes)"),
    ("processors.engine", "Engine._served_features", "  served features of a label"),
    ("online_models.blended_ranker", "BlendedRanker.learn_vector", "  ranker learn"),
    ("processors.engine", "Engine._learn_taste", "taste learning"),
    ("processors.engine", "update_window", "session window"),
    ("processors.engine", "Engine._update_indexes", "kNN/trending index updates"),
    ("processors.engine", "Engine._churn_check", "churn check"),
    ("processors.attribution", "ArmMetrics.observe", "arm metrics"),
    ("processors.engine", "Engine._serve_page", "pages"),
    ("processors.page_builder", "PageBuilder._personalized", "  personalized page (all)"),
    ("online_models.session_knn", "SessionKNN.recommend", "  kNN candidates"),
    ("processors.page_builder", "PageBuilder._context", "  ranking context"),
    ("processors.features", "ItemTable.rows", "  candidates' table rows"),
    ("online_models.trending", "Trending.scores", "  trending scores"),
    ("online_models.engagement", "EngagementRates.item_lifts", "  item click lifts"),
    ("processors.page_builder", "rank_feature_matrix", "  feature matrix"),
    ("online_models.blended_ranker", "BlendedRanker.predict_proba_many", "  scoring"),
    ("processors.page_builder", "arrange", "  order, spread and rows (compiled)"),
    ("processors.page_builder", "_by_score", "  candidate order"),
    ("processors.page_builder", "PageBuilder._diversified", "  top picks spread"),
    ("processors.page_builder", "PageBuilder._arrange", "  row arrangement"),
    ("processors.page_builder", "PageBuilder._explore_items", "  explore candidates"),
    ("processors.page_builder", "PageBuilder._with_artworks", "  artworks + rendering"),
    ("processors.engine", "Engine.serving_plan", "serving plan"),
    ("processors.engine", "Engine.settle_pages", "settle pages"),
)


def profile_stages(
    *,
    batch_events: int = 50,
    users: int = 2_000,
    warmup_events: int = 20_000,
    events: int = 40_000,
    seed: int = 1,
) -> dict[str, Any]:
    """Run the closed loop with stage counters; CPU µs per measured event by stage."""
    cpu_ns: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    measuring = [False]
    restore: list[tuple[Any, str, Any]] = []
    for module_name, path, label in STAGES:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is None or not hasattr(owner, name):
            continue
        original = getattr(owner, name)
        restore.append((owner, name, original))
        setattr(owner, name, _timed(original, label, cpu_ns, calls, measuring))
    try:
        world = _World(users=users, seed=seed, config=EngineConfig())
        size = max(batch_events, 1)
        seen = measured = total_ns = 0
        with _collector(True):  # garbage collected as the worker does (see engine_alone)
            gc.collect()
            while seen < warmup_events + events:
                batch = world.next_batch(size)
                measuring[0] = seen >= warmup_events
                started = time.thread_time_ns()
                served = _process_batch(world, batch)
                if measuring[0]:
                    total_ns += time.thread_time_ns() - started
                    measured += len(batch)
                measuring[0] = False
                for page in served:
                    world.pages[page.user_id] = page
                seen += len(batch)
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)
    return {
        "batch_events": batch_events,
        "events": measured,
        "us_per_event": round(total_ns / measured / 1e3, 2),
        "stages": {
            label: {
                "us_per_event": round(cpu_ns[label] / measured / 1e3, 2),
                "calls": calls[label],
                "us_per_call": round(cpu_ns[label] / calls[label] / 1e3, 2),
            }
            for _, _, label in STAGES
            if calls[label]
        },
    }


def _timed(
    function: Callable[..., Any],
    label: str,
    cpu_ns: Counter[str],
    calls: Counter[str],
    measuring: list[bool],
) -> Callable[..., Any]:
    clock = time.thread_time_ns

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if not measuring[0]:
            return function(*args, **kwargs)
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            cpu_ns[label] += clock() - started
            calls[label] += 1

    return timed


if __name__ == "__main__":
    # batch_events 0 (one page per trigger) is fed as batches of one event: same pages.
    result = profile_stages(batch_events=int(sys.argv[1]) if len(sys.argv) > 1 else 50)
    print(f"batch_events={result['batch_events']}  {result['us_per_event']} µs/event (timed)")
    for label, row in result["stages"].items():
        print(
            f"{label:34s} {row['us_per_event']:8.2f} µs/event "
            f"{row['calls']:8d} calls {row['us_per_call']:9.2f} µs/call"
        )
