"""The page's candidate helpers: the merge over table rows equals merging the sources' ids in
order, the compiled explore and genre selections equal their numpy expressions."""

from __future__ import annotations

import random

import numpy as np

from online_models.factory import build_models
from processors.candidates import explore_positions, genre_positions
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


def test_compiled_explore_and_genre_positions_equal_the_numpy_selection() -> None:
    rng = random.Random(1)
    hits = np.array([[rng.choice((0.0, 0.0, 1.0, 2.0)) for _ in range(6)] for _ in range(40)])
    for _ in range(200):
        rows = np.array([rng.randrange(40) for _ in range(rng.randrange(0, 60))], dtype=np.intp)
        limit = rng.randrange(1, 5)
        counts = np.zeros(hits.shape[1], dtype=np.intp)
        kept = explore_positions(rows, hits, limit, counts)
        selected = hits[rows] > 0.0
        keep = selected & (np.cumsum(selected, axis=0) <= limit)
        assert kept.tolist() == np.flatnonzero(keep.any(axis=1)).tolist()
        assert (np.minimum(counts, limit) == keep.sum(axis=0)).all()
        for column in range(hits.shape[1]):
            expected = np.flatnonzero(hits[rows, column])[:limit].tolist()
            assert genre_positions(rows, hits, column, limit).tolist() == expected
