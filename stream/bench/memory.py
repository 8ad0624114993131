"""Memory per active session: bytes a worker holds for each user in the middle of a session.

Sessions are made by the real engine on the shared demo-like traffic (a session start and one
or two page views per user: impressions waiting for an answer, clicks, plays, pages served).
Pushing 100,000 users through the whole engine would take minutes on two cores, so a sample
of users is simulated and the population is built from their states the way a worker fills its
memory after a restart: each sample state round-trips through its Redis checkpoint
(``to_dict`` → JSON → ``from_dict``) under a new user id. That is an upper bound: states the
engine builds itself share item-id strings with the catalog, restored ones do not.

Two numbers per population size: the bytes the states alone own (``tracemalloc``: what is
freed when the states are dropped), and the process's resident-set growth (``psutil``) over
the same population, allocator overhead included. ``state_bytes_by_field`` says where the
bytes of a state go: what is freed when one field is dropped from every state of a population,
field after field (an object two fields share counts for the later one).

Run alone: ``python -m stream.bench.memory`` prints the result as JSON.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import orjson
import psutil

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from processors.user_state import UserState
from schemas.codec import encode_event
from stream.bench.traffic import Traffic
from stream.demo_traffic import demo_catalog

__all__ = ["field_breakdown", "measure_memory", "sample_states"]

_START_TS = 1_700_000_000_000


def sample_states(users: int, *, events: int, seed: int = 3) -> tuple[list[UserState], Engine]:
    """Users in the middle of a session, made by the engine from ``events`` events."""
    config = EngineConfig()
    engine = Engine(config, build_models(config))
    catalog = demo_catalog()
    for item in catalog:
        engine.apply_catalog(item)
    traffic = Traffic(catalog, users=users, seed=seed, run_id="mem")
    states: dict[str, UserState] = {}
    ts = _START_TS
    for index, template in enumerate(traffic.templates(events)):
        ts += 5
        event = traffic.stamp(template, f"mem-{index}", ts)
        engine.process_raw(encode_event(event), states, now=ts)
    return list(states.values()), engine


def _clone(state: UserState, user_id: str) -> UserState:
    raw = state.to_dict()
    raw["user_id"] = user_id
    return UserState.from_dict(orjson.loads(orjson.dumps(raw)))


def measure_memory(
    populations: tuple[int, ...] = (10_000, 100_000),
    *,
    sample_users: int = 2_000,
    sample_events: int = 30_000,
) -> dict[str, Any]:
    """Bytes per active session for each population size, plus the shared bounded caches."""
    sample, engine = sample_states(sample_users, events=sample_events)
    checkpoint_bytes = sum(len(orjson.dumps(s.to_dict())) for s in sample) / len(sample)
    served = engine._served  # the engine's bounded cache of recent pages' features
    served_bytes = (
        sum(
            sys.getsizeof(key)
            + sys.getsizeof(entry)
            + sys.getsizeof(entry.item_ids)
            + sys.getsizeof(entry.features)
            for key, entry in served.items()
        )
        + sys.getsizeof(served)
    ) / max(len(served), 1)
    results = []
    process = psutil.Process()
    for population in populations:
        gc.collect()
        rss_before = process.memory_info().rss
        states = {
            f"mem-user-{index:07d}": _clone(sample[index % len(sample)], f"mem-user-{index:07d}")
            for index in range(population)
        }
        gc.collect()
        rss_after = process.memory_info().rss
        del states
        gc.collect()
        owned = _owned_bytes(
            lambda population=population: [
                _clone(sample[index % len(sample)], f"mem-user-{index:07d}")
                for index in range(min(population, 20_000))
            ]
        ) / min(population, 20_000)
        results.append(
            {
                "users": population,
                "state_bytes_per_session": round(owned),
                "rss_bytes_per_session": round((rss_after - rss_before) / population),
            }
        )
    return {
        "sample_users": len(sample),
        "sample_events": sample_events,
        "pending_impressions_mean": round(sum(len(s.pending) for s in sample) / len(sample), 2),
        "checkpoint_json_bytes_mean": round(checkpoint_bytes),
        "served_cache_bytes_per_page": round(served_bytes),
        "served_cache_pages_max": engine._served_limit,
        "populations": results,
        "state_bytes_by_field": field_breakdown(sample, min(max(populations), 20_000)),
    }


def field_breakdown(sample: list[UserState], population: int = 20_000) -> dict[str, int]:
    """Bytes per state owned by each field, most first, for a population restored from
    ``sample`` (``"(object)"``: the slotted objects themselves, with the list holding them)."""
    placeholder = object()
    sizes: dict[str, float] = {}
    gc.collect()
    tracemalloc.start()  # before the states are built: only traced blocks count when freed
    try:
        states = [
            _clone(sample[index % len(sample)], f"mem-user-{index:07d}")
            for index in range(population)
        ]
        gc.collect()
        for name in UserState.__slots__:
            before = tracemalloc.get_traced_memory()[0]
            for state in states:
                setattr(state, name, placeholder)
            gc.collect()
            sizes[name] = before - tracemalloc.get_traced_memory()[0]
        before = tracemalloc.get_traced_memory()[0]
        del states
        gc.collect()
        sizes["(object)"] = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    return {name: round(size / population) for name, size in ranked}


def _owned_bytes(build: Any) -> float:
    """Bytes allocated by ``build()`` that are freed again when its result is dropped."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = build()
        gc.collect()
        during = tracemalloc.get_traced_memory()[0]
        del held
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # Held minus leaked: anything still allocated after the drop was not owned by the result.
    return float((during - before) - max(after - before, 0))


if __name__ == "__main__":
    print(orjson.dumps(measure_memory(), option=orjson.OPT_INDENT_2).decode())
