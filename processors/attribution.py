"""Per-arm outcome metrics, computed online from the engine's effects.

Every event that refers to a page (``recommendation_id``) counts for the arm of that page; the
engine resolves the page from the user's recent pages (``Effects.attributed_variant``). When the
page has already left that short memory, the user's own arm is used: arms are assigned per user,
so the two agree, and ``attributed_by_user`` counts how often the fallback was needed. Sessions
count for the user's arm when they end.

Kept deliberately cheap (a few integer increments per event): it runs inside
``Engine.process`` on the hot path.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: the engine imports this module
    from processors.engine import Effects
    from processors.user_state import UserState

__all__ = ["OUTCOME_FIELDS", "TIMELINE_FIELDS", "ArmMetrics", "ArmTotals"]

#: Event type → counter of ``ArmTotals``.
OUTCOME_FIELDS: dict[str, str] = {
    "impression": "impressions",
    "hover": "hovers",
    "click": "clicks",
    "scroll_past": "scroll_pasts",
    "play": "plays",
    "pause": "pauses",
    "completion": "completions",
    "drop_off": "drop_offs",
}
#: What each event-time bucket counts per arm, in this order.
TIMELINE_FIELDS: tuple[str, ...] = (
    "impressions",
    "clicks",
    "plays",
    "sessions",
    "sessions_without_play",
)
_TIMELINE_INDEX = {"impression": 0, "click": 1, "play": 2}
_SESSIONS, _SESSIONS_WITHOUT_PLAY = 3, 4


@dataclass(slots=True)
class ArmTotals:
    """Counters of one arm; the rates are derived, so merging workers is a sum."""

    pages: int = 0
    impressions: int = 0
    hovers: int = 0
    clicks: int = 0
    scroll_pasts: int = 0
    plays: int = 0
    pauses: int = 0
    completions: int = 0
    drop_offs: int = 0
    sessions: int = 0
    sessions_without_play: int = 0
    session_events: int = 0
    session_ms: int = 0
    attributed_by_page: int = 0
    attributed_by_user: int = 0

    @property
    def click_rate(self) -> float:
        """Impression → click rate."""
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def play_rate(self) -> float:
        """Impression → play rate (the "take rate")."""
        return self.plays / self.impressions if self.impressions else 0.0

    @property
    def completion_rate(self) -> float:
        """Completions per play."""
        return self.completions / self.plays if self.plays else 0.0

    @property
    def no_play_share(self) -> float:
        """Share of ended sessions without a play."""
        return self.sessions_without_play / self.sessions if self.sessions else 0.0

    @property
    def mean_session_events(self) -> float:
        """Events per ended session."""
        return self.session_events / self.sessions if self.sessions else 0.0

    @property
    def mean_session_minutes(self) -> float:
        """Event-time length of an ended session, first to last event."""
        return self.session_ms / self.sessions / 60_000.0 if self.sessions else 0.0

    def add(self, other: ArmTotals) -> None:
        """Add another arm's counters (another worker's, for example)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict[str, float]:
        """Counters and rates, JSON-ready."""
        out: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(
            click_rate=round(self.click_rate, 6),
            play_rate=round(self.play_rate, 6),
            completion_rate=round(self.completion_rate, 6),
            no_play_share=round(self.no_play_share, 6),
            mean_session_events=round(self.mean_session_events, 3),
            mean_session_minutes=round(self.mean_session_minutes, 3),
        )
        return out


