"""The engine alone, in-process: events/s and per-event latency on demo-like traffic.

A closed loop: demo users (``stream.demo_traffic``) react to the page the engine last served
them, so candidates, labels and learning look like live traffic. Two ways of feeding it, each
with its own engine and the same users:

- **one page per trigger** (``batch_events=0``, the baseline): ``Engine.process_raw`` one event
  at a time, every trigger event builds its page;
- **batched, as the worker runs it** (``batch_events=N``): the event stream is cut into
  consumer-like batches of N events (a cut may split a user's page view, as a fetch does),
  each decoded, planned with ``Engine.serving_plan`` (one page per user per batch), processed
  with ``serve_page`` and closed with ``Engine.settle_pages``.

The garbage collector runs as in the worker (`stream.latency.GcPauses` with the worker's
default settings: survivors of every young collection frozen), since that is how the engine
runs in production; ``worker_gc=False`` measures it under Python's default collector, where
generation-1 and full collections walk every user state (~0.5 s of a 60,000-event run).

Only the engine (decode included, output encoding not) is timed, with ``perf_counter_ns``
(wall: latency percentiles) and ``thread_time_ns`` (CPU: events per CPU-second, the "one core"
figure, which other processes on a shared machine disturb less); generating the users'
reactions is outside the timed region. The first ``warmup_events`` warm the models (ranker
past its warm-up, kNN index, trending) and are not counted.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from processors.user_state import UserState
from schemas.codec import encode_event
from schemas.messages import BehaviourEvent, DeadLetter, Page
from stream.config import Settings
from stream.demo_traffic import DEMO_GENRES, DemoUser, demo_catalog, react_to_page
from stream.latency import GcPauses, LatencyRecorder

__all__ = ["EngineRun", "run_engine_alone", "run_engine_comparison"]

_DEVICES = ("tv", "mobile", "web")
_START_TS = 1_700_000_000_000
#: Event-time step between two users' page views: ~100 page views per simulated second.
_STEP_MS = 10


@dataclass(slots=True)
class EngineRun:
    """What the engine-alone run measured."""

    #: 0: one event at a time, a page per trigger; N: batches of N events, coalesced pages.
    batch_events: int = 0
    events: int = 0
    pages: int = 0
    #: Trigger events among ``events`` (each answered by a page, its own or a coalesced one).
    triggers: int = 0
    busy_s: float = 0.0
    cpu_s: float = 0.0
    per_event: LatencyRecorder = field(default_factory=LatencyRecorder)
    per_page_event: LatencyRecorder = field(default_factory=LatencyRecorder)
    #: Batched runs: wall time of each whole batch.
    per_batch: LatencyRecorder = field(default_factory=LatencyRecorder)
    counters: dict[str, int] = field(default_factory=dict)
    #: Whether the run collected garbage as the worker does (see the module docstring).
    worker_gc: bool = True

    @property
    def events_per_s(self) -> float:
        """Events processed per second of engine wall time (one thread)."""
        return self.events / self.busy_s if self.busy_s else 0.0

    @property
    def events_per_cpu_s(self) -> float:
        """Events processed per CPU-second of the engine thread (one core, fully used)."""
        return self.events / self.cpu_s if self.cpu_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": f"batches of {self.batch_events}" if self.batch_events else "event at a time",
            "batch_events": self.batch_events,
            "events": self.events,
            "pages": self.pages,
            "triggers": self.triggers,
            "page_share": round(self.pages / self.events, 3) if self.events else 0.0,
            "events_per_s": round(self.events_per_s, 1),
            "events_per_cpu_s": round(self.events_per_cpu_s, 1),
            "gc": "worker (young survivors frozen)" if self.worker_gc else "Python's default",
        }
        if self.batch_events:
            out["per_batch"] = self.per_batch.summary_ms()
        else:
            out["per_event"] = self.per_event.summary_ms()
            out["per_page_event"] = self.per_page_event.summary_ms()
        return out


def run_engine_alone(
    *,
    users: int = 2_000,
    warmup_events: int = 20_000,
    events: int = 40_000,
    seed: int = 1,
    config: EngineConfig | None = None,
    batch_events: int = 0,
    worker_gc: bool = True,
) -> EngineRun:
    """Run the closed loop; returns the measured part (after ``warmup_events``).

    ``batch_events`` 0 feeds one event at a time (a page per trigger), N > 0 batches of N
    events as the worker does (see the module docstring); ``worker_gc`` collects garbage as
    the worker does.
    """
    world = _World(users=users, seed=seed, config=config or EngineConfig())
    with _collector(worker_gc):
        if batch_events > 0:
            run = _run_batched(world, warmup_events, events, batch_events)
        else:
            run = _run_event_at_a_time(world, warmup_events, events)
    run.worker_gc = worker_gc
    return run


@contextmanager
def _collector(worker_gc: bool) -> Iterator[None]:
    """The worker's garbage-collector policy for the run (nothing else with ``worker_gc``
    off); everything frozen is released afterwards, so runs in one process stay apart."""
    if not worker_gc:
        yield
        return
    settings = Settings()
    pauses = GcPauses(
        freeze_survivors=settings.gc_freeze, freeze_young=settings.gc_freeze_young
    ).install()
    try:
        yield
    finally:
        pauses.uninstall()
        gc.unfreeze()


def run_engine_comparison(
    *,
    warmup_events: int = 20_000,
    events: int = 40_000,
    batch_sizes: tuple[int, ...] = (50, 500),
    seed: int = 1,
) -> dict[str, Any]:
    """The baseline (a page per trigger) and the batched runs, in one process, one after another.

    50 events is what one fetch brings at ~1,000 events/s with the 50 ms fetch wait; 500 is
    ``INSESSION_BATCH_MAX``, what a backlog is cut into.
    """
    baseline = run_engine_alone(warmup_events=warmup_events, events=events, seed=seed)
    out = baseline.to_dict()
    out["batched"] = []
    for size in batch_sizes:
        run = run_engine_alone(
            warmup_events=warmup_events, events=events, seed=seed, batch_events=size
        )
        row = run.to_dict()
        if baseline.events_per_cpu_s:
            row["events_per_cpu_s_over_event_at_a_time"] = round(
                run.events_per_cpu_s / baseline.events_per_cpu_s, 2
            )
        out["batched"].append(row)
    return out


class _World:
    """An engine with the demo catalog, and the demo users who react to its pages."""

    def __init__(self, *, users: int, seed: int, config: EngineConfig) -> None:
        self.config = config
        self.engine = Engine(config, build_models(config))
        catalog_items = demo_catalog(seed=seed)
        for item in catalog_items:
            self.engine.apply_catalog(item)
        self.catalog = {item.item_id: item for item in catalog_items}
        rng = random.Random(seed)
        self.population = [
            DemoUser(
                f"bench-user-{index:06d}",
                rng.choice(DEMO_GENRES),
                _DEVICES[index % len(_DEVICES)],
                random.Random(seed * 1_000_003 + index),
            )
            for index in range(users)
        ]
        self.states: dict[str, UserState] = {}
        self.pages: dict[str, Page] = {}
        self.ts = _START_TS
        self._step = 0
        #: Reactions made and not yet handed out in a batch (`next_batch`).
        self._queue: list[tuple[bytes, int, bool]] = []

    def next_reaction(self) -> list[tuple[bytes, int, bool]]:
        """The next user's reaction to their latest page: (raw event, event time, trigger)."""
        user = self.population[self._step % len(self.population)]
        self._step += 1
        self.ts += _STEP_MS
        triggers = self.config.page_trigger_types
        return [
            (encode_event(event), self.ts, event.type in triggers)
            for event in react_to_page(user, self.pages.get(user.user_id), self.catalog, self.ts)
        ]

    def next_batch(self, size: int) -> list[tuple[bytes, int, bool]]:
        """The next ``size`` events of the users' reactions, as a consumer would fetch them
        (a reaction may be split between two batches)."""
        queue = self._queue
        while len(queue) < size:
            queue.extend(self.next_reaction())
        batch, self._queue = queue[:size], queue[size:]
        return batch


