"""The closed loop without Kafka: the simulator talks to an in-process ``Engine`` directly.

Fully deterministic (one thread, event time as the engine's clock), so it serves unit tests,
quick tuning runs and ``insession simulate --in-process``. The live loop (``kafka_loop``) runs
the same simulator against a real worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from processors.engine import Engine
from processors.user_state import UserState
from schemas.messages import BehaviourEvent, Page
from stream.simulation.population import Simulation

__all__ = ["InProcessRun", "run_in_process"]

_EXPIRY_EVERY_MS = 60_000


@dataclass(frozen=True, slots=True)
class InProcessRun:
    """What an in-process run did."""

    events: int
    pages: int
    sim_minutes: float


def run_in_process(
    sim: Simulation,
    engine: Engine,
    *,
    sim_minutes: float | None = None,
    max_events: int | None = None,
    on_events: Callable[[list[BehaviourEvent]], None] | None = None,
) -> InProcessRun:
    """Run until everyone left, ``sim_minutes`` of simulated time, or ``max_events``."""
    for item in sim.catalog():
        engine.apply_catalog(item)
    states: dict[str, UserState] = {}
    latest: dict[str, Page] = {}
    end_ts = sim.start_ms + int(sim_minutes * 60_000) if sim_minutes is not None else None
    events_total = pages = 0
    next_expiry = sim.start_ms + _EXPIRY_EVERY_MS
    while (head := sim.peek()) is not None:
        due_ts, user_id = head
        if end_ts is not None and due_ts >= end_ts:
            break
        if max_events is not None and events_total >= max_events:
            break
        events = sim.act(user_id, latest.get(user_id))
        for event in events:
            effects = engine.process(event, states.get(event.user_id), now=event.ts)
            if effects.state is not None:
                states[event.user_id] = effects.state
            if effects.page is not None:
                latest[event.user_id] = effects.page
                pages += 1
        events_total += len(events)
        if on_events is not None:
            on_events(events)
        if due_ts >= next_expiry:
            engine.expire_idle(states.values(), watermark=engine.watermark)
            next_expiry = due_ts + _EXPIRY_EVERY_MS
    return InProcessRun(events_total, pages, (sim.clock_ms - sim.start_ms) / 60_000.0)
