"""Candidate generation and page assembly: from a user's session to ordered rows of ranked titles.

Candidates come from three sources (session-kNN, trending, continue-watching) plus genre rows
for the genres the session leans to; one ranker scores every candidate once, rows are ordered
by the engagement their best items predict, and each title appears on the page only once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from processors.catalog import Catalog
from processors.config import EngineConfig
from processors.experiments import HOLDOUT
from processors.features import (
    CandidateSignals,
    RankingContext,
    rank_features,
    ranking_context,
)
from processors.ports import ArtworkChooser, BinaryLearner, NextItemIndex, Popularity
from processors.user_state import UserState
from schemas.messages import Page, PageItem, PageRow

__all__ = ["PageBuilder", "ServedPage", "session_key"]

#: Items whose scores decide a row's place on the page.
_ROW_SCORE_TOP = 3
#: Genre rows on a personalized page.
_GENRE_ROWS = 2


def session_key(user_id: str, session_id: str) -> str:
    """Key of a session in the kNN index (session ids are only unique per user)."""
    return f"{user_id}\x1f{session_id}"


@dataclass(frozen=True, slots=True)
class ServedPage:
    """A page plus the feature rows of the items on it, kept to learn from what was served."""

    page: Page
    item_ids: tuple[str, ...]
    features: np.ndarray  # float32, one row per item of item_ids, RANK_FEATURE_NAMES order

    def features_of(self, item_id: str) -> list[float] | None:
        """The serve-time feature row of an item on this page, if it was on it."""
        try:
            index = self.item_ids.index(item_id)
        except ValueError:
            return None
        return self.features[index].tolist()


@dataclass(slots=True)
class _RowPlan:
    row_id: str
    title: str
    item_ids: list[str]
    score: float = 0.0


class PageBuilder:
    """Builds pages for one engine; holds no per-user state."""

    def __init__(
        self,
        config: EngineConfig,
        catalog: Catalog,
        knn: NextItemIndex,
        trending: Popularity,
        ranker: BinaryLearner,
        bandit: ArtworkChooser,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.knn = knn
        self.trending = trending
        self.ranker = ranker
        self.bandit = bandit

    # -- features for one item (impression-time fallback) ------------------------------

    def item_features(self, state: UserState, item_id: str, now: int) -> list[float]:
        """Feature row for one item without the kNN signal (cheap; used when no page is cached)."""
        context = ranking_context(state, now, self.config, knn_max=0.0)
        signals = CandidateSignals(
            trending_score=self.trending.score(item_id, now),
            resume_progress=state.continue_watching.get(item_id, 0.0),
        )
        return rank_features(state, context, item_id, self.catalog.get(item_id), signals)

    # -- pages ---------------------------------------------------------------------------

    def build(
        self,
        state: UserState,
        *,
        recommendation_id: str,
        trigger_event_id: str,
        now: int,
        generated_at: int,
    ) -> ServedPage:
        """Build the page for the user's current session.

        ``now`` is event time (features and popularity decay on it, so a replay reproduces the
        page); ``generated_at`` is the wall clock the caller stamps on the page.
        """
        if state.variant == HOLDOUT:
            page_rows = self._arrange_popularity(self._popularity_rows(now))
            item_ids: tuple[str, ...] = ()
            features = np.zeros((0, len(self.ranker.feature_names)), dtype=np.float32)
        else:
            page_rows, item_ids, features = self._personalized(state, recommendation_id, now)
        page = Page(
            user_id=state.user_id,
            session_id=state.session_id,
            recommendation_id=recommendation_id,
            trigger_event_id=trigger_event_id,
            generated_at=generated_at,
            rows=page_rows,
            variant=state.variant,
        )
        return ServedPage(page=page, item_ids=item_ids, features=features)

    def _personalized(
        self, state: UserState, recommendation_id: str, now: int
    ) -> tuple[tuple[PageRow, ...], tuple[str, ...], np.ndarray]:
        config = self.config
        signals: dict[str, CandidateSignals] = {}
        plans: list[_RowPlan] = []

        if state.continue_watching:
            resume = list(reversed(state.continue_watching))  # most recent first
            for item_id in resume:
                signals.setdefault(
                    item_id, CandidateSignals()
                ).resume_progress = state.continue_watching[item_id]
            plans.append(_RowPlan("continue-watching", "Continue watching", resume))

        knn_max = 0.0
        if state.last_items:
            neighbours = self.knn.recommend(
                state.last_items,
                config.knn_candidates,
                exclude_session=session_key(state.user_id, state.session_id),
            )
            if neighbours:
                knn_max = neighbours[0][1]
                for item_id, score in neighbours:
                    signals.setdefault(item_id, CandidateSignals()).knn_score = score
                anchor = self.catalog.get(state.last_items[-1])
                anchor_title = anchor.title if anchor is not None and anchor.title else "this"
                plans.append(
                    _RowPlan(
                        "because-you-watched",
                        f"Because you watched {anchor_title}",
                        [item_id for item_id, _ in neighbours],
                    )
                )

        trending_top = self.trending.top(max(config.trending_candidates * 4, 100), now)
        for item_id, _ in trending_top[: config.trending_candidates]:
            signals.setdefault(item_id, CandidateSignals())
        plans.append(
            _RowPlan(
                "trending",
                "Trending now",
                [item_id for item_id, _ in trending_top[: config.trending_candidates]],
            )
        )

        if len(trending_top) < config.row_size:
            newest = self.catalog.newest(config.trending_candidates)
            for item_id in newest:
                signals.setdefault(item_id, CandidateSignals())
            plans.append(_RowPlan("new-arrivals", "New arrivals", newest))

        context = ranking_context(state, now, config, knn_max)
        top_genres = [
            genre
            for genre, weight in sorted(context.affinity.items(), key=lambda kv: (-kv[1], kv[0]))
            if weight > 0
        ][:_GENRE_ROWS]
        for genre in top_genres:
            genre_items = self._genre_items(genre, trending_top)
            for item_id in genre_items:
                signals.setdefault(item_id, CandidateSignals())
            plans.append(_RowPlan(f"genre-{genre}", f"More {genre}", genre_items))

        if not signals:
            return (), (), np.zeros((0, len(self.ranker.feature_names)), dtype=np.float32)

        item_ids = tuple(signals)
        trending_scores = dict(trending_top)
        rows: list[list[float]] = []
        catalog_get = self.catalog.get
        trending_score = self.trending.score
        for item_id in item_ids:
            item = catalog_get(item_id)
            item_signals = signals[item_id]
            known = trending_scores.get(item_id)
            item_signals.trending_score = (
                known if known is not None else trending_score(item_id, now)
            )
            rows.append(rank_features(state, context, item_id, item, item_signals))
        features = np.asarray(rows, dtype=np.float64)
        scores = self._scores(features, context)
        score_of = dict(zip(item_ids, scores.tolist(), strict=True))

        best = sorted(item_ids, key=lambda item_id: (-score_of[item_id], item_id))
        plans.append(_RowPlan("top-picks", "Top picks for you", best[: config.row_size * 2]))
        arranged = self._arrange(plans, score_of)
        page_rows = self._with_artworks(arranged, state.device or "", recommendation_id)
        return page_rows, item_ids, features.astype(np.float32)

    def _with_artworks(
        self,
        arranged: list[tuple[_RowPlan, list[tuple[str, float]]]],
        device_context: str,
        recommendation_id: str,
    ) -> tuple[PageRow, ...]:
        """Choose every placed item's artwork in one bandit draw, then render the rows."""
        catalog_get = self.catalog.get
        placed: list[tuple[str, tuple[str, ...]]] = []
        for _, items in arranged:
            for item_id, _ in items:
                item = catalog_get(item_id)
                placed.append((item_id, item.artworks if item is not None else ()))
        chosen = iter(
            self.bandit.choose_many(placed, context=device_context, draw_key=recommendation_id)
        )
        return tuple(
            PageRow(
                plan.row_id,
                plan.title,
                tuple(PageItem(item_id, round(score, 6), next(chosen)) for item_id, score in items),
            )
            for plan, items in arranged
        )

    def _scores(self, features: np.ndarray, context: RankingContext) -> np.ndarray:
        """Ranker probabilities, blended with a heuristic prior while the ranker is cold."""
        learned = self.ranker.predict_proba_many(features)
        warmup = self.config.ranker_warmup_labels
        seen = self.ranker.n_learned
        if seen >= warmup:
            return learned
        # Prior: the session's genre affinity, then kNN, then popularity — all in [0, 1].
        trending_log = features[:, 4]
        trending_norm = (
            trending_log / trending_log.max() if trending_log.max() > 0 else trending_log
        )
        prior = (
            0.5 * np.clip(features[:, 0] + 0.5, 0.0, 1.0)
            + 0.3 * features[:, 2]
            + 0.2 * trending_norm
            + 0.2 * features[:, 5]
        ) / 1.2
        alpha = seen / warmup
        return alpha * learned + (1.0 - alpha) * prior

    def _genre_items(self, genre: str, trending_top: list[tuple[str, float]]) -> list[str]:
        limit = self.config.genre_candidates
        catalog_get = self.catalog.get
        chosen: dict[str, None] = {}
        for item_id, _ in trending_top:
            item = catalog_get(item_id)
            if item is not None and genre in item.genres:
                chosen[item_id] = None
                if len(chosen) >= limit:
                    return list(chosen)
        for item_id in self.catalog.items_in_genre(genre):
            chosen.setdefault(item_id, None)
            if len(chosen) >= limit:
                break
        return list(chosen)

    def _arrange(
        self, plans: list[_RowPlan], score_of: dict[str, float]
    ) -> list[tuple[_RowPlan, list[tuple[str, float]]]]:
        """Order rows by predicted engagement and fill them, each title once per page.

        Greedy: the next row is the one whose best *still unplaced* items score highest, so a
        row is ranked on what it will really show, not on titles a better row already took.
        """
        row_size = self.config.row_size
        remaining = []
        for plan in plans:
            plan.item_ids = sorted(
                (item_id for item_id in plan.item_ids if item_id in score_of),
                key=lambda item_id: (-score_of[item_id], item_id),
            )
            if plan.item_ids:
                remaining.append(plan)
        placed: set[str] = set()
        rows: list[tuple[_RowPlan, list[tuple[str, float]]]] = []
        while remaining and len(rows) < self.config.page_rows:
            for plan in remaining:
                top = []
                for item_id in plan.item_ids:
                    if item_id not in placed:
                        top.append(score_of[item_id])
                        if len(top) == _ROW_SCORE_TOP:
                            break
                plan.score = sum(top) / len(top) if top else -1.0
            best = min(remaining, key=lambda plan: (-plan.score, plan.row_id))
            remaining.remove(best)
            items = []
            for item_id in best.item_ids:
                if item_id not in placed:
                    placed.add(item_id)
                    items.append((item_id, score_of[item_id]))
                    if len(items) >= row_size:
                        break
            if items:
                rows.append((best, items))
        return rows

    # -- the holdout's non-personalized page ---------------------------------------------

    def _popularity_rows(self, now: int) -> list[_RowPlan]:
        """Trending plus the most popular genres' rows: the same page for everyone."""
        config = self.config
        trending_top = self.trending.top(max(config.trending_candidates * 4, 100), now)
        plans = [
            _RowPlan(
                "trending",
                "Trending now",
                [item_id for item_id, _ in trending_top[: config.trending_candidates]],
            )
        ]
        if len(trending_top) < config.row_size:
            plans.append(
                _RowPlan("new-arrivals", "New arrivals", self.catalog.newest(config.row_size))
            )
        genre_weight: dict[str, float] = OrderedDict()
        for item_id, score in trending_top:
            item = self.catalog.get(item_id)
            if item is not None:
                for genre in item.genres:
                    genre_weight[genre] = genre_weight.get(genre, 0.0) + score
        popular_genres = sorted(genre_weight, key=lambda genre: (-genre_weight[genre], genre))
        for genre in popular_genres[:_GENRE_ROWS]:
            plans.append(
                _RowPlan(
                    f"popular-{genre}",
                    f"Popular in {genre}",
                    self._genre_items(genre, trending_top),
                )
            )
        return plans

    def _arrange_popularity(self, plans: list[_RowPlan]) -> tuple[PageRow, ...]:
        """Rows in popularity order; scores are the rank within the row, artwork the default."""
        rows: list[PageRow] = []
        placed: set[str] = set()
        for plan in plans:
            items = []
            count = len(plan.item_ids)
            for rank, item_id in enumerate(plan.item_ids):
                if item_id in placed:
                    continue
                placed.add(item_id)
                item = self.catalog.get(item_id)
                artwork_id = item.artworks[0] if item is not None and item.artworks else None
                items.append(PageItem(item_id, round(1.0 - rank / max(count, 1), 6), artwork_id))
                if len(items) >= self.config.row_size:
                    break
            if items:
                rows.append(PageRow(plan.row_id, plan.title, tuple(items)))
        return tuple(rows)
