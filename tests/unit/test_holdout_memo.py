"""The holdout page's memories (`PageBuilder._popularity_rows`, `_arrange_popularity`) give
the page a fresh build gives, and follow the trending top and the catalog."""

from __future__ import annotations

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from processors.page_builder import PageBuilder
from schemas.messages import CatalogItem, PageRow

GENRES = ("drama", "comedy", "horror")


def _engine() -> Engine:
    config = EngineConfig()
    engine = Engine(config, build_models(config))
    for index in range(30):
        genres = (GENRES[index % 3],) if index % 4 else (GENRES[index % 3], GENRES[0])
        engine.apply_catalog(CatalogItem(f"t{index}", "", genres, 3600, (f"a{index}",)))
    return engine


def _fresh(builder: PageBuilder, now: int) -> tuple[PageRow, ...]:
    builder._popularity_memo = None
    builder._holdout_memo = None
    return builder._arrange_popularity(builder._popularity_rows(now))


def test_remembered_holdout_pages_equal_fresh_ones() -> None:
    engine = _engine()
    builder = engine.pages
    trending = builder.trending
    for index in range(20):
        trending.add(f"t{index}", 1_000 + index, weight=1.0 + index % 5)
    first = builder._arrange_popularity(builder._popularity_rows(2_000))
    again = builder._arrange_popularity(builder._popularity_rows(2_000))
    assert again is first  # same top, same catalog: the rows are reused
    later = builder._arrange_popularity(builder._popularity_rows(50_000))  # scores decayed
    assert later == _fresh(builder, 50_000)
    trending.add("t29", 60_000, weight=100.0)  # a new leader: the order moves
    moved = builder._arrange_popularity(builder._popularity_rows(60_000))
    assert moved == _fresh(builder, 60_000)
    assert moved[0].items[0].item_id == "t29"
    # A catalog change (a new artwork) is seen at once.
    builder._arrange_popularity(builder._popularity_rows(60_000))
    engine.apply_catalog(CatalogItem("t29", "", ("drama",), 3600, ("new-art",)))
    changed = builder._arrange_popularity(builder._popularity_rows(60_000))
    assert changed[0].items[0].artwork_id == "new-art"
    assert changed == _fresh(builder, 60_000)
