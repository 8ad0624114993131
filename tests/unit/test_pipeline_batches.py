"""The worker's batch loop with its completions in the background, and coalesced pages.

``EventPipeline.submit_events`` processes a batch at once and completes it later (outputs
acknowledged, then the checkpoint written, then the input released for commit), in batch
order. These tests hold the broker's acknowledgements back to look at the pipeline between
the two steps, with an in-memory store (the part of RedisStore the pipeline uses).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from schemas.codec import encode_event
from schemas.messages import BehaviourEvent
from stream.config import Settings
from stream.pipeline import EventPipeline, RawMessage

T0 = 1_700_000_000_000
NOW = T0 + 60_000
CONFIG = EngineConfig(arms=(("personalized", 1.0),))


class _MemoryStore:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.writes: list[dict[str, bytes]] = []
        self.buffered = 0
        self.loads: list[str] = []

    def key(self, kind: str, name: str = "") -> str:
        return f"t:{kind}:{name}"

    async def load_states(self, user_ids: list[str]) -> dict[str, bytes]:
        self.loads.extend(user_ids)
        found = {u: self.values.get(self.key("state", u)) for u in user_ids}
        return {u: v for u, v in found.items() if v is not None}

    async def write(self, values: dict[str, bytes]) -> bool:
        self.writes.append(dict(values))
        self.values.update(values)
        return True


class _Broker:
    """A producer whose acknowledgements the test releases."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.acks: list[asyncio.Future[None]] = []
        self.auto_ack = False

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        self.sent.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(future)
        if self.auto_ack:
            future.set_result(None)
        return future

    def ack_all(self) -> None:
        """Acknowledge everything sent so far, and from now on everything at once."""
        self.auto_ack = True
        for future in self.acks:
            if not future.done():
                future.set_result(None)

    def pages(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for t, v in self.sent if t == "insession.recommendations"]


def _pipeline(**settings: Any) -> tuple[EventPipeline, _MemoryStore, _Broker]:
    store, broker = _MemoryStore(), _Broker()
    pipeline = EventPipeline(
        Settings(engine=CONFIG, **settings),
        Engine(CONFIG, build_models(CONFIG)),
        store,  # type: ignore[arg-type]
        broker.send,
        clock_ms=lambda: NOW,
    )
    return pipeline, store, broker


def _batch(events: list[BehaviourEvent], start: int = 0) -> list[RawMessage]:
    return [
        RawMessage(encode_event(e), e.user_id.encode(), "events", 0, start + i)
        for i, e in enumerate(events)
    ]


def _hovers(user: str, first: int, count: int) -> list[BehaviourEvent]:
    return [
        BehaviourEvent(f"{user}-{n}", user, "hover", T0 + n * 100, item_id="i1")
        for n in range(first, first + count)
    ]


async def test_a_batch_is_released_only_after_its_acks_and_its_checkpoint_in_order() -> None:
    pipeline, store, broker = _pipeline()
    released: list[list[int]] = []

    def durable(messages: Any) -> None:
        released.append([m.offset for m in messages])

    await pipeline.submit_events(_batch(_hovers("u1", 0, 2)), on_durable=durable)
    await pipeline.submit_events(_batch(_hovers("u1", 2, 2), start=2), on_durable=durable)
    await asyncio.sleep(0.01)
    assert released == [] and store.writes == [], "nothing is durable before the broker acks"
    assert len(broker.pages()) == 2, "both batches' pages went out without waiting"
    assert pipeline.inflight.pending == 2

    broker.acks[1].set_result(None)  # the second batch's ack first: it must still wait
    await asyncio.sleep(0.01)
    assert released == []
    broker.ack_all()
    await pipeline.drain()
    assert released == [[0, 1], [2, 3]]
    assert len(store.writes) == 2  # one pipelined write per batch, in batch order
    state = orjson.loads(store.values["t:state:u1"])
    assert state["session_events"] == 4
    assert pipeline.processing.count == 4, "the full-batch histogram counts every event"


async def test_a_user_loaded_while_their_checkpoint_is_in_flight_gets_the_newer_copy() -> None:
    """Evicted right after a batch, reloaded by the next: from the pending checkpoint, since
    Redis does not have it yet (the broker has not acknowledged that batch's outputs)."""
    # Three batches wait for their acks here: room for all of them (else the third waits).
    pipeline, store, broker = _pipeline(max_users_in_memory=1, max_batches_in_flight=3)
    await pipeline.submit_events(_batch(_hovers("a", 0, 1)))
    await pipeline.submit_events(_batch(_hovers("b", 0, 1), start=1))  # evicts "a"
    assert "a" not in pipeline.states
    store.loads.clear()
    await pipeline.submit_events(_batch(_hovers("a", 1, 1), start=2))
    assert "a" not in store.loads, "read from the checkpoint in flight, not from Redis"
    assert pipeline.states["a"].session_events == 2
    broker.ack_all()
    await pipeline.drain()
    assert orjson.loads(store.values["t:state:a"])["session_events"] == 2
    assert pipeline._unwritten == {}


