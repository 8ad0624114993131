"""The simulated world: a catalog of titles with genres, durations and styled artworks.

Everything is drawn from one seeded ``random.Random``, so the same seed builds the same world in
every process. Each artwork's visual style is public (a catalog tags its artwork); each title's
quality and every user's taste stay hidden: the engine only sees the public ``CatalogItem``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from schemas.messages import CatalogItem

__all__ = ["ARTWORK_STYLES", "GENRES", "GENRE_WEIGHTS", "SimItem", "World", "build_world"]

#: Genres, most popular first; ``GENRE_WEIGHTS`` skews both the catalog and users' tastes.
GENRES: tuple[str, ...] = (
    "drama",
    "comedy",
    "action",
    "thriller",
    "crime",
    "scifi",
    "romance",
    "documentary",
    "horror",
    "family",
    "fantasy",
    "anime",
)
#: Zipf-like popularity (1 / rank^0.8): mainstream genres are common, niches are not rare.
GENRE_WEIGHTS: tuple[float, ...] = tuple(1.0 / (rank + 1) ** 0.8 for rank in range(len(GENRES)))
#: Visual styles an artwork can have; a user is drawn to one of them.
ARTWORK_STYLES: tuple[str, ...] = (
    "character-closeup",
    "action-scene",
    "ensemble-cast",
    "minimal-title",
    "landscape",
)
_ADJECTIVES = (
    "Silent",
    "Last",
    "Red",
    "Lost",
    "Golden",
    "Broken",
    "Hidden",
    "Final",
    "Wild",
    "Northern",
    "Electric",
    "Paper",
)
_NOUNS = (
    "Harbor",
    "Signal",
    "Empire",
    "Garden",
    "Machine",
    "River",
    "Promise",
    "Frontier",
    "Orchard",
    "Comet",
    "Letters",
    "Kingdom",
)
_ARTWORKS_PER_ITEM = 3


@dataclass(frozen=True, slots=True)
class SimItem:
    """A title with its hidden truths: each artwork's style and how good the title is."""

    item_id: str
    title: str
    genres: tuple[str, ...]
    duration_s: int
    artworks: tuple[str, ...]
    artwork_styles: tuple[str, ...]
    #: Multiplies click and completion odds (about 0.6-1.4); popularity can learn it, genre cannot.
    quality: float

    def public(self) -> CatalogItem:
        """What the catalog topic carries: artworks with their style tags, never the quality."""
        return CatalogItem(
            item_id=self.item_id,
            title=self.title,
            genres=self.genres,
            duration_s=self.duration_s,
            artworks=self.artworks,
            artwork_styles=self.artwork_styles,
        )


@dataclass(frozen=True, slots=True)
class World:
    """The catalog plus lookups the response model needs."""

    items: tuple[SimItem, ...]
    by_id: dict[str, SimItem] = field(repr=False)
    style_of_artwork: dict[str, str] = field(repr=False)

    def catalog(self) -> list[CatalogItem]:
        """The public catalog messages, in item order."""
        return [item.public() for item in self.items]


def build_world(n_items: int, seed: int) -> World:
    """A seeded catalog of ``n_items`` titles over ``GENRES`` with three styled artworks each.

    Examples
    --------
    >>> world = build_world(20, seed=1)
    >>> len(world.items), world.items[0] == build_world(20, seed=1).items[0]
    (20, True)
    >>> sorted(set(world.style_of_artwork.values())) <= sorted(ARTWORK_STYLES)
    True
    """
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    rng = random.Random(f"world:{seed}")
    items = []
    for index in range(n_items):
        primary = rng.choices(GENRES, weights=GENRE_WEIGHTS)[0]
        genres = [primary]
        if rng.random() < 0.3:
            secondary = rng.choices(GENRES, weights=GENRE_WEIGHTS)[0]
            if secondary != primary:
                genres.append(secondary)
        if rng.random() < 0.6:  # a series episode
            duration_s = rng.randrange(22, 61) * 60
        else:  # a film
            duration_s = rng.randrange(85, 151) * 60
        item_id = f"s{seed}-t{index:05d}"
        styles = tuple(rng.sample(ARTWORK_STYLES, _ARTWORKS_PER_ITEM))
        items.append(
            SimItem(
                item_id=item_id,
                title=f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {index}",
                genres=tuple(genres),
                duration_s=duration_s,
                artworks=tuple(f"{item_id}-art{k}" for k in range(_ARTWORKS_PER_ITEM)),
                artwork_styles=styles,
                quality=round(min(max(rng.lognormvariate(0.0, 0.25), 0.6), 1.4), 4),
            )
        )
    return World(
        items=tuple(items),
        by_id={item.item_id: item for item in items},
        style_of_artwork={
            artwork: style
            for item in items
            for artwork, style in zip(item.artworks, item.artwork_styles, strict=True)
        },
    )