class ArmMetrics:
    """Outcome counters per arm, in total and per event-time bucket (bounded).

    Examples
    --------
    >>> metrics = ArmMetrics()
    >>> for ts in (0, 1_000, 2_000, 3_000):
    ...     metrics.record_event("holdout", "impression", ts)
    >>> metrics.record_event("holdout", "click", 3_000)
    >>> metrics.arm("holdout").click_rate
    0.25
    >>> metrics.timeline()
    [(0, {'holdout': (4, 1, 0, 0, 0)})]
    """

    __slots__ = ("_arms", "_buckets", "_last_bucket", "bucket_ms", "max_buckets")

    def __init__(self, *, bucket_ms: int = 60_000, max_buckets: int = 1_440) -> None:
        self.bucket_ms = bucket_ms
        self.max_buckets = max_buckets
        self._arms: dict[str, ArmTotals] = {}
        #: bucket start → arm → counts in ``TIMELINE_FIELDS`` order
        self._buckets: OrderedDict[int, dict[str, list[int]]] = OrderedDict()
        #: (bucket start, arm, its counts) of the last event counted: most events count in
        #: the bucket and arm the one before did (forgotten when a bucket is dropped).
        self._last_bucket: tuple[int, str, list[int]] | None = None

    def arm(self, name: str) -> ArmTotals:
        """The counters of an arm (created empty on first use)."""
        totals = self._arms.get(name)
        if totals is None:
            totals = self._arms[name] = ArmTotals()
        return totals

    @property
    def arms(self) -> dict[str, ArmTotals]:
        """Every arm seen so far."""
        return dict(self._arms)

    # -- recording ---------------------------------------------------------------------

    def record_page(self, variant: str) -> None:
        """A page of this arm was served."""
        self.arm(variant).pages += 1

    def record_event(self, variant: str, event_type: str, ts: int, *, by_page: bool = True) -> None:
        """An outcome event attributed to ``variant`` (other event types are ignored)."""
        name = OUTCOME_FIELDS.get(event_type)
        if name is None:
            return
        totals = self._arms.get(variant)
        if totals is None:  # (`arm` creates it: the lookup first, every event counted comes here)
            totals = self.arm(variant)
        setattr(totals, name, getattr(totals, name) + 1)
        if by_page:
            totals.attributed_by_page += 1
        else:
            totals.attributed_by_user += 1
        index = _TIMELINE_INDEX.get(event_type)
        if index is not None:
            last = self._last_bucket
            start = ts - ts % self.bucket_ms
            if last is not None and last[0] == start and last[1] == variant:
                last[2][index] += 1
            else:
                counts = self._bucket(ts, variant)
                counts[index] += 1
                self._last_bucket = (start, variant, counts)

    def record_session(
        self, variant: str, *, played: bool, events: int, duration_ms: int, end_ts: int
    ) -> None:
        """A session of a user in ``variant`` ended at event time ``end_ts``."""
        totals = self.arm(variant)
        totals.sessions += 1
        totals.sessions_without_play += int(not played)
        totals.session_events += events
        totals.session_ms += max(duration_ms, 0)
        counts = self._bucket(end_ts, variant)
        counts[_SESSIONS] += 1
        counts[_SESSIONS_WITHOUT_PLAY] += int(not played)

    # -- the engine's hook -----------------------------------------------------------------

    def observe(self, effects: Effects) -> None:
        """Count the outcome one processed event reports (the engine calls this for every event).

        Pages are counted where the engine serves them (`record_page`), since a coalesced
        page is served at the end of a batch rather than by an event.
        """
        event = effects.event
        if event is None or effects.duplicate or effects.dead_letter is not None:
            return
        if event.recommendation_id is None or event.type not in OUTCOME_FIELDS:
            return
        variant = effects.attributed_variant
        if variant is not None:
            self.record_event(variant, event.type, event.ts)
        elif effects.state is not None and effects.state.variant:
            self.record_event(effects.state.variant, event.type, event.ts, by_page=False)

    def session_ended(self, state: UserState) -> None:
        """Count a session the engine is closing (call before the state forgets it)."""
        if state.session_events and state.variant:
            self.record_session(
                state.variant,
                played=state.has_played,
                events=state.session_events,
                duration_ms=state.last_ts - state.session_start,
                end_ts=state.last_ts,
            )

    # -- reading -----------------------------------------------------------------------

    def timeline(self) -> list[tuple[int, dict[str, tuple[int, ...]]]]:
        """``(bucket_start_ts, {arm: counts})``, oldest first; counts as in ``TIMELINE_FIELDS``."""
        return [
            (start, {arm: tuple(counts) for arm, counts in arms.items()})
            for start, arms in self._buckets.items()
        ]

    def window(self, start_ts: int, end_ts: int | None = None) -> dict[str, dict[str, int]]:
        """Per arm, ``TIMELINE_FIELDS`` summed over the buckets that start in the window."""
        totals: dict[str, list[int]] = {}
        for start, arms in self._buckets.items():
            if start < start_ts or (end_ts is not None and start >= end_ts):
                continue
            for arm, counts in arms.items():
                summed = totals.setdefault(arm, [0] * len(TIMELINE_FIELDS))
                for index, count in enumerate(counts):
                    summed[index] += count
        return {arm: dict(zip(TIMELINE_FIELDS, c, strict=True)) for arm, c in totals.items()}

    def to_dict(self) -> dict[str, Any]:
        """Arms and timeline, JSON-ready (what the worker publishes to Redis)."""
        return {
            "bucket_ms": self.bucket_ms,
            "timeline_fields": list(TIMELINE_FIELDS),
            "arms": {name: totals.to_dict() for name, totals in sorted(self._arms.items())},
            "timeline": [
                {"start_ts": start, "arms": {arm: list(counts) for arm, counts in arms.items()}}
                for start, arms in self.timeline()
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ArmMetrics:
        """Rebuild from ``to_dict`` output (another worker's, or a published one)."""
        metrics = cls(bucket_ms=int(raw.get("bucket_ms", 60_000)))
        names = {f.name for f in fields(ArmTotals)}
        for arm, values in raw.get("arms", {}).items():
            totals = metrics.arm(arm)
            for key, value in values.items():
                if key in names:
                    setattr(totals, key, int(value))
        width = len(TIMELINE_FIELDS)
        for bucket in raw.get("timeline", []):
            for arm, counts in bucket["arms"].items():
                padded = ([int(c) for c in counts] + [0] * width)[:width]
                metrics._buckets.setdefault(int(bucket["start_ts"]), {})[arm] = padded
        metrics._buckets = OrderedDict(sorted(metrics._buckets.items()))
        return metrics

    def merge(self, other: ArmMetrics) -> None:
        """Add another instance's counts (metrics of several workers)."""
        for arm, totals in other._arms.items():
            self.arm(arm).add(totals)
        for start, arms in other._buckets.items():
            bucket = self._buckets.setdefault(start, {})
            for arm, counts in arms.items():
                mine = bucket.setdefault(arm, [0] * len(TIMELINE_FIELDS))
                for index, count in enumerate(counts):
                    mine[index] += count
        self._buckets = OrderedDict(sorted(self._buckets.items()))
        self._trim()

    # -- internals ---------------------------------------------------------------------

    def _bucket(self, ts: int, variant: str) -> list[int]:
        start = ts - ts % self.bucket_ms
        arms = self._buckets.get(start)
        if arms is None:
            late = bool(self._buckets) and start < next(reversed(self._buckets))
            arms = self._buckets[start] = {}
            if late:  # an out-of-order event opened an older bucket: keep them in time order
                self._buckets = OrderedDict(sorted(self._buckets.items()))
            self._trim()
        counts = arms.get(variant)
        if counts is None:
            counts = arms[variant] = [0] * len(TIMELINE_FIELDS)
        return counts

    def _trim(self) -> None:
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
            self._last_bucket = None
