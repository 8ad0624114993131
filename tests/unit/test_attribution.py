"""Per-arm attribution: events join the right page and arm; arm shares hold; metrics add up."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from online_models.factory import build_models
from processors.attribution import TIMELINE_FIELDS, ArmMetrics
from processors.config import EngineConfig
from processors.engine import Engine
from processors.user_state import UserState
from schemas.messages import BehaviourEvent, CatalogItem, Page
from stream.config import Settings
from stream.simulation.inprocess import run_in_process
from stream.simulation.population import SimConfig, Simulation

T0 = 1_790_000_040_000 - 1_790_000_040_000 % 60_000
HALF = (("personalized", 0.5), ("holdout", 0.5))
_ids = itertools.count()


def _engine(arms: tuple[tuple[str, float], ...] = HALF) -> Engine:
    config = EngineConfig(arms=arms)
    engine = Engine(config, build_models(config))
    for genre in ("horror", "comedy"):
        for i in range(15):
            engine.apply_catalog(
                CatalogItem(f"{genre}-{i}", f"{genre} {i}", (genre,), 3000, (f"{genre}-{i}-a",))
            )
    return engine


def _event(
    user: str, kind: str, ts: int, item: str | None = None, **extra: object
) -> BehaviourEvent:
    return BehaviourEvent(f"a{next(_ids)}", user, kind, ts, item, **extra)  # type: ignore[arg-type]


def _user_in(engine: Engine, arm: str, skip: int = 0) -> str:
    return [u for u in (f"user-{i}" for i in range(500)) if engine.arms.arm_of(u) == arm][skip]


def test_events_are_attributed_to_the_arm_of_the_page_they_refer_to() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    pages: dict[str, Page] = {}
    ts = T0
    for arm in ("personalized", "holdout"):
        user = _user_in(engine, arm)
        effects = engine.process(_event(user, "session_start", ts), None, now=ts)
        assert effects.page is not None and effects.page.variant == arm
        states[user], pages[user] = effects.state, effects.page  # type: ignore[assignment]
    for user, page in pages.items():
        shown = page.rows[0].items[0]
        for kind in ("impression", "impression", "click"):
            ts += 1_000
            item = (
                shown.item_id if kind != "impression" or ts % 2 else page.rows[0].items[1].item_id
            )
            effects = engine.process(
                _event(user, kind, ts, item, recommendation_id=page.recommendation_id),
                states[user],
                now=ts,
            )
            assert effects.attributed_variant == page.variant
    metrics = engine.arm_metrics
    for arm in ("personalized", "holdout"):
        totals = metrics.arm(arm)
        assert (totals.impressions, totals.clicks) == (2, 1)
        assert totals.attributed_by_page == 3 and totals.attributed_by_user == 0
        assert totals.click_rate == 0.5
        assert totals.pages >= 1


def test_an_event_without_a_known_page_falls_back_to_the_users_arm_and_is_counted() -> None:
    engine = _engine()
    user = _user_in(engine, "holdout")
    state = engine.process(_event(user, "session_start", T0), None, now=T0).state
    effects = engine.process(
        _event(user, "click", T0 + 1_000, "horror-1", recommendation_id="rec-from-long-ago"),
        state,
        now=T0,
    )
    assert effects.attributed_variant is None
    totals = engine.arm_metrics.arm("holdout")
    assert totals.clicks == 1 and totals.attributed_by_user == 1
    assert engine.arm_metrics.arm("personalized").clicks == 0
    # No recommendation id at all: not an outcome of any page, not counted.
    engine.process(_event(user, "play", T0 + 2_000, "horror-1"), state, now=T0)
    assert totals.plays == 0


def test_sessions_count_for_the_users_arm_when_they_end() -> None:
    engine = _engine()
    states: dict[str, UserState] = {}
    watcher, browser = _user_in(engine, "personalized"), _user_in(engine, "personalized", 1)
    for user, kinds in (
        (watcher, ("session_start", "click", "play")),
        (browser, ("session_start", "scroll_past")),
    ):
        for step, kind in enumerate(kinds):
            item = None if kind == "session_start" else "comedy-1"
            effects = engine.process(
                _event(user, kind, T0 + step * 1_000, item, session_id="s1"),
                states.get(user),
                now=T0,
            )
            states[user] = effects.state  # type: ignore[assignment]
    engine.expire_idle(states.values(), watermark=T0 + engine.config.session_gap_ms + 10_000)
    totals = engine.arm_metrics.arm("personalized")
    assert totals.sessions == 2 and totals.sessions_without_play == 1
    assert totals.no_play_share == 0.5
    assert totals.mean_session_events == 2.5
    window = engine.arm_metrics.window(T0)
    assert window["personalized"]["sessions"] == 2


def test_engine_attribution_agrees_with_the_simulators_ground_truth() -> None:
    """The simulator knows which page (and arm) every event answered; the engine must agree."""
    engine = _engine()
    sim = Simulation(
        SimConfig(users=120, items=150, seed=4, run_id="att", ramp_minutes=5.0), start_ms=T0
    )
    run_in_process(sim, engine, sim_minutes=15)
    truth, online = sim.metrics.arms, engine.arm_metrics.arms
    assert set(truth) == {"personalized", "holdout"}
    for arm, expected in truth.items():
        got = online[arm]
        assert expected.impressions > 300
        for name in (
            "impressions",
            "hovers",
            "clicks",
            "scroll_pasts",
            "plays",
            "completions",
            "drop_offs",
        ):
            assert getattr(got, name) == getattr(expected, name), (arm, name)
    assert sum(t.attributed_by_page for t in online.values()) > 0.5 * sum(
        t.impressions for t in online.values()
    )


def test_arm_shares_match_the_configuration_and_are_stable() -> None:
    settings = Settings.from_env({"INSESSION_ARMS": "personalized=0.9,holdout=0.1"})
    engines = [Engine(settings.engine, build_models(settings.engine)) for _ in range(2)]
    users = [f"viewer-{i}" for i in range(20_000)]
    arms = [engines[0].arms.arm_of(u) for u in users]
    shares = Counter(arms)
    assert shares["holdout"] / len(users) == pytest.approx(0.1, abs=0.01)
    assert shares["personalized"] / len(users) == pytest.approx(0.9, abs=0.01)
    assert arms == [engines[1].arms.arm_of(u) for u in users], "same arms in every worker"
    # The arm travels with the checkpointed state: a restarted worker keeps serving it.
    state = engines[0].process(_event("viewer-7", "session_start", T0), None, now=T0).state
    assert state is not None
    restored = UserState.from_dict(state.to_dict())
    page = (
        engines[1]
        .process(_event("viewer-7", "hover", T0 + 1, "x", dwell_ms=10), restored, now=T0)
        .page
    )
    assert page is not None and page.variant == engines[0].arms.arm_of("viewer-7")


def test_metrics_round_trip_merge_and_bounded_timeline() -> None:
    metrics = ArmMetrics(max_buckets=3)
    for minute in (5, 1, 3, 2, 4):  # out of order: buckets stay in time order, oldest dropped
        metrics.record_event("personalized", "impression", T0 + minute * 60_000)
    metrics.record_event("personalized", "click", T0 + 4 * 60_000)
    metrics.record_session(
        "personalized", played=False, events=7, duration_ms=60_000, end_ts=T0 + 4 * 60_000
    )
    starts = [start for start, _ in metrics.timeline()]
    assert starts == sorted(starts) and len(starts) == 3
    assert starts[0] == T0 + 3 * 60_000
    copy = ArmMetrics.from_dict(metrics.to_dict())
    assert copy.to_dict() == metrics.to_dict()
    copy.merge(metrics)
    assert copy.arm("personalized").impressions == 10
    assert copy.window(T0 + 4 * 60_000)["personalized"] == dict(
        zip(TIMELINE_FIELDS, (4, 2, 0, 2, 2), strict=True)
    )
    assert metrics.to_dict()["arms"]["personalized"]["no_play_share"] == 1.0


def test_pages_are_served_in_the_users_arm_so_states_keep_only_page_keys() -> None:
    """``UserState.page_variant`` answers with the user's arm for any of their recent pages:
    true only while every page is built in its user's arm, as checked here for both arms."""
    engine = _engine()
    states: dict[str, UserState] = {}
    served: dict[str, list[Page]] = {}
    for k in range(40):
        user = f"viewer-{k}"
        for step, kind in enumerate(("session_start", "hover", "click")):
            event = _event(user, kind, T0 + step, "horror-1", dwell_ms=10)
            effects = engine.process(event, states.get(user), now=T0 + step)
            assert effects.state is not None
            states[user] = effects.state
            if effects.page is not None:
                served.setdefault(user, []).append(effects.page)
    assert {page.variant for pages in served.values() for page in pages} == {
        "personalized",
        "holdout",
    }
    for user, pages in served.items():
        state = UserState.from_dict(states[user].to_dict())
        for page in pages:
            assert page.variant == state.variant == state.page_variant(page.recommendation_id)
        assert state.last_recommendation_id == pages[-1].recommendation_id
