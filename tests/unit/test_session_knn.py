"""SessionKNN: hand-computed scores, bounds, determinism, snapshots, and the YOOCHOOSE protocol."""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import online_models.session_knn as knn_module
from online_models.session_knn import SessionKNN
from online_models.session_tsv import read_session_tsv

LN2 = math.log(2.0)


def _tiny_index(**params: object) -> SessionKNN:
    """Four sessions small enough to score by hand (see the tests below)."""
    knn = SessionKNN(**params)  # type: ignore[arg-type]
    knn.add_session("s1", ["a", "b"], ts=1)
    knn.add_session("s2", ["b", "c", "d"], ts=2)
    knn.add_session("s3", ["a", "c"], ts=3)
    knn.add_session("s4", ["e"], ts=4)
    return knn


def _assert_consistent(knn: SessionKNN) -> None:
    """The derived structures (inverted index, click counts, item ids) match the kept clicks."""
    postings: dict[int, set[int]] = {}
    clicks_count: Counter[int] = Counter()
    for sid, clicks in knn._clicks_of.items():
        assert 0 < len(clicks) <= knn.max_session_len
        assert set(knn._items_of[sid]) == set(clicks)
        clicks_count.update(clicks)
        for iid in clicks:
            postings.setdefault(iid, set()).add(sid)
    assert knn._sessions_of == postings
    assert knn._clicks_count == dict(clicks_count)
    assert set(knn._item_key_of) == set(postings)
    assert {knn._iid_of[k] for k in knn._item_key_of.values()} == set(postings)
    assert len(knn) == len(knn._slot_of) == len(knn._clicks_of) <= knn.max_sessions
    _assert_arrays_consistent(knn)


def _assert_arrays_consistent(knn: SessionKNN) -> None:
    """The numpy mirrors the queries read agree with the dictionaries, and scratch is clean."""
    if knn._dirty:
        knn._refresh()
    for slot, items in knn._items_of.items():
        start, size = int(knn._start[slot]), int(knn._n_items[slot])
        packed = knn._flat[start : start + size].tolist()
        assert {p & 0xFFFFFFFF: p >> 32 for p in packed} == items
        assert knn._ts[slot] == knn._ts_of[slot]
        assert knn._serial[slot] == knn._serial_of[slot]
    free = set(range(knn._next_slot)) - set(knn._items_of)
    assert free == set(knn._free_slots)
    assert not knn._n_items[sorted(free)].any()
    assert knn._flat_live == int(knn._n_items.sum()) <= knn._flat_used <= len(knn._flat)
    assert knn._holders.keys() == knn._holders_n.keys()
    for iid, holders in knn._holders.items():
        assert sorted(holders[: knn._holders_n[iid]].tolist()) == sorted(knn._sessions_of[iid])
    for iid, count in knn._clicks_count.items():
        assert knn._log_clicks[iid] == math.log(count)
    assert not knn._similarity.any() and not knn._score.any() and not knn._in_query.any()
    assert (knn._first == np.iinfo(np.int64).max).all()


# ---------------------------------------------------------------------- hand-computed scores
#
# Query [a, b]: L = 2, quadratic position weights a: (1/2)**2 = 0.25, b: (2/2)**2 = 1, divided
# by the 2 distinct items -> a: 0.125, b: 0.5. Similarities: s1 {a, b} 0.625, s2 {b} 0.5,
# s3 {a} 0.125, s4 none. Most recent shared click ("div" score weighting = 1 / step):
# s1 and s2 share b (step 1, x1), s3 shares only a (step 2, x1/2). Contributions: s1 0.625,
# s2 0.5, s3 0.0625. Raw item scores: a = 0.625 + 0.0625 = 0.6875, b = 0.625 + 0.5 = 1.125,
# c = 0.5 + 0.0625 = 0.5625, d = 0.5.


def test_scores_without_idf_match_the_hand_computation() -> None:
    knn = _tiny_index(idf_weighting=0.0)
    recs = knn.recommend(["a", "b"], n=10)
    assert [item for item, _ in recs] == ["b", "a", "c", "d"]
    expected = {"b": 1.0, "a": 0.6875 / 1.125, "c": 0.5625 / 1.125, "d": 0.5 / 1.125}
    assert dict(recs) == pytest.approx(expected, rel=1e-12)


