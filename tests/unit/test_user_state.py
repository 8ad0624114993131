"""The compact user state: the same values as the plain containers it replaced, and every
checkpoint version still read."""

from __future__ import annotations

import base64
import json
import math
import random
import sys
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from processors import user_state
from processors.ids import stable_id
from processors.user_state import (
    RECENT_PAGES,
    STATE_VERSION,
    FloatMap,
    PairMap,
    PendingImpression,
    UserState,
    append_row,
    page_id,
    page_key,
)

#: A mid-session checkpoint written by the version-3 code (pages, pending impression, taste
#: evidence, churn snapshots, a full dedup window).
V3_CHECKPOINT = Path(__file__).parent / "data" / "user_state_v3.json"


def _v3() -> dict[str, Any]:
    return json.loads(V3_CHECKPOINT.read_text())


def test_version_3_checkpoints_are_read_with_every_value() -> None:
    raw = _v3()
    state = UserState.from_dict(raw)
    data = state.to_dict()
    assert data["v"] == STATE_VERSION == 5
    assert data.pop("recent_pages") == [page_key(page) for page in raw.pop("recent_pages")]
    assert [row.tolist() for row in state.churn_snapshot_rows()] == raw["churn_snapshots"]
    assert data.pop("churn_width") == len(raw["churn_snapshots"][0])
    data.pop("churn_records"), raw.pop("churn_snapshots")
    data.pop("v"), raw.pop("v")
    assert data == raw  # pending feature rows and evidence exactly
    for page in _v3()["recent_pages"]:
        assert state.page_variant(page) == "personalized"
    assert state.page_variant("rec-0000000000000000") is None
    # And the version-5 checkpoint of it reads back the same.
    again = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert again.to_dict() == state.to_dict()


def test_version_4_checkpoints_are_read_with_their_churn_snapshot_lists() -> None:
    state = UserState.from_dict(_v3())
    v4 = state.to_dict() | {"v": 4, "churn_snapshots": _v3()["churn_snapshots"]}
    del v4["churn_records"], v4["churn_width"]
    assert UserState.from_dict(v4).to_dict() == state.to_dict()


def test_version_2_checkpoints_are_read_without_taste_evidence() -> None:
    raw = _v3() | {"v": 2}
    del raw["genre_evidence"], raw["style_evidence"]
    state = UserState.from_dict(raw)
    assert not state.genre_evidence and not state.style_evidence
    assert state.last_recommendation_id == raw["last_recommendation_id"]


def test_recent_pages_behave_like_the_dict_they_replaced() -> None:
    """Insertion order, a page served again keeps its place, the oldest is forgotten first,
    and the last page served is remembered, across checkpoints."""
    rng = random.Random(3)
    state = UserState("u")
    state.variant = "holdout"
    reference: dict[str, str] = {}
    last = ""
    ids = [stable_id("rec", "u", f"e{k}") for k in range(20)] + ["client-made-id"]
    for step in range(400):
        page = rng.choice(ids)
        state.remember_page(page)
        reference[page] = "holdout"
        if len(reference) > RECENT_PAGES:
            del reference[next(iter(reference))]
        last = page
        probe = rng.choice(ids)
        assert state.page_variant(probe) == reference.get(probe)
        assert state.page_keys() == [page_key(p) for p in reference]
        if last != "client-made-id":
            assert state.last_recommendation_id == last
        if step % 50 == 0:
            state = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))


def test_page_keys_of_engine_ids_are_their_number() -> None:
    page = stable_id("rec", "u1", "e1")
    assert page_id(page_key(page)) == page
    for other in ("rec-0x0000000000000ff", "rec-00000000000000FF", "REC-00000000000000ff", ""):
        assert page_key(other) != 255
        assert 0 <= page_key(other) < 2**64


