"""The engine end to end in-process: sessions, dedup, dead letters, pages, learning, churn."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from processors.user_state import UserState
from schemas.codec import encode_event
from schemas.messages import BehaviourEvent, CatalogItem, Page

T0 = 1_700_000_000_000
GENRES = ("horror", "comedy", "drama", "scifi")
PERSONALIZED_ONLY = (("personalized", 1.0),)


def _catalog() -> list[CatalogItem]:
    return [
        CatalogItem(
            f"{genre}-{i}",
            f"{genre.title()} {i}",
            (genre,),
            5400,
            (f"{genre}-{i}-a", f"{genre}-{i}-b"),
        )
        for genre in GENRES
        for i in range(12)
    ]


def _engine(**overrides: object) -> Engine:
    config = EngineConfig(arms=PERSONALIZED_ONLY, **overrides)  # type: ignore[arg-type]
    engine = Engine(config, build_models(config))
    for item in _catalog():
        engine.apply_catalog(item)
    return engine


_ids = itertools.count()


def _event(
    user: str, kind: str, ts: int, item: str | None = None, **extra: object
) -> BehaviourEvent:
    return BehaviourEvent(
        event_id=f"ev-{next(_ids)}", user_id=user, type=kind, ts=ts, item_id=item, **extra
    )  # type: ignore[arg-type]


def _genre_rank(page: Page, genre: str) -> float:
    """Mean position (0 = top) of the genre's items in the page's reading order."""
    order = [item.item_id for row in page.rows for item in row.items]
    positions = [i for i, item_id in enumerate(order) if item_id.startswith(genre)]
    return sum(positions) / len(positions) if positions else float(len(order))


def _warm_trending(engine: Engine, states: dict[str, UserState]) -> None:
    """Background users make every genre equally popular."""
    ts = T0 - 600_000
    for i, genre in enumerate(GENRES * 3):
        event = BehaviourEvent(f"bg-{i}", f"bg{i}", "play", ts, f"{genre}-{i % 12}")
        engine.process_raw(encode_event(event), states, now=ts)


def test_page_for_the_right_user_with_rows() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    _warm_trending(engine, states)
    effects = engine.process_raw(encode_event(_event("alice", "session_start", T0)), states, now=T0)
    page = effects.page
    assert page is not None and page.user_id == "alice"
    assert page.trigger_event_id == effects.event.event_id
    assert page.rows, "a cold user still gets a page"
    items = [item.item_id for row in page.rows for item in row.items]
    assert len(items) == len(set(items)), "each title appears once per page"
    assert all(item.artwork_id for row in page.rows for item in row.items)


def test_clicking_a_genre_raises_it_on_the_page() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    _warm_trending(engine, states)
    before = engine.process_raw(
        encode_event(_event("bob", "session_start", T0)), states, now=T0
    ).page
    assert before is not None
    ts = T0
    for i in range(6):
        ts += 20_000
        page = engine.process_raw(
            encode_event(_event("bob", "click", ts, f"horror-{i}")), states, now=ts
        ).page
        engine.process_raw(
            encode_event(_event("bob", "play", ts + 1, f"horror-{i}")), states, now=ts
        )
    after = page
    assert after is not None
    assert _genre_rank(after, "horror") < _genre_rank(before, "horror")
    assert after.rows[0].items[0].item_id.startswith("horror")
    assert any(row.row_id == "genre-horror" for row in after.rows)


def test_ranker_learns_from_clicks_and_scroll_pasts() -> None:
    """Clicks on horror and scroll-pasts on the rest teach the models (the ranker, each title's
    click rate, each genre's rate): a fresh user's page then prefers horror."""
    engine = _engine()
    states: dict[str, UserState] = {}
    _warm_trending(engine, states)
    ts = T0
    for round_ in range(60):
        user = f"learner{round_ % 10}"
        ts += 10_000
        page = engine.process_raw(
            encode_event(_event(user, "session_start", ts)), states, now=ts
        ).page
        assert page is not None
        for row in page.rows[:2]:
            for item in row.items[:4]:
                common = {
                    "recommendation_id": page.recommendation_id,
                    "artwork_id": item.artwork_id,
                }
                engine.process_raw(
                    encode_event(_event(user, "impression", ts, item.item_id, **common)),
                    states,
                    now=ts,
                )
                kind = "click" if item.item_id.startswith("horror") else "scroll_past"
                engine.process_raw(
                    encode_event(_event(user, kind, ts, item.item_id, **common)), states, now=ts
                )
    assert engine.counters["labels_positive"] > 20
    assert engine.counters["labels_negative"] > 20
    # A fresh user with no history of their own: what everyone taught prefers horror.
    page = engine.process_raw(
        encode_event(_event("fresh", "session_start", ts + 1)), states, now=ts + 1
    ).page
    assert page is not None
    scores = {item.item_id: item.score for row in page.rows for item in row.items}
    horror = [s for item_id, s in scores.items() if item_id.startswith("horror")]
    other = [s for item_id, s in scores.items() if not item_id.startswith("horror")]
    assert horror and other
    assert sum(horror) / len(horror) > sum(other) / len(other)


def test_duplicates_are_dropped_and_counted() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    event = _event("carol", "click", T0, "drama-1")
    first = engine.process_raw(encode_event(event), states, now=T0)
    second = engine.process_raw(encode_event(event), states, now=T0)
    assert first.page is not None and not first.duplicate
    assert second.duplicate and second.page is None and second.dead_letter is None
    assert engine.counters["duplicates"] == 1
    assert states["carol"].count("click") == 1


def test_inactivity_gap_starts_a_new_session() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    engine.process_raw(encode_event(_event("dan", "click", T0, "drama-1")), states, now=T0)
    first_session = states["dan"].session_id
    gap = engine.config.session_gap_ms
    engine.process_raw(
        encode_event(_event("dan", "click", T0 + gap - 1, "drama-2")), states, now=T0 + gap
    )
    assert states["dan"].session_id == first_session
    engine.process_raw(
        encode_event(_event("dan", "click", T0 + 2 * gap + 1, "drama-3")), states, now=T0 + 3 * gap
    )
    assert states["dan"].session_id != first_session
    assert states["dan"].count("click") == 1
    assert states["dan"].sessions_total == 1
    assert engine.counters["sessions_ended"] == 1


def test_explicit_session_id_change_starts_a_new_session() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    engine.process_raw(
        encode_event(_event("eve", "click", T0, "drama-1", session_id="s1")), states, now=T0
    )
    engine.process_raw(
        encode_event(_event("eve", "click", T0 + 5, "drama-2", session_id="s2")), states, now=T0
    )
    assert states["eve"].session_id == "s2"
    assert states["eve"].sessions_total == 1


def test_out_of_order_within_grace_is_applied_beyond_grace_dead_lettered() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    engine.process_raw(encode_event(_event("fay", "click", T0, "drama-1")), states, now=T0)
    late_ok = engine.process_raw(
        encode_event(_event("fay", "hover", T0 - 60_000, "drama-2", dwell_ms=100)), states, now=T0
    )
    assert late_ok.dead_letter is None
    assert states["fay"].count("hover") == 1
    assert states["fay"].last_ts == T0, "a late event never moves the session clock back"
    too_late = engine.process_raw(
        encode_event(
            _event("fay", "hover", T0 - engine.config.late_grace_ms - 1, "drama-2", dwell_ms=100)
        ),
        states,
        now=T0,
    )
    assert too_late.dead_letter is not None
    assert "late_event" in too_late.dead_letter.error
    assert states["fay"].count("hover") == 1


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "JSON"),
        (b'{"event_id": "e", "user_id": "u", "type": "click", "item_id": "i"}', "ts"),
        (b'{"event_id": "e", "user_id": "u", "type": "teleport", "ts": 1700000000000}', "type"),
        (b'{"event_id": "e", "user_id": "u", "type": "click", "ts": "soon", "item_id": "i"}', "ts"),
        (b'{"event_id": "e", "user_id": "u", "type": "click", "ts": 1700000000000}', "item_id"),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_a_reason(raw: bytes, needle: str) -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    effects = engine.process_raw(raw, states, now=T0)
    assert effects.dead_letter is not None
    assert needle in effects.dead_letter.error
    assert effects.dead_letter.original == raw
    assert engine.counters["dead_letters"] == 1
    good = engine.process_raw(encode_event(_event("gil", "click", T0, "drama-1")), states, now=T0)
    assert good.page is not None, "later good events are still processed"


def test_future_timestamps_are_dead_lettered() -> None:
    engine = _engine()
    ahead = T0 + engine.config.max_future_skew_ms + 1
    effects = engine.process_raw(encode_event(_event("hal", "click", ahead, "drama-1")), {}, now=T0)
    assert effects.dead_letter is not None
    assert "ts_out_of_range" in effects.dead_letter.error


def test_same_trigger_gives_the_same_recommendation_id() -> None:
    event = encode_event(_event("ivy", "click", T0, "drama-1"))
    first = _engine().process_raw(event, {}, now=T0).page
    second = _engine().process_raw(event, {}, now=T0).page
    assert first is not None and second is not None
    assert first.recommendation_id == second.recommendation_id
    assert first == second, "same input, same engine state: identical page"


def test_holdout_gets_the_same_popularity_page_for_everyone() -> None:
    config = EngineConfig(arms=(("holdout", 1.0),))
    engine = Engine(config, build_models(config))
    for item in _catalog():
        engine.apply_catalog(item)
    states: dict[str, UserState] = {}
    _warm_trending(engine, states)
    engine.process_raw(encode_event(_event("jo", "click", T0, "horror-1")), states, now=T0)
    page_jo = engine.process_raw(
        encode_event(_event("jo", "click", T0 + 1, "horror-2")), states, now=T0
    ).page
    page_kim = engine.process_raw(
        encode_event(_event("kim", "session_start", T0 + 1)), states, now=T0
    ).page
    assert page_jo is not None and page_kim is not None
    assert page_jo.variant == "holdout"
    assert [r.items for r in page_jo.rows] == [r.items for r in page_kim.rows]


def test_churn_learns_from_session_endings_and_alerts_once() -> None:
    """Sessions full of scroll-pasts end without a play; the model learns it and alerts once."""
    engine = _engine(churn_min_labels=60, churn_threshold=0.6, churn_rearm=0.3)
    states: dict[str, UserState] = {}
    ts = T0
    for session in range(120):
        user = f"c{session % 30}"
        ts += 10 * engine.config.session_gap_ms
        bored = session % 2 == 0
        for step in range(6):
            kind = "scroll_past" if bored else ("click" if step < 3 else "play")
            engine.process_raw(
                encode_event(_event(user, kind, ts + step * 1000, f"drama-{step}")), states, now=ts
            )
    engine.expire_idle(states.values(), watermark=ts + 10 * engine.config.session_gap_ms)
    assert engine.models.churn.n_learned >= 100
    alerts = []
    ts += 10 * engine.config.session_gap_ms
    for step in range(12):
        effects = engine.process_raw(
            encode_event(_event("quitter", "scroll_past", ts + step, f"comedy-{step}")),
            states,
            now=ts,
        )
        if effects.alert is not None:
            alerts.append(effects.alert)
    assert len(alerts) == 1, "hysteresis: one alert per risky stretch, not one per event"
    assert alerts[0].risk >= 0.6
    assert alerts[0].reasons
    engaged = engine.process_raw(
        encode_event(_event("keen", "play", ts, "drama-1")), states, now=ts
    )
    assert engaged.alert is None and states["keen"].churn_risk == 0.0


def test_replay_is_deterministic() -> None:
    def run() -> list[bytes]:
        engine = _engine()
        states: dict[str, UserState] = {}
        out = []
        ts = T0
        for i in range(200):
            ts += 1000
            user = f"r{i % 7}"
            kind = ("session_start", "impression", "click", "play", "scroll_past")[i % 5]
            item = None if kind == "session_start" else f"{GENRES[i % 4]}-{i % 12}"
            event = BehaviourEvent(f"d{i}", user, kind, ts, item)
            effects = engine.process_raw(encode_event(event), states, now=ts)
            if effects.page is not None:
                out.append(repr(effects.page).encode())
        return out

    assert run() == run()


def test_arms_are_stable_and_match_shares() -> None:
    from processors.experiments import ArmAssigner

    assigner = ArmAssigner("exp", [("personalized", 0.8), ("holdout", 0.2)])
    arms = Counter(assigner.arm_of(f"user-{i}") for i in range(20_000))
    assert arms["holdout"] / 20_000 == pytest.approx(0.2, abs=0.015)
    assert all(assigner.arm_of(f"user-{i}") == assigner.arm_of(f"user-{i}") for i in range(100))
    other = ArmAssigner("other-exp", [("personalized", 0.8), ("holdout", 0.2)])
    moved = sum(assigner.arm_of(f"user-{i}") != other.arm_of(f"user-{i}") for i in range(2000))
    assert moved > 0, "a new experiment name reshuffles users"


def test_pages_depend_on_event_time_not_the_wall_clock() -> None:
    """Live, ``now`` is the wall clock; a replay passes event time. Same page either way."""

    def last_page(now_offset: int) -> Page:
        engine = _engine()
        states: dict[str, UserState] = {}
        _warm_trending(engine, states)
        page = None
        for i in range(5):
            event = BehaviourEvent(f"lee-{i}", "lee", "click", T0 + i * 1000, f"scifi-{i}")
            page = engine.process_raw(encode_event(event), states, now=event.ts + now_offset).page
        assert page is not None
        return page

    replayed, live = last_page(0), last_page(3 * 365 * 86_400_000)
    assert [row.items for row in live.rows] == [row.items for row in replayed.rows]
    assert live.generated_at - replayed.generated_at == 3 * 365 * 86_400_000


def test_continue_watching_row_leads_after_a_pause() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    _warm_trending(engine, states)
    engine.process_raw(encode_event(_event("mo", "play", T0, "drama-3")), states, now=T0)
    page = engine.process_raw(
        encode_event(_event("mo", "pause", T0 + 1000, "drama-3", progress=0.4)), states, now=T0
    ).page
    assert page is not None
    rows = {row.row_id: row for row in page.rows}
    assert [item.item_id for item in rows["continue-watching"].items] == ["drama-3"]


def test_rows_are_ordered_by_predicted_engagement() -> None:
    from processors.page_builder import _RowPlan

    engine = _engine()
    plans = [
        _RowPlan("low", "Low", ["a", "b", "c"]),
        _RowPlan("high", "High", ["d", "e", "a"]),
        _RowPlan("mid", "Mid", ["f", "b"]),
    ]
    score_of = {"a": 0.9, "b": 0.2, "c": 0.1, "d": 0.8, "e": 0.7, "f": 0.5}
    arranged = engine.pages._arrange(plans, score_of)
    assert [plan.row_id for plan, _ in arranged] == ["high", "mid", "low"]
    placed = [item_id for _, items in arranged for item_id, _ in items]
    assert placed == ["a", "d", "e", "f", "b", "c"], "best first within a row; each item once"


def test_top_picks_spread_genres_unless_one_is_clearly_better() -> None:
    engine = _engine()
    ranked = [f"{genre}-{i}" for i in range(6) for genre in ("horror", "comedy")]
    ranked.sort(key=lambda item_id: item_id.startswith("comedy"))  # all horror first
    even = dict.fromkeys(ranked, 0.3)
    order = engine.pages._diversified(ranked, even, 4)
    assert [item_id.split("-")[0] for item_id in order] == ["horror", "comedy"] * 2
    dominant = {item_id: (0.6 if item_id.startswith("horror") else 0.05) for item_id in ranked}
    order = engine.pages._diversified(ranked, dominant, 4)
    assert all(item_id.startswith("horror") for item_id in order[:3])


def _browsing_batch(users: int, views: int) -> list[BehaviourEvent]:
    """Interleaved page views of several users: impressions, scroll-pasts, a click or two."""
    events: list[BehaviourEvent] = []
    ts = T0
    for view in range(views):
        for u in range(users):
            user = f"user{u}"
            if view == 0:
                events.append(_event(user, "session_start", ts, session_id=f"{user}-s"))
            genre = GENRES[(u + view) % len(GENRES)]
            for k in range(3):
                item = f"{genre}-{(view + k) % 12}"
                events.append(_event(user, "impression", ts + k, item, session_id=f"{user}-s"))
                kind = "click" if (u + view + k) % 4 == 0 else "scroll_past"
                events.append(_event(user, kind, ts + k + 1, item, session_id=f"{user}-s"))
            ts += 50
    return events


def _strip_clock(page: Page) -> tuple[object, ...]:
    return (page.user_id, page.recommendation_id, page.trigger_event_id, page.rows, page.variant)


def test_coalesced_pages_are_the_pages_event_at_a_time_processing_serves() -> None:
    events = _browsing_batch(users=4, views=3)
    sequential, batched = _engine(), _engine()
    seq_states: dict[str, UserState] = {}
    by_trigger: dict[str, Page] = {}
    for event in events:
        effects = sequential.process(event, seq_states.get(event.user_id), now=event.ts)
        seq_states[event.user_id] = effects.state  # type: ignore[assignment]
        if effects.page is not None:
            by_trigger[effects.page.trigger_event_id] = effects.page

    states: dict[str, UserState] = {}
    served: list[Page] = []
    for start in range(0, len(events), 20):  # batches of 20, as a consumer would hand them
        batch = events[start : start + 20]
        for event, serve in zip(batch, batched.serving_plan(batch), strict=True):
            effects = batched.process(
                event, states.get(event.user_id), now=event.ts, serve_page=serve
            )
            states[event.user_id] = effects.state  # type: ignore[assignment]
            if effects.page is not None:
                served.append(effects.page)
        assert batched.settle_pages(states, now=batch[-1].ts) == []  # nothing left owed

    assert served and len(served) < len(by_trigger), "some pages were coalesced"
    for page in served:
        assert _strip_clock(page) == _strip_clock(by_trigger[page.trigger_event_id])
    answered = [e for page in served for e in (*page.coalesced_event_ids, page.trigger_event_id)]
    assert sorted(answered) == sorted(by_trigger), "every trigger is answered exactly once"
    assert batched.counters["pages_coalesced"] == len(by_trigger) - len(served)


def test_pages_owed_by_a_rejected_last_trigger_are_settled_at_the_end_of_the_batch() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    start = _event("bob", "session_start", T0)
    click = _event("bob", "click", T0 + 10, "horror-1")
    replayed = BehaviourEvent(start.event_id, "bob", "session_start", T0)  # a redelivery
    batch = [start, click, replayed]
    plan = engine.serving_plan(batch)
    assert plan == [False, False, True]
    for event, serve in zip(batch, plan, strict=True):
        effects = engine.process(event, states.get("bob"), now=T0 + 20, serve_page=serve)
        states["bob"] = effects.state  # type: ignore[assignment]
        assert effects.page is None
    (page,) = engine.settle_pages(states, now=T0 + 20)
    assert page.trigger_event_id == click.event_id
    assert page.coalesced_event_ids == (start.event_id,)
    assert engine.settle_pages(states, now=T0 + 30) == []