def test_idf_boost_matches_the_hand_computation() -> None:
    # 4 sessions; a, b, c have 2 clicks each (idf ln 2), d has 1 (idf ln 4).
    knn = _tiny_index(idf_weighting=5.0)
    boost_abc, boost_d = 1 + 5 * LN2, 1 + 5 * 2 * LN2
    raw = {"a": 0.6875 * boost_abc, "b": 1.125 * boost_abc, "c": 0.5625 * boost_abc}
    raw["d"] = 0.5 * boost_d
    recs = knn.recommend(["a", "b"], n=10)
    assert [item for item, _ in recs] == ["b", "d", "a", "c"]
    assert dict(recs) == pytest.approx({i: s / raw["b"] for i, s in raw.items()}, rel=1e-12)


def test_unnormalized_scores_are_the_raw_sums() -> None:
    knn = _tiny_index(idf_weighting=0.0, normalize=False)
    expected = {"b": 1.125, "a": 0.6875, "c": 0.5625, "d": 0.5}
    assert dict(knn.recommend(["a", "b"], n=10)) == pytest.approx(expected, rel=1e-12)


def test_k_keeps_the_most_similar_sessions_and_items_tie_by_id() -> None:
    # k=2 keeps s1 (0.625) and s2 (0.5): a 0.625, b 1.125, c 0.5, d 0.5 (c before d by id).
    recs = _tiny_index(k=2, idf_weighting=0.0, normalize=False).recommend(["a", "b"], n=10)
    # Sums of powers of two are exact in binary floating point.
    assert recs == [("b", 1.125), ("a", 0.625), ("c", 0.5), ("d", 0.5)]


def test_sample_keeps_the_most_recent_candidates() -> None:
    # The 2 most recent of s1 (ts 1), s2 (ts 2), s3 (ts 3) are s3 and s2:
    # a 0.0625, b 0.5, c 0.5 + 0.0625, d 0.5.
    knn = _tiny_index(sample_size=2, idf_weighting=0.0, normalize=False)
    assert dict(knn.recommend(["a", "b"], n=10)) == pytest.approx(
        {"a": 0.0625, "b": 0.5, "c": 0.5625, "d": 0.5}
    )


def test_neighbour_ties_go_to_the_more_recent_session() -> None:
    knn = SessionKNN(k=1, idf_weighting=0.0)
    knn.add_session("old", ["a", "x"], ts=10)
    knn.add_session("new", ["a", "y"], ts=20)
    assert [item for item, _ in knn.recommend(["a"])] == ["a", "y"]
    knn.add_item("old", "z", ts=30)  # now "old" holds the latest event
    assert [item for item, _ in knn.recommend(["a"])] == ["a", "x", "z"]


def test_exclude_session_keeps_a_live_session_from_being_its_own_neighbour() -> None:
    knn = _tiny_index(idf_weighting=0.0, normalize=False)
    knn.add_session("live", ["a", "b"], ts=5)
    with_self = dict(knn.recommend(["a", "b"], n=10))
    assert with_self["b"] == pytest.approx(1.125 + 0.625)  # "live" counts like s1
    without = dict(knn.recommend(["a", "b"], n=10, exclude_session="live"))
    assert without == pytest.approx({"b": 1.125, "a": 0.6875, "c": 0.5625, "d": 0.5})
    assert knn.recommend(["a", "b"], n=10, exclude_session="unknown") == knn.recommend(
        ["a", "b"], n=10
    )


def test_remind_false_drops_the_current_items() -> None:
    knn = _tiny_index(idf_weighting=0.0, remind=False, normalize=False)
    assert dict(knn.recommend(["a", "b"], n=10)) == pytest.approx({"c": 0.5625, "d": 0.5})


def test_repeated_and_unknown_clicks_follow_session_rec() -> None:
    # [a, b, a, zz]: L = 4; a keeps its last position 3 -> (3/4)**2, b -> (2/4)**2; unknown zz
    # counts for L and for the 3 distinct items. s3 {a, c}: sim 0.5625 / 3 = 0.1875, last shared
    # click a at step 2 -> contribution 0.09375, so c gets 0.09375 + s2's share.
    knn = _tiny_index(idf_weighting=0.0, normalize=False)
    scores = dict(knn.recommend(["a", "b", "a", "zz"], n=10))
    sim1, sim2, sim3 = (0.5625 + 0.25) / 3, 0.25 / 3, 0.5625 / 3
    contribution = {"s1": sim1 / 2, "s2": sim2 / 3, "s3": sim3 / 2}
    assert scores == pytest.approx(
        {
            "a": contribution["s1"] + contribution["s3"],
            "b": contribution["s1"] + contribution["s2"],
            "c": contribution["s2"] + contribution["s3"],
            "d": contribution["s2"],
        }
    )


