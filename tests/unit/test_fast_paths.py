"""The engine's fast paths agree with the straightforward code they replaced (issue 5).

Vectorized candidate features, the one-draw artwork choice, the incremental catalog arrays and
the compact per-user state must give the same answers as the per-item code, bit for bit where
the old code's values reach pages or learners.
"""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from online_models.artwork_bandit import ArtworkBandit, _blend
from online_models.factory import build_models
from online_models.trending import Trending
from processors.catalog import Catalog
from processors.config import EngineConfig
from processors.features import (
    CandidateSignals,
    ItemTable,
    rank_feature_matrix,
    rank_features,
    ranking_context,
)
from processors.page_builder import PageBuilder
from processors.user_state import EventIdWindow, UserState
from schemas.messages import CatalogItem
from stream.bench.engine_alone import _process_batch, _World

T0 = 1_700_000_000_000
GENRES = ("horror", "comedy", "drama", "scifi", "anime")


STYLES = ("closeup", "scene", "title", "cast")


def _item(rng: random.Random, index: int) -> CatalogItem:
    genres = tuple(rng.sample(GENRES, rng.choice((0, 1, 1, 2, 3))))
    n_art = rng.choice((0, 1, 2, 3))
    artworks = tuple(f"i{index}-a{k}" for k in range(n_art))
    styles = tuple(rng.choice(STYLES) for _ in artworks) if rng.random() < 0.8 else ()
    return CatalogItem(
        f"i{index}", f"T{index}", genres, rng.choice((0, 1500, 5400)), artworks, styles
    )


def _state(rng: random.Random, catalog: list[CatalogItem]) -> UserState:
    state = UserState("u")
    state.device = rng.choice(("tv", "mobile", None))
    state.genre_affinity = {g: rng.uniform(-1.0, 3.0) for g in rng.sample(GENRES, 3)}
    state.genre_affinity["unknown-genre"] = 1.0
    state.affinity_ts = T0 - rng.randrange(600_000)
    ids = [item.item_id for item in catalog] + ["not-in-catalog"]
    state.continue_watching = {i: rng.random() for i in rng.sample(ids, 3)}
    state.restore_exposure(
        {i: rng.randrange(1, 4) for i in rng.sample(ids, 8)},
        {i: rng.randrange(1, 3) for i in rng.sample(ids, 5)},
    )
    state.session_clicked = tuple(rng.sample(ids, 2))
    state.genre_evidence = {
        g: [e, e + rng.uniform(0.0, 3.0)] for g in rng.sample(GENRES, 3) for e in [rng.random()]
    }
    return state


@pytest.mark.parametrize("seed", range(5))
def test_feature_matrix_equals_the_per_item_rows(seed: int) -> None:
    rng = random.Random(seed)
    catalog_items = [_item(rng, i) for i in range(40)]
    catalog = Catalog()
    catalog.upsert_many(catalog_items)
    table = ItemTable()
    table.sync(catalog)
    state = _state(rng, catalog_items)
    ids = [item.item_id for item in rng.sample(catalog_items, 25)] + ["not-in-catalog"]
    knn = [(item_id, rng.uniform(0.1, 2.0)) for item_id in rng.sample(ids, 6)]
    knn.sort(key=lambda pair: -pair[1])
    trending = [rng.choice((0.0, rng.uniform(0, 50))) for _ in ids]
    context = ranking_context(
        state,
        T0,
        EngineConfig(),
        knn[0][1],
        taste_rate=0.12,
        genre_prior={g: rng.uniform(0.05, 0.2) for g in GENRES[:4]},
        style_pull={style: rng.uniform(0.5, 1.6) for style in STYLES[:3]},
        click_rate=0.08,
    )
    lifts = np.array([rng.uniform(-1.0, 1.0) for _ in ids])
    matrix = rank_feature_matrix(
        state, context, ids, table.rows(ids), table, trending, knn, item_lifts=lifts
    )
    assert context.genre_lift and context.style_lift
    assert np.any(matrix[:, 0] != 0.0) and np.any(matrix[:, 3] != 0.0)
    knn_of = dict(knn)
    for k, item_id in enumerate(ids):
        signals = CandidateSignals(
            knn_score=knn_of.get(item_id, 0.0),
            trending_score=trending[k],
            resume_progress=state.continue_watching.get(item_id, 0.0),
            item_lift=float(lifts[k]),
        )
        expected = rank_features(state, context, item_id, catalog.get(item_id), signals)
        assert matrix[k].tolist() == expected, item_id


