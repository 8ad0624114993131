"""The response model: how a user with a hidden taste reacts to a page.

One page view reads rows top to bottom and, inside a row, left to right:

- every item visible without sideways scrolling (``VISIBLE_PER_ROW`` per device) in a row the
  user reaches gets an ``impression``;
- position ``p`` of a row is looked at with probability ``col_decay ** p``; after a row with no
  click the user scrolls to the next one with probability ``row_continue`` (position bias:
  the top rows and the start of each row get the attention);
- a looked-at item is clicked with probability ``click_probability`` (hidden taste for its
  genres, times whether its artwork's style is the one the user is drawn to, times quality,
  lowered for titles the user already passed over this session or finished before); a hover
  comes first, more often and longer the more interesting the item; a looked-at item that is
  not clicked is an explicit ``scroll_past``;
- the first click ends the page view; the user then plays (mostly) and watches until a
  completion, a pause or a drop-off, whose odds depend on the taste match and quality (not on
  the artwork: a good poster gets the click, not the completion).

The functions here are pure given their ``random.Random``; ``oracle`` computes the same
probabilities in expectation, so what the oracle promises is what this model delivers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from schemas.messages import Page, PageItem
from stream.simulation.users import VISIBLE_PER_ROW, Taste
from stream.simulation.world import SimItem, World

__all__ = [
    "MAX_WATCH_SEGMENT_S",
    "PLAY_AFTER_CLICK",
    "Action",
    "SessionMemory",
    "WatchPlan",
    "click_probability",
    "plan_watch",
    "scan_page",
    "taste_match",
    "visible_items",
]

#: Click probability of a looked-at title the user loves, with an average poster and quality.
BASE_CLICK = 0.4
#: Multipliers when the artwork's style is / is not the user's favourite.
ARTWORK_MATCH = 1.5
ARTWORK_MISS = 0.75
#: Each earlier scroll-past of the same title in this session multiplies its odds by this.
PASS_FATIGUE = 0.6
#: A title the user already finished is rarely clicked again; a paused one is resumed gladly.
WATCHED_FACTOR = 0.05
RESUME_FACTOR = 1.5
MAX_CLICK = 0.95
PLAY_AFTER_CLICK = 0.9
#: The longest stretch watched without a break: longer watches get a short pause and play
#: again, which keeps a film within the engine's 30-minute session gap (events carry no
#: heartbeat while a title plays).
MAX_WATCH_SEGMENT_S = 25 * 60
_MOBILE_HOVER = 0.3


@dataclass(slots=True)
class SessionMemory:
    """What the user remembers: passes in this session, titles finished or paused ever."""

    passes: dict[str, int]
    finished: set[str]
    paused: dict[str, float]

    @classmethod
    def empty(cls) -> SessionMemory:
        return cls({}, set(), {})


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the user did on the page, before it becomes a ``BehaviourEvent``."""

    type: str
    offset_ms: int
    item_id: str
    row_id: str
    position: int
    artwork_id: str | None
    dwell_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WatchPlan:
    """How a play will end: at which progress, how, after how many milliseconds."""

    start_progress: float
    end_progress: float
    end_type: str
    watch_ms: int


def taste_match(taste: Taste, item: SimItem) -> float:
    """How much the user likes the item's genres, in [0, 1] (mostly the best genre).

    Examples
    --------
    >>> from stream.simulation.users import build_tastes
    >>> from stream.simulation.world import build_world
    >>> taste = build_tastes(1, seed=3, id_prefix="u")[0]
    >>> item = build_world(5, seed=3).items[0]
    >>> 0.0 <= taste_match(taste, item) <= 1.0
    True
    """
    prefs = [taste.genre_pref.get(genre, 0.0) for genre in item.genres]
    if not prefs:
        return 0.0
    return 0.75 * max(prefs) + 0.25 * sum(prefs) / len(prefs)


