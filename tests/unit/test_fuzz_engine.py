"""Hostile input through the engine and the worker's batch loop: nothing raises, every input ends
as valid outputs or as a dead letter with a reason, and state survives its checkpoint exactly.

``test_codec`` covers the decoder on its own (arbitrary bytes, wrong types, truncated Avro,
exact messages). Here the same kind of input goes one step further, through
``Engine.process_raw`` and ``EventPipeline.handle_events`` (the body of the Faust agent),
mixed with sequences that only the engine can judge: out-of-order and duplicated events,
timestamps far in the past or future, unknown items, session changes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Effects, Engine
from processors.ids import stable_id
from processors.user_state import UserState
from schemas.codec import (
    DEFAULT_LIMITS,
    CodecLimits,
    decode_churn_alert,
    decode_page,
    encode_churn_alert,
    encode_event,
    encode_page,
)
from schemas.messages import BEHAVIOUR_EVENT_TYPES, BehaviourEvent, CatalogItem
from stream.config import Settings
from stream.pipeline import EventPipeline, RawMessage

T0 = 1_700_000_000_000
NOW = T0 + 3_600_000
CONFIG = EngineConfig(arms=(("personalized", 0.8), ("holdout", 0.2)), churn_min_labels=0)
CATALOG = [
    CatalogItem(f"{genre}-{i}", f"{genre} {i}", (genre,), 5400, (f"{genre}-{i}-a",))
    for genre in ("horror", "comedy", "drama")
    for i in range(8)
]
KNOWN_ITEMS = [item.item_id for item in CATALOG]
#: Examples per property; ``INSESSION_FUZZ_EXAMPLES=2000`` for a deep run (RELIABILITY.md).
FUZZ_EXAMPLES = int(os.environ.get("INSESSION_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _engine() -> Engine:
    engine = Engine(CONFIG, build_models(CONFIG))
    for item in CATALOG:
        engine.apply_catalog(item)
    return engine


# --- strategies ------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
HUGE_TEXT = st.integers(200, 400).map(lambda n: "x" * n)
USERS = st.sampled_from(["u1", "u2", "u3"])
ITEM_IDS = st.sampled_from(KNOWN_ITEMS) | st.sampled_from(["unknown-1", "nope", "ünïcødé"])
TIMESTAMPS = st.one_of(
    st.integers(T0 - 600_000, T0 + 600_000),  # around the users' latest events: in order or not
    st.sampled_from(
        [
            1,  # 1970: a unit error
            946_684_799_999,  # just before 2000-01-01
            NOW + CONFIG.max_future_skew_ms + 1,  # just beyond the allowed clock skew
            NOW + 10 * 365 * 86_400_000,  # ten years ahead
            2**53 - 1,
            2**53,  # beyond what the codec accepts
            2**63 - 1,
            0,
            -1,
        ]
    ),
)
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included
    TEXT,
    HUGE_TEXT,
    st.lists(st.integers(), max_size=80),
    st.dictionaries(TEXT, st.integers(), max_size=3),
)
EVENT_TYPES = st.sampled_from(sorted(BEHAVIOUR_EVENT_TYPES)) | st.sampled_from(
    ["teleport", "", "CLICK", "click "]
)


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    """An event as a JSON object: about half plausible (in-grace out-of-order timestamps,
    unknown items, reused event ids for duplicates), the rest with fields wrong or missing."""
    kind = draw(st.sampled_from(sorted(BEHAVIOUR_EVENT_TYPES)))
    obj: dict[str, Any] = {
        "event_id": draw(st.sampled_from([f"e{i}" for i in range(8)])),
        "user_id": draw(USERS),
        "type": kind,
        "ts": draw(st.integers(T0, T0 + 120_000)),
        "item_id": None if kind == "session_start" else draw(ITEM_IDS),
        "session_id": draw(st.none() | st.sampled_from(["s1", "s2"])),
        "device": draw(st.none() | st.sampled_from(["tv", "phone"])),
        "dwell_ms": draw(st.none() | st.integers(0, 10**7)),
        "progress": draw(st.none() | st.floats(0.0, 1.0)),
        "recommendation_id": draw(st.none() | st.sampled_from(["r1", "r2"]) | TEXT),
        "position": draw(st.none() | st.integers(0, 50)),
        "local_hour": draw(st.none() | st.integers(0, 23)),
    }
    if draw(st.booleans()):  # hostile: change up to three things
        for name in draw(st.sets(st.sampled_from(sorted(obj)), min_size=1, max_size=3)):
            choice = draw(st.integers(0, 3))
            if choice == 0:
                del obj[name]
            elif choice == 1:
                obj[name] = draw(ODD_VALUES)
            elif name == "ts":
                obj[name] = draw(TIMESTAMPS)
            elif name == "type":
                obj[name] = draw(EVENT_TYPES)
            else:
                obj[name] = draw(ODD_VALUES)
    if draw(st.booleans()):
        obj[draw(TEXT)] = draw(ODD_VALUES)  # unknown extra field: ignored
    return obj


def _to_bytes(obj: dict[str, Any]) -> bytes:
    # json (not orjson) so NaN and infinities reach the decoder as the tokens a sloppy
    # producer writes; integers beyond 64 bits too.
    return json.dumps(obj, allow_nan=True).encode()


@st.composite
def raw_messages(draw: st.DrawFn) -> bytes:
    """Bytes a topic might carry: events in JSON or Avro, damaged ones, or plain garbage."""
    kind = draw(st.sampled_from(["json", "json", "json", "avro", "avro", "garbage", "damaged"]))
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    obj = draw(event_objects())
    if kind == "json":
        return _to_bytes(obj)
    try:
        event = BehaviourEvent(**obj)
        raw = encode_event(event, "avro")
    except Exception:  # not representable in Avro: fall back to JSON
        return _to_bytes(obj)
    if kind == "damaged" and raw:
        position = draw(st.integers(0, len(raw) - 1))
        raw = raw[:position] + bytes([draw(st.integers(0, 255))]) + raw[position + 1 :]
    return raw


# --- checks ------------------------------------------------------------------------------


def _check_effects(raw: bytes, effects: Effects) -> str:
    """Assert the effects are one valid outcome; return which ("dead", "dup", "ok")."""
    if effects.dead_letter is not None:
        letter = effects.dead_letter
        assert letter.error and letter.error.strip(), "a dead letter always says why"
        assert letter.original == raw
        assert effects.page is None and effects.alert is None
        return "dead"
    assert effects.event is not None and effects.state is not None
    if effects.duplicate:
        assert effects.page is None and effects.alert is None
        return "dup"
    event = effects.event
    if effects.page is not None:
        page = effects.page
        assert page.user_id == event.user_id
        assert page.trigger_event_id == event.event_id
        assert page.recommendation_id == stable_id("rec", event.user_id, event.event_id)
        scores = [item.score for row in page.rows for item in row.items]
        assert all(math.isfinite(score) for score in scores), "scores must be finite numbers"
        assert len(page.rows) <= CONFIG.page_rows
        assert all(len(row.items) <= CONFIG.row_size for row in page.rows)
        for fmt in ("json", "avro"):
            assert decode_page(encode_page(page, fmt)) == page
    else:
        assert event.type not in CONFIG.page_trigger_types
    if effects.alert is not None:
        alert = effects.alert
        assert math.isfinite(alert.risk) and 0.0 <= alert.risk <= 1.0
        assert decode_churn_alert(encode_churn_alert(alert, "avro")) == alert
    return "ok"


def _check_checkpoint(state: UserState) -> None:
    """The Redis checkpoint (JSON of to_dict) restores exactly the same state."""
    data = state.to_dict()
    restored = UserState.from_dict(orjson.loads(orjson.dumps(data)))
    assert restored.to_dict() == data


# --- properties ------------------------------------------------------------------------------


@FUZZ
@given(raw=raw_messages())
def test_any_single_message_gives_valid_outputs_or_a_dead_letter(raw: bytes) -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    effects = engine.process_raw(raw, states, now=NOW)
    outcome = _check_effects(raw, effects)
    if outcome != "dead":
        _check_checkpoint(states[effects.event.user_id])  # type: ignore[union-attr]


@FUZZ
@given(raws=st.lists(raw_messages(), min_size=1, max_size=25))
def test_hostile_sequences_never_raise_and_state_survives_checkpoints(raws: list[bytes]) -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    outcomes: Counter[str] = Counter()
    for raw in raws:
        outcomes[_check_effects(raw, engine.process_raw(raw, states, now=NOW))] += 1
    for outcome in ("ok", "dup", "dead"):  # shown by --hypothesis-show-statistics
        event(f"sequence has {outcome}: {outcomes[outcome] > 0}")
    assert engine.counters["events_accepted"] == outcomes["ok"]
    assert engine.counters["duplicates"] == outcomes["dup"]
    for state in states.values():
        _check_checkpoint(state)
        assert len(state.recent_event_ids) <= CONFIG.dedup_window
        assert len(state.last_items) <= CONFIG.last_items
        assert len(state.pending) <= CONFIG.pending_impressions


@FUZZ
@given(raws=st.lists(raw_messages(), min_size=1, max_size=25))
def test_redelivering_a_sequence_changes_no_state_and_no_page(raws: list[bytes]) -> None:
    """At-least-once: a second delivery of what was applied is a duplicate or a dead letter."""
    engine = _engine()
    states: dict[str, UserState] = {}
    for raw in raws:
        engine.process_raw(raw, states, now=NOW)
    before = {user: state.to_dict() for user, state in states.items()}
    for raw in raws:
        effects = engine.process_raw(raw, states, now=NOW)
        assert effects.page is None and effects.alert is None, "redelivery made a new output"
    assert {user: state.to_dict() for user, state in states.items()} == before


@FUZZ
@given(raws=st.lists(raw_messages(), min_size=1, max_size=25))
def test_same_input_same_outputs(raws: list[bytes]) -> None:
    """Replays are deterministic, so a reprocessed event yields the same page, not just id."""

    def run() -> list[Any]:
        engine = _engine()
        states: dict[str, UserState] = {}
        out = []
        for raw in raws:
            effects = engine.process_raw(raw, states, now=NOW)
            out.append((effects.page, effects.alert, effects.dead_letter, effects.duplicate))
        return out

    assert run() == run()


@FUZZ
@given(
    raws=st.lists(raw_messages(), min_size=1, max_size=25),
    data=st.data(),
)
def test_restart_from_checkpoint_matches_an_uninterrupted_run(
    raws: list[bytes], data: st.DataObject
) -> None:
    """Crash after any prefix, restart from the checkpointed states, redeliver from an earlier
    point: the per-user states end equal to a run without the crash (models aside)."""
    crash_at = data.draw(st.integers(0, len(raws)), label="crash_at")
    redeliver_from = data.draw(st.integers(0, crash_at), label="redeliver_from")

    reference = _engine()
    expected: dict[str, UserState] = {}
    for raw in raws:
        reference.process_raw(raw, expected, now=NOW)

    first = _engine()
    states: dict[str, UserState] = {}
    for raw in raws[:crash_at]:
        first.process_raw(raw, states, now=NOW)
    checkpoint = {u: orjson.dumps(s.to_dict()) for u, s in states.items()}

    second = _engine()
    second.replace_models(first.models)  # models are snapshotted separately (best effort)
    restored = {u: UserState.from_dict(orjson.loads(b)) for u, b in checkpoint.items()}
    for raw in raws[redeliver_from:]:
        second.process_raw(raw, restored, now=NOW)

    def comparable(state: UserState) -> dict[str, Any]:
        # Counts, sessions, dedup window and features; pending impressions carry feature
        # vectors scored by models that differ between the runs, so only their keys count.
        data = state.to_dict()
        data["pending"] = sorted(data["pending"])
        data.pop("churn_risk")
        data.pop("churn_records")
        data.pop("churn_alerted")
        return data

    assert {u: comparable(s) for u, s in restored.items()} == {
        u: comparable(s) for u, s in expected.items()
    }


# --- the agent's body --------------------------------------------------------------------


class _MemoryStore:
    """The part of RedisStore the pipeline uses, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.buffered = 0

    def key(self, kind: str, name: str = "") -> str:
        return f"t:{kind}:{name}"

    async def load_states(self, user_ids: list[str]) -> dict[str, bytes]:
        found = {u: self.values.get(self.key("state", u)) for u in user_ids}
        return {u: v for u, v in found.items() if v is not None}

    async def write(self, values: dict[str, bytes]) -> bool:
        self.values.update(values)
        return True


