"""Open-loop, demo-like traffic for the Kafka benchmarks: events known before they are sent.

Offered load must not wait for the system under test, so the users here react to a page of
their own making (favourite-genre titles mixed with random ones) instead of the page the worker
served; otherwise the mix follows ``stream.demo_traffic``: a session start, then per page view
impressions and scroll-pasts along two rows, or a hover, click, play and pause on a liked
title, and a new session after eight views. About 60% of the events trigger a page.

The event id carries the sequence number (``{run_id}-{seq}``) so a consumer can match an
output (a forwarded event, or a page's ``trigger_event_id``) to its intended send time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

from processors.config import EngineConfig
from schemas.messages import BehaviourEvent, CatalogItem
from stream.demo_traffic import DEMO_GENRES

__all__ = ["EventTemplate", "Traffic", "seq_of_event_id"]

_DEVICES = ("tv", "mobile", "web")
_VIEWS_PER_SESSION = 8


@dataclass(frozen=True, slots=True)
class EventTemplate:
    """An event without its id and time (both are set when it is sent)."""

    event: BehaviourEvent
    triggers_page: bool


def seq_of_event_id(event_id: str) -> int:
    """The sequence number in an id made by :class:`Traffic` (``-1`` if there is none).

    Examples
    --------
    >>> seq_of_event_id("bench-3f2a-1234")
    1234
    >>> seq_of_event_id("other")
    -1
    """
    _, _, tail = event_id.rpartition("-")
    return int(tail) if tail.isdigit() else -1


class Traffic:
    """A deterministic stream of demo-like events for ``users`` users over ``catalog``."""

    def __init__(
        self,
        catalog: list[CatalogItem],
        *,
        users: int = 2_000,
        seed: int = 5,
        run_id: str = "bench",
        page_trigger_types: frozenset[str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.catalog = catalog
        self._rng = random.Random(seed)
        self._triggers = page_trigger_types or EngineConfig().page_trigger_types
        self._by_genre: dict[str, list[CatalogItem]] = {}
        for item in catalog:
            for genre in item.genres:
                self._by_genre.setdefault(genre, []).append(item)
        self._users = [
            _User(
                f"{run_id}-user{index:06d}",
                self._rng.choice(DEMO_GENRES),
                _DEVICES[index % len(_DEVICES)],
            )
            for index in range(users)
        ]
        self._pending: list[BehaviourEvent] = []
        self._next_user = 0

    def templates(self, count: int) -> list[EventTemplate]:
        """The next ``count`` events."""
        out = []
        stream = self._events()
        for _ in range(count):
            event = next(stream)
            out.append(EventTemplate(event, event.type in self._triggers))
        return out

    @staticmethod
    def stamp(template: EventTemplate, event_id: str, ts: int) -> BehaviourEvent:
        """The template as an event with its id and event time."""
        return replace(template.event, event_id=event_id, ts=ts)

    def _events(self) -> Iterator[BehaviourEvent]:
        while True:
            while self._pending:
                yield self._pending.pop(0)
            user = self._users[self._next_user]
            self._next_user = (self._next_user + 1) % len(self._users)
            self._pending = self._page_view(user)

    def _page_view(self, user: _User) -> list[BehaviourEvent]:
        rng = self._rng
        session_id = f"{user.user_id}-s{user.session}"

        def event(kind: str, item: str | None = None, **extra: object) -> BehaviourEvent:
            return BehaviourEvent(
                event_id="",
                user_id=user.user_id,
                type=kind,
                ts=0,
                item_id=item,
                session_id=session_id,
                device=user.device,
                **extra,  # type: ignore[arg-type]
            )

        if user.views == 0:
            user.views = 1
            return [event("session_start")]
        user.views += 1
        favourites = self._by_genre.get(user.favourite) or self.catalog
        page = [
            rng.choice(favourites) if rng.random() < 0.4 else rng.choice(self.catalog)
            for _ in range(10)
        ]
        events: list[BehaviourEvent] = []
        for row_index, row in enumerate((page[:5], page[5:])):
            row_id = f"row{row_index}"
            for position, item in enumerate(row):
                art = item.artworks[0] if item.artworks else None
                events.append(
                    event(
                        "impression", item.item_id, row_id=row_id, position=position, artwork_id=art
                    )
                )
                if user.favourite in item.genres and rng.random() < 0.6:
                    events.append(event("hover", item.item_id, dwell_ms=1500, artwork_id=art))
                    events.append(
                        event(
                            "click", item.item_id, row_id=row_id, position=position, artwork_id=art
                        )
                    )
                    events.append(event("play", item.item_id))
                    progress = round(rng.uniform(0.3, 1.0), 2)
                    kind = "completion" if progress > 0.9 else "pause"
                    events.append(event(kind, item.item_id, progress=progress))
                    return self._end_view(user, events)
                events.append(
                    event(
                        "scroll_past",
                        item.item_id,
                        row_id=row_id,
                        position=position,
                        artwork_id=art,
                    )
                )
                if row_index == 0 and position >= 3:
                    break
        return self._end_view(user, events)

    @staticmethod
    def _end_view(user: _User, events: list[BehaviourEvent]) -> list[BehaviourEvent]:
        if user.views > _VIEWS_PER_SESSION:
            user.session += 1
            user.views = 0
        return events


@dataclass(slots=True)
class _User:
    user_id: str
    favourite: str
    device: str
    views: int = 0
    session: int = 0
