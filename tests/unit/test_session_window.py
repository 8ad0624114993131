"""The session window's write half: counts, dwell, streaks, progress, affinity, bounds."""

from __future__ import annotations

import math
import random

import numpy as np
import orjson
import pytest

from processors.config import EngineConfig
from processors.features import SESSION_FEATURE_NAMES, session_features, write_session_snapshot
from processors.session_window import decayed_affinity, update_window
from processors.user_state import FloatMap, UserState
from schemas.messages import BehaviourEvent, CatalogItem

CONFIG = EngineConfig()
T0 = 1_700_000_000_000
HORROR = CatalogItem("h1", "Scream", ("horror",), 5400, ("h1-a",))
COMEDY = CatalogItem("c1", "Airplane", ("comedy",), 5400, ("c1-a",))


def _event(kind: str, item: str | None = "h1", ts: int = T0, **extra: object) -> BehaviourEvent:
    return BehaviourEvent(
        event_id=f"e{ts}{kind}", user_id="u", type=kind, ts=ts, item_id=item, **extra
    )  # type: ignore[arg-type]


def _state() -> UserState:
    state = UserState("u")
    state.session_id, state.session_start, state.last_ts = "s", T0, T0
    return state


def test_counts_dwell_and_streaks() -> None:
    state = _state()
    for kind, extra in [
        ("hover", {"dwell_ms": 1000}),
        ("hover", {"dwell_ms": 3000}),
        ("scroll_past", {}),
        ("scroll_past", {}),
        ("scroll_past", {}),
    ]:
        update_window(state, _event(kind, **extra), HORROR, CONFIG)
    assert state.count("hover") == 2
    assert state.hover_dwell_ms == 4000
    assert state.scroll_streak == 3
    update_window(state, _event("click"), HORROR, CONFIG)
    assert state.scroll_streak == 0, "a click ends the scroll-past streak"
    assert state.max_scroll_streak == 3
    assert state.session_events == 6


def test_progress_and_continue_watching() -> None:
    state = _state()
    update_window(state, _event("pause", progress=0.4), HORROR, CONFIG)
    assert state.continue_watching == {"h1": 0.4}
    update_window(state, _event("pause", "c1", progress=0.01), COMEDY, CONFIG)
    assert "c1" not in state.continue_watching, "barely started is not worth resuming"
    update_window(state, _event("completion", progress=1.0), HORROR, CONFIG)
    assert state.continue_watching == {}
    assert state.progress_n == 3
    assert state.progress_sum == pytest.approx(1.41)


def test_continue_watching_is_bounded_and_recency_ordered() -> None:
    state = _state()
    config = EngineConfig(continue_watching=3)
    for index in range(5):
        update_window(state, _event("pause", f"i{index}", progress=0.5), None, config)
    update_window(state, _event("pause", "i2", progress=0.6), None, config)
    assert list(state.continue_watching) == ["i3", "i4", "i2"]


def test_genre_affinity_decays_with_half_life() -> None:
    state = _state()
    update_window(state, _event("click", ts=T0), HORROR, CONFIG)
    later = T0 + CONFIG.genre_half_life_ms
    assert decayed_affinity(state, later, CONFIG.genre_half_life_ms)["horror"] == pytest.approx(0.5)
    update_window(state, _event("click", "c1", ts=later), COMEDY, CONFIG)
    assert state.genre_affinity["horror"] == pytest.approx(0.5)
    assert state.genre_affinity["comedy"] == pytest.approx(1.0)


def test_scroll_past_lowers_affinity() -> None:
    state = _state()
    update_window(state, _event("scroll_past"), HORROR, CONFIG)
    assert state.genre_affinity["horror"] < 0


def test_last_items_bounded_and_collapse_click_then_play() -> None:
    state = _state()
    config = EngineConfig(last_items=3)
    for item in ["a", "a", "b", "c", "d"]:
        update_window(state, _event("click", item), None, config)
    update_window(state, _event("play", "d"), None, config)
    assert state.last_items == ("b", "c", "d")


def test_state_round_trips_through_json() -> None:
    state = _state()
    for kind in ["hover", "click", "play", "pause", "scroll_past"]:
        update_window(state, _event(kind, dwell_ms=500, progress=0.5), HORROR, CONFIG)
    state.recent_event_ids.extend(["x", "y"])
    restored = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored.to_dict() == state.to_dict()


def test_state_refuses_other_versions() -> None:
    raw = _state().to_dict() | {"v": 999}
    with pytest.raises(ValueError, match="version"):
        UserState.from_dict(raw)


def test_session_features_match_the_window() -> None:
    state = _state()
    update_window(state, _event("impression", ts=T0), HORROR, CONFIG)
    update_window(state, _event("click", ts=T0 + 60_000), HORROR, CONFIG)
    features = dict(
        zip(SESSION_FEATURE_NAMES, session_features(state, T0 + 60_000, CONFIG), strict=True)
    )
    assert features["events_count_session_log"] == pytest.approx(math.log1p(2))
    assert features["click_through_rate_session"] == pytest.approx(1 / 2)
    assert features["browsing_speed_epm_log"] == pytest.approx(math.log1p(2.0))
    assert features["genre_focus_session"] == pytest.approx(1.0)


def test_clicked_titles_are_an_ordered_set_forgetting_the_oldest() -> None:
    state = _state()
    for k in [*range(130), 0, 129]:
        update_window(state, _event("click", f"t{k}"), None, CONFIG)
    assert state.session_clicked == (*(f"t{k}" for k in range(3, 130)), "t0")
    restored = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored.session_clicked == state.session_clicked
    assert (
        restored.last_items
        == state.last_items
        == (
            *(f"t{k}" for k in range(112, 130)),
            "t0",
            "t129",
        )
    )


