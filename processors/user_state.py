"""Per-user state: the current session's feature window plus what must outlive a session.

The state is a mutable slotted object owned by exactly one engine at a time (the worker that
owns the user's partition). It is mutated in place rather than copied per event because a
frozen dataclass rebuilt on every event costs more than the whole rest of the feature update;
durability comes from checkpointing the serialized form (``to_dict``) after the outputs of an
event are acknowledged, not from immutability.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["EVENT_TYPE_INDEX", "STATE_VERSION", "PendingImpression", "UserState"]

#: Bumped whenever the serialized layout changes; older checkpoints are refused, not misread.
STATE_VERSION = 1

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
        "type_counts",
        "user_id",
        "variant",
    )

    def __init__(self, user_id: str, *, dedup_window: int = 64) -> None:
        self.user_id = user_id
        self.variant = ""
        self.sessions_total = 0
        self.continue_watching: dict[str, float] = {}
        self.recent_event_ids: deque[str] = deque(maxlen=dedup_window)
        self.last_recommendation_id = ""
        #: recommendation_id → variant of this user's last few pages (attribution).
        self.recent_pages: dict[str, str] = {}
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
        self.churn_snapshots: list[list[float]] = []
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
            "recent_event_ids": list(self.recent_event_ids),
            "dedup_window": self.recent_event_ids.maxlen,
            "last_recommendation_id": self.last_recommendation_id,
            "recent_pages": self.recent_pages,
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
            "churn_snapshots": self.churn_snapshots,
            "churn_alerted": self.churn_alerted,
            "churn_risk": self.churn_risk,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> UserState:
        """Rebuild a state from ``to_dict`` output; refuses other versions with ValueError."""
        if raw.get("v") != STATE_VERSION:
            raise ValueError(f"user state version {raw.get('v')!r} is not {STATE_VERSION}")
        state = cls(raw["user_id"], dedup_window=int(raw["dedup_window"]))
        state.variant = raw["variant"]
        state.sessions_total = int(raw["sessions_total"])
        state.continue_watching = {k: float(v) for k, v in raw["continue_watching"].items()}
        state.recent_event_ids.extend(raw["recent_event_ids"])
        state.last_recommendation_id = raw["last_recommendation_id"]
        state.recent_pages = dict(raw["recent_pages"])
        state.device = raw["device"]
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
        state.genre_affinity = {k: float(v) for k, v in raw["genre_affinity"].items()}
        state.affinity_ts = int(raw["affinity_ts"])
        state.last_items = list(raw["last_items"])
        state.session_impressed = {k: int(v) for k, v in raw["session_impressed"].items()}
        state.session_scrolled = {k: int(v) for k, v in raw["session_scrolled"].items()}
        state.session_clicked = dict.fromkeys(raw["session_clicked"])
        state.pending = {k: PendingImpression.from_list(v) for k, v in raw["pending"].items()}
        state.churn_snapshots = [[float(v) for v in snap] for snap in raw["churn_snapshots"]]
        state.churn_alerted = bool(raw["churn_alerted"])
        state.churn_risk = float(raw["churn_risk"])
        return state
