"""The compiled order / spread / arrangement equals the Python reference on random pages."""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import pytest

from online_models.factory import build_models
from processors import page_builder
from processors.arrangement import ArrangedPage, arrange
from processors.config import EngineConfig
from processors.engine import Engine
from processors.page_builder import PageBuilder, _by_score, _RowPlan
from schemas.messages import CatalogItem

GENRES = ("drama", "comedy", "horror", "scifi", "anime")


def _item_id(rng: random.Random, index: int) -> str:
    """Short, long, non-ASCII and shared-prefix ids: the id order must be Python's."""
    kind = rng.randrange(4)
    if kind == 0:
        return f"t{index}"
    if kind == 1:
        return f"title-with-a-long-common-prefix-{index:04d}"  # > 16 bytes, shared prefix
    if kind == 2:
        return f"é{index}-ü"
    return f"{index:03d}"


def _builder(rng: random.Random, n_items: int) -> tuple[PageBuilder, list[str]]:
    config = EngineConfig(genre_diversity=rng.choice((0.0, 0.4, 1.0)))
    engine = Engine(config, build_models(config))
    ids = []
    for index in range(n_items):
        item_id = _item_id(rng, index)
        ids.append(item_id)
        genres = tuple(rng.sample(GENRES, rng.randrange(0, 3)))
        if genres and rng.random() < 0.1:
            genres = (*genres, genres[0])  # a genre listed twice counts twice
        engine.apply_catalog(CatalogItem(item_id, "", genres, 3600, ()))
    engine.pages.items.sync(engine.catalog)
    return engine.pages, ids


def _page(rng: random.Random, ids: list[str]) -> tuple[list[str], np.ndarray, list[_RowPlan]]:
    candidates = rng.sample(ids, rng.randrange(1, len(ids)))
    if rng.random() < 0.2:
        candidates.append("not-in-the-catalog")
    levels = [rng.random() for _ in range(rng.randrange(1, 6))]
    # Many equal scores: ties are where the item id decides.
    scores = np.array(
        [rng.choice(levels) if rng.random() < 0.6 else rng.random() for _ in candidates]
    )
    plans = [
        _RowPlan(
            f"row-{k}",
            f"Row {k}",
            rng.sample(candidates, rng.randrange(1, len(candidates) + 1)),
            ordered=rng.random() < 0.2,
        )
        for k in range(rng.randrange(1, 6))
    ]
    return candidates, scores, plans


def _reference(
    builder: PageBuilder, candidates: list[str], scores: np.ndarray, plans: list[_RowPlan]
) -> list[tuple[str, list[tuple[str, float]]]]:
    score_of = dict(zip(candidates, scores.tolist(), strict=True))
    best = _by_score(scores, candidates)
    rank_of = dict(zip(best, range(len(best)), strict=True))
    top_picks = builder._diversified(best, score_of, builder.config.row_size * 2)
    plans = [*plans, _RowPlan("top-picks", "Top picks for you", top_picks, ordered=True)]
    return [(plan.row_id, items) for plan, items in builder._arrange(plans, score_of, rank_of)]


@pytest.mark.parametrize("seed", range(40))
def test_compiled_rows_equal_the_python_rows(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[bool] = []

    def counted(*args: Any, **kwargs: Any) -> ArrangedPage | None:
        page = arrange(*args, **kwargs)
        answered.append(page is not None)
        return page

    monkeypatch.setattr(page_builder, "arrange", counted)
    rng = random.Random(seed)
    builder, ids = _builder(rng, rng.randrange(5, 60))
    compiled_ties = 0
    for _ in range(20):
        candidates, scores, plans = _page(rng, ids)
        expected = _reference(builder, candidates, scores, copy.deepcopy(plans))
        position = {item_id: k for k, item_id in enumerate(candidates)}
        rows = builder.items.rows(candidates)
        tied = len(set(scores.tolist())) < len(scores)
        row_plans, lengths, placed_at = builder._ordered_rows(
            plans, candidates, position, rows, scores
        )
        compiled_ties += tied and answered[-1]
        pairs = [(candidates[k], scores[k].item()) for k in placed_at.tolist()]
        starts = np.cumsum([0, *lengths]).tolist()
        arranged = [
            (plan.row_id, pairs[start:end])
            for plan, start, end in zip(row_plans, starts, starts[1:], strict=False)
        ]
        assert arranged == expected
        assert len(pairs) == sum(lengths)
    assert compiled_ties >= 3, "the compiled path must decide ties by id, not only fall back"


def test_undecidable_ties_and_nan_take_the_python_path() -> None:
    rng = random.Random(1)
    builder, _ = _builder(rng, 3)
    config = builder.config
    long_a, long_b = "x" * 20 + "a", "x" * 20 + "b"  # same 16-byte prefix, both longer
    for item_id in (long_a, long_b):
        builder.catalog.upsert(CatalogItem(item_id, "", ("drama",), 60, ()))
    builder.items.sync(builder.catalog)

    def compiled(candidates: list[str], scores: list[float]) -> object:
        return arrange(
            np.array(scores),
            builder.items.rows(candidates),
            builder.items,
            list(range(len(candidates))),
            [len(candidates)],
            [False],
            ["row"],
            genre_diversity=config.genre_diversity,
            top_picks_limit=config.row_size * 2,
            page_rows=config.page_rows,
            row_size=config.row_size,
        )

    assert compiled([long_a, long_b], [0.5, 0.4]) is not None  # distinct scores decide
    assert compiled([long_a, long_b], [0.5, 0.5]) is None  # the keys cannot tell
    assert compiled(["unknown-1", "unknown-2"], [0.5, 0.5]) is None
    assert compiled([long_a, long_b], [0.5, float("nan")]) is None