def test_item_table_follows_upserts_and_evictions() -> None:
    rng = random.Random(3)
    catalog = Catalog(max_items=30)
    table = ItemTable()
    for round_ in range(6):
        for index in range(round_ * 10, round_ * 10 + 12):
            catalog.upsert(_item(rng, index % 45))  # replacements and evictions
        table.sync(catalog)
        fresh = ItemTable()
        fresh.sync(catalog)
        ids = [f"i{i}" for i in range(50)]
        for name in ("duration_log", "unknown", "genre_count"):
            assert (
                getattr(table, name)[table.rows(ids)].tolist()
                == getattr(fresh, name)[fresh.rows(ids)].tolist()
            )
        vector_a = table.affinity_vector(dict.fromkeys(GENRES, 1.0))
        vector_b = fresh.affinity_vector(dict.fromkeys(GENRES, 1.0))
        assert (table.genre_hits[table.rows(ids)] @ vector_a).tolist() == (
            fresh.genre_hits[fresh.rows(ids)] @ vector_b
        ).tolist()
        assert table.artworks == fresh.artworks


def _choose_many_reference(
    bandit: ArtworkBandit, items: list[tuple[str, tuple[str, ...]]], context: str, key: str
) -> list[str | None]:
    """The per-item loop the vectorized choose_many replaced."""
    widest = max(len(artworks) for _, artworks in items)
    if widest <= 1:
        return [artworks[0] if artworks else None for _, artworks in items]
    alphas = np.ones((len(items), widest))
    betas = np.ones((len(items), widest))
    tables = bandit._tables
    for row, (_, artworks) in enumerate(items):
        if len(artworks) > 1:
            for column, artwork_id in enumerate(artworks):
                alphas[row, column], betas[row, column] = _blend(
                    tables[""].get(artwork_id),
                    tables.get(context, {}).get(artwork_id, (0, 0)) if context else None,
                    bandit.prior_alpha,
                    bandit.prior_beta,
                    bandit.backoff_observations,
                )
    bandit._reseed(key, "")
    draws = bandit._generator.beta(alphas, betas)
    for row, (_, artworks) in enumerate(items):
        draws[row, len(artworks) :] = -1.0
    best = draws.argmax(axis=1).tolist()
    return [artworks[best[row]] if artworks else None for row, (_, artworks) in enumerate(items)]


@pytest.mark.parametrize("ragged", [False, True])
def test_choose_many_draws_as_the_per_item_loop(ragged: bool) -> None:
    rng = random.Random(11)
    bandit = ArtworkBandit(seed=4)
    for _ in range(400):
        bandit.update(f"a{rng.randrange(30)}", rng.random() < 0.2, context=rng.choice(("", "tv")))
    items = []
    for index in range(40):
        width = rng.choice((0, 1, 2, 3)) if ragged else 3
        items.append((f"i{index}", tuple(f"a{rng.randrange(30)}" for _ in range(width))))
    for context in ("", "tv", "phone"):
        for key in ("p1", "p2"):
            expected = _choose_many_reference(bandit, items, context, key)
            assert bandit.choose_many(items, context=context, draw_key=key) == expected


def test_trending_scores_equal_score() -> None:
    trending = Trending(half_life_ms=60_000)
    for index in range(50):
        trending.add(f"i{index % 17}", T0 + index * 1_000, 1.0 + index % 3)
    ids = [f"i{i}" for i in range(20)]
    scores = trending.scores(ids, T0 + 90_000)
    assert scores.dtype == np.float64
    assert scores.tolist() == [trending.score(i, T0 + 90_000) for i in ids]
    assert Trending().scores(["x"], T0).tolist() == [0.0]


