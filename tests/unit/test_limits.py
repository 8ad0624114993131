"""Configured limits and what happens at them (the table is in RELIABILITY.md, "Limits").

Input beyond a codec limit becomes a dead letter that names the limit; users beyond the
memory limit leave memory (least recently touched first) and come back from Redis; catalog
items beyond theirs are dropped oldest first; Redis writes buffered during an outage are
bounded and the dropped ones counted; dead letters cut oversized originals and say so.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest

from online_models.factory import build_models
from processors.catalog import Catalog
from processors.config import EngineConfig
from processors.engine import Engine
from schemas.codec import CodecLimits, encode_catalog_item, encode_event
from schemas.messages import BehaviourEvent, CatalogItem
from stream.app import WorkerApp
from stream.config import Settings
from stream.pipeline import EventPipeline, RawMessage
from stream.redis_store import RedisStore

T0 = 1_700_000_000_000
NOW = T0 + 60_000
CONFIG = EngineConfig(arms=(("personalized", 1.0),))


def _engine(limits: CodecLimits) -> Engine:
    return Engine(CONFIG, build_models(CONFIG), limits=limits)


def _padded_event(size: int) -> bytes:
    """A valid click event of exactly ``size`` bytes (an unknown field pads it)."""
    base = {"event_id": "e1", "user_id": "u1", "type": "click", "ts": T0, "item_id": "i1"}
    empty = len(orjson.dumps({**base, "pad": ""}))
    raw = orjson.dumps({**base, "pad": "x" * (size - empty)})
    assert len(raw) == size
    return raw


def test_settings_read_the_limits_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "INSESSION_MAX_MESSAGE_BYTES": "1000",
            "INSESSION_MAX_STRING_LEN": "10",
            "INSESSION_MAX_LIST_LEN": "3",
            "INSESSION_MAX_USERS_IN_MEMORY": "7",
            "INSESSION_MAX_CATALOG_ITEMS": "9",
            "INSESSION_REDIS_MAX_BUFFERED_KEYS": "11",
            "INSESSION_SERVED_CACHE_PAGES": "13",
            "INSESSION_DEAD_LETTER_MAX_ORIGINAL_BYTES": "17",
        }
    )
    assert settings.codec_limits() == CodecLimits(1000, 10, 3)
    app = WorkerApp(settings)  # the worker wires each limit where it applies
    engine = app.pipeline.engine
    assert engine.limits == CodecLimits(1000, 10, 3)
    assert engine.catalog.max_items == 9
    assert engine._served_limit == 13
    assert app.store._max_buffered == 11
    assert app.pipeline.settings.max_users_in_memory == 7
    with pytest.raises(ValueError, match="max_string_len"):
        Settings(max_string_len=0).codec_limits()


def test_message_size_limit() -> None:
    engine = _engine(CodecLimits(max_message_bytes=500))
    states: dict[str, Any] = {}
    assert engine.process_raw(_padded_event(500), states, now=NOW).dead_letter is None
    letter = engine.process_raw(_padded_event(501), states, now=NOW).dead_letter
    assert letter is not None
    assert letter.error == "message of 501 bytes exceeds max_message_bytes 500"


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "session_id", "device"])
def test_string_length_limit(field: str) -> None:
    engine = _engine(CodecLimits(max_string_len=20))
    base = {"event_id": "e1", "user_id": "u1", "type": "click", "ts": T0, "item_id": "i1"}
    at_limit = orjson.dumps({**base, field: "a" * 20})
    beyond = orjson.dumps({**base, field: "b" * 21})
    assert engine.process_raw(at_limit, {}, now=NOW).dead_letter is None
    letter = engine.process_raw(beyond, {}, now=NOW).dead_letter
    assert letter is not None
    assert letter.error == f"{field}: string of 21 characters exceeds max_string_len 20"


def test_list_length_limit_on_catalog_items() -> None:
    engine = _engine(CodecLimits(max_list_len=4))
    ok = encode_catalog_item(CatalogItem("i1", genres=("a", "b", "c", "d")))
    too_long = encode_catalog_item(CatalogItem("i2", artworks=("1", "2", "3", "4", "5")))
    assert engine.apply_catalog_raw(ok, now=NOW) is None
    letter = engine.apply_catalog_raw(too_long, now=NOW)
    assert letter is not None and letter.error == (
        "artworks: list of 5 items exceeds max_list_len 4"
    )
    assert "i1" in engine.catalog and "i2" not in engine.catalog


def test_catalog_keeps_at_most_max_items() -> None:
    catalog = Catalog(max_items=3)
    for i in range(5):
        catalog.upsert(CatalogItem(f"i{i}", genres=("g",)))
    assert len(catalog) == 3
    assert [item.item_id for item in catalog] == ["i2", "i3", "i4"]
    assert catalog.items_in_genre("g") == ("i2", "i3", "i4")


class _MemoryStore:
    """The part of RedisStore the pipeline uses, in memory; counts state loads."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.buffered = 0
        self.loads = 0

    def key(self, kind: str, name: str = "") -> str:
        return f"t:{kind}:{name}"

    async def load_states(self, user_ids: list[str]) -> dict[str, bytes]:
        self.loads += len(user_ids)
        found = {u: self.values.get(self.key("state", u)) for u in user_ids}
        return {u: v for u, v in found.items() if v is not None}

    async def write(self, values: dict[str, bytes]) -> bool:
        self.values.update(values)
        return True


