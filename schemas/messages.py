"""The messages insession reads and writes, as plain frozen dataclasses shared by every layer.

Every class here has an Avro schema of the same name in this package (``*.avsc``); the codec
turns bytes into these objects and back. Keeping them plain data (no methods with side effects,
no clocks) is what lets the same engine run live, in replay and in benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BEHAVIOUR_EVENT_TYPES",
    "ITEM_EVENT_TYPES",
    "BehaviourEvent",
    "CatalogItem",
    "ChurnAlert",
    "DeadLetter",
    "Page",
    "PageItem",
    "PageRow",
]

#: Event types that must name the item they are about.
ITEM_EVENT_TYPES: frozenset[str] = frozenset(
    {"impression", "hover", "click", "scroll_past", "play", "pause", "completion", "drop_off"}
)
#: Every accepted behaviour event type (``session_start`` carries no item).
BEHAVIOUR_EVENT_TYPES: frozenset[str] = ITEM_EVENT_TYPES | {"session_start"}


@dataclass(frozen=True, slots=True)
class BehaviourEvent:
    """One thing a user did, in event time (epoch milliseconds)."""

    event_id: str
    user_id: str
    type: str
    ts: int
    item_id: str | None = None
    session_id: str | None = None
    device: str | None = None
    row_id: str | None = None
    position: int | None = None
    artwork_id: str | None = None
    dwell_ms: int | None = None
    progress: float | None = None
    recommendation_id: str | None = None
    #: Local hour of day (0-23) when the app knows the user's time zone; else derived from ts (UTC).
    local_hour: int | None = None


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """A title that can be recommended. Items may arrive after events mention them."""

    item_id: str
    title: str = ""
    genres: tuple[str, ...] = ()
    duration_s: int = 0
    artworks: tuple[str, ...] = ()
    #: Visual style tag of each artwork ("character-closeup", "landscape", ...), in the order of
    #: ``artworks``; empty when the catalog has none. Lets artwork choice learn per style and
    #: carry a user's taste from one title's poster to another's.
    artwork_styles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PageItem:
    """One ranked title on a row, with the artwork chosen to show it."""

    item_id: str
    score: float
    artwork_id: str | None = None


@dataclass(frozen=True, slots=True)
class PageRow:
    """A titled row of ranked items ("Trending now", "Because you watched ...")."""

    row_id: str
    title: str
    items: tuple[PageItem, ...]


@dataclass(frozen=True, slots=True)
class Page:
    """The recommendation page served to one user after one trigger event.

    ``recommendation_id`` is derived from the user and the trigger event, so a page produced
    twice for the same trigger (at-least-once redelivery) carries the same id.
    """

    user_id: str
    session_id: str
    recommendation_id: str
    trigger_event_id: str
    generated_at: int
    rows: tuple[PageRow, ...]
    variant: str = "personalized"
    #: Earlier trigger events of the same user, consumed in the same batch, that this page
    #: answers instead of pages of their own (each would have been superseded within
    #: milliseconds). Empty when the page answers its trigger event alone.
    coalesced_event_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChurnAlert:
    """Raised when a session looks likely to end without a play."""

    alert_id: str
    user_id: str
    session_id: str
    risk: float
    reasons: tuple[str, ...]
    ts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not be used, kept whole with the reason and where it came from."""

    original: bytes
    error: str
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    ts: int = 0
    headers: dict[str, str] = field(default_factory=dict)
