"""The catalog as the engine sees it: items by id and a genre index, bounded in size."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from schemas.messages import CatalogItem

__all__ = ["Catalog"]

#: Item changes remembered for readers that keep derived arrays in step (``changes_since``).
_CHANGE_LOG = 4096


class Catalog:
    """Items by id with a genre → items index.

    Events may mention an item before the catalog does; such items are simply unknown here
    (no genres, no artworks) and gain their metadata when the catalog message arrives.

    Examples
    --------
    >>> catalog = Catalog()
    >>> catalog.upsert(CatalogItem("i1", "Alien", ("scifi", "horror"), 7000, ("a1",)))
    >>> catalog.items_in_genre("horror")
    ('i1',)
    >>> catalog.get("nope") is None
    True
    """

    __slots__ = ("_by_genre", "_changes", "_genre_cache", "_items", "max_items", "version")

    def __init__(self, max_items: int = 1_000_000) -> None:
        self.max_items = max_items
        self._items: dict[str, CatalogItem] = {}
        self._by_genre: dict[str, dict[str, None]] = {}
        self._genre_cache: dict[str, tuple[str, ...]] = {}
        #: Bumped once per item added, replaced or evicted (see ``changes_since``).
        self.version = 0
        self._changes: deque[str] = deque(maxlen=_CHANGE_LOG)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[CatalogItem]:
        return iter(self._items.values())

    def get(self, item_id: str) -> CatalogItem | None:
        """Return the item, or None if the catalog has not heard of it yet."""
        return self._items.get(item_id)

    def upsert(self, item: CatalogItem) -> None:
        """Add or replace an item; past the size bound the oldest-inserted item is dropped."""
        previous = self._items.pop(item.item_id, None)
        if previous is not None:
            self._unindex(previous)
        elif len(self._items) >= self.max_items:
            oldest = next(iter(self._items))
            self._unindex(self._items.pop(oldest))
            self._changed(oldest)
        self._items[item.item_id] = item
        self._changed(item.item_id)
        for genre in item.genres:
            self._by_genre.setdefault(genre, {})[item.item_id] = None
            self._genre_cache.pop(genre, None)

    def upsert_many(self, items: Iterable[CatalogItem]) -> None:
        """Add several items."""
        for item in items:
            self.upsert(item)

    def items_in_genre(self, genre: str) -> tuple[str, ...]:
        """Item ids of a genre, in insertion order (cached until the genre changes)."""
        cached = self._genre_cache.get(genre)
        if cached is None:
            cached = tuple(self._by_genre.get(genre, ()))
            self._genre_cache[genre] = cached
        return cached

    def newest(self, n: int) -> list[str]:
        """The n most recently added item ids, newest first (the cold-start fallback row)."""
        newest = []
        for item_id in reversed(self._items):
            newest.append(item_id)
            if len(newest) >= n:
                break
        return newest

    def genres(self) -> tuple[str, ...]:
        """Every genre that has at least one item."""
        return tuple(genre for genre, items in self._by_genre.items() if items)

    def changes_since(self, version: int) -> list[str] | None:
        """Ids of the items changed since ``version`` (oldest first, repeats possible).

        None when the log no longer reaches back that far: the reader rebuilds from scratch.
        Lets the page builder keep its per-item arrays in step without a full rebuild per
        catalog message.
        """
        steps = self.version - version
        if steps < 0 or steps > len(self._changes):
            return None
        return list(self._changes)[len(self._changes) - steps :] if steps else []

    def _changed(self, item_id: str) -> None:
        self.version += 1
        self._changes.append(item_id)

    def _unindex(self, item: CatalogItem) -> None:
        for genre in item.genres:
            members = self._by_genre.get(genre)
            if members is not None:
                members.pop(item.item_id, None)
                self._genre_cache.pop(genre, None)