def test_churn_snapshots_are_kept_exactly() -> None:
    """The sparse flat store against a list of rows: the first and the latest ``limit - 1``."""
    rng = random.Random(7)
    specials = [0.0, -0.0, 1.0, 5e-324, -1e308]
    for limit in (1, 2, 4):
        state = UserState("u")
        reference: list[list[float]] = []
        for _ in range(12):
            row = [
                rng.choice(specials) if rng.random() < 0.6 else rng.uniform(-3, 3)
                for _ in range(19)
            ]
            state.add_churn_snapshot(row, limit)
            reference.append(row)
            if len(reference) > limit:
                del reference[1]
            got = [r.tolist() for r in state.churn_snapshot_rows()]
            assert [[(v, math.copysign(1, v)) for v in r] for r in got] == [
                [(v, math.copysign(1, v)) for v in r] for r in reference
            ]
        restored = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
        assert [r.tolist() for r in restored.churn_snapshot_rows()] == reference
    odd = UserState("u")  # the coded records keep what JSON numbers cannot
    odd.add_churn_snapshot([math.nan, 0.0, math.inf, -math.inf], 4)
    for held in (odd, UserState.from_dict(orjson.loads(orjson.dumps(odd.to_dict())))):
        first = held.churn_snapshot_rows()[0]
        assert math.isnan(first[0]) and first[1:].tolist() == [0.0, math.inf, -math.inf]
    with pytest.raises(ValueError, match="at most"):
        odd.add_churn_snapshot([1.0] * 53, 4)


def test_malformed_churn_records_in_a_checkpoint_are_refused() -> None:
    """A checkpoint is read from Redis, which others can write: records that are not exactly
    what the encoder writes (cut short, a stray byte, a mask bit past the width, a wrong
    width) raise ValueError, which the worker counts as an unreadable state."""
    state = UserState("u")
    for step in range(3):
        state.add_churn_snapshot([1.0, 0.0, 0.25 * step, math.pi, 0.0, 2.0], 4)
    good = state.to_dict()
    assert UserState.from_dict(good).churn_snapshot_rows() == state.churn_snapshot_rows()
    flat = state.churn_snapshots
    assert flat[0] & 0b10 == 0  # value 1 is 0.0: not kept
    broken = [
        flat[:-1],
        flat + b"\x00",
        bytes([flat[0] | 0b10]) + flat[1:],  # says value 1 is kept: every code shifts
        bytes([flat[0] | 0b1000000]) + flat[1:],  # a value past the six
    ]
    for records in broken:
        raw = good | {"churn_records": base64.b64encode(records).decode()}
        with pytest.raises(ValueError):
            UserState.from_dict(raw)
    for width in (5, 0, 53):
        with pytest.raises(ValueError):
            UserState.from_dict(good | {"churn_width": width})
    with pytest.raises(ValueError):
        UserState.from_dict(good | {"churn_records": "not base64!"})


def test_churn_snapshot_values_are_coded_compactly_and_read_back_bit_for_bit() -> None:
    """Flags, logs of small counts and the hour's sine and cosine in one byte, float32-exact
    values in five, the rest in nine; every value (signs of zeros, NaN) as it was."""
    hour = 2.0 * math.pi * 7 / 24.0
    coded = [1.0, math.log1p(3), math.sin(hour), math.cos(hour), math.log1p(200)]
    state = UserState("u")
    state.add_churn_snapshot([0.0, *coded, 0.0, 0.0], 4)
    assert len(state.churn_snapshots) == 2 + len(coded)  # mask, payload length, one code each
    state.add_churn_snapshot([1.5, -0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0], 4)
    assert len(state.churn_snapshots) == 2 + len(coded) + 2 + 5 + 5 + 9
    big = [math.nan, -1e308, 5e-324, math.inf, math.log1p(201), 0.0, 0.0, 2.0**60]
    state.add_churn_snapshot(big, 4)
    rows = state.churn_snapshot_rows()
    bits = [array("d", row).tobytes() for row in rows]
    assert bits == [
        array("d", [0.0, *coded, 0.0, 0.0]).tobytes(),
        array("d", [1.5, -0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]).tobytes(),
        array("d", big).tobytes(),
    ]
    with pytest.raises(ValueError, match="after 8"):
        state.add_churn_snapshot([1.0] * 9, 4)
    assert len(state.churn_snapshot_rows()) == 3


def test_pending_features_keep_their_values() -> None:
    """Rows from the served-page cache (float32 values) are kept in 4 bytes a value, others in
    8; the learner sees the same numbers either way."""
    served = array("f", [0.1, -2.5, 3.0]).tolist()  # what ServedFeatures.features_of returns
    recomputed = [0.1, -2.5, 3.0]
    for row, typecode in ((served, "f"), (recomputed, "d"), ([1e300, 0.0], "d")):
        pending = PendingImpression("rec-1", 5, row, "art")
        assert pending.features.typecode == typecode
        assert pending.features.tolist() == row
        assert (
            PendingImpression.from_list(
                orjson.loads(orjson.dumps(pending.to_list()))
            ).features.tolist()
            == row
        )