def test_session_feature_lookups_give_the_computed_values() -> None:
    """The memoized device flags and hour waves are what the expressions give, for any
    device name and for hours outside the table too."""
    from processors import features

    for device in (None, "", "TV", "Mobile", "fridge", "ios"):
        name = (device or "").lower()
        expected = (float(name in features._MOBILE), float(name in features._TV))
        assert features._device_flags(device) == expected
        assert features._device_flags(device) == expected  # the memoized answer
    for hour in (*range(24), 24, -1, 100):
        angle = 2.0 * math.pi * hour / 24.0
        assert features._hour_waves(hour) == (math.sin(angle), math.cos(angle))


def test_genre_focus_reads_the_decayed_affinity() -> None:
    from processors.features import _genre_focus

    state = UserState("u1")
    assert _genre_focus(state, T0, CONFIG.genre_half_life_ms) == 0.0
    state.genre_affinity["horror"] = 2.0
    state.genre_affinity["comedy"] = 0.5
    state.genre_affinity["drama"] = -1.0
    state.affinity_ts = T0
    for now in (T0, T0 + 1, T0 + 600_000):
        decayed = decayed_affinity(state, now, CONFIG.genre_half_life_ms)
        positive = [weight for weight in decayed.values() if weight > 0]
        expected = max(positive) / sum(positive)
        assert _genre_focus(state, now, CONFIG.genre_half_life_ms) == expected
    rng = random.Random(5)
    for _ in range(200):  # one pass of `_genre_focus` against the lists, max and sum
        state.genre_affinity = FloatMap()
        for genre in ("a", "b", "c", "d", "e")[: rng.randint(0, 5)]:
            state.genre_affinity[genre] = rng.choice((0.0, -0.5, 5e-324, rng.uniform(-2, 2)))
        now = T0 + rng.choice((-1_000, 0, 1, 3_600_000))
        decayed = decayed_affinity(state, now, CONFIG.genre_half_life_ms)
        positive = [weight for weight in decayed.values() if weight > 0]
        expected = max(positive) / sum(positive) if positive else 0.0
        assert _genre_focus(state, now, CONFIG.genre_half_life_ms) == expected


def _bits(values: list[float]) -> list[tuple[int, ...]]:
    """Each value's IEEE bits (``==`` would take -0.0 for 0.0 and never match NaN)."""
    return [tuple(memoryview(np.array([value])).cast("B")) for value in values]


@pytest.mark.parametrize("seed", range(40))
def test_the_compiled_session_row_is_session_features_bit_for_bit(seed: int) -> None:
    """`write_session_snapshot` (the churn check's compiled path) writes exactly the values of
    `session_features`: random windows, decayed and undecayed affinities (negative, zero and
    subnormal weights too), empty sessions, clock skew, unknown devices and hours; and keeps
    the snapshot records `add_churn_snapshot` keeps, whatever the scratch's size."""
    rng = random.Random(seed)
    state = _state()
    state.session_events = rng.choice([0, 1, 7, 250, 10**6])
    state.type_counts = [rng.choice([0, 1, 3, 40, 999]) for _ in state.type_counts]
    state.hover_dwell_ms = rng.choice([0, 1, 1234, 10**9 + 7])
    state.scroll_streak = rng.randrange(30)
    state.last_ts = T0 + rng.choice([-5_000, 0, 29_999, 30_000, 61_234, 10**8])
    state.progress_sum, state.progress_n = rng.choice([(0.0, 0), (0.3, 1), (2.71, 7)])
    state.device = rng.choice([None, "ios", "TV", "desktop", "fridge-9000"])
    state.local_hour = rng.choice([0, 7, 23, 24, -1, 99])
    state.sessions_total = rng.choice([0, 1, 5])
    state.affinity_ts = T0
    for genre in rng.sample(["horror", "comedy", "drama", "anime", "scifi"], rng.randrange(6)):
        state.genre_affinity[genre] = rng.choice([-1.0, 0.0, 5e-324, 0.25, rng.uniform(-2, 9)])
    now = T0 + rng.choice([0, 0, 1, 3_600_000, 10**9])
    for _ in range(rng.randrange(5)):
        state.add_churn_snapshot([rng.choice([0.0, 1.5, 0.1]) for _ in SESSION_FEATURE_NAMES], 3)
    expected = UserState("u")  # (the snapshots `add_churn_snapshot` keeps, from the same ones)
    expected.churn_snapshots, expected.churn_width = state.churn_snapshots, state.churn_width
    row = np.full(len(SESSION_FEATURE_NAMES), np.nan)
    scratch = bytearray(rng.choice([0, 10, 1024]))
    write_session_snapshot(row, state, now, CONFIG, scratch)
    assert _bits(row.tolist()) == _bits(session_features(state, now, CONFIG))
    expected.add_churn_snapshot(session_features(state, now, CONFIG), CONFIG.churn_snapshots)
    assert state.churn_snapshots == expected.churn_snapshots
    assert state.churn_width == expected.churn_width == len(SESSION_FEATURE_NAMES)


def test_the_compiled_session_snapshot_refuses_another_width() -> None:
    """`write_session_snapshot` keeps `add_churn_snapshot`'s check: every snapshot of a
    session has the same width (the records are read back at it), nothing kept otherwise."""
    state = _state()
    state.add_churn_snapshot([1.0, 2.0], 4)
    kept = state.churn_snapshots
    with pytest.raises(ValueError, match="after 2"):
        write_session_snapshot(
            np.zeros(len(SESSION_FEATURE_NAMES)), state, T0, CONFIG, bytearray(64)
        )
    assert state.churn_snapshots == kept and state.churn_width == 2
