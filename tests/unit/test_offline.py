"""Offline replay: the YOOCHOOSE reader on the real files, frozen vs streaming, snapshots."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from fastavro import writer

from processors.config import EngineConfig
from schemas.codec import encode_catalog_item, encode_event, load_schema
from schemas.messages import BehaviourEvent, CatalogItem
from stream.offline import (
    OfflineData,
    Prediction,
    apply_next_item_protocol,
    by_event_time,
    evaluate,
    limit_sessions,
    load_reference_lists,
    load_session_tsv,
    load_snapshot,
    reference_comparison,
    reference_files,
    resolve_input,
    run_offline,
    split_sessions,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "yoochoose-100k"
TRAIN = DATA / "yoochoose-clicks-100k_train_full.txt"
TEST = DATA / "yoochoose-clicks-100k_test.txt"
needs_yoochoose = pytest.mark.skipif(
    not TRAIN.exists() or not TEST.exists(), reason=f"YOOCHOOSE sample not found under {DATA}"
)
NO_PAGES = EngineConfig(page_trigger_types=frozenset(), session_gap_ms=7 * 86_400_000)
T0 = 1_700_000_000_000


# -- the real files ------------------------------------------------------------------------


@needs_yoochoose
def test_yoochoose_reader_handles_the_real_files() -> None:
    train = load_session_tsv(TRAIN, part="train")
    test = load_session_tsv(TEST, part="test")
    assert len(train) == 70_278 and len(test) == 13_568  # every data line, header skipped
    assert len({e.event_id for e in train + test}) == len(train) + len(test)
    first = test[0]
    assert first == BehaviourEvent(
        event_id="test-1-0",
        user_id="s1",
        type="click",
        ts=1_396_860_669_277,  # 1396860669.277 s
        item_id="214536502",
        session_id="1",
    )
    assert all(e.type == "click" and e.user_id == f"s{e.session_id}" for e in test)
    # The published protocol: 3,416 test sessions, 10,152 predictions (no item unseen in train).
    kept, dropped = apply_next_item_protocol(train, test)
    sessions = Counter(e.session_id for e in kept if isinstance(e, BehaviourEvent))
    assert len(sessions) == 3_416
    assert sum(n - 1 for n in sessions.values()) == 10_152
    assert dropped["dropped_short_sessions"] == 0
    # Training precedes the test part in time, and the time sort keeps each session's order.
    assert max(e.ts for e in train) < min(e.ts for e in test)
    ordered = by_event_time(kept)
    positions = [int(e.event_id.rsplit("-", 1)[1]) for e in ordered if e.session_id == "2"]
    assert positions == sorted(positions)


@needs_yoochoose
def test_yoochoose_reference_lists() -> None:
    found = reference_files(DATA)
    assert sorted(found) == ["ar", "gru4rec", "sr", "vsknn"]
    vsknn = load_reference_lists(found["vsknn"])
    assert len(vsknn) == 387 and len(vsknn[("1", 0)]) == 50
    first_100 = list(dict.fromkeys(e.session_id for e in load_session_tsv(TEST, part="t")))[:100]
    # The lists cover the first 100 test sessions but the 100th (996): 99 sessions.
    assert {session for session, _ in vsknn} == set(first_100) - {"996"}


@pytest.mark.slow
@needs_yoochoose
def test_small_frozen_and_streaming_runs_on_yoochoose() -> None:
    train = by_event_time(load_session_tsv(TRAIN, part="train")[:20_000])
    test, _ = apply_next_item_protocol(train, load_session_tsv(TEST, part="test"))
    test = by_event_time(limit_sessions(test, 40))
    reports = {}
    for mode in ("frozen", "streaming"):
        result = run_offline(OfflineData(train, test), config=NO_PAGES, mode=mode)
        reports[mode] = result.report()
    for report in reports.values():
        assert report["test_sessions"] == 40 and report["predictions"] > 80
        assert 0.2 < report["hr@20"] <= 1.0 and 0 < report["mrr@20"] <= report["hr@20"]
        assert report["hr@5"] <= report["hr@10"] <= report["hr@20"]
        assert report["p50_ms"] > 0 and report["events_per_s"] > 0


@pytest.mark.slow
@needs_yoochoose
def test_reference_comparison_on_the_real_lists() -> None:
    """The engine and the four reference lists scored at the same positions by the same code;
    the reference figures match those the data set's README quotes."""
    report = evaluate(
        resolve_input(DATA),
        limit_sessions_n=100,
        pages=False,
        config=EngineConfig(),
    )
    table = {row["name"]: row for row in report["reference"]}
    assert set(table) == {"engine", "ar", "gru4rec", "sr", "vsknn"}
    assert {row["predictions"] for row in table.values()} == {387}
    quoted = {  # ../shared/data/README.md
        "vsknn": (0.610, 0.334),
        "gru4rec": (0.571, 0.329),
        "sr": (0.561, 0.328),
        "ar": (0.592, 0.316),
    }
    for name, (hit_rate, mrr) in quoted.items():
        assert (round(table[name]["hr@20"], 3), round(table[name]["mrr@20"], 3)) == (hit_rate, mrr)


