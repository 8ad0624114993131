"""Model snapshots: round trips, and every kind of bad blob fails with a SnapshotError."""

from __future__ import annotations

import hashlib
import hmac
import zlib

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from online_models.artwork_bandit import ArtworkBandit
from online_models.logistic import OnlineLogistic
from online_models.snapshot import (
    FORMAT_VERSION,
    MAGIC,
    Snapshot,
    SnapshotError,
    SnapshotFormatError,
    SnapshotTamperedError,
    SnapshotVersionError,
    dump_snapshot,
    load_snapshot,
)

KEY = b"0123456789abcdef0123456789abcdef"
HEADER_SIZE = len(MAGIC) + 1
ENVELOPE_SIZE = HEADER_SIZE + 32


def _signed(version: int, payload: bytes, key: bytes = KEY) -> bytes:
    """A blob laid out by hand, to test what dump_snapshot itself never writes."""
    header = MAGIC + bytes([version])
    return header + hmac.new(key, header + payload, hashlib.sha256).digest() + payload


def _small_blob() -> bytes:
    return dump_snapshot({"m": {"w": [1.5, -2.0]}}, key=KEY, created_at=7, metadata={"p": 3})


def test_round_trip_of_real_models() -> None:
    logistic = OnlineLogistic(["genre_affinity", "clicks_count_session"])
    rng = np.random.default_rng(0)
    for row in rng.uniform(0, 5, (300, 2)):
        logistic.learn_vector(row, bool(row[0] > 2.5))
    bandit = ArtworkBandit(seed=3)
    for i in range(300):
        bandit.update(f"art-{i % 7}", i % 5 == 0, context=("tv", "phone")[i % 2])
    metadata = {"offsets": "events:0=1200,1=980", "code_version": 3}

    blob = dump_snapshot(
        {"ctr": logistic.to_state(), "artwork": bandit.to_state()},
        key=KEY,
        created_at=1_765_000_000_000,
        metadata=metadata,
    )
    snapshot = load_snapshot(blob, key=KEY)

    assert snapshot == Snapshot(
        version=FORMAT_VERSION,
        created_at=1_765_000_000_000,
        metadata=metadata,
        models={"ctr": logistic.to_state(), "artwork": bandit.to_state()},
    )
    restored = OnlineLogistic.from_state(snapshot.models["ctr"])
    probe = rng.uniform(0, 5, (50, 2))
    assert (
        restored.predict_proba_many(probe).tolist() == logistic.predict_proba_many(probe).tolist()
    )
    assert ArtworkBandit.from_state(snapshot.models["artwork"]).to_state() == bandit.to_state()


def test_dump_is_deterministic_and_compressed() -> None:
    states = {"m": {"weights": [0.0] * 5_000}}
    first = dump_snapshot(states, key=KEY, created_at=1)
    assert dump_snapshot(states, key=KEY, created_at=1) == first
    assert len(first) < len(orjson.dumps(states)) // 10


def test_numpy_values_are_serialized() -> None:
    states = {"m": {"w": np.array([1.0, 2.5]), "n": np.int64(4), "x": np.float64(0.5)}}
    loaded = load_snapshot(dump_snapshot(states, key=KEY, created_at=0), key=KEY)
    assert loaded.models == {"m": {"w": [1.0, 2.5], "n": 4, "x": 0.5}}


def test_every_flipped_byte_is_detected() -> None:
    blob = _small_blob()
    for position in range(len(blob)):
        for bit in (0x01, 0x80):
            corrupted = bytearray(blob)
            corrupted[position] ^= bit
            expected = SnapshotFormatError if position < len(MAGIC) else SnapshotTamperedError
            with pytest.raises(expected):
                load_snapshot(bytes(corrupted), key=KEY)


def test_every_truncation_is_detected() -> None:
    blob = _small_blob()
    for length in range(len(blob)):
        expected = SnapshotFormatError if length < ENVELOPE_SIZE else SnapshotTamperedError
        with pytest.raises(expected):
            load_snapshot(blob[:length], key=KEY)
    with pytest.raises(SnapshotTamperedError):
        load_snapshot(blob + b"\x00", key=KEY)


def test_wrong_key_is_tampered() -> None:
    with pytest.raises(SnapshotTamperedError, match="tampered, or signed with another key"):
        load_snapshot(_small_blob(), key=b"another key")


def test_future_version_is_a_version_error() -> None:
    payload = zlib.compress(orjson.dumps({"created_at": 1, "metadata": {}, "models": {}}))
    assert load_snapshot(_signed(FORMAT_VERSION, payload), key=KEY).created_at == 1
    with pytest.raises(SnapshotVersionError, match="version 2"):
        load_snapshot(_signed(2, payload), key=KEY)
    # Unsigned, the version byte is just a tampered byte: nothing is trusted before the tag.
    with pytest.raises(SnapshotTamperedError):
        load_snapshot(_signed(2, payload, key=b"someone else"), key=KEY)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not zlib",
        zlib.compress(b"not json"),
        zlib.compress(b"[1, 2]"),
        zlib.compress(b'{"created_at": "yesterday", "metadata": {}, "models": {}}'),
        zlib.compress(b'{"created_at": true, "metadata": {}, "models": {}}'),
        zlib.compress(b'{"created_at": 1, "metadata": {}, "models": {"m": [1]}}'),
        zlib.compress(b'{"created_at": 1, "models": {}}'),
    ],
)
def test_signed_but_malformed_payload_is_a_format_error(payload: bytes) -> None:
    with pytest.raises(SnapshotFormatError):
        load_snapshot(_signed(FORMAT_VERSION, payload), key=KEY)


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key is empty"):
        dump_snapshot({}, key=b"", created_at=0)
    with pytest.raises(ValueError, match="key is empty"):
        load_snapshot(_small_blob(), key=b"")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="metadata"):
        dump_snapshot({}, key=KEY, created_at=0, metadata={"ok": 1.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="created_at"):
        dump_snapshot({}, key=KEY, created_at=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON"):
        dump_snapshot({"m": {"f": object()}}, key=KEY, created_at=0)
    with pytest.raises(TypeError, match="blob"):
        load_snapshot("INSNAP", key=KEY)  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_snapshot_errors(blob: bytes) -> None:
    with pytest.raises(SnapshotError):
        load_snapshot(blob, key=KEY)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_the_magic_raise_only_snapshot_errors(tail: bytes) -> None:
    with pytest.raises(SnapshotError):
        load_snapshot(MAGIC + tail, key=KEY)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # orjson refuses wider integers
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(zlib.compress),
    _JSON_VALUES.map(orjson.dumps).map(zlib.compress),
    st.fixed_dictionaries(
        {"created_at": _JSON_VALUES, "metadata": _JSON_VALUES, "models": _JSON_VALUES}
    )
    .map(orjson.dumps)
    .map(zlib.compress),
)


@given(st.integers(0, 255), _PAYLOADS)
def test_signed_arbitrary_payloads_load_or_raise_snapshot_errors(
    version: int, payload: bytes
) -> None:
    try:
        snapshot = load_snapshot(_signed(version, payload), key=KEY)
    except SnapshotError:
        return
    assert isinstance(snapshot.created_at, int)
    assert all(isinstance(state, dict) for state in snapshot.models.values())