def _pipeline(
    limits: CodecLimits = DEFAULT_LIMITS,
) -> tuple[EventPipeline, list[tuple[str, bytes | None, bytes]]]:
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    settings_ = Settings(engine=CONFIG)
    engine = _engine()
    pipeline = EventPipeline(settings_, engine, _MemoryStore(), send, clock_ms=lambda: NOW)  # type: ignore[arg-type]
    return pipeline, sent


HEADERS = st.dictionaries(
    st.sampled_from(["content-type", "content_type", "x-other"]),
    st.sampled_from(["application/json", "application/avro", "text/plain", "", "\x00\xff"]),
    max_size=2,
)


@FUZZ
@given(
    batch=st.lists(
        st.tuples(raw_messages(), st.none() | st.binary(max_size=20), HEADERS),
        min_size=1,
        max_size=30,
    )
)
def test_the_agent_body_never_raises_and_accounts_for_every_message(
    batch: list[tuple[bytes, bytes | None, dict[str, str]]],
) -> None:
    pipeline, sent = _pipeline()
    messages = [
        RawMessage(value=raw, key=key, topic="events", partition=0, offset=i, headers=headers)
        for i, (raw, key, headers) in enumerate(batch)
    ]
    skipped = asyncio.run(pipeline.handle_events(messages))
    assert skipped == []
    settings_ = pipeline.settings
    dead = [v for t, _, v in sent if t == settings_.dead_letter_topic]
    accepted = pipeline.engine.counters["events_accepted"]
    duplicates = pipeline.engine.counters["duplicates"]
    assert len(dead) + accepted + duplicates == len(messages)
    assert pipeline.counters["internal_errors"] == 0
    assert pipeline.counters["events"] == len(messages)