def test_float_map_behaves_like_a_dict() -> None:
    """Insertion order, deletes, pops, scaling and re-insertion (continue watching) as a dict,
    every value bit for bit."""
    rng = random.Random(11)
    compact, reference = FloatMap(), {}
    for _ in range(2_000):
        key = f"g{rng.randrange(10)}"
        roll = rng.random()
        if roll < 0.2 and key in reference:
            del compact[key], reference[key]
        elif roll < 0.3:
            assert compact.pop(key, None) == reference.pop(key, None)
        elif roll < 0.4:
            factor = rng.uniform(0.1, 1.0)
            compact.scale(factor)
            for name in reference:
                reference[name] *= factor
        elif key in reference and roll < 0.6:
            compact[key] *= 0.5
            reference[key] *= 0.5
        else:
            compact[key] = reference[key] = compact.get(key, 0.0) + rng.choice(
                [rng.uniform(-1, 1), -0.0]
            )
        assert [(k, v, math.copysign(1, v)) for k, v in compact.items()] == [
            (k, v, math.copysign(1, v)) for k, v in reference.items()
        ]
        assert compact.values() == list(reference.values())
        assert list(reversed(compact)) == list(reversed(reference))
        assert (
            min(compact, key=lambda g: abs(compact[g]))
            == min(reference, key=lambda g: abs(reference[g]))
            if reference
            else not compact
        )
    assert compact == reference
    with pytest.raises(KeyError):
        compact.pop("absent")
    with pytest.raises(KeyError):
        compact["absent"]


def test_pair_map_behaves_like_a_dict_of_pairs() -> None:
    rng = random.Random(12)
    compact, reference = PairMap(), {}
    for _ in range(2_000):
        key = f"g{rng.randrange(8)}"
        if rng.random() < 0.25 and key in reference:
            del compact[key], reference[key]
        else:
            first, second = compact.get(key, (0.0, 0.0))
            value = (first + rng.random(), second + rng.choice([1.0, -0.0, 2.5]))
            compact[key] = reference[key] = value
        assert [(k, compact[k]) for k in compact] == list(reference.items())
        assert compact.get("absent", (0.0, 0.0)) == (0.0, 0.0)


def test_out_of_range_keys_are_an_unreadable_checkpoint() -> None:
    """The worker skips a checkpoint that raises ValueError; other errors would escape."""
    for field, value in (("recent_pages", [2**64]), ("recent_event_ids", [-1])):
        raw = UserState("u").to_dict() | {field: value}
        with pytest.raises(ValueError, match="64-bit"):
            UserState.from_dict(raw)


def _bump(counts: dict[str, int], item_id: str, limit: int) -> None:
    """The two dicts the exposure counts replaced (``session_window`` before)."""
    counts[item_id] = counts.get(item_id, 0) + 1
    if len(counts) > limit:
        del counts[next(iter(counts))]


@pytest.mark.parametrize(
    ("limit", "titles", "heavy"), [(128, 300, False), (5, 12, False), (6, 6, True)]
)
def test_exposure_counts_behave_like_the_two_dicts_they_replaced(
    limit: int, titles: int, heavy: bool
) -> None:
    """Same counts, same order, the same title forgotten first, across checkpoints; counts
    past 255 (``heavy``: a few titles seen again and again) are kept exactly too."""
    rng = random.Random(limit)
    ids = [f"t{k}" for k in range(titles)]
    state = UserState("u")
    impressed: dict[str, int] = {}
    scrolled: dict[str, int] = {}
    most = 0
    wide = False
    for step in range(3000):
        item_id = rng.choice(ids[:2] if heavy and rng.random() < 0.9 else ids)
        if rng.random() < 0.6:
            state.count_impression(item_id, limit)
            _bump(impressed, item_id, limit)
        else:
            state.count_scroll_past(item_id, limit)
            _bump(scrolled, item_id, limit)
        most = max(most, impressed.get(item_id, 0), scrolled.get(item_id, 0))
        wide = wide or isinstance(state.session_exposure, array)
        probe = rng.choice(ids)
        assert state.exposure(probe) == (impressed.get(probe, 0), scrolled.get(probe, 0))
        if step % 97 == 0:
            assert list(state.impressed_counts().items()) == list(impressed.items())
            assert list(state.scrolled_counts().items()) == list(scrolled.items())
            state = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert list(state.impressed_counts().items()) == list(impressed.items())
    assert list(state.scrolled_counts().items()) == list(scrolled.items())
    assert set(state.session_exposed) == impressed.keys() | scrolled.keys()
    assert wide == (most > 255) == heavy