async def test_submitting_waits_while_the_maximum_of_batches_is_in_flight() -> None:
    """Backpressure: with 2 in flight, a third batch is processed but not submitted (so the
    drain loop fetches nothing more) until the oldest completes."""
    pipeline, _, broker = _pipeline(max_batches_in_flight=2)
    await pipeline.submit_events(_batch(_hovers("u1", 0, 1)))
    await pipeline.submit_events(_batch(_hovers("u1", 1, 1), start=1))
    third = asyncio.ensure_future(pipeline.submit_events(_batch(_hovers("u1", 2, 1), start=2)))
    await asyncio.sleep(0.01)
    assert not third.done()
    broker.acks[0].set_result(None)
    await third
    broker.ack_all()
    await pipeline.drain()
    assert pipeline.inflight.pending == 0


async def test_a_revocation_waits_for_the_batches_in_flight() -> None:
    pipeline, store, broker = _pipeline()
    pipeline.assign_partitions([0])
    await pipeline.submit_events(_batch(_hovers("u1", 0, 3)))
    revocation = asyncio.ensure_future(pipeline.revoke_partitions([0]))
    await asyncio.sleep(0.01)
    assert not revocation.done(), "the users' checkpoint is not in Redis yet"
    broker.ack_all()
    assert await revocation == 1
    assert orjson.loads(store.values["t:state:u1"])["session_events"] == 3
    # A batch of the revoked partition that arrives afterwards is skipped, not acknowledged.
    released: list[Any] = []
    skipped, done = await pipeline.submit_events(
        _batch(_hovers("u1", 3, 1), start=3), on_durable=released.extend
    )
    await done
    assert [m.offset for m in skipped] == [3] and released == []


async def test_failed_outputs_dead_letter_the_batch_which_is_then_released() -> None:
    pipeline, store, broker = _pipeline()
    released: list[Any] = []
    await pipeline.submit_events(_batch(_hovers("u1", 0, 2)), on_durable=released.extend)
    broker.acks[0].set_exception(RuntimeError("broker says no"))
    broker.ack_all()
    await pipeline.drain()
    dead = [orjson.loads(v) for t, v in broker.sent if t == "insession.dead-letters"]
    assert [d["source_offset"] for d in dead] == [0, 1]
    assert all(d["error"].startswith("internal_error: RuntimeError") for d in dead)
    assert [m.offset for m in released] == [0, 1]
    assert "t:state:u1" not in store.values, "as before the overlap: no checkpoint"


def _answers(pages: list[dict[str, Any]]) -> Counter[str]:
    return Counter(i for p in pages for i in (p["trigger_event_id"], *p["coalesced_event_ids"]))


async def test_one_page_per_user_per_batch_answers_every_trigger_once() -> None:
    pipeline, store, broker = _pipeline()
    broker.auto_ack = True
    events = [
        *_hovers("u1", 0, 3),
        BehaviourEvent("u2-0", "u2", "impression", T0, item_id="i1"),  # no page
        *_hovers("u2", 1, 2),
        BehaviourEvent("u1-3", "u1", "impression", T0 + 300, item_id="i2"),
    ]
    await pipeline.handle_events(_batch(events))
    pages = broker.pages()
    # Each user's page is served at their last trigger in the batch, in stream order.
    assert [(p["user_id"], p["trigger_event_id"], p["coalesced_event_ids"]) for p in pages] == [
        ("u1", "u1-2", ["u1-0", "u1-1"]),
        ("u2", "u2-2", ["u2-1"]),
    ]
    assert _answers(pages) == Counter(["u1-0", "u1-1", "u1-2", "u2-1", "u2-2"])
    assert orjson.loads(store.values["t:page:u1"])["trigger_event_id"] == "u1-2"
    assert pipeline.counters["pages"] == 2
    assert pipeline.page_produced.count == 2, "one in-worker latency per page produced"
    assert pipeline.batch_wait.count == len(events), "one wait per event of the batch"
    assert pipeline.batch_wait.percentile_ms(100) <= pipeline.page_produced.percentile_ms(0)


async def test_a_duplicate_last_trigger_still_gets_the_deferred_ones_answered() -> None:
    """The user's last trigger in the batch is a redelivered copy: ``settle_pages`` answers."""
    pipeline, _, broker = _pipeline()
    broker.auto_ack = True
    first = _hovers("u1", 0, 1)
    await pipeline.handle_events(_batch(first))
    later = _hovers("u1", 1, 2)
    await pipeline.handle_events(_batch([*later, first[0]], start=1))
    pages = broker.pages()
    assert _answers(pages) == Counter(["u1-0", "u1-1", "u1-2"])
    assert pages[-1]["trigger_event_id"] == "u1-2"


async def test_coalescing_off_serves_a_page_per_trigger() -> None:
    pipeline, _, broker = _pipeline(coalesce_pages=False)
    broker.auto_ack = True
    await pipeline.handle_events(_batch(_hovers("u1", 0, 3)))
    pages = broker.pages()
    assert [(p["trigger_event_id"], p["coalesced_event_ids"]) for p in pages] == [
        ("u1-0", []),
        ("u1-1", []),
        ("u1-2", []),
    ]
