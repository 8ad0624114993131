"""Authenticated, versioned model snapshots: HMAC-signed, zlib-compressed JSON, never pickle."""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Snapshot",
    "SnapshotError",
    "SnapshotFormatError",
    "SnapshotTamperedError",
    "SnapshotVersionError",
    "dump_snapshot",
    "load_snapshot",
]

MAGIC = b"INSNAP"
FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = frozenset({1})
_TAG_SIZE = hashlib.sha256().digest_size
_HEADER_SIZE = len(MAGIC) + 1
_ENVELOPE_SIZE = _HEADER_SIZE + _TAG_SIZE


class SnapshotError(Exception):
    """A blob could not be loaded as a snapshot; the only error `load_snapshot` raises on data."""


class SnapshotFormatError(SnapshotError):
    """The blob is not a snapshot, is truncated, or its signed payload is malformed."""


class SnapshotTamperedError(SnapshotError):
    """The signature does not match: the blob was altered, or signed with another key."""


class SnapshotVersionError(SnapshotError):
    """The blob is a genuine snapshot in a format version this code cannot read."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A loaded snapshot.

    Attributes
    ----------
    version
        Format version of the blob it came from.
    created_at
        Event time the caller stamped it with (the core has no clock).
    metadata
        Free-form labels: offsets, code version, host.
    models
        Model name to that model's ``to_state()`` dict.

    """

    version: int
    created_at: int
    metadata: Mapping[str, str | int]
    models: Mapping[str, dict[str, Any]]


def dump_snapshot(
    models: Mapping[str, dict[str, Any]],
    *,
    key: bytes,
    created_at: int,
    metadata: Mapping[str, str | int] | None = None,
) -> bytes:
    """Serialize and sign model states.

    Layout: ``b"INSNAP"``, one format-version byte, a 32-byte HMAC-SHA256 tag over the first
    seven bytes and the payload, then the payload: zlib-compressed JSON of ``{"created_at",
    "metadata", "models"}``. The envelope (magic, version byte, tag) is the same in every
    format version, so a reader checks the signature before it interprets anything else.

    Parameters
    ----------
    models
        Model name to JSON-safe state (str keys; floats, ints, str, bools, None, lists, dicts;
        numpy arrays and scalars are accepted). NaN and infinities would be written as null,
        so states must keep them out.
    key
        The HMAC key, non-empty; 32 random bytes recommended. Anyone holding it can forge
        snapshots.
    created_at
        Event time to stamp, e.g. in milliseconds.
    metadata
        Labels with str keys and str or int values.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        If the key is empty.
    TypeError
        If an argument or a state is not of a serializable type.

    Examples
    --------
    >>> blob = dump_snapshot({"ctr": {"weights": [0.5, -1.0]}}, key=b"k" * 32, created_at=1000)
    >>> blob[:6]
    b'INSNAP'
    >>> load_snapshot(blob, key=b"k" * 32).models["ctr"]["weights"]
    [0.5, -1.0]

    """
    _check_key(key)
    if isinstance(created_at, bool) or not isinstance(created_at, int):
        raise TypeError(f"created_at must be an int, got {type(created_at).__name__}")
    metadata = dict(metadata or {})
    for label, value in metadata.items():
        if (
            not isinstance(label, str)
            or isinstance(value, bool)
            or not isinstance(value, str | int)
        ):
            raise TypeError(f"metadata must map str to str or int, got {label!r}: {value!r}")
    if not all(isinstance(name, str) for name in models):
        raise TypeError("model names must be str")
    document = {"created_at": created_at, "metadata": metadata, "models": dict(models)}
    try:
        payload = zlib.compress(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"model state is not JSON-serializable: {exc}") from exc
    header = MAGIC + bytes([FORMAT_VERSION])
    return header + _sign(key, header, payload) + payload


def load_snapshot(blob: bytes, *, key: bytes) -> Snapshot:
    """Verify and decode a snapshot; nothing is parsed before the signature checks out.

    Parameters
    ----------
    blob
        Bytes produced by `dump_snapshot`.
    key
        The key it was signed with.

    Returns
    -------
    Snapshot

    Raises
    ------
    SnapshotFormatError
        Not a snapshot (no magic), truncated, or a signed payload that does not decode.
    SnapshotTamperedError
        The signature does not match.
    SnapshotVersionError
        Correctly signed, in a format version this code cannot read.
    ValueError
        If the key is empty.

    """
    _check_key(key)
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError(f"blob must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        raise SnapshotFormatError("not a snapshot: missing the INSNAP magic prefix")
    if len(blob) < _ENVELOPE_SIZE:
        raise SnapshotFormatError(
            f"truncated snapshot: {len(blob)} bytes, the envelope alone is {_ENVELOPE_SIZE}"
        )
    header = blob[:_HEADER_SIZE]
    tag = blob[_HEADER_SIZE:_ENVELOPE_SIZE]
    payload = blob[_ENVELOPE_SIZE:]
    if not hmac.compare_digest(tag, _sign(key, header, payload)):
        raise SnapshotTamperedError(
            "snapshot signature does not match: tampered, or signed with another key"
        )
    version = header[-1]
    if version not in _SUPPORTED_VERSIONS:
        raise SnapshotVersionError(
            f"snapshot format version {version} is not supported; this code reads "
            f"{sorted(_SUPPORTED_VERSIONS)} (written by a newer insession?)"
        )
    return _decode_v1(payload, version)


def _decode_v1(payload: bytes, version: int) -> Snapshot:
    """Decode a signed version-1 payload, checking its shape."""
    try:
        document = orjson.loads(zlib.decompress(payload))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise SnapshotFormatError(f"signed payload does not decode: {exc}") from exc
    if not isinstance(document, dict):
        raise SnapshotFormatError("signed payload is not a JSON object")
    created_at = document.get("created_at")
    metadata = document.get("metadata")
    models = document.get("models")
    if (
        isinstance(created_at, bool)
        or not isinstance(created_at, int)
        or not isinstance(metadata, dict)
        or not isinstance(models, dict)
        or not all(isinstance(state, dict) for state in models.values())
    ):
        raise SnapshotFormatError(
            "signed payload lacks created_at (int), metadata (object) or models (objects)"
        )
    return Snapshot(version=version, created_at=created_at, metadata=metadata, models=models)


def _sign(key: bytes, header: bytes, payload: bytes) -> bytes:
    """HMAC-SHA256 tag over the header and the payload."""
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def _check_key(key: bytes) -> None:
    """Refuse a missing key: an empty HMAC key would let anyone forge snapshots."""
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    if not key:
        raise ValueError(
            "snapshot key is empty: refusing to sign or verify without a secret "
            "(configure 32 random bytes)"
        )