def test_exposure_counts_are_one_byte_each_and_bad_counts_are_refused() -> None:
    state = UserState("u")
    for item_id in ("a", "b", "a", "c"):
        state.count_impression(item_id, 128)
    state.count_scroll_past("d", 128)
    state.count_scroll_past("a", 128)
    assert state.session_exposed == ("a", "b", "c", "d")
    assert state.session_exposure == bytes([2, 1, 1, 0, 1, 0, 0, 1])
    state.count_impression("d", 128)  # scrolled past first: now among the impressed, last
    assert state.session_exposed == ("a", "b", "c", "d")
    assert list(state.impressed_counts()) == ["a", "b", "c", "d"]
    for bad in (0, -1, 2**64):
        raw = state.to_dict() | {"session_scrolled": {"a": bad}}
        with pytest.raises(ValueError):
            UserState.from_dict(raw)


def test_equal_tuples_are_shared_and_stay_independent() -> None:
    """A restored state holds one tuple for equal clicked titles and item sequence and for
    the genres of its affinity and evidence; changing one side leaves the other as it was."""
    state = UserState("u")
    state.session_clicked = state.last_items = ("a", "b")
    state.genre_evidence = PairMap({"horror": (1.0, 2.0), "drama": (0.0, 1.0)})
    state.genre_affinity = FloatMap({"horror": 0.5, "drama": -0.25})
    state.last_ts = state.affinity_ts = 1_700_000_000_123
    restored = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored.session_clicked is restored.last_items
    assert restored.genre_affinity._keys is restored.genre_evidence._keys
    assert restored.affinity_ts is restored.last_ts
    restored.genre_affinity["comedy"] = 1.0
    del restored.genre_evidence["horror"]
    assert list(restored.genre_affinity.items()) == [
        ("horror", 0.5),
        ("drama", -0.25),
        ("comedy", 1.0),
    ]
    assert list(restored.genre_evidence.items()) == [("drama", (0.0, 1.0))]
    assert restored.to_dict() | {"genre_affinity": {}, "genre_evidence": {}} == state.to_dict() | {
        "genre_affinity": {},
        "genre_evidence": {},
    }
    unequal = state.to_dict() | {"last_items": ["b", "a"]}
    assert UserState.from_dict(unequal).session_clicked == ("a", "b")


def test_states_without_pending_impressions_share_one_read_only_empty_dict() -> None:
    first, second = UserState("a"), UserState("b")
    assert first.pending is second.pending is user_state.NO_PENDING
    with pytest.raises(TypeError):
        first.pending["t1"] = PendingImpression("rec-1", 5, [0.5], None)
    assert first.pending.pop("t1", None) is None and not second.pending
    own = first.pending_to_add()
    own["t1"] = PendingImpression("rec-1", 5, [0.5], None)
    assert first.pending is own and second.pending is user_state.NO_PENDING
    restored = UserState.from_dict(orjson.loads(orjson.dumps(first.to_dict())))
    assert restored.pending["t1"].to_list() == own["t1"].to_list()
    assert UserState.from_dict(second.to_dict()).pending is user_state.NO_PENDING


def test_event_id_window_matches_whole_entries_only() -> None:
    """An id whose fingerprint's bytes straddle two entries of the ring is not in it."""
    needle = user_state._needle("x")
    straddle = bytes(4) + needle + bytes(4)  # two entries, the needle across their border
    window = user_state.EventIdWindow.from_fingerprints(memoryview(straddle).cast("Q").tolist(), 4)
    assert len(window) == 2 and "x" not in window
    window.extend(["x", "y", "z"])
    assert "x" in window and len(window) == 4
    window.append("w")  # full: the oldest entry goes, the straddling bytes with it
    assert window.fingerprints()[-1] == int.from_bytes(user_state._needle("w"), sys.byteorder)
    assert ["x" in window, "w" in window, len(window)] == [True, True, 4]