def click_probability(
    taste: Taste,
    item: SimItem,
    artwork_style: str | None,
    memory: SessionMemory,
) -> float:
    """Probability that the user clicks the item once they look at it."""
    art = ARTWORK_MATCH if artwork_style == taste.style_pref else ARTWORK_MISS
    probability = BASE_CLICK * taste_match(taste, item) * art * item.quality
    passes = memory.passes.get(item.item_id)
    if passes:
        probability *= PASS_FATIGUE**passes
    if item.item_id in memory.finished:
        probability *= WATCHED_FACTOR
    elif item.item_id in memory.paused:
        probability *= RESUME_FACTOR
    return min(probability, MAX_CLICK)


def visible_items(page: Page, device: str) -> list[tuple[int, str, list[PageItem]]]:
    """``(row_index, row_id, items on screen)`` for each row of the page."""
    visible = VISIBLE_PER_ROW.get(device, 5)
    return [(index, row.row_id, list(row.items[:visible])) for index, row in enumerate(page.rows)]


def scan_page(
    taste: Taste,
    world: World,
    page: Page,
    device: str,
    memory: SessionMemory,
    rng: random.Random,
) -> tuple[list[Action], Action | None]:
    """One page view: the actions in order and the click that ended it (or ``None``).

    Updates ``memory.passes`` with the scroll-pasts of this view.
    """
    actions: list[Action] = []
    offset = 0
    for row_index, row_id, items in visible_items(page, device):
        if row_index > 0:
            if rng.random() >= taste.row_continue:
                break
            offset += rng.randint(600, 1500)  # scrolling down to the next row
        for position, page_item in enumerate(items):
            actions.append(
                Action(
                    "impression", offset, page_item.item_id, row_id, position, page_item.artwork_id
                )
            )
        for position, page_item in enumerate(items):
            if rng.random() >= taste.col_decay**position:
                continue  # on screen, never looked at: an impression without an answer
            offset += rng.randint(250, 900)
            item = world.by_id.get(page_item.item_id)
            if item is None:  # a title this world does not know: not interesting
                probability = 0.0
            else:
                style = world.style_of_artwork.get(page_item.artwork_id or "")
                probability = click_probability(taste, item, style, memory)
            clicked = rng.random() < probability
            interest = min(probability / (BASE_CLICK * ARTWORK_MATCH), 1.0)
            hover_chance = 0.9 if clicked else 0.05 + 0.7 * interest
            if device == "mobile":
                hover_chance *= _MOBILE_HOVER
            art = page_item.artwork_id
            if rng.random() < hover_chance:
                dwell = int(300 + 4_000 * interest * rng.uniform(0.6, 1.4))
                actions.append(
                    Action("hover", offset, page_item.item_id, row_id, position, art, dwell)
                )
                offset += dwell
            if clicked:
                click = Action("click", offset, page_item.item_id, row_id, position, art)
                actions.append(click)
                return actions, click
            actions.append(Action("scroll_past", offset, page_item.item_id, row_id, position, art))
            memory.passes[page_item.item_id] = memory.passes.get(page_item.item_id, 0) + 1
    return actions, None


def plan_watch(taste: Taste, item: SimItem, memory: SessionMemory, rng: random.Random) -> WatchPlan:
    """Decide how a play of ``item`` ends: completion, pause or drop-off, and when."""
    start = memory.paused.get(item.item_id, 0.0)
    match = taste_match(taste, item)
    engaged = min(max(0.1 + 0.8 * match * item.quality, 0.05), 0.95)
    draw = rng.random()
    remaining = 1.0 - start
    if draw < engaged:
        end, end_type = 1.0, "completion"
    elif draw < engaged + 0.1:
        end, end_type = start + remaining * rng.uniform(0.2, 0.8), "pause"
    else:
        end, end_type = start + remaining * rng.uniform(0.02, 0.3), "drop_off"
    duration_s = max(item.duration_s, 60)
    end = round(min(end, 1.0), 4)
    return WatchPlan(
        start_progress=start,
        end_progress=end,
        end_type=end_type,
        watch_ms=max(int((end - start) * duration_s * 1000), 1_000),
    )
