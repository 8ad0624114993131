"""A page's artworks, remembered per order of the style pulls, are those the arrays give; the
page's objects built slot by slot equal the dataclasses' own."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from processors.catalog import Catalog
from processors.features import ItemTable
from processors.page_builder import _page_items
from processors.styled_artworks import StyledArtworks
from schemas.messages import CatalogItem, PageItem

STYLES = ("closeup", "scene", "title", "cast", "dark")


def _item(rng: random.Random, index: int) -> CatalogItem:
    """An item with 0-3 artworks, styled, unstyled, or (rarely) with fewer styles."""
    artworks = tuple(f"art-{index}-{k}" for k in range(rng.randrange(4)))
    kind = rng.random()
    if kind < 0.7:
        styles = tuple(rng.choice(STYLES) for _ in artworks)
    elif kind < 0.9:
        styles = ()
    else:
        styles = tuple(rng.choice(STYLES) for _ in artworks[:-1])
    return CatalogItem(f"item-{index}", f"Title {index}", ("drama",), 3600, artworks, styles)


def _pulls(rng: random.Random) -> dict[str, float]:
    """Pulls with frequent ties (and equal zeros of both signs)."""
    grid = (0.5, 1.0, 1.0 + 2**-52, 2.0, 0.0, -0.0)
    return {
        style: rng.choice(grid) if rng.random() < 0.5 else rng.lognormvariate(0.0, 0.3)
        for style in STYLES
    }


def _catalog(rng: random.Random, n_items: int) -> Catalog:
    catalog = Catalog()
    for index in range(n_items):
        catalog.upsert(_item(rng, index))
    return catalog


def test_remembered_choices_equal_the_arrays_through_catalog_changes() -> None:
    rng = random.Random(7)
    catalog = _catalog(rng, 60)
    table = ItemTable()
    styled = StyledArtworks(table, max_entries=500)
    reference = StyledArtworks(table)
    for page in range(3_000):
        if page % 500 == 499:  # restyle some titles: what is remembered must be dropped
            for index in rng.sample(range(70), 10):
                catalog.upsert(_item(rng, index))
        table.sync(catalog)
        item_ids = [f"item-{k}" for k in rng.sample(range(75), 30)]  # some are unknown
        rows = table.rows(item_ids)
        pulls = _pulls(rng)
        assert styled.choose(item_ids, rows, pulls) == reference.choose_by_arrays(
            item_ids, rows, pulls
        )
        assert styled._entries <= styled.max_entries + len(item_ids)  # checked before a page
        assert sum(map(len, styled._memo.values())) == styled._entries
    assert list(table.style_col.values()) == list(range(len(table.style_col)))


@pytest.mark.parametrize("odd", [math.nan, math.inf, -math.inf])
def test_pulls_that_are_not_finite_take_the_arrays(odd: float) -> None:
    rng = random.Random(3)
    catalog = _catalog(rng, 20)
    table = ItemTable()
    table.sync(catalog)
    styled = StyledArtworks(table)
    item_ids = [f"item-{k}" for k in range(20)]
    rows = table.rows(item_ids)
    for style in STYLES:
        pulls = dict.fromkeys(STYLES, 1.5) | {style: odd}
        assert styled.choose(item_ids, rows, pulls) == styled.choose_by_arrays(
            item_ids, rows, pulls
        )
    # A style missing from the pulls counts as -inf, as in the arrays.
    pulls = {style: 2.0 for style in STYLES[1:]}
    assert styled.choose(item_ids, rows, pulls) == styled.choose_by_arrays(item_ids, rows, pulls)


def test_page_items_equal_the_dataclasses() -> None:
    ids = ["a", "b", "c"]
    scores = [0.5, 0.25, 1e-6]
    artworks = ["x", None, "z"]
    items = _page_items(ids, scores, artworks)
    expected = [PageItem(i, s, a) for i, s, a in zip(ids, scores, artworks, strict=True)]
    assert items == expected
    assert [type(item) for item in items] == [PageItem] * 3
    assert [hash(item) for item in items] == [hash(item) for item in expected]
    assert repr(items) == repr(expected)
    assert _page_items([], [], []) == []
    with pytest.raises(ValueError):
        _page_items(ids, scores, artworks[:2])
    with pytest.raises(AttributeError):
        items[0].score = 1.0  # type: ignore[misc]  # still frozen


def test_rows_of_numpy_ints_are_accepted() -> None:
    """The page passes a gather of the candidates' rows (``np.intp``)."""
    rng = random.Random(1)
    catalog = _catalog(rng, 10)
    table = ItemTable()
    table.sync(catalog)
    item_ids = [f"item-{k}" for k in range(10)]
    rows = table.rows(item_ids)[np.arange(10, dtype=np.intp)]
    styled = StyledArtworks(table)
    pulls = dict(zip(STYLES, (1.0, 2.0, 3.0, 4.0, 5.0), strict=True))
    assert styled.choose(item_ids, rows, pulls) == styled.choose_by_arrays(item_ids, rows, pulls)