def _run_event_at_a_time(world: _World, warmup_events: int, events: int) -> EngineRun:
    run = EngineRun()
    seen = 0
    total = warmup_events + events
    process_raw = world.engine.process_raw
    states, pages = world.states, world.pages
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    cpu_ns = 0
    record_event = run.per_event.record_ns
    record_page = run.per_page_event.record_ns
    busy_ns = 0
    gc.collect()
    while seen < total:
        for raw, ts, trigger in world.next_reaction():
            cpu_started = cpu_clock()
            started = clock()
            effects = process_raw(raw, states, now=ts)
            elapsed = clock() - started
            cpu_elapsed = cpu_clock() - cpu_started
            seen += 1
            if effects.page is not None:
                pages[effects.page.user_id] = effects.page
            if seen <= warmup_events:
                continue
            busy_ns += elapsed
            cpu_ns += cpu_elapsed
            run.events += 1
            run.triggers += trigger
            record_event(elapsed)
            if effects.page is not None:
                run.pages += 1
                record_page(elapsed)
    run.busy_s = busy_ns / 1e9
    run.cpu_s = cpu_ns / 1e9
    run.counters = dict(world.engine.counters)
    return run


def _run_batched(world: _World, warmup_events: int, events: int, size: int) -> EngineRun:
    run = EngineRun(batch_events=size)
    seen = 0
    total = warmup_events + events
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    gc.collect()
    while seen < total:
        batch = world.next_batch(size)
        cpu_started = cpu_clock()
        started = clock()
        served = _process_batch(world, batch)
        elapsed = clock() - started
        cpu_elapsed = cpu_clock() - cpu_started
        for page in served:
            world.pages[page.user_id] = page
        seen += len(batch)
        if seen <= warmup_events:
            continue
        run.busy_s += elapsed / 1e9
        run.cpu_s += cpu_elapsed / 1e9
        run.events += len(batch)
        run.triggers += sum(trigger for _, _, trigger in batch)
        run.pages += len(served)
        run.per_batch.record_ns(elapsed)
    run.counters = dict(world.engine.counters)
    return run


def _process_batch(world: _World, batch: list[tuple[bytes, int, bool]]) -> list[Page]:
    """What ``EventPipeline`` does with the engine for one batch; returns the pages served."""
    engine, states = world.engine, world.states
    now = batch[-1][1]
    raws = [raw for raw, _, _ in batch]
    decoded: list[BehaviourEvent | DeadLetter] = [engine.decode(raw, now=now) for raw in raws]
    served: list[Page] = []
    for raw, event, serve in zip(raws, decoded, engine.serving_plan(decoded), strict=True):
        if isinstance(event, DeadLetter):
            continue
        effects = engine.process(
            event, states.get(event.user_id), now=now, raw=raw, serve_page=serve
        )
        if effects.state is not None:
            states[event.user_id] = effects.state
        if effects.page is not None:
            served.append(effects.page)
    served.extend(engine.settle_pages(states, now=now))
    return served


if __name__ == "__main__":  # a quick look while optimizing: python -m stream.bench.engine_alone
    import orjson

    print(orjson.dumps(run_engine_comparison(), option=orjson.OPT_INDENT_2).decode())