@pytest.mark.parametrize(
    ("weighting", "position_weight", "step_weight"),
    [
        ("same", 1.0, 1.0),
        ("div", 1 / 3, 1 / 3),
        ("linear", 0.8, 0.7),
        ("log", 1 / math.log10(3.7), 1 / math.log10(4.7)),
        ("quadratic", 1 / 9, 1 / 9),
    ],
)
def test_weighting_functions_follow_session_rec(
    weighting: str, position_weight: float, step_weight: float
) -> None:
    # Query [a, x, y] (x, y unknown): a is click 1 of 3 and lies 3 clicks back.
    knn = SessionKNN(
        weighting=weighting, weighting_score=weighting, idf_weighting=0.0, normalize=False
    )
    knn.add_session("s", ["a", "z"], ts=1)
    scores = dict(knn.recommend(["a", "x", "y"]))
    assert scores["z"] == pytest.approx(position_weight / 3 * step_weight, rel=1e-12)


def test_neighbour_item_decay_favours_items_clicked_near_the_shared_one() -> None:
    # Neighbour [x, a, y, z] shares a (click 1): distances x 1, a 0, y 1, z 2; lambda = 2.
    knn = SessionKNN(idf_weighting=0.0, neighbour_item_decay=2.0)
    knn.add_session("s", ["x", "a", "y", "z"], ts=1)
    recs = knn.recommend(["a"])
    assert [item for item, _ in recs] == ["a", "x", "y", "z"]
    expected = {"a": 1.0, "x": math.exp(-0.5), "y": math.exp(-0.5), "z": math.exp(-1.0)}
    assert dict(recs) == pytest.approx(expected, rel=1e-12)


def test_neighbour_item_decay_anchors_on_the_last_shared_click() -> None:
    # Neighbour [a, b, a, c]: last clicks a 2, b 1, c 3; query [a, b] -> anchor 2 (a).
    knn = SessionKNN(idf_weighting=0.0, neighbour_item_decay=1.0)
    knn.add_session("s", ["a", "b", "a", "c"], ts=1)
    scores = dict(knn.recommend(["a", "b"]))
    assert scores == pytest.approx({"a": 1.0, "b": math.exp(-1.0), "c": math.exp(-1.0)})


def test_empty_and_unknown_queries_give_nothing() -> None:
    knn = _tiny_index()
    assert knn.recommend([]) == []
    assert knn.recommend(["nope", "never"]) == []
    assert knn.recommend(["a"], n=0) == []
    assert SessionKNN().recommend(["a"]) == []


def test_n_truncates_after_the_tie_break() -> None:
    knn = _tiny_index(idf_weighting=0.0)
    assert knn.recommend(["a", "b"], n=2) == knn.recommend(["a", "b"], n=10)[:2]