@pytest.mark.parametrize("width", [0, 1, 28, 29, 52])
def test_churn_snapshots_of_any_width_are_walked_and_read_back(width: int) -> None:
    """Wide snapshots (bodies past 255 bytes: a two-byte length) as the usual ones."""
    rng = random.Random(width)
    state = UserState("u")
    reference: list[list[float]] = []
    for _ in range(7):
        row = [rng.choice([0.0, 1.0, rng.random(), 0.5]) for _ in range(width)]
        state.add_churn_snapshot(row, 4)
        reference.append(row)
        if len(reference) > 4:
            del reference[1]
        assert [r.tolist() for r in state.churn_snapshot_rows()] == reference


def test_adding_to_several_keys_at_once_gives_the_per_key_sums() -> None:
    """`PairMap.add_to_each` and `FloatMap.decay_and_add` are the per-key updates they
    replace, bit for bit, repeated keys and new keys included."""
    rng = random.Random(7)
    pairs, pair_reference = PairMap(), PairMap()
    floats, float_reference = FloatMap(), FloatMap()
    genres = ("horror", "comedy", "drama", "anime")
    for _ in range(300):
        keys = tuple(rng.choice(genres) for _ in range(rng.randint(1, 3)))
        first, second = rng.random() / 3.0, rng.choice((0.0, -0.0, 1.0, rng.random()))
        assert pairs.add_to_each(keys, first, second) == len(set(pairs) | set(keys))
        for key in keys:
            old_first, old_second = pair_reference.get(key, (0.0, 0.0))
            pair_reference[key] = (old_first + first, old_second + second)
        factor = rng.choice((1.0, rng.random()))
        assert floats.decay_and_add(factor, keys, -second) == len(floats)
        if factor != 1.0 and float_reference:
            float_reference.scale(factor)
        for key in keys:
            float_reference[key] = float_reference.get(key, 0.0) + -second
        assert list(pairs) == list(pair_reference) and list(floats) == list(float_reference)
        assert pairs._values == pair_reference._values
        assert floats._values == float_reference._values


def test_event_id_fingerprints_are_the_stable_hash_in_machine_order() -> None:
    from processors.ids import stable_hash64

    for event_id in ("", "e-1", "é" * 40, "x" * 300):
        expected = stable_hash64(event_id).to_bytes(8, sys.byteorder)
        assert user_state._needle(event_id) == expected


def test_page_variant_knows_the_recent_pages_asked_about_in_any_order() -> None:
    """The memoized page needle answers for the page asked about, whichever came before."""
    state = UserState("u1")
    state.variant = "personalized"
    pages = [stable_id("rec", "u1", f"e{index}") for index in range(3)]
    for page in pages[:2]:
        state.remember_page(page)
    for asked in (pages[0], pages[0], pages[2], pages[1], "not-a-page", pages[1]):
        expected = "personalized" if asked in pages[:2] else None
        assert state.page_variant(asked) == expected


def _append_array(state: UserState, row: np.ndarray, limit: int) -> None:
    """`add_churn_snapshot` as `processors.features.write_session_snapshot` does it."""
    out = bytearray(state.churn_record_room(len(row)))
    state.churn_snapshots = bytes(out[: append_row(state.churn_snapshots, row, limit, out)])


@pytest.mark.parametrize("width", [0, 1, 8, 19, 28, 29, 52])
def test_churn_snapshots_of_float64_arrays_are_the_records_of_lists(width: int) -> None:
    """The engine's rows (float64 arrays, appended by the compiled `append_row` inside its
    churn check's kernel) give the records lists of the same values give, at every limit:
    codes, float32 and float64 values, signs of zeros, NaN, two-byte lengths, the second
    record left out."""
    rng = random.Random(width)
    specials = [0.0, -0.0, 1.0, math.log1p(3), 5e-324, -1e308, math.nan, math.inf, 0.1, 2.5]
    for limit in (0, 1, 2, 4):
        from_lists, from_arrays = UserState("u"), UserState("u")
        for _ in range(9):
            row = [
                rng.choice(specials) if rng.random() < 0.5 else rng.uniform(-3, 3)
                for _ in range(width)
            ]
            from_lists.add_churn_snapshot(row, limit)
            _append_array(from_arrays, np.array(row), limit)
            assert from_arrays.churn_snapshots == from_lists.churn_snapshots
    wide, rows = UserState("u"), []  # every value a float64: bodies past 255 bytes
    for _ in range(6):
        rows.append([rng.uniform(-3, 3) for _ in range(width)])
        _append_array(wide, np.array(rows[-1]), 4)
    assert [row.tolist() for row in wide.churn_snapshot_rows()] == [rows[0], *rows[-3:]]
