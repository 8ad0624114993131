"""The engine alone, in-process: events/s and per-event latency on demo-like traffic.

A closed loop: demo users (``stream.demo_traffic``) react to the page the engine last served
them, so candidates, labels and learning look like live traffic. Only ``Engine.process_raw``
(decode included, output encoding not) is timed, one event at a time with
``perf_counter_ns`` (wall: latency percentiles) and ``thread_time_ns`` (CPU: events per
CPU-second, the "one core" figure, which other processes on a shared machine disturb less);
generating the users' reactions is outside the timed region. The first
``warmup_events`` warm the models (ranker past its warm-up, kNN index, trending) and are not
counted.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import dataclass, field
from typing import Any

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from processors.user_state import UserState
from schemas.codec import encode_event
from schemas.messages import Page
from stream.demo_traffic import DEMO_GENRES, DemoUser, demo_catalog, react_to_page
from stream.latency import LatencyRecorder

__all__ = ["EngineRun", "run_engine_alone"]

_DEVICES = ("tv", "mobile", "web")
_START_TS = 1_700_000_000_000
#: Event-time step between two users' page views: ~100 page views per simulated second.
_STEP_MS = 10


@dataclass(slots=True)
class EngineRun:
    """What the engine-alone run measured."""

    events: int = 0
    pages: int = 0
    busy_s: float = 0.0
    cpu_s: float = 0.0
    per_event: LatencyRecorder = field(default_factory=LatencyRecorder)
    per_page_event: LatencyRecorder = field(default_factory=LatencyRecorder)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Events processed per second of engine wall time (one thread)."""
        return self.events / self.busy_s if self.busy_s else 0.0

    @property
    def events_per_cpu_s(self) -> float:
        """Events processed per CPU-second of the engine thread (one core, fully used)."""
        return self.events / self.cpu_s if self.cpu_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "pages": self.pages,
            "page_share": round(self.pages / self.events, 3) if self.events else 0.0,
            "events_per_s": round(self.events_per_s, 1),
            "events_per_cpu_s": round(self.events_per_cpu_s, 1),
            "per_event": self.per_event.summary_ms(),
            "per_page_event": self.per_page_event.summary_ms(),
        }


def run_engine_alone(
    *,
    users: int = 2_000,
    warmup_events: int = 20_000,
    events: int = 40_000,
    seed: int = 1,
    config: EngineConfig | None = None,
) -> EngineRun:
    """Run the closed loop; returns the measured part (after ``warmup_events``)."""
    config = config or EngineConfig()
    engine = Engine(config, build_models(config))
    catalog_items = demo_catalog(seed=seed)
    for item in catalog_items:
        engine.apply_catalog(item)
    catalog = {item.item_id: item for item in catalog_items}
    rng = random.Random(seed)
    population = [
        DemoUser(
            f"bench-user-{index:06d}",
            rng.choice(DEMO_GENRES),
            _DEVICES[index % len(_DEVICES)],
            random.Random(seed * 1_000_003 + index),
        )
        for index in range(users)
    ]
    states: dict[str, UserState] = {}
    pages: dict[str, Page] = {}
    run = EngineRun()
    ts = _START_TS
    seen = 0
    total = warmup_events + events
    process_raw = engine.process_raw
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    cpu_ns = 0
    record_event = run.per_event.record_ns
    record_page = run.per_page_event.record_ns
    busy_ns = 0
    gc.collect()
    step = 0
    while seen < total:
        user = population[step % users]
        step += 1
        ts += _STEP_MS
        for event in react_to_page(user, pages.get(user.user_id), catalog, ts):
            raw = encode_event(event)
            cpu_started = cpu_clock()
            started = clock()
            effects = process_raw(raw, states, now=ts)
            elapsed = clock() - started
            cpu_elapsed = cpu_clock() - cpu_started
            seen += 1
            if effects.page is not None:
                pages[user.user_id] = effects.page
            if seen <= warmup_events:
                continue
            busy_ns += elapsed
            cpu_ns += cpu_elapsed
            run.events += 1
            record_event(elapsed)
            if effects.page is not None:
                run.pages += 1
                record_page(elapsed)
    run.busy_s = busy_ns / 1e9
    run.cpu_s = cpu_ns / 1e9
    run.counters = dict(engine.counters)
    return run


if __name__ == "__main__":  # a quick look while optimizing: python -m stream.bench.engine_alone
    import orjson

    print(orjson.dumps(run_engine_alone().to_dict(), option=orjson.OPT_INDENT_2).decode())
