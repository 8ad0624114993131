"""The page's candidate merge over table rows equals merging the sources' ids in order."""

from __future__ import annotations

import random

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from schemas.messages import CatalogItem


def test_first_seen_rows_merge_as_ids_do_unknown_items_included() -> None:
    config = EngineConfig()
    engine = Engine(config, build_models(config))
    for index in range(30):
        engine.apply_catalog(CatalogItem(f"i{index}", "", ("drama",), 60, ()))
    builder = engine.pages
    builder.items.sync(engine.catalog)
    rng = random.Random(0)
    for _ in range(500):
        ids = [
            rng.choice((f"i{rng.randrange(40)}", f"unknown-{rng.randrange(5)}"))
            if rng.random() < 0.3
            else f"i{rng.randrange(30)}"
            for _ in range(rng.randrange(1, 80))
        ]
        first, positions = builder._first_seen(ids, builder.items.rows(ids))
        candidates = list(dict.fromkeys(ids))
        assert [ids[k] for k in first.tolist()] == candidates
        index = {item_id: k for k, item_id in enumerate(candidates)}
        assert positions.tolist() == [index[item_id] for item_id in ids]
        assert (builder._slots == -1).all()