# -- frozen vs streaming on a constructed data set ---------------------------------------


def _session(sid: str, items: list[str], t: int) -> list[BehaviourEvent]:
    return [
        BehaviourEvent(f"{sid}-{n}", f"u{sid}", "click", t + n * 1_000, item, sid)
        for n, item in enumerate(items)
    ]


def _drifting_data() -> OfflineData:
    """Training teaches x -> y (3 sessions); in the test part x -> z takes over (z is known from
    one w -> z session, but never follows x in training). Streaming can learn the new habit;
    frozen cannot."""
    train: list[BehaviourEvent] = []
    t = T0
    for n in range(3):
        train += _session(f"a{n}", ["x", "y"], t)
        t += 60_000
    train += _session("b", ["w", "z"], t)
    t += 60_000
    test: list[BehaviourEvent] = []
    for n in range(60):
        test += _session(f"c{n}", ["x", "z"], t)
        t += 60_000
    return OfflineData(train, test)


def test_streaming_learns_from_test_events_and_frozen_does_not() -> None:
    data = _drifting_data()
    cutoffs = (1, 2, 20)
    frozen = run_offline(data, config=NO_PAGES, mode="frozen", cutoffs=cutoffs).report()
    streaming = run_offline(data, config=NO_PAGES, mode="streaming", cutoffs=cutoffs).report()
    assert frozen["predictions"] == streaming["predictions"] == 60
    # Frozen: after x the neighbours offer x and y; z only comes from the popularity fill.
    assert frozen["hr@2"] == 0.0 and frozen["hr@20"] == 1.0
    # Streaming: once the earlier test sessions outnumber the x -> y ones, z is offered next.
    assert streaming["hr@2"] >= 0.9


def test_frozen_predictions_do_not_depend_on_other_test_sessions() -> None:
    data = _drifting_data()

    def lists(test: list, mode: str) -> dict[tuple[str, str], tuple[str, ...]]:
        got: dict[tuple[str, str], tuple[str, ...]] = {}

        def keep(p: Prediction) -> None:
            got[p.session] = p.ranked

        run_offline(OfflineData(data.train, test), config=NO_PAGES, mode=mode, on_prediction=keep)
        return got

    last_alone = lists(data.test[-2:], "frozen")
    assert lists(data.test, "frozen")[("uc59", "c59")] == last_alone[("uc59", "c59")]
    assert lists(data.test, "streaming")[("uc59", "c59")] != last_alone[("uc59", "c59")]


def test_popularity_baselines() -> None:
    data = _drifting_data()
    popular = run_offline(data, config=NO_PAGES, predictor="popular", cutoffs=(2, 20)).report()
    trending = run_offline(data, config=NO_PAGES, predictor="trending").report()
    # Training clicks: x 3, y 3, w 1, z 1; ties go to the smaller id: x, y, w, z (z 4th).
    assert popular["hr@20"] == 1.0 and popular["mrr@20"] == 0.25
    assert popular["hr@2"] == 0.0
    assert trending["predictions"] == 60 and trending["hr@20"] == 1.0
    with pytest.raises(ValueError):
        run_offline(data, predictor="nope")


def test_protocol_filter_split_and_limit() -> None:
    train = _session("1", ["a", "b"], T0)
    test = _session("2", ["a", "new", "b"], T0 + 10_000) + _session("3", ["a", "new"], T0)
    kept, dropped = apply_next_item_protocol(train, test)
    assert [e.item_id for e in kept] == ["a", "b"]  # session 3 is left with one click
    assert dropped == Counter({"dropped_unseen_clicks": 2, "dropped_short_sessions": 1})
    first, rest = split_sessions(train + test, 0.7)  # int(3 * 0.7) = 2 sessions
    assert {e.session_id for e in first} == {"1", "2"} and {e.session_id for e in rest} == {"3"}
    assert [e.session_id for e in limit_sessions(test, 1)] == ["2", "2", "2"]


