"""Trending: decay against the closed form, leaderboard against a full sort, bounds, snapshots."""

from __future__ import annotations

import math
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.trending import Trending

HOUR = 3_600_000


def _closed_form(events: list[tuple[int, float]], now: int, half_life_ms: int) -> float:
    return sum(weight * 2.0 ** (-(now - ts) / half_life_ms) for ts, weight in events)


def test_score_decays_as_the_closed_form() -> None:
    trending = Trending(half_life_ms=HOUR)
    events = [(0, 1.0), (1_800_000, 2.0), (5_400_000, 0.5), (900_000, 3.0)]  # one out of order
    for ts, weight in events:
        trending.add("a", ts, weight)
    for now in (5_400_000, 7_200_000, 36_000_000, 1_000):
        assert trending.score("a", now) == pytest.approx(_closed_form(events, now, HOUR), rel=1e-12)
    # One half-life later everything counts half.
    assert trending.score("a", 9_000_000) == pytest.approx(trending.score("a", 5_400_000) / 2)


def test_default_half_life_is_one_hour() -> None:
    trending = Trending()
    trending.add("a", 0)
    assert trending.score("a", HOUR) == 0.5
    assert trending.score("missing", HOUR) == 0.0


def test_top_ranks_by_decayed_score_with_ties_by_item_id() -> None:
    trending = Trending(half_life_ms=1_000)
    trending.add("old-but-big", 0, weight=8.0)  # 8 * 2**-3 = 1 at t = 3000
    trending.add("b", 3_000)
    trending.add("a", 3_000)
    trending.add("new", 2_000, weight=3.0)  # 1.5 at t = 3000
    assert trending.top(10, now=3_000) == [
        ("new", 1.5),
        ("a", 1.0),
        ("b", 1.0),
        ("old-but-big", 1.0),
    ]
    assert trending.top(2, now=4_000) == [("new", 0.75), ("a", 0.5)]
    assert trending.top(0, now=4_000) == []
    assert Trending().top(5, now=0) == []


def test_lowest_item_is_evicted_when_full() -> None:
    trending = Trending(half_life_ms=1_000, max_items=2)
    trending.add("a", 1_000)
    trending.add("b", 1_000, weight=2.0)
    trending.add("stale", 0)  # lower than both: evicted straight away
    assert len(trending) == 2 and "stale" not in trending
    trending.add("c", 2_000)  # a (0.5 at t=2000) is now the lowest
    assert [item for item, _ in trending.top(5, now=2_000)] == ["b", "c"]
    trending.add("a", 3_000)  # a comes back from zero; of the tied b and c, b goes
    assert [item for item, _ in trending.top(5, now=3_000)] == ["a", "c"]
    assert trending.score("a", 3_000) == 1.0


def test_landmark_moves_without_overflow_or_drift() -> None:
    trending = Trending(half_life_ms=1_000, top_cache_size=2)
    trending.add("a", 0)
    trending.add("b", 0, weight=2.0)
    far = 1_000 * 1_000  # a thousand half-lives: 2**1000 would overflow without re-anchoring
    trending.add("a", far)
    trending.add("c", far + 500)
    assert trending.score("a", far) == pytest.approx(1.0, rel=1e-12)
    assert trending.score("c", far + 500) == pytest.approx(1.0)
    assert [item for item, _ in trending.top(3, now=far + 500)] == ["c", "a", "b"]
    assert trending.top(2, now=far + 500) == trending.top(3, now=far + 500)[:2]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_or_non_finite_weights_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Trending().add("a", 0, weight=bad)