def test_event_id_window_is_a_bounded_ring_that_survives_checkpoints() -> None:
    window = EventIdWindow(3)
    window.extend(["a", "b", "c", "d"])
    assert ["a" in window, "b" in window, "d" in window, len(window)] == [False, True, True, 3]
    state = UserState("u", dedup_window=3)
    state.recent_event_ids = window
    restored = UserState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    restored.recent_event_ids.append("e")  # the oldest ("b") goes, as before the checkpoint
    assert ["b" in restored.recent_event_ids, "c" in restored.recent_event_ids] == [False, True]


def test_version_1_checkpoints_are_still_read() -> None:
    raw = UserState("u", dedup_window=4).to_dict() | {"v": 1, "recent_event_ids": ["e1", "e2"]}
    raw["churn_snapshots"] = []  # versions 1-4 kept them as lists of floats
    del raw["churn_records"], raw["churn_width"]
    state = UserState.from_dict(raw)
    assert "e1" in state.recent_event_ids and "e3" not in state.recent_event_ids


@pytest.mark.parametrize("seed", range(5))
def test_one_item_context_gives_the_page_contexts_row(seed: int) -> None:
    """The label fallback's context (one item's genres and styles only) gives every item the
    feature row the full page context gives it, bit for bit."""
    rng = random.Random(seed)
    config = EngineConfig()
    models = build_models(config)
    catalog_items = [_item(rng, i) for i in range(40)]
    catalog = Catalog()
    catalog.upsert_many(catalog_items)
    for k in range(300):
        item = rng.choice(catalog_items)
        models.engagement.observe(item.item_id, clicked=rng.random() < 0.3)
        models.engagement.observe_taste(rng.random(), 1.0, item.genres)
        models.bandit.update_style(rng.choice(STYLES), rng.random(), 0.5, context="tv")
        models.trending.add(item.item_id, T0 - k * 1_000)
    builder = PageBuilder(
        config,
        catalog,
        models.knn,
        models.trending,
        models.ranker,
        models.bandit,
        models.engagement,
    )
    state = _state(rng, catalog_items)
    state.style_evidence = {s: [rng.random(), rng.uniform(0.5, 2.0)] for s in STYLES[:2]}
    builder.items.sync(catalog)
    full = builder._context(state, T0, knn_max=0.0)
    for item_id in [item.item_id for item in catalog_items] + ["not-in-catalog"]:
        item = catalog.get(item_id)
        signals = CandidateSignals(
            trending_score=models.trending.score(item_id, T0),
            resume_progress=state.continue_watching.get(item_id, 0.0),
            item_lift=float(models.engagement.item_lifts([item_id])[0]),
        )
        expected = rank_features(state, full, item_id, item, signals)
        assert builder.item_features(state, item_id, T0) == expected, item_id


def test_pages_reusing_the_trending_order_equal_pages_built_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page parts memoized per trending order (`PageBuilder._from_trending`) change no
    page: the same closed-loop traffic with the memo dropped before every page gives the same
    pages and the same learned models."""
    remembered = PageBuilder._from_trending
    reused = [0]

    def counting(self: PageBuilder, trending_ids: list[str]) -> object:
        reused[0] += self._trending_memo is not None and self._trending_memo.ids == trending_ids
        return remembered(self, trending_ids)

    def afresh(self: PageBuilder, trending_ids: list[str]) -> object:
        self._trending_memo = None
        return remembered(self, trending_ids)

    def run(from_trending: object) -> tuple[list[str], object]:
        monkeypatch.setattr(PageBuilder, "_from_trending", from_trending)
        world = _World(users=150, seed=2, config=EngineConfig())
        served: list[str] = []
        queue: list[tuple[bytes, int, bool]] = []
        while len(served) < 400:
            while len(queue) < 40:
                queue.extend(world.next_reaction())
            batch, queue = queue[:40], queue[40:]
            for page in _process_batch(world, batch):
                world.pages[page.user_id] = page
                served.append(repr(page))
        monkeypatch.undo()
        return served, world.engine.model_states()

    assert run(counting) == run(afresh)
    assert reused[0] > 100
