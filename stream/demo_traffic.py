"""A small synthetic world for the demo: a catalog, users with a hidden favourite genre, and
how they react to the page they were served (impressions, scroll-pasts, clicks, plays).

Deliberately small; the closed-loop simulator (``insession simulate``) is the rich version.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from schemas.messages import BehaviourEvent, CatalogItem, Page

__all__ = ["DEMO_GENRES", "DemoUser", "demo_catalog", "react_to_page"]

DEMO_GENRES = ("action", "comedy", "drama", "horror", "scifi", "romance", "documentary", "anime")
_ADJECTIVES = ("Silent", "Last", "Red", "Lost", "Golden", "Broken", "Hidden", "Final", "Wild")
_NOUNS = ("Harbor", "Signal", "Empire", "Garden", "Machine", "River", "Promise", "Frontier")
_STYLES = ("character-closeup", "action-scene", "ensemble-cast", "minimal-title", "landscape")


def demo_catalog(n_items: int = 240, seed: int = 1) -> list[CatalogItem]:
    """Items spread over the demo genres, each with three artworks tagged with their style."""
    rng = random.Random(seed)
    items = []
    for index in range(n_items):
        primary = DEMO_GENRES[index % len(DEMO_GENRES)]
        genres = (primary,) if rng.random() < 0.7 else (primary, rng.choice(DEMO_GENRES))
        item_id = f"title-{index:04d}"
        items.append(
            CatalogItem(
                item_id=item_id,
                title=f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {index}",
                genres=tuple(dict.fromkeys(genres)),
                duration_s=rng.choice((1500, 2700, 5400, 7200)),
                artworks=tuple(f"{item_id}-art{k}" for k in range(3)),
                artwork_styles=tuple(_STYLES[(index + 2 * k) % len(_STYLES)] for k in range(3)),
            )
        )
    return items


@dataclass
class DemoUser:
    """A user who likes one genre and mostly ignores the rest."""

    user_id: str
    favourite: str
    device: str
    rng: random.Random
    event_seq: int = 0
    session: int = 0
    steps_in_session: int = 0
    seen: set[str] = field(default_factory=set)

    def next_id(self) -> str:
        self.event_seq += 1
        return f"{self.user_id}-e{self.event_seq}"


def react_to_page(
    user: DemoUser, page: Page | None, catalog: dict[str, CatalogItem], now_ms: int
) -> list[BehaviourEvent]:
    """The events a user emits looking at their page: top rows, left to right."""
    session_id = f"{user.user_id}-s{user.session}"

    def event(kind: str, item_id: str | None = None, **extra: object) -> BehaviourEvent:
        return BehaviourEvent(
            event_id=user.next_id(),
            user_id=user.user_id,
            type=kind,
            ts=now_ms,
            item_id=item_id,
            session_id=session_id,
            device=user.device,
            recommendation_id=page.recommendation_id if page is not None else None,
            **extra,  # type: ignore[arg-type]
        )

    if page is None or not page.rows or user.steps_in_session == 0:
        user.steps_in_session = 1
        return [event("session_start")]
    user.steps_in_session += 1
    events: list[BehaviourEvent] = []
    for row_index, row in enumerate(page.rows[:2]):
        for position, page_item in enumerate(row.items[:5]):
            item = catalog.get(page_item.item_id)
            art = page_item.artwork_id
            events.append(
                event(
                    "impression",
                    page_item.item_id,
                    row_id=row.row_id,
                    position=position,
                    artwork_id=art,
                )
            )
            likes = item is not None and user.favourite in item.genres
            if likes and page_item.item_id not in user.seen and user.rng.random() < 0.6:
                user.seen.add(page_item.item_id)
                events.append(event("hover", page_item.item_id, dwell_ms=1500, artwork_id=art))
                events.append(
                    event(
                        "click",
                        page_item.item_id,
                        row_id=row.row_id,
                        position=position,
                        artwork_id=art,
                    )
                )
                events.append(event("play", page_item.item_id))
                progress = round(user.rng.uniform(0.3, 1.0), 2)
                kind = "completion" if progress > 0.9 else "pause"
                events.append(event(kind, page_item.item_id, progress=progress))
                return events
            events.append(
                event(
                    "scroll_past",
                    page_item.item_id,
                    row_id=row.row_id,
                    position=position,
                    artwork_id=art,
                )
            )
            if row_index == 0 and position >= 3:
                break
    if user.steps_in_session > 8:  # bored: the session ends, a new one starts later
        user.session += 1
        user.steps_in_session = 0
    return events