def test_reference_comparison_scores_every_list_the_same_way() -> None:
    engine = {
        ("1", 0): Prediction(("s1", "1"), 0, ("a", "b"), "b"),
        ("1", 1): Prediction(("s1", "1"), 1, ("c",), "d"),
        ("2", 0): Prediction(("s2", "2"), 0, ("e",), "e"),  # not in the reference: left out
    }
    references = {"ref": {("1", 0): ["b"], ("1", 1): ["x", "d"]}}
    rows = {row["name"]: row for row in reference_comparison(references, engine)}
    assert rows["engine"]["predictions"] == rows["ref"]["predictions"] == 2
    assert (rows["engine"]["hr@20"], rows["engine"]["mrr@20"]) == (0.5, 0.25)
    assert (rows["ref"]["hr@20"], rows["ref"]["mrr@20"]) == (1.0, 0.75)


# -- snapshots as input ---------------------------------------------------------------------


def _snapshot_file(path: Path, rng: random.Random) -> None:
    """Users shown a few items and clicking their favourite genre's, as a topic snapshot."""
    items = [CatalogItem(f"i{n}", f"Item {n}", (("drama", "comedy")[n % 2],)) for n in range(8)]
    records = []
    offsets = Counter()

    def add(topic: str, partition: int, ts: int, key: str, value: bytes) -> None:
        records.append(
            {
                "topic": topic,
                "partition": partition,
                "offset": offsets[(topic, partition)],
                "timestamp": ts,
                "key": key.encode(),
                "value": value,
                "headers": [{"key": "content-type", "value": b"application/json"}],
            }
        )
        offsets[(topic, partition)] += 1

    for item in items:
        add("insession.catalog", 0, T0, item.item_id, encode_catalog_item(item))
    t = T0 + 1_000
    for user in range(40):
        likes = user % 2
        for visit in range(6):
            shown = rng.sample(items, 4)
            t += 5_000
            for item in shown:
                event = BehaviourEvent(
                    f"u{user}-{visit}-imp-{item.item_id}",
                    f"u{user}",
                    "impression",
                    t,
                    item.item_id,
                    f"u{user}-s",
                    recommendation_id=f"r{user}-{visit}",
                )
                add("insession.events", user % 3, t, f"u{user}", encode_event(event))
            liked = [i for i in shown if int(i.item_id[1:]) % 2 == likes]
            for item in shown[:2]:  # the first two were looked at: a click or a scroll-past
                if item in liked[:1]:
                    continue
                t += 500
                event = BehaviourEvent(
                    f"u{user}-{visit}-pass-{item.item_id}",
                    f"u{user}",
                    "scroll_past",
                    t,
                    item.item_id,
                    f"u{user}-s",
                    recommendation_id=f"r{user}-{visit}",
                )
                add("insession.events", user % 3, t, f"u{user}", encode_event(event))
            for item in liked[:1]:
                t += 1_000
                event = BehaviourEvent(
                    f"u{user}-{visit}-click",
                    f"u{user}",
                    "click",
                    t,
                    item.item_id,
                    f"u{user}-s",
                    recommendation_id=f"r{user}-{visit}",
                )
                add("insession.events", user % 3, t, f"u{user}", encode_event(event))
    add("insession.events", 0, t + 1, "bad", b"{not json")
    with open(path, "wb") as out:
        writer(out, load_schema("SnapshotRecord"), records)


def test_snapshot_input_reports_click_model_quality(tmp_path: Path) -> None:
    path = tmp_path / "events.avro"
    _snapshot_file(path, random.Random(4))
    records, stats = load_snapshot(path)
    assert stats["dead_letters"] == 1
    assert sum(isinstance(r, CatalogItem) for r in records) == 8
    streaming = evaluate(resolve_input(path), mode="streaming", train_fraction=0.5)
    assert streaming["format"] == "snapshot" and streaming["test_dead_letters"] == 1
    assert streaming["labels"] > 50 and 0 < streaming["positives"] < streaming["labels"]
    assert streaming["logloss"] is not None and streaming["auc"] is not None
    frozen = evaluate(resolve_input(path), mode="frozen", train_fraction=0.5)
    assert frozen["labels"] == 0 and frozen["auc"] is None  # frozen: nothing is learned
    assert frozen["predictions"] == streaming["predictions"] > 0
