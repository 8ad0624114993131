"""Stable identifiers and hashes: the same inputs give the same ids in every process and replay.

Python's ``hash()`` is salted per process, so anything that must agree across workers, restarts
and offline replays (page ids, arm assignment, random seeds) goes through blake2b instead.
"""

from __future__ import annotations

from hashlib import blake2b

__all__ = ["stable_digest64", "stable_hash64", "stable_id", "unit_interval"]


def stable_hash64(*parts: str) -> int:
    """Return a 64-bit unsigned hash of the parts, identical in every process.

    Examples
    --------
    >>> stable_hash64("u1", "e1") == stable_hash64("u1", "e1")
    True
    >>> stable_hash64("u1", "e1") == stable_hash64("u1e", "1")
    False
    """
    return int.from_bytes(stable_digest64(*parts), "big")


def stable_digest64(*parts: str) -> bytes:
    """`stable_hash64` as its 8 big-endian bytes (for code that stores the hash as bytes).

    Examples
    --------
    >>> int.from_bytes(stable_digest64("u1", "e1"), "big") == stable_hash64("u1", "e1")
    True
    """
    return blake2b("\x1f".join(parts).encode(), digest_size=8).digest()


def stable_id(prefix: str, *parts: str) -> str:
    """Return a short readable id such as ``rec-3f2a...`` derived from the parts.

    Examples
    --------
    >>> stable_id("rec", "u1", "e1").startswith("rec-")
    True
    """
    return f"{prefix}-{stable_hash64(*parts):016x}"


def unit_interval(*parts: str) -> float:
    """Map the parts to a float in [0, 1), uniformly; used for traffic splits.

    Examples
    --------
    >>> 0.0 <= unit_interval("exp", "u1") < 1.0
    True
    """
    return stable_hash64(*parts) / 2**64
