"""Per-user state: the current session's feature window plus what must outlive a session.

The state is a mutable slotted object owned by exactly one engine at a time (the worker that
owns the user's partition). It is mutated in place rather than copied per event because a
frozen dataclass rebuilt on every event costs more than the whole rest of the feature update;
durability comes from checkpointing the serialized form (``to_dict``) after the outputs of an
event are acknowledged, not from immutability.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from base64 import b64decode, b64encode
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from hashlib import blake2b
from typing import Any, NoReturn

import numpy as np

from processors.compiled import kernel
from processors.ids import stable_hash64

__all__ = [
    "EVENT_TYPE_INDEX",
    "NO_PENDING",
    "RECENT_PAGES",
    "STATE_VERSION",
    "EventIdWindow",
    "FloatMap",
    "PairMap",
    "PendingImpression",
    "UserState",
    "append_row",
    "page_key",
]

#: Bumped whenever the serialized layout changes; other versions are refused, not misread.
#: Version 2 keeps event-id fingerprints instead of the ids; version 3 adds the genre and
#: artwork-style taste evidence; version 4 keeps the recent pages as 64-bit page keys (see
#: `page_key`) without their arm; version 5 keeps the churn snapshots as their coded records
#: (`_encode_record`, base64) instead of lists of floats. Versions 1 to 4 are still read (1
#: and 2 with no taste evidence).
STATE_VERSION = 5
_READABLE_VERSIONS = (1, 2, 3, 4, 5)
#: Pages of a user remembered to attribute later events to them.
RECENT_PAGES = 8

#: Position of each event type in ``UserState.type_counts``.
EVENT_TYPE_INDEX: dict[str, int] = {
    "impression": 0,
    "hover": 1,
    "click": 2,
    "scroll_past": 3,
    "play": 4,
    "pause": 5,
    "completion": 6,
    "drop_off": 7,
    "session_start": 8,
}


class EventIdWindow:
    """The last ``maxlen`` event ids of a user, for dropping redeliveries, in 8 bytes each.

    Ids are kept as 64-bit fingerprints (``stable_hash64``) in a ring, not as strings: a
    64-entry window of ~60-byte id strings in a deque was ~4 KB of every user's state, the
    ring is 0.5 KB. Two different ids collide with probability 2^-64 per pair, so with 64
    ids in the window a new event is mistaken for a duplicate about once in 3·10^17 events.

    Examples
    --------
    >>> window = EventIdWindow(2)
    >>> window.extend(["e1", "e2", "e3"])
    >>> ("e1" in window, "e3" in window, len(window))
    (False, True, 2)
    """

    __slots__ = ("_fingerprints", "_next", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        #: The ring: 8 bytes a fingerprint, in machine order. A bytes object, not an
        #: ``array('Q')``: ~45 bytes less a state, and `bytes.find` checks a window faster
        #: than the array's item-by-item comparison.
        self._fingerprints = b""
        self._next = 0  # ring position of the oldest entry once the window is full

    def __contains__(self, event_id: object) -> bool:
        if not isinstance(event_id, str):
            return False
        return _holds_key(self._fingerprints, _needle(event_id))

    def __len__(self) -> int:
        return len(self._fingerprints) >> 3

    def append(self, event_id: str) -> None:
        """Remember an id, forgetting the oldest one when the window is full."""
        self._push(_needle(event_id))

    def add(self, event_id: str) -> bool:
        """`append` the id unless the window holds it; whether it was new (``id not in
        window``, then `append`: the engine's duplicate check, one fingerprint for both)."""
        needle = _needle(event_id)
        if _key_index(self._fingerprints, needle) >= 0:
            return False
        self._push(needle)
        return True

    def extend(self, event_ids: Iterable[str]) -> None:
        """Remember several ids, oldest first."""
        for event_id in event_ids:
            self.append(event_id)

    def fingerprints(self) -> list[int]:
        """The fingerprints, oldest first (the serialized form)."""
        ring = memoryview(self._fingerprints).cast("Q")
        return ring[self._next :].tolist() + ring[: self._next].tolist()

    def _push(self, needle: bytes) -> None:
        if self.maxlen <= 0:
            return
        ring = self._fingerprints
        if len(ring) < 8 * self.maxlen:
            self._fingerprints = ring + needle
        else:
            at = 8 * self._next
            self._fingerprints = ring[:at] + needle + ring[at + 8 :]
            self._next = (self._next + 1) % self.maxlen

    @classmethod
    def from_fingerprints(cls, fingerprints: Iterable[int], maxlen: int) -> EventIdWindow:
        window = cls(maxlen)
        if maxlen > 0:
            window._fingerprints = _u64_array([int(f) for f in fingerprints][-maxlen:]).tobytes()
        return window


def _holds_key(ring: bytes, needle: bytes) -> bool:
    """Whether the 8-byte ``needle`` is one of the ring's 8-byte entries."""
    return _key_index(ring, needle) >= 0


def _key_index(keys: bytes, needle: bytes) -> int:
    """The index of the 8-byte ``needle`` among the 8-byte entries of ``keys``, -1 if absent
    (a match must start on an entry's first byte: one spanning two entries is not a key)."""
    at = keys.find(needle)
    while at > 0 and at & 7:
        at = keys.find(needle, at + 1)
    return at >> 3 if at >= 0 else -1


def _key_bytes(key: int) -> bytes:
    return key.to_bytes(8, sys.byteorder)


_LITTLE_ENDIAN = sys.byteorder == "little"


def _needle(event_id: str) -> bytes:
    """The id's fingerprint as the 8 bytes the ring holds: ``_key_bytes(stable_hash64(id))``,
    worked out directly (every event): the hash of one part is the big-endian reading of the
    blake2b digest of its UTF-8 bytes (``processors.ids``), so its machine-order bytes are
    the digest itself, reversed on a little-endian machine."""
    hasher = _FRESH_BLAKE2B.copy()  # (a copy of a fresh one: no keyword arguments to parse)
    hasher.update(event_id.encode())
    digest = hasher.digest()
    return digest[::-1] if _LITTLE_ENDIAN else digest


#: A blake2b with `processors.ids`' parameters and nothing hashed yet, copied for each id.
_FRESH_BLAKE2B = blake2b(digest_size=8)


def page_key(recommendation_id: str) -> int:
    """A page id as a 64-bit key, so that a state remembers a page in 8 bytes.

    The engine's page ids are ``rec-`` and the 16 hex digits of a 64-bit hash
    (``processors.ids.stable_id``): their key is that number, so the id can be written back
    exactly (`page_id`). Any other string (a client may send anything) is fingerprinted with
    ``stable_hash64`` instead; it is taken for one of the user's pages only by a 2^-64 accident.

    Examples
    --------
    >>> page_id(page_key("rec-00000000000000ff"))
    'rec-00000000000000ff'
    >>> page_key("rec-00000000000000ff"), page_key("rec-0x000000000000ff") == 255
    (255, False)
    """
    global _last_page_key
    last_id, last = _last_page_key
    if recommendation_id == last_id:  # the events of one page view name the same page
        return last
    key = _parse_page_key(recommendation_id)
    _last_page_key = (recommendation_id, key)
    return key


def _parse_page_key(recommendation_id: str) -> int:
    if (
        len(recommendation_id) == 20
        and recommendation_id.startswith("rec-")
        and _HEX_DIGITS.issuperset(recommendation_id[4:])
    ):
        return int(recommendation_id[4:], 16)
    return stable_hash64(recommendation_id)


def _page_needle(recommendation_id: str) -> bytes:
    """The `page_key` as the 8 bytes ``recent_pages`` holds, memoized like `page_key`: the
    events of one page view ask about the same page one after another."""
    global _last_page_needle
    last_id, last = _last_page_needle
    if recommendation_id == last_id:
        return last
    needle = _key_bytes(page_key(recommendation_id))
    _last_page_needle = (recommendation_id, needle)
    return needle


def page_id(key: int) -> str:
    """The engine's page id with this `page_key`."""
    return f"rec-{key:016x}"


_HEX_DIGITS = frozenset("0123456789abcdef")
_last_page_key: tuple[str, int] = ("", stable_hash64(""))
_last_page_needle: tuple[str, bytes] = ("", _key_bytes(stable_hash64("")))


_PAIR = struct.Struct("dd")
_DOUBLE = struct.Struct("d")


class _ArrayMap(MutableMapping[str, Any]):
    """The storage of `PairMap` and `FloatMap`: a user's few keys in insertion order and their
    values in one bytes object, ``_width`` doubles (machine order) a key, stored exactly as
    given.

    A small dict costs ~190 bytes before its values, and every float value is a 24-byte
    object (a pair in a list, ~120 bytes); the few genres and styles of a user cost ~1.5 KB
    of every state that way. A lookup is a scan of the key tuple, as fast as hashing for the
    handful of keys a user has. The tuple and the bytes hold exactly the keys there are: a
    new key is rare (a genre or style seen for the first time), so growing by copying costs
    little and nothing is held in reserve. Bytes rather than an ``array('d')``: ~45 bytes
    less a map (an array's header is 64 bytes and its items a second block); a value set is
    a copy of the few bytes, as cheap as the array's item access for a handful of keys.
    """

    __slots__ = ("_keys", "_values")
    _width = 1

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._keys: tuple[str, ...] = ()
        self._values = b""
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            self[key] = value

    def _append(self, key: str, packed: bytes) -> None:
        self._keys = (*self._keys, key)
        self._values += packed

    def _replace(self, index: int, packed: bytes) -> None:
        values = self._values
        at = 8 * self._width * index
        self._values = values[:at] + packed + values[at + len(packed) :]

    def __delitem__(self, key: str) -> None:
        try:
            index = self._keys.index(key)
        except ValueError:
            raise KeyError(key) from None
        self._keys = self._keys[:index] + self._keys[index + 1 :]
        size, values = 8 * self._width, self._values
        self._values = values[: size * index] + values[size * (index + 1) :]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def share_keys(self, other: _ArrayMap) -> None:
        """Hold the same key tuple as ``other`` when the keys are equal, in the same order.

        A session's genre affinity and its genre evidence usually have the same genres in
        the same order (both learn them from the titles the user looks at): one tuple for
        both saves a tuple in every such state. Tuples are immutable, and a map that gains or
        loses a key gets a new one, so sharing never lets one map change the other.
        """
        keys = other._keys
        if self._keys is not keys and self._keys == keys:
            self._keys = keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


class PairMap(_ArrayMap):
    """``key → (first, second)``: the taste evidence (``processors.taste``).

    Examples
    --------
    >>> evidence = PairMap({"horror": (1.0, 2.0)})
    >>> evidence["comedy"] = (0.0, 0.5)
    >>> del evidence["horror"]
    >>> evidence.get("comedy"), evidence.get("horror", (0.0, 0.0)), list(evidence)
    ((0.0, 0.5), (0.0, 0.0), ['comedy'])
    """

    __slots__ = ()
    _width = 2

    def __getitem__(self, key: str) -> tuple[float, float]:
        try:
            index = self._keys.index(key)
        except ValueError:
            raise KeyError(key) from None
        return _PAIR.unpack_from(self._values, 16 * index)  # type: ignore[return-value]

    def get(self, key: str, default: Any = None) -> Any:
        keys = self._keys
        if key not in keys:  # most lookups miss (every genre is asked): no exception for them
            return default
        return _PAIR.unpack_from(self._values, 16 * keys.index(key))

    def add_to_each(self, keys: Iterable[str], first: float, second: float) -> int:
        """``self[key] = (old_first + first, old_second + second)`` for each key in turn, a
        missing key's old pair being ``(0.0, 0.0)``: the same sums, in one copy of the
        values instead of one per key (``processors.taste.add_evidence``, every event).
        Returns how many keys the map holds then (``len``, without a second call)."""
        own = self._keys
        values = array("d", self._values)
        for key in keys:
            if key in own:
                at = 2 * own.index(key)
                values[at] += first
                values[at + 1] += second
            else:
                own = (*own, key)
                values.append(0.0 + first)
                values.append(0.0 + second)
        self._keys = own
        self._values = values.tobytes()
        return len(own)

    def items(self) -> list[tuple[str, tuple[float, float]]]:  # type: ignore[override]
        """The pairs as a list, in one pass over the values (the generic view looks every key
        up again: a user's style evidence took ~15 µs of each checkpoint that way)."""
        flat = memoryview(self._values).cast("d").tolist()
        return list(zip(self._keys, zip(flat[0::2], flat[1::2], strict=True), strict=True))

    def __setitem__(self, key: str, value: Sequence[float]) -> None:
        first, second = value
        packed = _PAIR.pack(first, second)
        try:
            index = self._keys.index(key)
        except ValueError:
            self._append(key, packed)
            return
        self._replace(index, packed)


class FloatMap(_ArrayMap):
    """``key → float`` in insertion order: the session's genre affinity
    (``processors.session_window``) and the titles to continue watching, by recency.

    Examples
    --------
    >>> affinity = FloatMap({"horror": 1.5})
    >>> affinity["horror"] *= 2.0
    >>> affinity.get("drama", 0.0), list(affinity.items())
    (0.0, [('horror', 3.0)])
    """

    __slots__ = ()

    def __getitem__(self, key: str) -> float:
        try:
            index = self._keys.index(key)
        except ValueError:
            raise KeyError(key) from None
        return _DOUBLE.unpack_from(self._values, 8 * index)[0]  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        keys = self._keys
        if key not in keys:
            return default
        return _DOUBLE.unpack_from(self._values, 8 * keys.index(key))[0]

    def __setitem__(self, key: str, value: float) -> None:
        packed = _DOUBLE.pack(value)
        try:
            index = self._keys.index(key)
        except ValueError:
            self._append(key, packed)
            return
        self._replace(index, packed)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        """Remove a key and return its value (``default`` if absent: no exception raised and
        caught, as the generic one does for every title that is not there)."""
        if key not in self._keys:
            if default:
                return default[0]
            raise KeyError(key)
        value = self[key]
        del self[key]
        return value

    def decay_and_add(self, factor: float, keys: Iterable[str], amount: float) -> int:
        """`scale` by ``factor`` (skipped when it is 1.0: ``value * 1.0`` is ``value``), then
        ``self[key] = self.get(key, 0.0) + amount`` for each key in turn: the same values, in
        one copy instead of one per key (the genre affinity, most events). Returns how many
        keys the map holds then."""
        own = self._keys
        values = array("d", self._values)
        if factor != 1.0:
            values = array("d", [value * factor for value in values])
        for key in keys:
            if key in own:
                values[own.index(key)] += amount
            else:
                own = (*own, key)
                values.append(0.0 + amount)
        self._keys = own
        self._values = values.tobytes()
        return len(own)

    def scale(self, factor: float) -> None:
        """Multiply every value by ``factor`` (``value * factor`` each, as ``map[k] *= f``
        would, in one copy instead of one per key)."""
        self._values = array("d", [value * factor for value in self.values()]).tobytes()

    def items(self) -> list[tuple[str, float]]:  # type: ignore[override]
        """The pairs as a list (read on every page: faster than the generic view)."""
        return list(zip(self._keys, memoryview(self._values).cast("d").tolist(), strict=True))

    def values(self) -> list[float]:  # type: ignore[override]
        return memoryview(self._values).cast("d").tolist()

    def packed_values(self) -> bytes:
        """The values as float64s in machine order, in key order: what compiled code reads
        (``processors.features.write_session_snapshot``) without a list of floats built."""
        return self._values


def _feature_row(features: Sequence[float]) -> array[float]:
    """A feature vector in 4 or 8 bytes a value instead of a list of float objects (~32).

    float32 when that keeps every value exactly (rows from the engine's cache of served pages
    are float32 already), float64 otherwise: learning sees the values it was given.
    """
    row = array("f", features)
    if row.tolist() == list(features):
        return row
    return array("d", features)


class PendingImpression:
    """An item shown to the user, waiting for its label (click → 1, scroll-past/timeout → 0).

    ``features`` is the ranker's feature vector computed when the item was shown, so the model
    learns from what it saw at serving time (no train/serve skew, no label leakage); it is
    kept as a compact array with the same values (`_feature_row`).
    """

    __slots__ = ("artwork_id", "features", "recommendation_id", "shown_ts")

    def __init__(
        self,
        recommendation_id: str | None,
        shown_ts: int,
        features: Sequence[float],
        artwork_id: str | None,
    ) -> None:
        self.recommendation_id = recommendation_id
        self.shown_ts = shown_ts
        self.features = _feature_row(features)
        self.artwork_id = artwork_id

    def to_list(self) -> list[Any]:
        return [self.recommendation_id, self.shown_ts, self.features.tolist(), self.artwork_id]

    @classmethod
    def from_list(cls, raw: list[Any]) -> PendingImpression:
        return cls(raw[0], int(raw[1]), [float(v) for v in raw[2]], raw[3])


class _NoPending(dict[str, PendingImpression]):
    """The pending impressions of every state that has none: one shared empty dict.

    Most states wait for no answer (impressions wait only with
    ``learn_unanswered_impressions``), and an empty dict of their own is 64 bytes of each;
    a dict emptied by answers keeps its table, more. Reading it is reading an empty dict;
    writing to it is refused (`UserState.pending_to_add` gives a state its own dict).
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("NO_PENDING is shared and read-only: use UserState.pending_to_add()")

    __setitem__ = __delitem__ = __ior__ = setdefault = update = popitem = clear = _refuse  # type: ignore[assignment]


#: See `_NoPending`.
NO_PENDING = _NoPending()


class UserState:
    """Everything the engine remembers about one user.

    Session-scoped fields are reset when a session ends; ``continue_watching``,
    ``sessions_total``, the taste evidence, the recent pages and the dedup window carry over.
    A worker holds one per active user, so the larger fields are kept compact (see
    ``stream.bench.memory`` for what each costs): 64-bit keys for the recent pages, one flat
    byte string for the churn snapshots, `PairMap` for the taste evidence.
    """

    __slots__ = (
        "_last_page",
        "affinity_ts",
        "churn_alerted",
        "churn_risk",
        "churn_snapshots",
        "churn_width",
        "continue_watching",
        "device",
        "genre_affinity",
        "genre_evidence",
        "hover_dwell_ms",
        "last_items",
        "last_ts",
        "local_hour",
        "max_scroll_streak",
        "pending",
        "progress_n",
        "progress_sum",
        "recent_event_ids",
        "recent_pages",
        "scroll_streak",
        "session_clicked",
        "session_events",
        "session_exposed",
        "session_exposure",
        "session_id",
        "session_scroll_order",
        "session_start",
        "sessions_total",
        "style_evidence",
        "type_counts",
        "user_id",
        "variant",
    )

    def __init__(self, user_id: str, *, dedup_window: int = 64) -> None:
        self.user_id = user_id
        self.variant = ""
        self.sessions_total = 0
        #: Title → progress to resume at, oldest first (re-inserted on each pause).
        self.continue_watching = FloatMap()
        self.recent_event_ids = EventIdWindow(dedup_window)
        #: `page_key` of this user's last ``RECENT_PAGES`` pages (attribution), 8 bytes each in
        #: machine order, oldest first: a bytes object, ~45 bytes less than an ``array('Q')``.
        self.recent_pages = b""
        self._last_page = -1  # index in recent_pages of the page served last
        #: genre → (engagement, examined) and artwork style → (observed, expected) engagement
        #: (``processors.taste``): carried from session to session at a discount, so a
        #: returning user's first page knows them.
        self.genre_evidence = PairMap()
        self.style_evidence = PairMap()
        self.device: str | None = None
        self.local_hour = 0
        self.session_id = ""
        self.session_start = 0
        self.last_ts = 0
        self.reset_session()

    def reset_session(self) -> None:
        """Forget the session-scoped window (called when a session ends)."""
        self.session_events = 0
        self.type_counts = [0] * len(EVENT_TYPE_INDEX)
        self.hover_dwell_ms = 0
        self.scroll_streak = 0
        self.max_scroll_streak = 0
        self.progress_sum = 0.0
        self.progress_n = 0
        #: genre → affinity weight, undecayed since ``affinity_ts`` (``session_window``).
        self.genre_affinity = FloatMap()
        self.affinity_ts = 0
        #: The session's item sequence (session-kNN), oldest first. This and
        #: ``session_clicked`` are tuples: rebuilt on the rare click or play, they cost a list's
        #: header and spare room less, and nothing when empty (the one empty tuple).
        self.last_items: tuple[str, ...] = ()
        #: Titles impressed or scrolled past this session; those with impressions in the
        #: order they were first impressed (see `count_impression`).
        self.session_exposed: tuple[str, ...] = ()
        #: Impressions and scroll-pasts of each title of ``session_exposed``, two counts a
        #: title: one byte each while every count is below 256, else a ``array('Q')``.
        self.session_exposure: bytes | array[int] = b""
        #: The titles scrolled past, in the order they were first scrolled past.
        self.session_scroll_order: tuple[str, ...] = ()
        #: Titles clicked or played this session, in order (an ordered set: a tuple is a
        #: fraction of a dict's size for the few a session has).
        self.session_clicked: tuple[str, ...] = ()
        #: Impressions waiting for their label, oldest first (`NO_PENDING` when none).
        self.pending: dict[str, PendingImpression] = NO_PENDING
        #: The session's churn snapshots back to back in one bytes object, each without its
        #: zeros and with common values in one byte (`_encode_record`), instead of one array
        #: of ``churn_width`` doubles each.
        self.churn_snapshots = b""
        #: Values per churn snapshot (the session feature vector's length; 0 before the first).
        self.churn_width = 0
        self.churn_alerted = False
        self.churn_risk = 0.0

    # -- derived values -------------------------------------------------------------------

    def count(self, event_type: str) -> int:
        """Events of this type in the current session."""
        return self.type_counts[EVENT_TYPE_INDEX[event_type]]

    @property
    def has_played(self) -> bool:
        """Whether the current session has a play (the churn label's opposite)."""
        return self.type_counts[4] > 0

    # -- per-title exposure counts ----------------------------------------------------------
    #
    # Two ordered count maps once (title -> impressions, title -> scroll-pasts, each bounded,
    # its oldest title forgotten first): two dicts were ~410 bytes of every state. One tuple
    # of titles and one byte string of counts hold both, with the same counts and the same
    # forgetting: the impressed titles keep their order in the tuple, the scrolled ones in
    # ``session_scroll_order``.

    def exposure(self, item_id: str) -> tuple[int, int]:
        """``(impressions, scroll-pasts)`` of a title this session."""
        try:
            at = 2 * self.session_exposed.index(item_id)
        except ValueError:
            return 0, 0
        counts = self.session_exposure
        return counts[at], counts[at + 1]

    def exposure_counts(self) -> Iterator[tuple[str, int, int]]:
        """``(title, impressions, scroll-pasts)`` of every title impressed or scrolled past."""
        counts = self.session_exposure
        return zip(self.session_exposed, counts[0::2], counts[1::2], strict=True)

    def impressed_counts(self) -> dict[str, int]:
        """Impressions per title, oldest title first (the checkpoint's form)."""
        return {item_id: count for item_id, count, _ in self.exposure_counts() if count}

    def scrolled_counts(self) -> dict[str, int]:
        """Scroll-pasts per title, oldest title first (the checkpoint's form)."""
        exposed, counts = self.session_exposed, self.session_exposure
        order = self.session_scroll_order
        return {item_id: counts[2 * exposed.index(item_id) + 1] for item_id in order}

    def count_impression(self, item_id: str, limit: int) -> None:
        """One more impression of a title; past ``limit`` impressed titles the one first
        impressed is forgotten."""
        exposed = self.session_exposed
        if item_id not in exposed:  # (most impressions are a title's first: no exception)
            self._add_exposed(item_id, 1, 0)
        else:
            at = 2 * exposed.index(item_id)
            impressions = self.session_exposure[at]
            if impressions:
                self._set_count(at, impressions + 1)
                return
            # Scrolled past but not impressed (or its impressions forgotten): it joins the
            # impressed titles now, so it moves behind them.
            scroll_pasts = self.session_exposure[at + 1]
            self._drop_exposed(at // 2)
            self._add_exposed(item_id, 1, scroll_pasts)
        if len(self.session_exposed) > limit:
            self._forget_impressed(limit)

    def count_scroll_past(self, item_id: str, limit: int) -> None:
        """One more scroll-past of a title; past ``limit`` scrolled titles the one first
        scrolled past is forgotten."""
        try:
            at = 2 * self.session_exposed.index(item_id) + 1
        except ValueError:
            self._add_exposed(item_id, 0, 1)
        else:
            scroll_pasts = self.session_exposure[at]
            self._set_count(at, scroll_pasts + 1)
            if scroll_pasts:
                return
        order = (*self.session_scroll_order, item_id)
        if len(order) > limit:
            oldest, order = order[0], order[1:]
            at = self.session_exposed.index(oldest)
            if self.session_exposure[2 * at]:
                self._set_count(2 * at + 1, 0)
            else:
                self._drop_exposed(at)
        self.session_scroll_order = order

    def restore_exposure(self, impressed: Mapping[str, int], scrolled: Mapping[str, int]) -> None:
        """Set the counts from two ordered maps (a checkpoint's); ValueError for a count that
        is not a positive 64-bit integer (one the engine never writes)."""
        exposed = list(impressed)
        counts = [int(count) for item_id in exposed for count in (impressed[item_id], 0)]
        for item_id, count in scrolled.items():
            if item_id in impressed:
                counts[2 * exposed.index(item_id) + 1] = int(count)
            else:
                exposed.append(item_id)
                counts += (0, int(count))
        if any(count < 1 for count in (*impressed.values(), *scrolled.values())):
            raise ValueError("an exposure count below 1")
        self.session_exposed = tuple(exposed)
        self.session_exposure = _counts_storage(counts)
        self.session_scroll_order = tuple(scrolled)

    def _add_exposed(self, item_id: str, impressions: int, scroll_pasts: int) -> None:
        self.session_exposed = (*self.session_exposed, item_id)
        counts = self.session_exposure
        if type(counts) is bytes and impressions < 256 and scroll_pasts < 256:
            self.session_exposure = counts + bytes((impressions, scroll_pasts))
        else:
            self.session_exposure = _counts_storage([*counts, impressions, scroll_pasts])

    def _drop_exposed(self, index: int) -> None:
        exposed, counts = self.session_exposed, self.session_exposure
        self.session_exposed = exposed[:index] + exposed[index + 1 :]
        self.session_exposure = counts[: 2 * index] + counts[2 * index + 2 :]

    def _set_count(self, at: int, count: int) -> None:
        counts = self.session_exposure
        if type(counts) is bytes:
            if count < 256:
                self.session_exposure = counts[:at] + _BYTES[count] + counts[at + 1 :]
                return
            counts = self.session_exposure = array("Q", list(counts))  # a count past 255
        counts[at] = count

    def _forget_impressed(self, limit: int) -> None:
        """Forget the title impressed first if more than ``limit`` titles are impressed."""
        counts = self.session_exposure
        impressions = counts[0::2]
        if sum(1 for count in impressions if count) <= limit:
            return
        index = next(index for index, count in enumerate(impressions) if count)
        if counts[2 * index + 1]:
            self._set_count(2 * index, 0)
        else:
            self._drop_exposed(index)

    def pending_to_add(self) -> dict[str, PendingImpression]:
        """The pending impressions to add one to: the state's own dict (made on the first)."""
        pending = self.pending
        if pending is NO_PENDING:
            pending = self.pending = {}
        return pending

    # -- recent pages ---------------------------------------------------------------------

    @property
    def last_recommendation_id(self) -> str:
        """The id of the page served last ("" before the first)."""
        if self._last_page < 0:
            return ""
        at = 8 * self._last_page
        return page_id(int.from_bytes(self.recent_pages[at : at + 8], sys.byteorder))

    def page_keys(self) -> list[int]:
        """The `page_key` of each recent page, oldest first."""
        return memoryview(self.recent_pages).cast("Q").tolist()

    def remember_page(self, recommendation_id: str) -> None:
        """A page was served: remember it among the user's last ``RECENT_PAGES`` pages.

        A page served again keeps its place (the oldest page is the first forgotten).
        """
        # Not the memoized `page_key`: a new page is not the one events ask about.
        needle = _key_bytes(_parse_page_key(recommendation_id))
        pages = self.recent_pages
        index = _key_index(pages, needle)
        if index < 0:
            pages += needle
            if len(pages) > 8 * RECENT_PAGES:
                pages = pages[8:]
            self.recent_pages = pages
            index = (len(pages) >> 3) - 1
        self._last_page = index

    def page_variant(self, recommendation_id: str) -> str | None:
        """The arm of one of the user's recent pages; None when it is not one of them.

        Pages are built in the user's own arm (``PageBuilder`` serves ``state.variant``, which
        never changes), so a state remembers which pages it was served, not their arm.
        """
        if _key_index(self.recent_pages, _page_needle(recommendation_id)) < 0:
            return None
        return self.variant

    # -- churn snapshots ------------------------------------------------------------------

    def add_churn_snapshot(self, vector: Sequence[float], limit: int) -> None:
        """Keep a session feature vector for the churn label the session's end gives it.

        The session's first snapshot and the latest ones are kept, ``limit`` in all. Every
        snapshot of a session has the same number of values (ValueError otherwise: the
        records are read back at the session's width). (The engine's churn check adds its
        float64 row by a compiled pass instead, `append_row` inside
        `processors.features.write_session_snapshot`: the same records.)
        """
        self.churn_record_room(len(vector))
        snapshots = self.churn_snapshots
        snapshots += _encode_record(vector)
        starts = _record_starts(snapshots, self.churn_width)
        if len(starts) > max(limit, 1):
            end = starts[2] if len(starts) > 2 else len(snapshots)
            # keep the session's first view and the latest ones
            snapshots = snapshots[: starts[1]] + snapshots[end:]
        self.churn_snapshots = snapshots

    def churn_record_room(self, width: int) -> int:
        """`add_churn_snapshot`'s checks for a snapshot of ``width`` values (ValueError), its
        width then recorded; returns the bytes `append_row` may write for it (the records kept
        and the new one's, at most 9 bytes a value and a header of at most 7 + 2 bytes).

        Split out for the engine's churn check, which writes its session row and appends its
        record in one compiled call (`processors.features.write_session_snapshot`).
        """
        if width > _MAX_SNAPSHOT_WIDTH:
            raise ValueError(f"churn snapshots of {width} values (at most {_MAX_SNAPSHOT_WIDTH})")
        if self.churn_snapshots and width != self.churn_width:
            raise ValueError(f"a churn snapshot of {width} values after {self.churn_width}")
        self.churn_width = width
        return len(self.churn_snapshots) + 9 * (width + 1)

    def churn_snapshot_rows(self) -> list[array[float]]:
        """The session's churn snapshots, oldest first, one float64 array each."""
        flat, width = self.churn_snapshots, self.churn_width
        return [_decode_record(flat, start, width) for start in _record_starts(flat, width)]

    # -- serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data for checkpoints (never pickle: Redis is writable by others)."""
        return {
            "v": STATE_VERSION,
            "user_id": self.user_id,
            "variant": self.variant,
            "sessions_total": self.sessions_total,
            "continue_watching": dict(self.continue_watching.items()),
            "recent_event_ids": self.recent_event_ids.fingerprints(),
            "dedup_window": self.recent_event_ids.maxlen,
            "last_recommendation_id": self.last_recommendation_id,
            "recent_pages": self.page_keys(),
            "genre_evidence": {key: list(pair) for key, pair in self.genre_evidence.items()},
            "style_evidence": {key: list(pair) for key, pair in self.style_evidence.items()},
            "device": self.device,
            "local_hour": self.local_hour,
            "session_id": self.session_id,
            "session_start": self.session_start,
            "last_ts": self.last_ts,
            "session_events": self.session_events,
            "type_counts": self.type_counts,
            "hover_dwell_ms": self.hover_dwell_ms,
            "scroll_streak": self.scroll_streak,
            "max_scroll_streak": self.max_scroll_streak,
            "progress_sum": self.progress_sum,
            "progress_n": self.progress_n,
            "genre_affinity": dict(self.genre_affinity.items()),
            "affinity_ts": self.affinity_ts,
            "last_items": list(self.last_items),
            "session_impressed": self.impressed_counts(),
            "session_scrolled": self.scrolled_counts(),
            "session_clicked": list(self.session_clicked),
            "pending": {item: p.to_list() for item, p in self.pending.items()},
            # As held (~35 bytes a snapshot): decoding them into lists of floats for JSON was
            # ~60% of a checkpoint's cost, and every touched user is checkpointed per batch.
            "churn_width": self.churn_width,
            "churn_records": b64encode(self.churn_snapshots).decode("ascii"),
            "churn_alerted": self.churn_alerted,
            "churn_risk": self.churn_risk,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> UserState:
        """Rebuild a state from ``to_dict`` output; refuses other versions with ValueError."""
        version = raw.get("v")
        if version not in _READABLE_VERSIONS:
            raise ValueError(f"user state version {version!r} is not {STATE_VERSION}")
        # Item ids, genres, variants and devices repeat across users: interned, every restored
        # state shares one copy of each instead of holding its own.
        intern = sys.intern
        state = cls(raw["user_id"], dedup_window=int(raw["dedup_window"]))
        state.variant = intern(raw["variant"])
        state.sessions_total = int(raw["sessions_total"])
        state.continue_watching = FloatMap(
            (intern(k), float(v)) for k, v in raw["continue_watching"].items()
        )
        if version == 1:  # ids, not fingerprints
            state.recent_event_ids.extend(raw["recent_event_ids"])
        else:
            state.recent_event_ids = EventIdWindow.from_fingerprints(
                raw["recent_event_ids"], int(raw["dedup_window"])
            )
        if version >= 4:
            keys = [int(key) for key in raw["recent_pages"]]
        else:  # page id → arm (always the user's arm, see `page_variant`)
            keys = [page_key(page) for page in raw["recent_pages"]]
        state.recent_pages = _u64_array(keys[-RECENT_PAGES:]).tobytes()
        last_page = raw["last_recommendation_id"]
        if last_page:
            state._last_page = _key_index(state.recent_pages, _key_bytes(page_key(last_page)))
        if version >= 3:
            state.genre_evidence = _evidence_from(raw["genre_evidence"], proportion=True)
            state.style_evidence = _evidence_from(raw["style_evidence"], proportion=False)
        state.device = intern(raw["device"]) if raw["device"] is not None else None
        state.local_hour = int(raw["local_hour"])
        state.session_id = raw["session_id"]
        state.session_start = int(raw["session_start"])
        state.last_ts = int(raw["last_ts"])
        state.session_events = int(raw["session_events"])
        state.type_counts = _int_list(raw["type_counts"])
        state.hover_dwell_ms = int(raw["hover_dwell_ms"])
        state.scroll_streak = int(raw["scroll_streak"])
        state.max_scroll_streak = int(raw["max_scroll_streak"])
        state.progress_sum = float(raw["progress_sum"])
        state.progress_n = int(raw["progress_n"])
        state.genre_affinity = FloatMap(
            (intern(k), float(v)) for k, v in raw["genre_affinity"].items()
        )
        state.affinity_ts = int(raw["affinity_ts"])
        state.last_items = tuple(intern(item_id) for item_id in raw["last_items"])
        state.restore_exposure(
            {intern(k): int(v) for k, v in raw["session_impressed"].items()},
            {intern(k): int(v) for k, v in raw["session_scrolled"].items()},
        )
        state.session_clicked = tuple(intern(k) for k in raw["session_clicked"])
        if raw["pending"]:
            state.pending = {
                intern(k): PendingImpression.from_list(v) for k, v in raw["pending"].items()
            }
        if version >= 5:
            state.churn_width, state.churn_snapshots = _checked_records(
                b64decode(raw["churn_records"], validate=True), int(raw["churn_width"])
            )
        elif raw["churn_snapshots"]:
            snapshots = raw["churn_snapshots"]
            width = len(snapshots[0])
            if width > _MAX_SNAPSHOT_WIDTH or any(len(snap) != width for snap in snapshots):
                raise ValueError("churn snapshots of different or too many values")
            state.churn_width = width
            state.churn_snapshots = b"".join(
                _encode_record([float(v) for v in snap]) for snap in snapshots
            )
        state.churn_alerted = bool(raw["churn_alerted"])
        state.churn_risk = float(raw["churn_risk"])
        state.share_equal_parts()
        if state.affinity_ts == state.last_ts:  # (the same event's time: one int object)
            state.affinity_ts = state.last_ts
        return state

    def share_equal_parts(self) -> None:
        """Let equal immutable parts of the state be one object (an equal tuple is one less
        tuple to hold): the clicked titles are usually the item sequence (`share_clicked`),
        the genre affinity's genres the genre evidence's (`_ArrayMap.share_keys`)."""
        self.share_clicked()
        self.genre_affinity.share_keys(self.genre_evidence)

    def share_clicked(self) -> None:
        """Hold one tuple for ``session_clicked`` and ``last_items`` when they are equal
        (clicks and plays of different titles, not more than either bound)."""
        items = self.last_items
        if self.session_clicked is not items and self.session_clicked == items:
            self.session_clicked = items


#: A snapshot's values: at most as many as a mask of non-zero positions was ever allowed
#: (the bound checkpoints are validated against).
_MAX_SNAPSHOT_WIDTH = 52
#: Codes of a kept value in `_encode_record` besides the table's: the value follows as a
#: float32 (exact) or a float64.
_FLOAT32_CODE = 254
_FLOAT64_CODE = 255


def _value_table() -> tuple[float, ...]:
    """The values a churn snapshot holds most often, each then kept in one byte (its code,
    its index here; index 0 is unused): 1.0 (the flags), ``log1p`` of the small counts and
    the sine and cosine of each local hour. Other values are kept as themselves, so the
    table only decides how small a snapshot is, never what it reads back; it exists only in
    memory (checkpoints hold the rows), so it may change from one release to the next."""
    values = [1.0]
    values += [math.log1p(count) for count in range(1, 201)]
    for hour in range(24):
        angle = 2.0 * math.pi * hour / 24.0
        values += [math.sin(angle), math.cos(angle)]
    table: list[float] = [0.0]
    for value in values:
        if value and value not in table:  # (0.0 has no code: it is not kept at all)
            table.append(value)
    assert len(table) <= _FLOAT32_CODE
    return tuple(table)


_CODE_VALUES = _value_table()
_VALUE_CODES = {value: code for code, value in enumerate(_CODE_VALUES) if code}
_FLOAT32 = array("f", [0.0])  # scratch: is a value exact in float32?
_F32 = struct.Struct("f")


def _mask_bytes(width: int) -> int:
    return (width + 7) >> 3


def _length_bytes(width: int) -> int:
    """Bytes of a record's body length: one while the longest body (9 bytes a value) fits."""
    return 1 if 9 * width < 256 else 2


def _encode_record(vector: Sequence[float]) -> bytes:
    """A churn snapshot as bytes, exactly: a mask of its non-zero positions, the length of
    the rest (so the records of a session are walked without reading their codes), then one
    code byte per kept value (``_CODE_VALUES``' index, or a float32 or float64 after it).

    About half of a snapshot's values are 0.0 (counts of what did not happen yet, a flag
    that is off) and most others are a flag, the log of a small count or the hour's sine
    or cosine: ~35 bytes a snapshot instead of 80 as non-zero doubles. Bit ``i`` of the
    mask says value ``i`` is kept; -0.0 is kept as itself (a float32), NaN as a float64.

    `_write_record` writes the same record for a float64 array (the engine's churn check).
    """
    mask = 0
    bit = 1
    body = bytearray()
    append = body.append
    code_of = _VALUE_CODES.get
    scratch = _FLOAT32
    copysign = math.copysign
    for value in vector:
        if value or copysign(1.0, value) < 0.0:  # (NaN is truthy, so kept too)
            mask |= bit
            code = code_of(value)  # (-0.0 has no code: 0.0 is not in the table)
            if code is not None:
                append(code)
            else:
                scratch[0] = value
                if scratch[0] == value:
                    append(_FLOAT32_CODE)
                    body += _F32.pack(value)
                else:
                    append(_FLOAT64_CODE)
                    body += _DOUBLE.pack(value)
        bit <<= 1
    width = len(vector)
    return (
        mask.to_bytes(_mask_bytes(width), "little")
        + len(body).to_bytes(_length_bytes(width), "little")
        + body
    )


#: `_VALUE_CODES` as two arrays, the values ascending (searched by `_write_record`).
_TABLE_VALUES = np.array(sorted(_VALUE_CODES))
_TABLE_CODES = np.array([_VALUE_CODES[value] for value in sorted(_VALUE_CODES)], dtype=np.uint8)


@kernel(called_by_kernels_only=True)
def append_row(
    flat: bytes, row: np.ndarray, limit: int, out: bytearray
) -> int:  # pragma: no cover - compiled
    """`UserState.add_churn_snapshot` of a float64 row in one compiled pass (inside the churn
    check's kernel, most events): ``out`` gets the records of ``flat``, the second left out
    when with the row's there would be more than ``limit`` (at least 1), then the row's
    record unless it is the one left out; returns the length written (``out`` has room for
    ``flat`` and a record of 9 bytes a value). The Python path's encoding, `_record_starts`
    walk and slices took ~5 times as long, most of it in calls and small allocations."""
    width = row.shape[0]
    mask_bytes = (width + 7) >> 3
    long_length = 9 * width >= 256
    header = mask_bytes + (2 if long_length else 1)
    end = len(flat)
    count = 0  # records in flat, and where its second and third start (`_record_starts`)
    second = third = end
    at = 0
    while at < end:
        if count == 1:
            second = at
        elif count == 2:
            third = at
        body = flat[at + mask_bytes]
        if long_length:
            body |= flat[at + mask_bytes + 1] << 8
        at += header + body
        count += 1
    if count + 1 <= max(limit, 1):  # no record left out
        second = third = end
    elif count == 1:  # two records with a limit of 1: the new one is the second
        for index in range(end):
            out[index] = flat[index]
        return end
    size = 0
    for index in range(second):
        out[size] = flat[index]
        size += 1
    for index in range(third, end):
        out[size] = flat[index]
        size += 1
    return _write_record(row, out, size)


@kernel(called_by_kernels_only=True)
def _write_bits(bits: int, size: int, out: np.ndarray, at: int) -> None:  # pragma: no cover
    """The ``size`` low bytes of ``bits`` to ``out[at:]`` in machine order (as ``struct``)."""
    for byte in range(size):
        shift = 8 * byte if _LITTLE_ENDIAN else 8 * (size - 1 - byte)
        out[at + byte] = (bits >> np.uint64(shift)) & np.uint64(255)


@kernel(called_by_kernels_only=True)
def _write_record(row: np.ndarray, out: np.ndarray, start: int) -> int:  # pragma: no cover
    """`_encode_record` of a float64 row written to ``out`` from ``start``; returns where it
    ends. The same record: a value is kept when it is not 0.0 (-0.0 and NaN are kept), its
    code is found by equality in the table (-0.0 and NaN have none), else it is a float32
    when the float32 nearest to it equals it, else a float64, each in machine order as
    ``struct`` packs it."""
    width = row.shape[0]
    mask_bytes = (width + 7) >> 3
    header = mask_bytes + (1 if 9 * width < 256 else 2)
    for index in range(mask_bytes):
        out[start + index] = 0
    at = start + header
    size = _TABLE_VALUES.shape[0]
    for index in range(width):
        value = row[index]
        if value != 0.0 or math.copysign(1.0, value) < 0.0:
            out[start + (index >> 3)] |= np.uint8(1 << (index & 7))
            found = np.searchsorted(_TABLE_VALUES, value)
            if found < size and _TABLE_VALUES[found] == value:
                out[at] = _TABLE_CODES[found]
                at += 1
            elif np.float32(value) == value:
                out[at] = _FLOAT32_CODE
                _write_bits(np.uint64(np.float32(value).view(np.uint32)), 4, out, at + 1)
                at += 5
            else:
                out[at] = _FLOAT64_CODE
                _write_bits(np.float64(value).view(np.uint64), 8, out, at + 1)
                at += 9
    body = at - start - header
    out[start + mask_bytes] = body & 255
    if header - mask_bytes == 2:
        out[start + mask_bytes + 1] = body >> 8
    return at


def _record_starts(flat: bytes, width: int) -> list[int]:
    """Where each `_encode_record` of ``width`` values starts in a session's snapshots."""
    starts = []
    mask_bytes = _mask_bytes(width)
    header = mask_bytes + _length_bytes(width)
    end = len(flat)
    at = 0
    if header == mask_bytes + 1:
        while at < end:
            starts.append(at)
            at += header + flat[at + mask_bytes]
    else:
        while at < end:
            starts.append(at)
            at += header + int.from_bytes(flat[at + mask_bytes : at + header], "little")
    return starts


def _decode_record(flat: bytes, start: int, width: int) -> array[float]:
    """The snapshot whose `_encode_record` starts at ``start``, all ``width`` values."""
    row = array("d", bytes(8 * width))
    mask_bytes = _mask_bytes(width)
    mask = int.from_bytes(flat[start : start + mask_bytes], "little")
    values = _CODE_VALUES
    at = start + mask_bytes + _length_bytes(width)
    for index in range(width):
        if mask >> index & 1:
            code = flat[at]
            at += 1
            if code < _FLOAT32_CODE:
                row[index] = values[code]
            elif code == _FLOAT32_CODE:
                row[index] = _F32.unpack_from(flat, at)[0]
                at += 4
            else:
                row[index] = _DOUBLE.unpack_from(flat, at)[0]
                at += 8
    return row


def _checked_records(flat: bytes, width: int) -> tuple[int, bytes]:
    """Churn records read from a checkpoint, refused (ValueError) unless they are exactly what
    `_encode_record` writes for ``width`` values: Redis is writable by others, and a record
    that walked past its end would misread every later one."""
    if not flat:
        return 0, b""
    if not 0 < width <= _MAX_SNAPSHOT_WIDTH:
        raise ValueError(f"churn snapshots of {width} values")
    try:
        rows = [_decode_record(flat, start, width) for start in _record_starts(flat, width)]
    except (IndexError, struct.error):
        rows = []
    if b"".join(_encode_record(row) for row in rows) != flat:
        raise ValueError("churn snapshot records are not well formed")
    return width, flat


#: Each count below 256 as a one-byte string (`UserState._set_count`).
_BYTES = tuple(bytes((count,)) for count in range(256))


def _counts_storage(counts: list[int]) -> bytes | array[int]:
    """Counts in one byte each when all are below 256, else in eight (ValueError past 2**64)."""
    if all(count < 256 for count in counts):
        return bytes(counts)
    return _u64_array(counts)


def _int_list(values: Sequence[Any]) -> list[int]:
    """Integers as a list of exactly their number (a comprehension leaves spare room)."""
    out = [0] * len(values)
    for index, value in enumerate(values):
        out[index] = int(value)
    return out


def _u64_array(values: list[int]) -> array[int]:
    """64-bit keys from a checkpoint; ValueError (not OverflowError) for one out of range."""
    try:
        return array("Q", values)
    except OverflowError as error:
        raise ValueError(f"not a 64-bit key: {error}") from None


def _evidence_from(raw: dict[str, Any], *, proportion: bool) -> PairMap:
    """Taste evidence from its checkpoint: two finite, non-negative floats per key (the
    first at most the second for a ``proportion``)."""
    evidence = PairMap()
    for key, counts in raw.items():
        first, second = (float(value) for value in counts)
        if not (0.0 <= first < float("inf") and 0.0 <= second < float("inf")) or (
            proportion and first > second
        ):
            raise ValueError(f"taste evidence of {key!r} out of range: {counts!r}")
        evidence[sys.intern(key)] = (first, second)
    return evidence
