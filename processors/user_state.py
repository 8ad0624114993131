"""Per-user state: the current session's feature window plus what must outlive a session.

The state is a mutable slotted object owned by exactly one engine at a time (the worker that
owns the user's partition). It is mutated in place rather than copied per event because a
frozen dataclass rebuilt on every event costs more than the whole rest of the feature update;
durability comes from checkpointing the serialized form (``to_dict``) after the outputs of an
event are acknowledged, not from immutability.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from typing import Any

from processors.ids import stable_hash64

__all__ = ["EVENT_TYPE_INDEX", "STATE_VERSION", "EventIdWindow", "PendingImpression", "UserState"]

#: Bumped whenever the serialized layout changes; other versions are refused, not misread.
#: Version 2 keeps event-id fingerprints instead of the ids; version 3 adds the genre and
#: artwork-style taste evidence. Versions 1 and 2 are still read (with no taste evidence).
STATE_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)

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
        self._fingerprints = array("Q")
        self._next = 0  # ring position of the oldest entry once the window is full

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and _fingerprint(event_id) in self._fingerprints

    def __len__(self) -> int:
        return len(self._fingerprints)

    def append(self, event_id: str) -> None:
        """Remember an id, forgetting the oldest one when the window is full."""
        self._push(_fingerprint(event_id))

    def extend(self, event_ids: Iterable[str]) -> None:
        """Remember several ids, oldest first."""
        for event_id in event_ids:
            self.append(event_id)

    def fingerprints(self) -> list[int]:
        """The fingerprints, oldest first (the serialized form)."""
        ring = self._fingerprints
        return ring[self._next :].tolist() + ring[: self._next].tolist()

    def _push(self, fingerprint: int) -> None:
        if self.maxlen <= 0:
            return
        ring = self._fingerprints
        if len(ring) < self.maxlen:
            ring.append(fingerprint)
        else:
            ring[self._next] = fingerprint
            self._next = (self._next + 1) % self.maxlen

    @classmethod
    def from_fingerprints(cls, fingerprints: Iterable[int], maxlen: int) -> EventIdWindow:
        window = cls(maxlen)
        for fingerprint in fingerprints:
            window._push(int(fingerprint))
        return window


#: The engine asks about the same id two or three times in a row (late check, dedup, append).
_last_fingerprint: tuple[str, int] = ("", stable_hash64(""))


def _fingerprint(event_id: str) -> int:
    global _last_fingerprint
    last_id, last = _last_fingerprint
    if event_id == last_id:
        return last
    fingerprint = stable_hash64(event_id)
    _last_fingerprint = (event_id, fingerprint)
    return fingerprint


class PendingImpression:
    """An item shown to the user, waiting for its label (click → 1, scroll-past/timeout → 0).

    ``features`` is the ranker's feature vector computed when the item was shown, so the model
    learns from what it saw at serving time (no train/serve skew, no label leakage).
    """

    __slots__ = ("artwork_id", "features", "recommendation_id", "shown_ts")

    def __init__(
        self,
        recommendation_id: str | None,
        shown_ts: int,
        features: list[float],
        artwork_id: str | None,
    ) -> None:
        self.recommendation_id = recommendation_id
        self.shown_ts = shown_ts
        self.features = features
        self.artwork_id = artwork_id

    def to_list(self) -> list[Any]:
        return [self.recommendation_id, self.shown_ts, self.features, self.artwork_id]

    @classmethod
    def from_list(cls, raw: list[Any]) -> PendingImpression:
        return cls(raw[0], int(raw[1]), [float(v) for v in raw[2]], raw[3])


class UserState:
    """Everything the engine remembers about one user.

    Session-scoped fields are reset when a session ends; ``continue_watching``,
    ``sessions_total`` and the dedup window carry over.
    """

    __slots__ = (
        "affinity_ts",
        "churn_alerted",
        "churn_risk",
        "churn_snapshots",
        "continue_watching",
        "device",
        "genre_affinity",
        "genre_evidence",
        "hover_dwell_ms",
        "last_items",
        "last_recommendation_id",
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
        "session_id",
        "session_impressed",
        "session_scrolled",
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
        self.continue_watching: dict[str, float] = {}
        self.recent_event_ids = EventIdWindow(dedup_window)
        self.last_recommendation_id = ""
        #: recommendation_id → variant of this user's last few pages (attribution).
        self.recent_pages: dict[str, str] = {}
        #: genre → [engagement, examined] and artwork style → [observed, expected] engagement
        #: (``processors.taste``): carried from session to session at a discount, so a
        #: returning user's first page knows them.
        self.genre_evidence: dict[str, list[float]] = {}
        self.style_evidence: dict[str, list[float]] = {}
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
        self.genre_affinity: dict[str, float] = {}
        self.affinity_ts = 0
        self.last_items: list[str] = []
        self.session_impressed: dict[str, int] = {}
        self.session_scrolled: dict[str, int] = {}
        self.session_clicked: dict[str, None] = {}
        self.pending: dict[str, PendingImpression] = {}
        #: Session feature vectors (float64 arrays: a third of the size of lists of floats).
        self.churn_snapshots: list[array[float]] = []
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

    # -- serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data for checkpoints (never pickle: Redis is writable by others)."""
        return {
            "v": STATE_VERSION,
            "user_id": self.user_id,
            "variant": self.variant,
            "sessions_total": self.sessions_total,
            "continue_watching": self.continue_watching,
            "recent_event_ids": self.recent_event_ids.fingerprints(),
            "dedup_window": self.recent_event_ids.maxlen,
            "last_recommendation_id": self.last_recommendation_id,
            "recent_pages": self.recent_pages,
            "genre_evidence": self.genre_evidence,
            "style_evidence": self.style_evidence,
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
            "genre_affinity": self.genre_affinity,
            "affinity_ts": self.affinity_ts,
            "last_items": self.last_items,
            "session_impressed": self.session_impressed,
            "session_scrolled": self.session_scrolled,
            "session_clicked": list(self.session_clicked),
            "pending": {item: p.to_list() for item, p in self.pending.items()},
            "churn_snapshots": [snapshot.tolist() for snapshot in self.churn_snapshots],
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
        state.continue_watching = {intern(k): float(v) for k, v in raw["continue_watching"].items()}
        if version == 1:  # ids, not fingerprints
            state.recent_event_ids.extend(raw["recent_event_ids"])
        else:
            state.recent_event_ids = EventIdWindow.from_fingerprints(
                raw["recent_event_ids"], int(raw["dedup_window"])
            )
        state.recent_pages = {k: intern(v) for k, v in raw["recent_pages"].items()}
        last_page = raw["last_recommendation_id"]
        state.last_recommendation_id = next(
            (k for k in state.recent_pages if k == last_page), last_page
        )
        if version >= 3:
            state.genre_evidence = _evidence_from(raw["genre_evidence"], proportion=True)
            state.style_evidence = _evidence_from(raw["style_evidence"], proportion=False)
        state.device = intern(raw["device"]) if raw["device"] is not None else None
        state.local_hour = int(raw["local_hour"])
        state.session_id = raw["session_id"]
        state.session_start = int(raw["session_start"])
        state.last_ts = int(raw["last_ts"])
        state.session_events = int(raw["session_events"])
        state.type_counts = [int(c) for c in raw["type_counts"]]
        state.hover_dwell_ms = int(raw["hover_dwell_ms"])
        state.scroll_streak = int(raw["scroll_streak"])
        state.max_scroll_streak = int(raw["max_scroll_streak"])
        state.progress_sum = float(raw["progress_sum"])
        state.progress_n = int(raw["progress_n"])
        state.genre_affinity = {intern(k): float(v) for k, v in raw["genre_affinity"].items()}
        state.affinity_ts = int(raw["affinity_ts"])
        state.last_items = [intern(item_id) for item_id in raw["last_items"]]
        state.session_impressed = {intern(k): int(v) for k, v in raw["session_impressed"].items()}
        state.session_scrolled = {intern(k): int(v) for k, v in raw["session_scrolled"].items()}
        state.session_clicked = dict.fromkeys(intern(k) for k in raw["session_clicked"])
        state.pending = {
            intern(k): PendingImpression.from_list(v) for k, v in raw["pending"].items()
        }
        state.churn_snapshots = [
            array("d", [float(v) for v in snap]) for snap in raw["churn_snapshots"]
        ]
        state.churn_alerted = bool(raw["churn_alerted"])
        state.churn_risk = float(raw["churn_risk"])
        return state


def _evidence_from(raw: dict[str, Any], *, proportion: bool) -> dict[str, list[float]]:
    """Taste evidence from its checkpoint: two finite, non-negative floats per key (the
    first at most the second for a ``proportion``)."""
    evidence = {}
    for key, counts in raw.items():
        first, second = (float(value) for value in counts)
        if not (0.0 <= first < float("inf") and 0.0 <= second < float("inf")) or (
            proportion and first > second
        ):
            raise ValueError(f"taste evidence of {key!r} out of range: {counts!r}")
        evidence[sys.intern(key)] = [first, second]
    return evidence