def _pipeline(**settings: Any) -> tuple[EventPipeline, _MemoryStore, list[tuple[str, bytes]]]:
    sent: list[tuple[str, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        sent.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    store = _MemoryStore()
    pipeline = EventPipeline(
        Settings(engine=CONFIG, **settings),
        Engine(CONFIG, build_models(CONFIG)),
        store,  # type: ignore[arg-type]
        send,
        clock_ms=lambda: NOW,
    )
    return pipeline, store, sent


def _batch(events: list[BehaviourEvent], start: int = 0) -> list[RawMessage]:
    return [
        RawMessage(encode_event(e), e.user_id.encode(), "events", 0, start + i)
        for i, e in enumerate(events)
    ]


def test_users_beyond_the_memory_limit_are_dropped_and_reloaded_without_changing_results() -> None:
    pipeline, store, _ = _pipeline(max_users_in_memory=3)
    users = [f"u{i}" for i in range(8)]

    async def run() -> None:
        offset = 0
        for round_ in range(6):
            events = [
                BehaviourEvent(f"{u}-{round_}", u, "hover", T0 + round_ * 1000, item_id="i1")
                for u in users
            ]
            await pipeline.handle_events(_batch(events, offset))
            offset += len(events)
            assert len(pipeline.states) <= 3
        # The last batch's users stay in memory: the least recently touched went first.
        await pipeline.handle_events(
            _batch([BehaviourEvent("x", "u0", "hover", T0 + 9000, item_id="i1")], offset)
        )
        assert "u0" in pipeline.states

    asyncio.run(run())
    assert pipeline.counters["states_evicted"] > 0
    assert pipeline.counters["states_restored"] > 0
    for user in users:
        state = orjson.loads(store.values[f"t:state:{user}"])
        assert state["session_events"] == (7 if user == "u0" else 6), user


def test_no_eviction_while_redis_writes_are_buffered() -> None:
    pipeline, store, _ = _pipeline(max_users_in_memory=2)
    store.buffered = 5  # Redis is down: memory holds the only copy of these states
    events = [BehaviourEvent(f"e{i}", f"u{i}", "hover", T0, item_id="i1") for i in range(6)]
    asyncio.run(pipeline.handle_events(_batch(events)))
    assert len(pipeline.states) == 6
    assert pipeline.counters["states_evicted"] == 0


async def test_redis_write_buffer_is_bounded_and_counts_what_it_drops() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", max_buffered_keys=3)  # nothing listens there
    try:
        assert await store.write({f"k{i}": b"v" for i in range(5)}) is False
        assert store.buffered == 3
        assert store.counters["redis_writes_dropped"] == 2
        assert store.counters["redis_write_failures"] == 1
        assert await store.write({"k9": b"v"}) is False
        assert store.buffered == 3 and store.counters["redis_writes_dropped"] == 3
        # Catalog items are kept for the next try too, under the same bound.
        assert await store.put_catalog({f"i{i}": b"{}" for i in range(4)}) is False
        assert store.catalog_pending == 3
        assert store.counters["redis_writes_dropped"] == 4
    finally:
        await store.close()


def test_dead_letter_originals_are_cut_at_the_limit_and_say_so() -> None:
    pipeline, _, sent = _pipeline(dead_letter_max_original_bytes=100)
    whole, cut = b"\xff" * 100, b"\xfe" * 1000
    asyncio.run(pipeline.handle_events([RawMessage(whole, None, "events", 0, 0)]))
    asyncio.run(pipeline.handle_events([RawMessage(cut, None, "events", 0, 1)]))
    letters = [orjson.loads(v) for t, v in sent if t == pipeline.settings.dead_letter_topic]
    assert "truncated" not in letters[0]["error"]
    assert letters[1]["error"].endswith("[original truncated to its first 100 of 1000 bytes]")
    assert letters[1]["headers"] == {"original_size": "1000"}
    assert base64.b64decode(letters[1]["original_b64"]) == cut[:100]