@pytest.mark.parametrize("params", [{"half_life_ms": 0}, {"max_items": 0}, {"top_cache_size": 0}])
def test_bad_parameters_are_rejected(params: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Trending(**params)


_events = st.lists(
    st.tuples(
        st.sampled_from([f"i{i}" for i in range(12)]),
        st.integers(0, 20),  # in half-lives, so every value is an exact binary fraction
        st.sampled_from([1.0, 2.0, 3.0]),
    ),
    max_size=80,
)


@settings(max_examples=100, deadline=None)
@given(events=_events, n=st.integers(1, 12))
def test_top_and_eviction_match_a_naive_model(events: list[tuple[str, int, float]], n: int) -> None:
    half_life = 1_000
    trending = Trending(half_life_ms=half_life, max_items=6, top_cache_size=4)
    history: dict[str, list[tuple[int, float]]] = {}
    for item_id, step, weight in events:
        trending.add(item_id, step * half_life, weight)
        history.setdefault(item_id, []).append((step * half_life, weight))
        if len(history) > 6:
            lowest = min(history, key=lambda i: (_closed_form(history[i], 0, half_life), i))
            del history[lowest]
    assert sorted(history) == sorted(trending._value_of)
    now = 25 * half_life
    expected = sorted(history, key=lambda i: (-_closed_form(history[i], now, half_life), i))
    top = trending.top(n, now)
    assert [item for item, _ in top] == expected[:n]
    for item_id, score in top:
        assert score == pytest.approx(_closed_form(history[item_id], now, half_life), rel=1e-12)


def test_leaderboard_agrees_with_a_full_sort_on_a_long_stream() -> None:
    rng = random.Random(3)
    trending = Trending(half_life_ms=60_000, max_items=500, top_cache_size=50)
    for t in range(20_000):
        popular = rng.random() < 0.5  # half the events on a few hits, half spread out
        item = int(rng.paretovariate(1.0)) if popular else rng.randrange(2_000)
        trending.add(f"i{item}", t * 37, rng.choice([1.0, 2.0]))
    now = 20_000 * 37
    full = sorted(trending._value_of, key=lambda i: (-trending.score(i, now), i))
    assert [item for item, _ in trending.top(50, now)] == full[:50]
    assert [item for item, _ in trending.top(300, now)] == full[:300]  # beyond the cache
    assert len(trending) == 500


def test_state_round_trip_through_json_answers_identically() -> None:
    rng = random.Random(5)
    events = [
        (f"i{rng.randrange(300)}", t * 1_000, rng.choice([1.0, 2.0, 0.5])) for t in range(3_000)
    ]
    original = Trending(half_life_ms=600_000, max_items=100, top_cache_size=20)
    for event in events[:2_000]:
        original.add(*event)
    restored = Trending.from_state(orjson.loads(orjson.dumps(original.to_state())))
    now = 2_000_000
    assert restored.top(50, now) == original.top(50, now)
    assert restored.to_state() == original.to_state()
    for event in events[2_000:]:
        original.add(*event)
        restored.add(*event)
    now = 3_000_000
    assert restored.top(20, now) == original.top(20, now)
    assert restored.top(100, now) == original.top(100, now)
    assert restored.score("i7", now) == original.score("i7", now)


def test_unknown_state_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        Trending.from_state({**Trending().to_state(), "version": 999})


def test_a_query_long_before_the_landmark_stays_finite() -> None:
    """A clock far behind the events (a replay, a skewed producer) must not overflow."""
    trending = Trending(half_life_ms=1_000)
    trending.add("late", ts=10**12)
    trending.add("later", ts=10**12, weight=2.0)
    top = trending.top(2, now=0)
    assert [item_id for item_id, _ in top] == ["later", "late"]
    assert all(math.isfinite(score) and score > 0 for _, score in top)
    assert math.isfinite(trending.score("late", now=0))


def test_top_ids_are_tops_ids_at_any_time() -> None:
    trending = Trending(half_life_ms=60_000, top_cache_size=20)
    for k in range(300):
        trending.add(f"i{(k * 7) % 53}", 1_000 * k, 1.0 + (k % 3))
    for n in (0, 1, 10, 20, 21, 100):
        for now in (300_000, 900_000):
            assert trending.top_ids(n) == [item_id for item_id, _ in trending.top(n, now)]