@pytest.mark.parametrize(
    "params",
    [
        {"k": 0},
        {"sample_size": -1},
        {"max_sessions": 0},
        {"max_session_len": 0},
        {"weighting": "cubic"},
        {"weighting_score": "cubic"},
        {"idf_weighting": -1.0},
        {"neighbour_item_decay": 0.0},
    ],
)
def test_bad_parameters_are_rejected(params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SessionKNN(**params)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- bounds and eviction


def test_the_session_with_the_oldest_last_event_is_evicted() -> None:
    knn = SessionKNN(max_sessions=3)
    knn.add_session("s1", ["a", "b"], ts=10)
    knn.add_session("s2", ["b", "c"], ts=20)
    knn.add_session("s3", ["c", "d"], ts=30)
    knn.add_item("s1", "e", ts=40)  # s1 is now the most recent
    knn.add_session("s4", ["f"], ts=50)
    assert len(knn) == 3
    assert [key for key, _, _ in knn.to_state()["sessions"]] == ["s1", "s3", "s4"]
    _assert_consistent(knn)
    # b survives through s1, c through s3; nothing leads to s2 any more.
    assert "b" in knn._iid_of and "c" in knn._iid_of
    assert {knn._key_of[s] for s in knn._sessions_of[knn._iid_of["b"]]} == {"s1"}


def test_an_event_older_than_every_session_is_evicted_at_once() -> None:
    knn = SessionKNN(max_sessions=2)
    knn.add_session("s1", ["a"], ts=10)
    knn.add_session("s2", ["b"], ts=20)
    knn.add_item("late", "c", ts=5)
    assert len(knn) == 2
    assert "c" not in knn._iid_of
    _assert_consistent(knn)


def test_a_late_event_never_makes_a_session_look_older() -> None:
    knn = SessionKNN(max_sessions=2)
    knn.add_session("s1", ["a"], ts=30)
    knn.add_session("s2", ["b"], ts=20)
    knn.add_item("s1", "c", ts=1)  # late: s1 keeps ts 30
    knn.add_session("s3", ["d"], ts=40)
    assert [key for key, _, _ in knn.to_state()["sessions"]] == ["s1", "s3"]


def test_long_sessions_keep_only_their_most_recent_clicks() -> None:
    knn = SessionKNN(max_session_len=3, idf_weighting=0.0)
    knn.add_session("s", ["x", "a", "b", "a", "c"], ts=1)
    assert knn.to_state()["sessions"] == [["s", 1, ["b", "a", "c"]]]
    assert knn.recommend(["x"]) == []  # x fell out of the window and out of the index
    _assert_consistent(knn)
    knn.add_item("s", "d", ts=2)  # drops b; a is still there
    assert knn.to_state()["sessions"] == [["s", 2, ["a", "c", "d"]]]
    assert knn.recommend(["b"]) == []
    assert [item for item, _ in knn.recommend(["a"])] == ["a", "c", "d"]
    _assert_consistent(knn)


def test_a_truncated_session_scores_like_its_kept_clicks() -> None:
    truncated = SessionKNN(max_session_len=3, neighbour_item_decay=2.0)
    truncated.add_session("s", ["x", "y", "a", "b", "c"], ts=1)
    truncated.add_session("t", ["a", "c"], ts=2)
    short = SessionKNN(max_session_len=3, neighbour_item_decay=2.0)
    short.add_session("s", ["a", "b", "c"], ts=1)
    short.add_session("t", ["a", "c"], ts=2)
    for query in (["a"], ["c", "a"], ["b"]):
        assert truncated.recommend(query) == short.recommend(query)


_events = st.lists(
    st.tuples(
        st.sampled_from([f"s{i}" for i in range(8)]),
        st.sampled_from([f"i{i}" for i in range(10)]),
        st.integers(0, 50),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(events=_events)
def test_index_stays_consistent_and_matches_a_naive_reference(
    events: list[tuple[str, str, int]],
) -> None:
    knn = SessionKNN(
        k=2, sample_size=3, max_sessions=5, max_session_len=4, neighbour_item_decay=3.0
    )
    for session_key, item_id, ts in events:
        knn.add_item(session_key, item_id, ts)
    _assert_consistent(knn)
    reference = _naive_index(events, max_sessions=5, max_session_len=4)
    assert [[key, ts, clicks] for key, (ts, clicks) in reference.items()] == knn.to_state()[
        "sessions"
    ]
    for query in (["i0"], ["i1", "i2"], ["i3", "i3", "i4", "i0"]):
        expected = _naive_scores(reference, query, k=2, sample_size=3, decay=3.0)
        assert dict(knn.recommend(query, n=50)) == pytest.approx(expected, rel=1e-9)
    _assert_arrays_consistent(knn)


def _naive_index(
    events: Iterable[tuple[str, str, int]], *, max_sessions: int, max_session_len: int
) -> dict[str, tuple[int, list[str]]]:
    """Sessions kept by the bounded index, written the slow obvious way, in creation order."""
    sessions: dict[str, tuple[int, list[str]]] = {}
    for session_key, item_id, ts in events:
        if session_key in sessions:
            last, clicks = sessions[session_key]
            sessions[session_key] = (max(last, ts), [*clicks, item_id][-max_session_len:])
            continue
        sessions[session_key] = (ts, [item_id])
        if len(sessions) > max_sessions:
            order = list(sessions)
            oldest = min(order, key=lambda key: (sessions[key][0], order.index(key)))
            del sessions[oldest]
    return sessions


def _naive_scores(
    sessions: dict[str, tuple[int, list[str]]],
    query: Sequence[str],
    *,
    k: int,
    sample_size: int,
    decay: float,
    idf_weighting: float = 5.0,
) -> dict[str, float]:
    """VMContextKNN as session-rec writes it (sets, loops), plus STAN's item neighbourhood."""
    length = len(query)
    pos_map = {item: ((p + 1) / length) ** 2 for p, item in enumerate(query)}
    created = {key: rank for rank, key in enumerate(sessions)}
    candidates = [key for key, (_, clicks) in sessions.items() if set(clicks) & set(query)]
    candidates.sort(key=lambda key: (sessions[key][0], created[key]), reverse=True)
    candidates = candidates[:sample_size]
    similarity = {
        key: sum(pos_map[i] for i in set(query) & set(sessions[key][1])) / len(pos_map)
        for key in candidates
    }
    candidates.sort(key=lambda key: (similarity[key], sessions[key][0], created[key]))
    neighbours = candidates[::-1][:k]
    all_clicks = Counter(i for _, clicks in sessions.values() for i in clicks)
    scores: dict[str, float] = {}
    for key in neighbours:
        clicks = sessions[key][1]
        step = next(s for s, item in enumerate(reversed(query), 1) if item in clicks)
        last_click = {item: q for q, item in enumerate(clicks)}
        anchor = max(q for item, q in last_click.items() if item in pos_map)
        for item, q in last_click.items():
            idf = max(0.0, math.log(len(sessions) / all_clicks[item]))
            gain = similarity[key] * (1 + idf_weighting * idf) / step
            scores[item] = scores.get(item, 0.0) + gain * math.exp(-abs(q - anchor) / decay)
    top = max(scores.values(), default=1.0)
    return {item: score / top for item, score in scores.items()}


# ---------------------------------------------------------------------- determinism, snapshots


def _random_stream(seed: int, events: int = 3_000) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    return [
        (f"s{rng.randrange(400)}", f"i{int(rng.paretovariate(1.2)) % 150}", t * 1_000)
        for t in range(events)
    ]


def _replay(events: Iterable[tuple[str, str, int]], **params: object) -> SessionKNN:
    knn = SessionKNN(**params)  # type: ignore[arg-type]
    for event in events:
        knn.add_item(*event)
    return knn


_QUERIES = [["i1"], ["i2", "i3"], ["i5", "i1", "i5"], ["i7", "i8", "i9", "i2"], ["i140"]]


@pytest.mark.parametrize("params", [{}, {"k": 20, "sample_size": 40, "neighbour_item_decay": 4.0}])
def test_the_same_stream_gives_identical_recommendations(params: dict[str, object]) -> None:
    events = _random_stream(7)
    first = _replay(events, max_sessions=150, max_session_len=6, **params)
    second = _replay(events, max_sessions=150, max_session_len=6, **params)
    for query in _QUERIES:
        assert first.recommend(query, n=30) == second.recommend(query, n=30)
    assert first.to_state() == second.to_state()


@pytest.mark.parametrize("params", [{}, {"k": 20, "sample_size": 40, "neighbour_item_decay": 4.0}])
def test_state_round_trip_through_json_recommends_identically(params: dict[str, object]) -> None:
    events = _random_stream(11)
    original = _replay(events[:2_000], max_sessions=150, max_session_len=6, **params)
    restored = SessionKNN.from_state(orjson.loads(orjson.dumps(original.to_state())))
    _assert_consistent(restored)
    assert restored.to_state() == original.to_state()
    for query in _QUERIES:
        assert restored.recommend(query, n=30) == original.recommend(query, n=30)
    # ... and keeps doing so as both go on learning, evictions included.
    for event in events[2_000:]:
        original.add_item(*event)
        restored.add_item(*event)
    for query in _QUERIES:
        assert restored.recommend(query, n=30, exclude_session="s3") == original.recommend(
            query, n=30, exclude_session="s3"
        )


@pytest.mark.parametrize(
    "params", [{}, {"weighting_score": "quadratic", "neighbour_item_decay": 4.0}]
)
def test_queries_between_events_see_every_update(
    params: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A query after every event makes the flat item array re-append the changed session each
    # time and be reallocated many times; sessions are evicted and their slots and item ids
    # reused. A model rebuilt from the state (fresh arrays, no reuse) must answer identically.
    reallocations: list[int] = []
    compact = SessionKNN._compact

    def counting_compact(knn: SessionKNN, size: int) -> None:
        reallocations.append(size)
        compact(knn, size)

    monkeypatch.setattr(SessionKNN, "_compact", counting_compact)
    events = _random_stream(5, events=1_500)
    knn = SessionKNN(max_sessions=60, max_session_len=5, **params)  # type: ignore[arg-type]
    for number, event in enumerate(events):
        knn.add_item(*event)
        query = _QUERIES[number % len(_QUERIES)]
        recs = knn.recommend(query, n=30, exclude_session=event[0])
        if number % 100 == 99:
            restored = SessionKNN.from_state(knn.to_state())
            assert recs == restored.recommend(query, n=30, exclude_session=event[0])
            _assert_consistent(knn)
    assert knn._next_serial > 10 * knn._next_slot  # slots were reused
    assert len(reallocations) >= 2  # dead entries were dropped (the first one allocates)


def test_engine_defaults_build_the_tuned_knn() -> None:
    from online_models.factory import build_models
    from processors.config import EngineConfig

    knn = build_models(EngineConfig()).knn
    assert (knn.weighting_score, knn.neighbour_item_decay) == ("quadratic", 4.0)
    off = build_models(EngineConfig(knn_weighting_score="div", knn_neighbour_item_decay=0.0)).knn
    assert (off.weighting_score, off.neighbour_item_decay) == ("div", None)


def test_unknown_state_versions_are_refused() -> None:
    state = SessionKNN().to_state()
    with pytest.raises(ValueError, match="version"):
        SessionKNN.from_state({**state, "version": 999})


def test_read_session_tsv(tmp_path: Path) -> None:
    path = tmp_path / "clicks.txt"
    path.write_text("ItemId\tSessionId\tTime\n7\t1\t1396860669.2775\n\n8\t1\t2.0\n")
    assert list(read_session_tsv(path)) == [("1", "7", 1396860669278), ("1", "8", 2000)]
    (tmp_path / "bad.txt").write_text("SessionId\tTime\n1\t2\n")
    with pytest.raises(ValueError, match="header"):
        list(read_session_tsv(tmp_path / "bad.txt"))


# ---------------------------------------------------------------------- YOOCHOOSE protocol


def _data_dir() -> Path:
    root = os.environ.get("INSESSION_DATA_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return base if (base / "yoochoose-clicks-100k_test.txt").exists() else base / "yoochoose-100k"


def _yoochoose() -> tuple[list[tuple[str, str, int]], list[tuple[str, list[str]]]]:
    """Training clicks in time order and the filtered test sessions of the published protocol."""
    data = _data_dir()
    if not (data / "yoochoose-clicks-100k_train_full.txt").exists():
        pytest.skip(f"YOOCHOOSE-100k sample not found in {data} (set INSESSION_DATA_DIR)")
    train = sorted(
        read_session_tsv(data / "yoochoose-clicks-100k_train_full.txt"), key=lambda e: e[2]
    )
    known = {item_id for _, item_id, _ in train}
    clicks: dict[str, list[tuple[int, str]]] = {}
    for session_id, item_id, ts in read_session_tsv(data / "yoochoose-clicks-100k_test.txt"):
        if item_id in known:
            clicks.setdefault(session_id, []).append((ts, item_id))
    test = [
        (session_id, [item_id for _, item_id in sorted(rows, key=lambda r: r[0])])
        for session_id, rows in clicks.items()
        if len(rows) >= 2
    ]
    return train, test


class _Recommender(Protocol):
    def recommend(self, session_items: Sequence[str], n: int = ...) -> list[tuple[str, float]]:
        """Ranked ``(item_id, score)`` pairs for the next click."""
        ...


def evaluate_next_item(
    knn: _Recommender,
    test: Sequence[tuple[str, Sequence[str]]],
    cutoffs: Sequence[int] = (5, 10, 20),
) -> dict[str, float]:
    """HitRate@c and MRR@max(c) of next-click prediction at every position of every session."""
    longest = max(cutoffs)
    hits = dict.fromkeys(cutoffs, 0)
    reciprocal_ranks = 0.0
    predictions = 0
    for _, items in test:
        for position in range(len(items) - 1):
            ranked = [item for item, _ in knn.recommend(items[: position + 1], n=longest)]
            predictions += 1
            if items[position + 1] in ranked:
                rank = ranked.index(items[position + 1]) + 1
                reciprocal_ranks += 1.0 / rank
                for cutoff in cutoffs:
                    hits[cutoff] += rank <= cutoff
    result = {f"HR@{c}": hits[c] / predictions for c in cutoffs}
    result[f"MRR@{longest}"] = reciprocal_ranks / predictions
    result["predictions"] = predictions
    return result


@pytest.fixture(scope="module")
def yoochoose() -> tuple[list[tuple[str, str, int]], list[tuple[str, list[str]]]]:
    return _yoochoose()


@pytest.mark.slow
def test_yoochoose_matches_published_vsknn(
    yoochoose: tuple[list[tuple[str, str, int]], list[tuple[str, list[str]]]],
) -> None:
    train, test = yoochoose
    knn = _replay(train)
    result = evaluate_next_item(knn, test)
    assert result["predictions"] == 10_152
    # Published V-SKNN: 0.688 / 0.367; we measure 0.688 / 0.367.
    assert result["HR@20"] >= 0.66
    assert result["MRR@20"] >= 0.34

    # Same lists as the real V-SKNN at the reference positions (differences come from ties at
    # the k-th neighbour, which session-rec breaks by set order and we break by recency).
    sessions = dict(test)
    overlaps = []
    with open(_data_dir() / "reference-recs-vsknn.csv", encoding="utf-8") as reference:
        next(reference)
        for line in reference:
            session_id, position, items, scores = line.rstrip("\n").split(";")
            expected = [
                item
                for item, score in zip(items.split(","), scores.split(","), strict=True)
                if float(score) > 0
            ][:20]
            ranked = knn.recommend(sessions[session_id][: int(position) + 1], n=20)
            overlaps.append(len({item for item, _ in ranked} & set(expected)) / len(expected))
    assert len(overlaps) == 387
    assert sum(overlaps) / len(overlaps) >= 0.98


def _validation_split(
    train_full: Sequence[tuple[str, str, int]],
) -> tuple[list[tuple[str, str, int]], list[tuple[str, list[str]]]]:
    """The last day of ``train_full`` as validation sessions, the rest to train: the test file
    is never read when choosing settings."""
    last: dict[str, int] = {}
    for session_id, _, ts in train_full:
        last[session_id] = max(last.get(session_id, ts), ts)
    split = max(last.values()) - 86_400_000
    train = [event for event in train_full if last[event[0]] < split]
    known = {item_id for _, item_id, _ in train}
    clicks: dict[str, list[tuple[int, str]]] = {}
    for session_id, item_id, ts in train_full:
        if last[session_id] >= split and item_id in known:
            clicks.setdefault(session_id, []).append((ts, item_id))
    valid = [
        (session_id, [item_id for _, item_id in sorted(rows, key=lambda r: r[0])])
        for session_id, rows in clicks.items()
        if len(rows) >= 2
    ]
    return train, valid


@pytest.mark.slow
def test_yoochoose_defaults_win_on_a_validation_split(
    yoochoose: tuple[list[tuple[str, str, int]], list[tuple[str, list[str]]]],
) -> None:
    # The engine's kNN defaults (EngineConfig: quadratic, decay 4) against V-SKNN's on held-out
    # training sessions, queries cut to the last 20 clicks as the engine passes them. Measured
    # HR@20 / MRR@20 0.6526 / 0.3651 vs 0.6480 / 0.3597 (grid in BENCHMARKS.md).
    train, valid = _validation_split(yoochoose[0])
    assert sum(len(items) - 1 for _, items in valid) == 12_455

    def score(**params: object) -> dict[str, float]:
        knn = _replay(train, **params)
        return evaluate_next_item(_LastClicks(knn, 20), valid)

    vsknn = score()
    default = score(weighting_score="quadratic", neighbour_item_decay=4.0)
    assert default["MRR@20"] > vsknn["MRR@20"] + 0.004
    assert default["HR@20"] > vsknn["HR@20"]


class _LastClicks:
    """A SessionKNN that only sees the last ``n`` clicks of a query, like the engine's."""

    def __init__(self, knn: SessionKNN, n: int) -> None:
        self._knn, self._n = knn, n

    def recommend(self, session_items: Sequence[str], n: int = 100) -> list[tuple[str, float]]:
        return self._knn.recommend(session_items[-self._n :], n)


@pytest.mark.slow
def test_yoochoose_tuned_settings_beat_published_vsknn(
    yoochoose: tuple[list[tuple[str, str, int]], list[tuple[str, list[str]]]],
) -> None:
    train, test = yoochoose
    knn = _replay(train, weighting_score="quadratic", neighbour_item_decay=4.0)
    result = evaluate_next_item(knn, test)
    # Measured 0.692 / 0.375 (published V-SKNN 0.688 / 0.367); the engine's default settings.
    assert result["HR@20"] >= 0.69
    assert result["MRR@20"] >= 0.37


def test_few_changed_sessions_refresh_as_the_array_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_refresh_one` (a handful of changed sessions) leaves the index as the whole-array
    path does: same recommendations after every batch of clicks, evictions included."""
    rng = random.Random(4)
    few, many = SessionKNN(max_sessions=60), SessionKNN(max_sessions=60)
    for step in range(400):
        for _ in range(rng.randint(1, 6)):
            session, item = f"s{rng.randint(0, 120)}", f"i{rng.randint(0, 80)}"
            few.add_item(session, item, 1_000 + step)
            many.add_item(session, item, 1_000 + step)
        query = [f"i{rng.randint(0, 80)}" for _ in range(rng.randint(1, 4))]
        expected_few = few.recommend(query, 30)
        monkeypatch.setattr(knn_module, "_FEW_DIRTY", 0)
        expected_many = many.recommend(query, 30)
        monkeypatch.undo()
        assert expected_few == expected_many
        assert few._flat_live == many._flat_live


# ---------------------------------------------------------------------- the compiled query


def _loop_recommend(
    knn: SessionKNN, session_items: Sequence[str], n: int, exclude_session: str | None = None
) -> list[tuple[str, float]]:
    """`SessionKNN.recommend` as plain Python loops over the index's dictionaries, in the order
    the class docstring gives: what the compiled query must reproduce bit for bit."""
    length = len(session_items)
    last_position: dict[int, int] = {}
    for position in range(length - 1, -1, -1):
        iid = knn._iid_of.get(session_items[position])
        if iid is not None and iid not in last_position:
            last_position[iid] = position
    excluded = knn._slot_of.get(exclude_session) if exclude_session is not None else None
    per_distinct = 1.0 / len(set(session_items))
    similarity: dict[int, float] = {}
    step: dict[int, float] = {}  # of the most recent shared item, over the distinct items
    for iid, position in last_position.items():  # most recent first
        weight = knn._position_weight(position + 1, length)
        if weight <= 0.0:
            continue
        for slot in knn._sessions_of[iid]:
            if slot != excluded:
                similarity[slot] = similarity.get(slot, 0.0) + weight
                step.setdefault(slot, knn._step_weight(length - position) * per_distinct)
    ts, serial = knn._ts_of, knn._serial_of
    candidates = sorted(similarity, key=lambda slot: (ts[slot], serial[slot]))
    if knn.sample_size:
        candidates = candidates[-knn.sample_size :]
    candidates.sort(key=lambda slot: (similarity[slot], ts[slot], serial[slot]))
    scores: dict[int, float] = {}
    for slot in sorted(candidates[-knn.k :], key=serial.__getitem__):  # creation order
        gain = step[slot] * similarity[slot]
        if knn.weighting_score == "linear" and gain <= 0.0:
            continue
        items = knn._items_of[slot]
        anchor = max([0] + [click_no for iid, click_no in items.items() if iid in last_position])
        for iid, click_no in items.items():
            item_gain = gain
            if knn.neighbour_item_decay is not None:
                item_gain = gain * math.exp(-abs(click_no - anchor) / knn.neighbour_item_decay)
            scores[iid] = scores.get(iid, 0.0) + item_gain
    if not knn.remind:
        scores.update((iid, 0.0) for iid in last_position if iid in scores)
    if knn.idf_weighting:
        base = 1.0 + knn.idf_weighting * math.log(len(knn))
        for iid in scores:
            boost = math.log(knn._clicks_count[iid]) * -knn.idf_weighting + base
            scores[iid] *= max(boost, 1.0)
    key_of = knn._item_key_of
    ranked = sorted((-score, key_of[iid]) for iid, score in scores.items() if score > 0.0)[:n]
    top = -ranked[0][0] if ranked and knn.normalize else 1.0
    return [(item_id, -negated / top) for negated, item_id in ranked]


@pytest.mark.parametrize(
    "params",
    [
        {"k": 3, "sample_size": 6, "weighting_score": "quadratic", "neighbour_item_decay": 2.0},
        {"k": 4, "sample_size": 0, "idf_weighting": 0.0, "remind": False},
        {"k": 50, "sample_size": 5, "weighting": "linear", "weighting_score": "linear"},
        {
            "k": 2,
            "sample_size": 3,
            "weighting": "log",
            "weighting_score": "log",
            "normalize": False,
        },
        {"k": 500, "weighting": "same", "weighting_score": "div", "neighbour_item_decay": 4.0},
    ],
)
def test_compiled_query_is_bit_identical_to_plain_loops(params: dict[str, object]) -> None:
    # Few items and coarse times make ties at the k-th neighbour and between items common;
    # small bounds evict sessions, truncate them and reuse slots and item ids; queries between
    # events re-append changed sessions and reallocate the flat item array.
    rng = random.Random(repr(sorted(params.items())))
    knn = SessionKNN(max_sessions=40, max_session_len=6, **params)  # type: ignore[arg-type]
    for step in range(1_500):
        session = f"s{rng.randrange(70)}"
        knn.add_item(session, f"i{int(rng.paretovariate(0.8)) % 30}", 1_000 * (step // 25))
        query = [f"i{int(rng.paretovariate(0.8)) % 32}" for _ in range(rng.randint(1, 12))]
        exclude = session if step % 3 else None
        n = rng.choice([1, 5, 60])
        expected = _loop_recommend(knn, query, n, exclude)
        assert knn.recommend(query, n, exclude_session=exclude) == expected
    assert knn._next_serial > 2 * knn.max_sessions
    _assert_consistent(knn)


def test_order_of_unique_is_argsort() -> None:
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 7, 178):
        values = rng.permutation(10 * size + 1)[:size].astype(np.int64)
        for case in (values, np.sort(values)):
            assert knn_module._order_of_unique(case).tolist() == np.argsort(case).tolist()
