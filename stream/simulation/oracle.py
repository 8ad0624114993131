"""The oracle: what the best possible page would have achieved, from the hidden truth.

For every page view the simulator computes, in expectation under the response model, the
clicks and impressions of the page the system served and of the oracle's page for the same
user at the same moment, laid out in the same shape (rows and items visible per row). The
oracle puts the titles with the highest true click probability, each with the artwork the user
likes best, into the slots with the most attention. The ratio of summed expected clicks to
summed expected impressions is the click rate each would get; ``served / oracle`` says how
much of the achievable the system reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.messages import Page
from stream.simulation.response import SessionMemory, click_probability, visible_items
from stream.simulation.users import Taste
from stream.simulation.world import SimItem, World

__all__ = ["Expectation", "Oracle", "expected_outcome"]

Slot = tuple[str, str | None]  # (item_id, artwork_id)
#: Best titles remembered per user (a page shows at most a few dozen).
_CACHED_PER_USER = 96


@dataclass(frozen=True, slots=True)
class Expectation:
    """Expected outcome of one page view: probability of a click, expected impressions."""

    clicks: float
    impressions: float


def expected_outcome(
    taste: Taste, world: World, rows: list[list[Slot]], memory: SessionMemory
) -> Expectation:
    """Exact expectation of ``response.scan_page`` on a page laid out as ``rows``.

    Examples
    --------
    >>> from stream.simulation.users import build_tastes
    >>> from stream.simulation.world import build_world
    >>> world, taste = build_world(10, seed=1), build_tastes(1, seed=1, id_prefix="u")[0]
    >>> expected_outcome(taste, world, [], SessionMemory.empty())
    Expectation(clicks=0.0, impressions=0.0)
    """
    reach = 1.0
    clicks = 0.0
    impressions = 0.0
    for row_index, slots in enumerate(rows):
        if row_index > 0:
            reach *= taste.row_continue
        impressions += reach * len(slots)
        no_click = 1.0
        for position, (item_id, artwork_id) in enumerate(slots):
            item = world.by_id.get(item_id)
            if item is None:
                continue
            style = world.style_of_artwork.get(artwork_id or "")
            looked = taste.col_decay**position
            no_click *= 1.0 - looked * click_probability(taste, item, style, memory)
        clicks += reach * (1.0 - no_click)
        reach *= no_click
    return Expectation(clicks, impressions)


class Oracle:
    """Builds the best page for a user from the hidden truth; caches each user's ranking."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._ranked: dict[str, list[tuple[float, SimItem, str]]] = {}

    def served(self, taste: Taste, page: Page, device: str, memory: SessionMemory) -> Expectation:
        """Expected outcome of the page the system served."""
        rows = [
            [(item.item_id, item.artwork_id) for item in items]
            for _, _, items in visible_items(page, device)
        ]
        return expected_outcome(taste, self.world, rows, memory)

    def best(self, taste: Taste, page: Page, device: str, memory: SessionMemory) -> Expectation:
        """Expected outcome of the oracle's page in the served page's layout."""
        shape = [len(items) for _, _, items in visible_items(page, device)]
        slots = sorted(
            ((r, p) for r, width in enumerate(shape) for p in range(width)),
            key=lambda rp: -(taste.row_continue ** rp[0]) * taste.col_decay ** rp[1],
        )
        if not slots:
            return Expectation(0.0, 0.0)
        chosen = self._top_items(taste, memory, len(slots))
        rows: list[list[Slot]] = [[("", None)] * width for width in shape]
        for (row, position), slot in zip(slots, chosen, strict=False):
            rows[row][position] = slot
        return expected_outcome(taste, self.world, rows, memory)

    def _top_items(self, taste: Taste, memory: SessionMemory, n: int) -> list[Slot]:
        """The n titles the user is most likely to click now, each with its best artwork."""
        ranked = self._ranked.get(taste.user_id)
        if ranked is None:
            ranked = self._rank(taste)[:_CACHED_PER_USER]
            self._ranked[taste.user_id] = ranked
        touched = set(memory.passes) | memory.finished | set(memory.paused)
        if len(ranked) - len(touched) < n:  # the cached head is used up: rank everything
            ranked = self._rank(taste)
        # Untouched titles keep their cached order; the few the session touched are re-scored.
        candidates: list[tuple[float, Slot]] = []
        for base, item, artwork in ranked:
            if item.item_id not in touched:
                candidates.append((base, (item.item_id, artwork)))
                if len(candidates) >= n:
                    break
        for item_id in touched:
            item = self.world.by_id.get(item_id)
            if item is not None:
                artwork, probability = self._best_artwork(taste, item, memory)
                candidates.append((probability, (item_id, artwork)))
        candidates.sort(key=lambda pair: -pair[0])
        return [slot for _, slot in candidates[:n]]

    def _rank(self, taste: Taste) -> list[tuple[float, SimItem, str]]:
        empty = SessionMemory.empty()
        ranked = []
        for item in self.world.items:
            artwork, probability = self._best_artwork(taste, item, empty)
            ranked.append((probability, item, artwork))
        ranked.sort(key=lambda entry: -entry[0])
        return ranked

    def _best_artwork(
        self, taste: Taste, item: SimItem, memory: SessionMemory
    ) -> tuple[str, float]:
        best = max(
            zip(item.artworks, item.artwork_styles, strict=True),
            key=lambda pair: click_probability(taste, item, pair[1], memory),
        )
        return best[0], click_probability(taste, item, best[1], memory)
