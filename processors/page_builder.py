"""Candidate generation and page assembly: from a user's session to ordered rows of ranked titles.

Candidates come from three sources (session-kNN, trending, continue-watching) plus genre rows
for the genres the session leans to; one ranker scores every candidate once, rows are ordered
by the engagement their best items predict, and each title appears on the page only once.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, islice, repeat
from operator import itemgetter

import numpy as np

from processors.arrangement import ROW_SCORE_TOP, SPREAD_SLOTS, arrange
from processors.candidates import explore_positions, first_seen, genre_positions
from processors.catalog import Catalog
from processors.config import EngineConfig
from processors.experiments import HOLDOUT
from processors.features import (
    CandidateSignals,
    ItemTable,
    RankingContext,
    rank_feature_matrix,
    rank_features,
    ranking_context,
)
from processors.ports import (
    ArtworkChooser,
    BinaryLearner,
    EngagementModel,
    NextItemIndex,
    Popularity,
)
from processors.rounding import round6_many
from processors.styled_artworks import StyledArtworks
from processors.taste import NO_EVIDENCE
from processors.user_state import UserState
from schemas.messages import Page, PageItem, PageRow

__all__ = ["PageBuilder", "ServedFeatures", "ServedPage", "session_key"]

#: Genre rows on a personalized page.
_GENRE_ROWS = 2


#: The id of a ``(-score, item_id)`` pair.
_second = itemgetter(1)

_new = object.__new__
_set_item_id = PageItem.__dict__["item_id"].__set__
_set_score = PageItem.__dict__["score"].__set__
_set_artwork_id = PageItem.__dict__["artwork_id"].__set__
_set_row_id = PageRow.__dict__["row_id"].__set__
_set_title = PageRow.__dict__["title"].__set__
_set_items = PageRow.__dict__["items"].__set__
#: Runs an iterator to its end, in C (the ``consume`` recipe of ``itertools``).
_consume = deque(maxlen=0).extend


def _page_items(
    item_ids: Sequence[str], scores: Sequence[float], artwork_ids: Sequence[str | None]
) -> list[PageItem]:
    """``[PageItem(i, s, a) for i, s, a in zip(...)]`` without the frozen dataclass's
    per-field ``object.__setattr__`` and with no Python-level loop: each field is set on
    every item by one ``map`` over its slot's setter (a page has ~60 items; ~0.2 µs an item
    instead of ~0.7)."""
    if not len(item_ids) == len(scores) == len(artwork_ids):  # map() would stop at the shortest
        raise ValueError(
            f"{len(item_ids)} item ids, {len(scores)} scores, {len(artwork_ids)} artwork ids"
        )
    items = list(map(_new, repeat(PageItem, len(item_ids))))
    _consume(map(_set_item_id, items, item_ids))
    _consume(map(_set_score, items, scores))
    _consume(map(_set_artwork_id, items, artwork_ids))
    return items


def _page_rows(
    row_ids: Sequence[str], titles: Sequence[str], items: Sequence[tuple[PageItem, ...]]
) -> tuple[PageRow, ...]:
    """``tuple(PageRow(r, t, i) for r, t, i in zip(...))`` set slot by slot, as `_page_items`
    does (a frozen dataclass's ``__init__`` costs a ``object.__setattr__`` per field)."""
    if not len(row_ids) == len(titles) == len(items):  # map() would stop at the shortest
        raise ValueError(f"{len(row_ids)} row ids, {len(titles)} titles, {len(items)} item rows")
    rows = tuple(map(_new, repeat(PageRow, len(row_ids))))
    _consume(map(_set_row_id, rows, row_ids))
    _consume(map(_set_title, rows, titles))
    _consume(map(_set_items, rows, items))
    return rows


def _by_score(scores: np.ndarray, item_ids: list[str]) -> list[str]:
    """The candidates in ``(-score, item_id)`` order: one sort gives every row its order
    (ranks are a total order).

    A stable argsort of the negated scores is that order whenever no two scores are equal
    (then the item ids never decide); with a tie, or a NaN, the tuples are sorted as before.
    """
    negated = -scores
    order = negated.argsort(kind="stable")
    ordered = negated[order]
    if len(ordered) > 1 and not (ordered[1:] > ordered[:-1]).all():
        return list(map(_second, sorted(zip(negated.tolist(), item_ids, strict=True))))
    return [item_ids[index] for index in order.tolist()]


def session_key(user_id: str, session_id: str) -> str:
    """Key of a session in the kNN index (session ids are only unique per user)."""
    return f"{user_id}\x1f{session_id}"


@dataclass(frozen=True, slots=True)
class ServedFeatures:
    """The serve-time feature rows of the items placed on one page, to learn from labels.

    What the engine caches per recent page: no `Page` objects (rows of `PageItem` cost ~5 KB
    a page and nothing reads them back), float32 rows of the placed items only.
    """

    item_ids: tuple[str, ...]
    features: np.ndarray  # float32, one row per item of item_ids, RANK_FEATURE_NAMES order

    def features_of(self, item_id: str) -> list[float] | None:
        """The serve-time feature row of an item on this page, if it was on it."""
        try:
            index = self.item_ids.index(item_id)
        except ValueError:
            return None
        return self.features[index].tolist()

    def row_of(self, item_id: str) -> np.ndarray | None:
        """`features_of` as a float64 array, what the ranker learns from: a list would be
        converted back to an array (~7k instructions for 14 floats, more than the learn)."""
        try:
            index = self.item_ids.index(item_id)
        except ValueError:
            return None
        return self.features[index].astype(np.float64)


@dataclass(frozen=True, slots=True)
class ServedPage:
    """A page plus the feature rows of the items on it, kept to learn from what was served."""

    page: Page
    item_ids: tuple[str, ...]
    features: np.ndarray  # float32, one row per item of item_ids, RANK_FEATURE_NAMES order

    def features_of(self, item_id: str) -> list[float] | None:
        """The serve-time feature row of an item on this page, if it was on it."""
        return self.for_labels().features_of(item_id)

    def for_labels(self) -> ServedFeatures:
        """What to keep of this page until its impressions and clicks arrive."""
        return ServedFeatures(self.item_ids, self.features)


@dataclass(slots=True)
class _RowPlan:
    row_id: str
    title: str
    item_ids: list[str]
    score: float = 0.0
    #: Index of the first item not placed yet (placing only ever moves it forward).
    cursor: int = 0
    #: The items are already in display order (not re-sorted by score).
    ordered: bool = False


@dataclass(slots=True)
class _TrendingDerived:
    """Page parts that follow from one trending order and catalog version (see
    `PageBuilder._from_trending`); filled in as pages ask for them."""

    ids: list[str]
    catalog_version: int
    rows: np.ndarray
    #: `PageBuilder._explore_items` of this order, once computed, and their table rows.
    explore: list[str] | None = None
    explore_rows: np.ndarray | None = None
    #: genre → `PageBuilder._genre_items` of this order, and their table rows.
    genre_items: dict[str, list[str]] = field(default_factory=dict)
    genre_rows: dict[str, np.ndarray] = field(default_factory=dict)


def _row_order(plan: _RowPlan) -> tuple[float, str]:
    """Rows go best score first, ties by row id."""
    return (-plan.score, plan.row_id)


class PageBuilder:
    """Builds pages for one engine; holds no per-user state.

    The personalized page is built with one vectorized pass over its candidates (features
    from `ItemTable` arrays, one numpy scoring call, one sort of ``(-score, item_id)`` pairs
    that orders every row) and one vectorized artwork draw: per-candidate Python work was
    most of the engine's time (see BENCHMARKS.md, "where the time goes").
    """

    def __init__(
        self,
        config: EngineConfig,
        catalog: Catalog,
        knn: NextItemIndex,
        trending: Popularity,
        ranker: BinaryLearner,
        bandit: ArtworkChooser,
        engagement: EngagementModel,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.knn = knn
        self.trending = trending
        self.ranker = ranker
        self.bandit = bandit
        self.engagement = engagement
        self.items = ItemTable()
        self._styled_artworks = StyledArtworks(self.items)
        self._trending_memo: _TrendingDerived | None = None
        #: The holdout page's last trending top and plans, and its last plans' rows (by
        #: catalog version): `_popularity_rows` and `_arrange_popularity`.
        self._popularity_memo: tuple[int, list[tuple[str, float]], list[_RowPlan]] | None = None
        self._holdout_memo: tuple[int, tuple[object, ...], tuple[PageRow, ...]] | None = None
        self._newest_memo: tuple[int, int, list[str], np.ndarray] | None = None
        #: Scratch of `_first_seen`: -1 per key (table row) between pages.
        self._slots = np.full(0, -1, dtype=np.intp)
        self._first_buffer = np.empty(0, dtype=np.intp)
        self._positions_buffer = np.empty(0, dtype=np.intp)

    # -- features for one item (impression-time fallback) ------------------------------

    def item_features(self, state: UserState, item_id: str, now: int) -> list[float]:
        """Feature row for one item without the kNN signal (cheap; used when no page is cached)."""
        self.items.sync(self.catalog)
        item = self.catalog.get(item_id)
        # Only what rank_features reads of the context: this item's genres and styles.
        wanted = (item.genres, item.artwork_styles) if item is not None else ((), ())
        context = self._context(state, now, knn_max=0.0, only=wanted)
        signals = CandidateSignals(
            trending_score=self.trending.score(item_id, now),
            resume_progress=state.continue_watching.get(item_id, 0.0),
            item_lift=float(self.engagement.item_lifts([item_id])[0]),
        )
        return rank_features(state, context, item_id, item, signals)

    def _context(
        self,
        state: UserState,
        now: int,
        knn_max: float,
        *,
        only: tuple[Sequence[str], Sequence[str]] | None = None,
    ) -> RankingContext:
        """The page's ranking context: the user's taste against the population's rates.

        ``only`` (genres, artwork styles) limits the lifts to those: one item's row (the label
        fallback) needs no more, and each genre's and style's lift is computed on its own as
        for a page, so the values are the same at a third of the cost.
        """
        style_col = self.items.style_col
        styles: list[str] = list(style_col)
        only_genres = None
        if only is not None:
            only_genres, only_styles = only
            styles = [style for style in only_styles if style in style_col]
        return ranking_context(
            state,
            now,
            self.config,
            knn_max,
            taste_rate=self.engagement.taste_rate,
            click_rate=self.engagement.click_rate,
            genre_prior=self.engagement.genre_rates(),
            style_pull=self.bandit.user_style_multipliers(
                styles,
                context=state.device or "",
                taste=state.style_evidence,
                strength=self.config.style_taste_strength,
            ),
            only_genres=only_genres,
        )

    # -- pages ---------------------------------------------------------------------------

    def build(
        self,
        state: UserState,
        *,
        recommendation_id: str,
        trigger_event_id: str,
        now: int,
        generated_at: int,
        coalesced_event_ids: tuple[str, ...] = (),
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
            coalesced_event_ids=coalesced_event_ids,
        )
        return ServedPage(page=page, item_ids=item_ids, features=features)

    def _personalized(
        self, state: UserState, recommendation_id: str, now: int
    ) -> tuple[tuple[PageRow, ...], tuple[str, ...], np.ndarray]:
        config = self.config
        items = self.items
        items.sync(self.catalog)
        # The sources' ids and table rows, in source order (resume, kNN, trending, new,
        # genres, explore): the candidates are their ids in first-seen order.
        source_ids: list[str] = []
        source_rows: list[np.ndarray] = []
        plans: list[_RowPlan] = []

        if state.continue_watching:
            resume = list(reversed(state.continue_watching))  # most recent first
            source_ids += resume
            plans.append(_RowPlan("continue-watching", "Continue watching", resume))

        knn_max = 0.0
        neighbours: list[tuple[str, float]] = []
        if state.last_items:
            neighbours = self.knn.recommend(
                state.last_items,
                config.knn_candidates,
                exclude_session=session_key(state.user_id, state.session_id),
            )
            if neighbours:
                knn_max = neighbours[0][1]
                neighbour_ids = [item_id for item_id, _ in neighbours]
                source_ids += neighbour_ids
                anchor = self.catalog.get(state.last_items[-1])
                anchor_title = anchor.title if anchor is not None and anchor.title else "this"
                plans.append(
                    _RowPlan(
                        "because-you-watched", f"Because you watched {anchor_title}", neighbour_ids
                    )
                )

        if source_ids:  # the resume and kNN ids' rows: one lookup
            source_rows.append(items.rows(source_ids))

        trending_ids = self.trending.top_ids(max(config.trending_candidates * 4, 100))
        derived = self._from_trending(trending_ids)
        trending_rows = derived.rows
        trending_row = trending_ids[: config.trending_candidates]
        source_ids += trending_row
        source_rows.append(trending_rows[: config.trending_candidates])
        plans.append(_RowPlan("trending", "Trending now", trending_row))

        if len(trending_ids) < config.row_size:
            newest, newest_rows = self._newest(config.trending_candidates)
            newest = list(newest)  # the plan's own list; the memo's stays as it is
            source_ids += newest
            source_rows.append(newest_rows)
            plans.append(_RowPlan("new-arrivals", "New arrivals", newest))

        context = self._context(state, now, knn_max)
        # "More <genre>" for the genres this user's own behaviour favours.
        evidence = state.genre_evidence
        top_genres = [
            genre
            for genre, weight in sorted(context.genre_lift.items(), key=lambda kv: (-kv[1], kv[0]))
            if weight > 0 and evidence.get(genre, NO_EVIDENCE)[0] > 0
        ][:_GENRE_ROWS]
        for genre in top_genres:
            genre_items = derived.genre_items.get(genre)
            if genre_items is None:
                genre_items = derived.genre_items[genre] = self._genre_items(
                    genre, trending_ids, trending_rows
                )
                derived.genre_rows[genre] = items.rows(genre_items)
            genre_items = list(genre_items)  # the plan's own list; the memo's stays as it is
            source_ids += genre_items
            source_rows.append(derived.genre_rows[genre])
            plans.append(_RowPlan(f"genre-{genre}", f"More {genre}", genre_items))
        planned = len(source_ids)
        # A few of every genre's best: a taste nobody has looked for yet can only be found if
        # its titles can reach the page (the ranker and the top row's genre spread decide).
        if config.explore_per_genre:
            if derived.explore is None:
                derived.explore = self._explore_items(trending_ids, trending_rows)
                derived.explore_rows = items.rows(derived.explore)
            source_ids += derived.explore
            source_rows.append(derived.explore_rows)

        if not source_ids:
            return (), (), np.zeros((0, len(self.ranker.feature_names)), dtype=np.float32)

        source_keys = np.concatenate(source_rows)
        first, plan_positions = self._first_seen(source_ids, source_keys)
        item_ids = list(map(source_ids.__getitem__, first.tolist()))
        position = dict(zip(item_ids, range(len(item_ids)), strict=True))
        rows = source_keys[first]
        features = rank_feature_matrix(
            state,
            context,
            item_ids,
            rows,
            self.items,
            self.trending.scores(item_ids, now),
            neighbours,
            position,
            self.engagement.item_lifts(item_ids),
        )
        score_array = self._scores(features)
        row_plans, lengths, placed_at = self._ordered_rows(
            plans, item_ids, position, rows, score_array, plan_positions[:planned]
        )
        placed = tuple(map(item_ids.__getitem__, placed_at.tolist()))
        page_rows = self._with_artworks(
            row_plans,
            lengths,
            placed,
            score_array[placed_at],
            rows[placed_at],
            state,
            recommendation_id,
        )
        return page_rows, placed, features[placed_at].astype(np.float32)

    def _ordered_rows(
        self,
        plans: list[_RowPlan],
        item_ids: list[str],
        position: dict[str, int],
        rows: np.ndarray,
        scores: np.ndarray,
        plan_positions: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[list[_RowPlan], list[int], np.ndarray]:
        """The candidates' order, "Top picks" and the arranged rows: each row's plan, how
        many titles it shows, and the candidate index of every placed title (page order),
        in one compiled pass (`processors.arrangement`); a page whose scores tie takes
        `_diversified` and `_arrange`, where item ids decide.

        ``plan_positions`` are the plans' candidate indices one plan after the other (looked
        up in ``position`` when not given)."""
        config = self.config
        limit = config.row_size * 2
        if plan_positions is None:
            plan_positions = list(
                map(position.__getitem__, chain.from_iterable(plan.item_ids for plan in plans))
            )
        page = arrange(
            scores,
            rows,
            self.items,
            plan_positions,
            [len(plan.item_ids) for plan in plans],
            [plan.ordered for plan in plans],
            [plan.row_id for plan in plans],
            genre_diversity=config.genre_diversity,
            top_picks_limit=limit,
            page_rows=config.page_rows,
            row_size=config.row_size,
        )
        if page is None:
            score_of = dict(zip(item_ids, scores.tolist(), strict=True))
            best = _by_score(scores, item_ids)
            rank_of = dict(zip(best, range(len(best)), strict=True))
            top_picks = self._diversified(best, score_of, limit)
            plans.append(_RowPlan("top-picks", "Top picks for you", top_picks, ordered=True))
            arranged = self._arrange(plans, score_of, rank_of)
            placed_at = [position[item_id] for _, items in arranged for item_id, _ in items]
            return (
                [plan for plan, _ in arranged],
                [len(items) for _, items in arranged],
                np.array(placed_at, dtype=np.intp),
            )
        plans.append(
            _RowPlan(
                "top-picks",
                "Top picks for you",
                list(map(item_ids.__getitem__, page.top_picks)),
                ordered=True,
            )
        )
        return (
            list(map(plans.__getitem__, page.plans)),
            page.lengths,
            page.placed,
        )

    def _first_seen(self, ids: list[str], keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`processors.candidates.first_seen` of the sources' ids and table rows (``keys``):
        each candidate's first index in ``ids``, and each id's candidate index (views of
        buffers the next page reuses). Items the table does not know share its sentinel
        row, so they get keys of their own first."""
        unknown = self.items.unknown_row
        slots = self._slots
        if len(slots) <= unknown:
            slots = self._slots = np.full(2 * unknown + 16, -1, dtype=np.intp)
        size = len(keys)
        first, positions = self._first_buffer, self._positions_buffer
        if len(first) < size:
            first = self._first_buffer = np.empty(2 * size, dtype=np.intp)
            positions = self._positions_buffer = np.empty(2 * size, dtype=np.intp)
        count = first_seen(keys, slots, unknown, first, positions)
        if count < 0:
            keys = keys.copy()
            own: dict[str, int] = {}
            for at in np.flatnonzero(keys == unknown).tolist():
                keys[at] = unknown + 1 + own.setdefault(ids[at], len(own))
            if len(slots) <= unknown + len(own):
                slots = self._slots = np.full(2 * (unknown + len(own)) + 16, -1, dtype=np.intp)
            count = first_seen(keys, slots, -1, first, positions)
        # Views of buffers reused by the next page: read before it.
        return first[:count], positions[:size]

    def _newest(self, n: int) -> tuple[list[str], np.ndarray]:
        """``Catalog.newest(n)`` and the items' table rows, remembered per catalog version."""
        memo = self._newest_memo
        version = self.catalog.version
        if memo is None or memo[0] != version or memo[1] != n:
            newest = self.catalog.newest(n)
            memo = self._newest_memo = (version, n, newest, self.items.rows(newest))
        return memo[2], memo[3]

    def _from_trending(self, trending_ids: list[str]) -> _TrendingDerived:
        """What the page takes from the trending order alone, reused while it stands.

        The trending candidates' table rows, the genre rows' and the explore candidates
        depend only on that order and the catalog; between two pages the order of the top
        trending titles is usually unchanged (92% of consecutive pages on the engine-alone
        traffic), so they are computed once per order instead of once per page.
        """
        memo = self._trending_memo
        version = self.catalog.version
        if memo is None or memo.catalog_version != version or memo.ids != trending_ids:
            memo = self._trending_memo = _TrendingDerived(
                trending_ids, version, self.items.rows(trending_ids)
            )
        return memo

    def _with_artworks(
        self,
        row_plans: list[_RowPlan],
        lengths: list[int],
        placed_ids: tuple[str, ...],
        placed_scores: np.ndarray,
        placed_rows: np.ndarray,
        state: UserState,
        recommendation_id: str,
    ) -> tuple[PageRow, ...]:
        """Choose every placed item's artwork, then render the rows.

        ``placed_ids`` are the arranged items in page order (``lengths[r]`` of them on row
        ``r``, of plan ``row_plans[r]``), ``placed_scores`` their scores and ``placed_rows``
        their `ItemTable` rows (taken from the candidates' arrays: no second lookup per item).
        """
        chosen = self._artworks(placed_ids, placed_rows, state, recommendation_id)
        rendered = iter(_page_items(placed_ids, round6_many(placed_scores), chosen))
        return _page_rows(
            [plan.row_id for plan in row_plans],
            [plan.title for plan in row_plans],
            [tuple(islice(rendered, length)) for length in lengths],
        )

    def _artworks(
        self,
        item_ids: Sequence[str],
        rows: np.ndarray,
        state: UserState,
        recommendation_id: str,
    ) -> list[str | None]:
        """Each title's artwork in the style that pulls this user most (``ArtworkBandit
        .choose_styled``, remembered per order of the pulls: `StyledArtworks`); titles
        without style tags go to the per-artwork bandit in one draw."""
        items = self.items
        pulls = self.bandit.style_pulls(
            list(items.style_col),
            context=state.device or "",
            taste=state.style_evidence,
            strength=self.config.style_taste_strength,
            draw_key=recommendation_id,
            explore=self.config.style_exploration,
        )
        chosen, untagged = self._styled_artworks.choose(item_ids, rows, pulls)
        artworks_of = items.artworks.get
        if untagged:
            fallback = self.bandit.choose_many(
                [(item_ids[k], artworks_of(item_ids[k], ())) for k in untagged],
                context=state.device or "",
                draw_key=recommendation_id,
            )
            for index, artwork_id in zip(untagged, fallback, strict=True):
                chosen[index] = artwork_id
        return chosen

    def _diversified(self, ranked: list[str], score_of: dict[str, float], limit: int) -> list[str]:
        """The best ``limit`` titles in an order that spreads genres over the first
        `SPREAD_SLOTS` slots (maximal marginal relevance): each next title's log-score loses
        ``genre_diversity`` per title of the same genre already ahead of it (a title of two
        genres counts half for each). Past them the order is the score's.

        A user looks at the first three or four titles of the top row; five titles of one
        genre there teach nothing about the other genres and bore a user who does not love
        it, while a strongly loved genre still wins most slots.
        """
        penalty = self.config.genre_diversity
        slots = min(SPREAD_SLOTS, limit)
        if penalty <= 0.0 or len(ranked) <= 1:
            return ranked[:limit]
        pool = ranked[: slots * 3]
        get = self.catalog.get
        log = math.log
        # Plain Python over a pool of 30: cheaper than numpy calls per pick. Each title's value
        # is its log-score minus the penalty of the titles of its genres already chosen,
        # updated only for the titles that share a genre with the one just chosen.
        values = [log(max(score_of[item_id], 1e-12)) for item_id in pool]
        members: dict[str, list[int]] = {}
        share = []
        genres_of = []
        for index, item_id in enumerate(pool):
            item = get(item_id)
            genres = item.genres if item is not None else ()
            genres_of.append(genres)
            share.append(penalty / len(genres) if genres else 0.0)
            for genre in genres:
                members.setdefault(genre, []).append(index)
        chosen: list[str] = []
        for _ in range(min(slots, len(pool))):
            best = values.index(max(values))  # the first of equals
            chosen.append(pool[best])
            values[best] = -math.inf
            for genre in genres_of[best]:
                for index in members[genre]:
                    values[index] -= share[index]
        taken = set(chosen)
        chosen.extend(item_id for item_id in ranked[: limit + slots] if item_id not in taken)
        return chosen[:limit]

    def _scores(self, features: np.ndarray) -> np.ndarray:
        """Click probabilities from the ranker (the click model and the learned regression,
        blended by how well each has been predicting: ``online_models.blended_ranker``)."""
        return self.ranker.predict_proba_many(features)

    def _explore_items(self, trending_ids: list[str], trending_rows: np.ndarray) -> list[str]:
        """The first ``explore_per_genre`` trending titles of every genre (filled up from the
        catalog for genres trending lacks): one pass over the trending rows, not one per genre.
        """
        limit = self.config.explore_per_genre
        items = self.items
        # Per genre column, the trending positions of its first `limit` titles (one pass).
        counts = np.zeros(items.genre_hits.shape[1], dtype=np.intp)
        kept = explore_positions(trending_rows, items.genre_hits, limit, counts)
        chosen = list(map(trending_ids.__getitem__, kept.tolist()))
        counts = counts.tolist()
        for genre, column in items.genre_col.items():
            if counts[column] < limit:  # trending lacks this genre: the catalog's first titles
                chosen.extend(self.catalog.items_in_genre(genre)[:limit])
        return chosen

    def _genre_items(
        self,
        genre: str,
        trending_ids: list[str],
        trending_rows: np.ndarray | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Up to ``limit`` (``genre_candidates``) items of a genre: trending ones first, then
        the catalog's."""
        limit = limit or self.config.genre_candidates
        chosen: dict[str, None] = {}
        column = self.items.genre_col.get(genre) if trending_rows is not None else None
        if trending_rows is not None:
            if column is not None and len(trending_ids):
                hits = genre_positions(trending_rows, self.items.genre_hits, column, limit)
                chosen = dict.fromkeys(map(trending_ids.__getitem__, hits.tolist()))
        else:
            catalog_get = self.catalog.get
            for item_id in trending_ids:
                item = catalog_get(item_id)
                if item is not None and genre in item.genres:
                    chosen[item_id] = None
                    if len(chosen) >= limit:
                        break
        if len(chosen) >= limit:
            return list(chosen)
        for item_id in self.catalog.items_in_genre(genre):
            chosen.setdefault(item_id, None)
            if len(chosen) >= limit:
                break
        return list(chosen)

    def _arrange(
        self,
        plans: list[_RowPlan],
        score_of: dict[str, float],
        rank_of: dict[str, int] | None = None,
    ) -> list[tuple[_RowPlan, list[tuple[str, float]]]]:
        """Order rows by predicted engagement and fill them, each title once per page.

        Greedy: the next row is the one whose best *still unplaced* items score highest, so a
        row is ranked on what it will really show, not on titles a better row already took.
        ``rank_of`` (every candidate's place in ``(-score, item_id)`` order, from the page's
        one sort) orders the rows' items; without it, items without a score are dropped and
        the order is computed here.
        """
        row_size = self.config.row_size
        if rank_of is None:
            for plan in plans:
                plan.item_ids = [item_id for item_id in plan.item_ids if item_id in score_of]
            ranked = sorted(score_of, key=lambda item_id: (-score_of[item_id], item_id))
            rank_of = {item_id: rank for rank, item_id in enumerate(ranked)}
        rank = rank_of.__getitem__
        remaining = []
        for plan in plans:
            if plan.item_ids:
                if not plan.ordered:
                    plan.item_ids = sorted(plan.item_ids, key=rank)
                remaining.append(plan)
        placed: set[str] = set()
        rows: list[tuple[_RowPlan, list[tuple[str, float]]]] = []
        while remaining and len(rows) < self.config.page_rows:
            for plan in remaining:
                item_ids = plan.item_ids
                end = len(item_ids)
                index = plan.cursor
                while index < end and item_ids[index] in placed:
                    index += 1
                plan.cursor = index
                top = []
                while index < end:
                    item_id = item_ids[index]
                    if item_id not in placed:
                        top.append(score_of[item_id])
                        if len(top) == ROW_SCORE_TOP:
                            break
                    index += 1
                plan.score = sum(top) / len(top) if top else -1.0
            best = min(remaining, key=_row_order)
            remaining.remove(best)
            items = []
            for item_id in best.item_ids[best.cursor :]:
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
        """Trending plus the most popular genres' rows: the same page for everyone.

        Remembered while the trending top (ids and scores) and the catalog stand: they are
        all it depends on, and consecutive holdout pages share them ~40% of the time.
        """
        config = self.config
        trending_top = self.trending.top(max(config.trending_candidates * 4, 100), now)
        memo = self._popularity_memo
        version = self.catalog.version
        if memo is not None and memo[0] == version and memo[1] == trending_top:
            return memo[2]
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
                    self._genre_items(genre, [item_id for item_id, _ in trending_top]),
                )
            )
        self._popularity_memo = (version, trending_top, plans)
        return plans

    def _arrange_popularity(self, plans: list[_RowPlan]) -> tuple[PageRow, ...]:
        """Rows in popularity order; scores are the rank within the row, artwork the default.

        The rows follow from the plans' ids and the catalog alone, and consecutive holdout
        pages mostly have the same plans (~65%: the trending order moves less often than its
        scores), so the last plans' rows are reused (pages are immutable; sharing their rows
        is safe) instead of rendering ~30 titles again.
        """
        key = tuple((plan.row_id, plan.title, tuple(plan.item_ids)) for plan in plans)
        memo = self._holdout_memo
        version = self.catalog.version
        if memo is not None and memo[0] == version and memo[1] == key:
            return memo[2]
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
        self._holdout_memo = (version, key, tuple(rows))
        return self._holdout_memo[2]
