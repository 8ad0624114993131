"""A fingerprint of everything the engine produced on the engine-alone traffic.

``python -m stream.bench.engine_digest [events]`` runs the closed loop of
``stream.bench.engine_alone`` twice (a page per trigger, then the worker's batches of 50) and
prints one SHA-256 per run over every page, churn alert and label in order, the counters and
the final model states; a third digest covers the closed-loop simulator (``insession
simulate --in-process``: a richer catalog, hidden tastes, sessions that end), over its final
counters, arm metrics and model states. A change meant to make the engine faster, not
different, must leave all three as they were; a change that moves numbers (a different
rounding order, say) changes them, and its commit says so and why. (The demo traffic alone
once missed a last-bit change of the ranker's prequential loss that the simulator showed.)

The runs are short (a few seconds), so the digest can be compared before and after every
step of an optimization.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import orjson

from schemas.codec import encode_churn_alert, encode_page
from schemas.messages import BehaviourEvent, DeadLetter, Page
from stream.bench.engine_alone import _World

__all__ = ["engine_digest", "simulator_digest"]

_SIM_START_MS = 1_700_000_000_000


def engine_digest(*, events: int = 12_000, batch_events: int = 0, seed: int = 1) -> str:
    """SHA-256 of the outputs, counters and model states of one closed-loop run."""
    from processors.config import EngineConfig

    world = _World(users=500, seed=seed, config=EngineConfig())
    engine = world.engine
    digest = hashlib.sha256()
    seen = 0
    while seen < events:
        batch = world.next_batch(batch_events or 1)
        seen += len(batch)
        now = batch[-1][1]
        decoded: list[BehaviourEvent | DeadLetter] = [
            engine.decode(raw, now=now) for raw, _, _ in batch
        ]
        plan = engine.serving_plan(decoded) if batch_events else [True] * len(decoded)
        pages: list[Page] = []
        for (raw, _, _), event, serve in zip(batch, decoded, plan, strict=True):
            if isinstance(event, DeadLetter):
                digest.update(b"dead:" + event.error.encode())
                continue
            effects = engine.process(
                event, world.states.get(event.user_id), now=now, raw=raw, serve_page=serve
            )
            if effects.state is not None:
                world.states[event.user_id] = effects.state
            if effects.page is not None:
                pages.append(effects.page)
            if effects.alert is not None:
                digest.update(encode_churn_alert(effects.alert))
            digest.update(repr(effects.labels).encode())
        pages.extend(engine.settle_pages(world.states, now=now))
        for page in pages:
            digest.update(encode_page(page))
            world.pages[page.user_id] = page
    digest.update(orjson.dumps(dict(sorted(engine.counters.items()))))
    digest.update(orjson.dumps(engine.model_states(), option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def simulator_digest(*, seed: int = 9, sim_minutes: float = 60.0) -> str:
    """SHA-256 of an in-process simulator run's counters, arm metrics and model states."""
    from online_models.factory import build_models
    from processors.config import EngineConfig
    from processors.engine import Engine
    from stream.simulation.inprocess import run_in_process
    from stream.simulation.population import SimConfig, Simulation

    config = EngineConfig()
    engine = Engine(config, build_models(config))
    sim = Simulation(SimConfig(users=2_000, seed=seed, run_id="digest"), start_ms=_SIM_START_MS)
    run_in_process(sim, engine, sim_minutes=sim_minutes)
    digest = hashlib.sha256()
    digest.update(orjson.dumps(dict(sorted(engine.counters.items()))))
    arms = {name: totals.to_dict() for name, totals in engine.arm_metrics.arms.items()}
    digest.update(orjson.dumps(arms, option=orjson.OPT_SORT_KEYS))
    digest.update(orjson.dumps(engine.model_states(), option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def main(argv: list[str]) -> dict[str, Any]:
    events = int(argv[0]) if argv else 12_000
    return {
        "events": events,
        "event_at_a_time": engine_digest(events=events),
        "batches_of_50": engine_digest(events=events, batch_events=50),
        "simulator": simulator_digest(),
    }


if __name__ == "__main__":
    print(orjson.dumps(main(sys.argv[1:]), option=orjson.OPT_INDENT_2).decode())