def test_an_engine_bug_dead_letters_only_the_event_it_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolation: one event that makes the engine raise does not take its batch down."""
    pipeline, sent = _pipeline()
    original = pipeline.engine.process

    def process(event: BehaviourEvent, *args: Any, **kwargs: Any) -> Effects:
        if event.event_id == "boom":
            raise ZeroDivisionError("simulated engine bug")
        return original(event, *args, **kwargs)

    monkeypatch.setattr(pipeline.engine, "process", process)
    events = [
        BehaviourEvent("a", "u1", "session_start", T0),
        BehaviourEvent("boom", "u1", "click", T0 + 1, item_id="horror-1"),
        BehaviourEvent("b", "u1", "click", T0 + 2, item_id="horror-2"),
    ]
    messages = [
        RawMessage(encode_event(e), e.user_id.encode(), "events", 0, i)
        for i, e in enumerate(events)
    ]
    asyncio.run(pipeline.handle_events(messages))
    settings_ = pipeline.settings
    # Both good triggers are answered: by one page, since the worker coalesces a user's
    # pages per batch by default (INSESSION_COALESCE_PAGES).
    pages = [orjson.loads(v) for t, _, v in sent if t == settings_.recommendations_topic]
    assert [(p["trigger_event_id"], p["coalesced_event_ids"]) for p in pages] == [("b", ["a"])]
    dead = [orjson.loads(v) for t, _, v in sent if t == settings_.dead_letter_topic]
    assert len(dead) == 1 and dead[0]["error"].startswith("internal_error: ZeroDivisionError")
    assert dead[0]["source_offset"] == 1
    assert pipeline.counters["internal_errors"] == 1
    assert pipeline.states["u1"].session_events == 2
