"""The engine: one deterministic entry point that turns an event into outputs.

The Faust agent, the offline replay, the evaluator and the benchmarks all call
``Engine.process`` (or ``process_raw``), so a replay reproduces what production did. Nothing
here reads a clock: ``now`` is passed in (wall-clock ms live, event time in replays).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from processors.attribution import ArmMetrics
from processors.catalog import Catalog
from processors.config import EngineConfig
from processors.experiments import ArmAssigner
from processors.features import SESSION_FEATURE_NAMES, write_session_snapshot
from processors.ids import stable_id
from processors.page_builder import PageBuilder, ServedFeatures, session_key
from processors.ports import (
    ArtworkChooser,
    BinaryLearner,
    EngagementModel,
    NextItemIndex,
    Popularity,
)
from processors.session_window import SEQUENCE_TYPES, artwork_style, update_window
from processors.taste import (
    NO_EVIDENCE,
    TASTE_TYPES,
    add_evidence,
    carry_over,
    engagement_of,
)
from processors.user_state import NO_PENDING, PendingImpression, UserState
from schemas.codec import (
    DEFAULT_LIMITS,
    CodecLimits,
    DecodeError,
    decode_catalog_item,
    decode_event,
)
from schemas.messages import BehaviourEvent, CatalogItem, ChurnAlert, DeadLetter, Page

__all__ = ["Effects", "Engine", "EngineModels", "SourcePosition"]

#: How much each outcome adds to an item's trending score.
_TRENDING_WEIGHTS = {"click": 1.0, "play": 2.0, "completion": 1.0}
_POSITIVE_TYPES = frozenset({"click", "play"})
#: Events `Engine._learn_from_outcome` learns a label from (when no impression is pending);
#: impressions too with ``learn_unanswered_impressions``.
_LABEL_TYPES = _POSITIVE_TYPES | {"scroll_past"}
_LABEL_TYPES_ALL = _LABEL_TYPES | {"impression"}
_EARLIEST_TS = 946_684_800_000  # 2000-01-01: older timestamps are clock or unit errors


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a raw message came from, carried into dead letters."""

    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(slots=True)
class EngineModels:
    """The learners and indexes one engine owns (see ``online_models.factory.build_models``)."""

    knn: NextItemIndex
    trending: Popularity
    ranker: BinaryLearner
    churn: BinaryLearner
    bandit: ArtworkChooser
    engagement: EngagementModel


@dataclass(slots=True)
class Effects:
    """What one input caused: outputs to send and the state to persist."""

    state: UserState | None = None
    event: BehaviourEvent | None = None
    page: Page | None = None
    alert: ChurnAlert | None = None
    dead_letter: DeadLetter | None = None
    duplicate: bool = False
    #: Variant of the page the event refers to (via recommendation_id), when known.
    attributed_variant: str | None = None
    labels: list[tuple[str, bool]] = field(default_factory=list)


_new_object = object.__new__
# `Engine.process` fills an Effects field by field: refuse to import if a field is added.
if tuple(f.name for f in fields(Effects)) != (
    "state",
    "event",
    "page",
    "alert",
    "dead_letter",
    "duplicate",
    "attributed_variant",
    "labels",
):
    raise RuntimeError("processors.engine: Engine.process is out of step with Effects")


class Engine:
    """Sessions, features, candidates, ranking, churn and labels for a stream of events.

    Per-user state is passed in and out (the caller decides where it lives: a dict offline,
    an in-memory cache checkpointed to Redis in the worker); the models are owned here.
    """

    def __init__(
        self,
        config: EngineConfig,
        models: EngineModels,
        catalog: Catalog | None = None,
        *,
        served_cache_pages: int = 20_000,
        limits: CodecLimits = DEFAULT_LIMITS,
    ) -> None:
        self.config = config
        #: Size bounds for decoding input; larger input becomes a dead letter, not truncated.
        self.limits = limits
        self.models = models
        self.catalog = catalog if catalog is not None else Catalog()
        self.arms = ArmAssigner(config.experiment_name, config.arms)
        self.pages = self._page_builder(models)
        self.counters: Counter[str] = Counter()
        #: Serve-time features of recent pages, so labels learn from what was served. In memory
        #: only: after a restart, labels fall back to features recomputed at impression time.
        self._served: OrderedDict[str, ServedFeatures] = OrderedDict()
        self._served_limit = served_cache_pages
        self.watermark = 0
        #: False freezes every model (kNN index, trending, ranker, churn, bandit): user state
        #: still advances. Frozen evaluation learns from the training part only.
        self.learning = True
        #: Per-arm outcome metrics (impression→click, plays, sessions without a play, ...).
        self.arm_metrics = ArmMetrics()
        #: user id → trigger event ids whose page was deferred to a later event of the batch.
        self._owed: dict[str, list[str]] = {}
        #: The churn check's row, rewritten for each check (the snapshot and the model read
        #: it during the check and keep nothing of it).
        self._churn_row = np.zeros(len(SESSION_FEATURE_NAMES))
        #: The churn check's snapshot records are written here, then copied to the state
        #: (grown when a session's records need more).
        self._churn_scratch = bytearray(1024)

    # -- entry points ------------------------------------------------------------------

    def process_raw(
        self,
        raw: bytes,
        states: MutableMapping[str, UserState],
        *,
        now: int,
        source: SourcePosition = SourcePosition(),
        content_type: str | None = None,
    ) -> Effects:
        """Decode and process one message; the state dict is updated in place."""
        decoded = self.decode(raw, now=now, source=source, content_type=content_type)
        if isinstance(decoded, DeadLetter):
            return Effects(dead_letter=decoded)
        effects = self.process(
            decoded, states.get(decoded.user_id), now=now, raw=raw, source=source
        )
        if effects.state is not None:
            states[decoded.user_id] = effects.state
        return effects

    def decode(
        self,
        raw: bytes,
        *,
        now: int,
        source: SourcePosition = SourcePosition(),
        content_type: str | None = None,
    ) -> BehaviourEvent | DeadLetter:
        """Decode one event, or return the dead letter that says why it cannot be used."""
        try:
            return decode_event(raw, content_type=content_type, limits=self.limits)
        except DecodeError as error:
            return self._dead_letter(raw, str(error), now, source, "decode")

    def process(
        self,
        event: BehaviourEvent,
        state: UserState | None,
        *,
        now: int,
        raw: bytes = b"",
        source: SourcePosition = SourcePosition(),
        serve_page: bool = True,
    ) -> Effects:
        """Apply one decoded event to the user's state and produce the outputs it causes.

        ``serve_page=False`` defers the page of a trigger event: a later event of the same
        batch (see `serving_plan`) serves one page that answers both, listing the deferred
        trigger in ``Page.coalesced_event_ids``; `settle_pages` serves what is still owed.
        """
        config = self.config
        counters = self.counters
        counters["events_in"] += 1
        ts = event.ts
        # `_reject_reason` only for an event that may be rejected (every check's cheap half).
        if (
            ts < _EARLIEST_TS
            or ts > now + config.max_future_skew_ms
            or (
                state is not None
                and state.session_events
                and state.last_ts - ts > config.late_grace_ms
            )
        ):
            reason = self._reject_reason(event, state, now)
            if reason is not None:
                kind = reason.split(":", 1)[0]
                return Effects(
                    state=state, dead_letter=self._dead_letter(raw, reason, now, source, kind)
                )
        if state is None:
            state = UserState(event.user_id, dedup_window=config.dedup_window)
            state.variant = self.arms.arm_of(event.user_id)
        if not state.recent_event_ids.add(event.event_id):  # (remembered when it is new)
            counters["duplicates"] += 1
            return Effects(state=state, event=event, duplicate=True)
        if ts > self.watermark:
            self.watermark = ts

        session_id = event.session_id
        if (
            not state.session_id
            or (session_id is not None and session_id != state.session_id)
            or ts - state.last_ts > config.session_gap_ms
        ):  # a new session (most events continue theirs)
            self._start_session(state, event)
        # Effects(state=state, event=event), without the keyword call (every event).
        effects = _new_object(Effects)
        effects.state = state
        effects.event = event
        effects.page = effects.alert = effects.dead_letter = effects.attributed_variant = None
        effects.duplicate = False
        effects.labels = []
        if event.recommendation_id:
            effects.attributed_variant = state.page_variant(event.recommendation_id)
        event_type = event.type
        item_id = event.item_id
        item = self.catalog.get(item_id) if item_id is not None else None
        # Each stage below is called only for the events it can act on (its own first test).
        pending = state.pending
        if pending or (
            item_id is not None
            and event_type
            in (_LABEL_TYPES_ALL if config.learn_unanswered_impressions else _LABEL_TYPES)
        ):
            self._learn_from_outcome(state, event, effects)
            if not state.pending:  # (an emptied dict keeps its table: the shared one instead)
                state.pending = NO_PENDING
        elif pending is not NO_PENDING:
            state.pending = NO_PENDING
        if item is not None and event_type in TASTE_TYPES:
            self._learn_taste(state, event, item)
        update_window(state, event, item, config)
        if event_type in SEQUENCE_TYPES:
            self._update_indexes(state, event)
        effects.alert = self._churn_check(state, event)
        if event_type in config.page_trigger_types:
            if serve_page:
                owed = self._owed.pop(state.user_id, ())
                effects.page = self._serve_page(state, event.event_id, now, owed)
            else:
                self._owed.setdefault(state.user_id, []).append(event.event_id)
                counters["pages_coalesced"] += 1
        counters["events_accepted"] += 1
        self.arm_metrics.observe(effects)
        return effects

    def serving_plan(self, events: Sequence[BehaviourEvent | DeadLetter]) -> list[bool]:
        """For a batch of decoded events, which ones serve their page (``serve_page``).

        A user's last trigger event in the batch serves the page; that user's earlier triggers
        defer to it. Their pages would be superseded within milliseconds, before any client
        could show them, and building them was most of the worker's time under load. Every
        page that is served is identical to the one event-at-a-time processing builds for the
        same trigger: the page is built at that event's place in the stream, with the models
        as they are there.
        """
        triggers = self.config.page_trigger_types
        last: dict[str, int] = {}
        for index, event in enumerate(events):
            if isinstance(event, BehaviourEvent) and event.type in triggers:
                last[event.user_id] = index
        plan = [True] * len(events)
        for index, event in enumerate(events):
            if isinstance(event, BehaviourEvent) and event.type in triggers:
                plan[index] = last[event.user_id] == index
        return plan

    def settle_pages(self, states: Mapping[str, UserState], *, now: int) -> list[Page]:
        """Serve the pages still owed at the end of a batch, one per user.

        Only needed when a user's last trigger in the batch did not serve (it was a duplicate
        or was dead-lettered): the deferred triggers still get their answer, built now.
        """
        owed, self._owed = self._owed, {}
        return [
            self._serve_page(states[user_id], event_ids[-1], now, event_ids[:-1])
            for user_id, event_ids in owed.items()
            if user_id in states
        ]

    def apply_catalog(self, item: CatalogItem) -> None:
        """Add or update a catalog item."""
        self.catalog.upsert(item)
        self.counters["catalog_items"] += 1

    def apply_catalog_raw(
        self, raw: bytes, *, now: int, source: SourcePosition = SourcePosition()
    ) -> DeadLetter | None:
        """Decode and apply a catalog message; returns a dead letter if it is unusable."""
        try:
            item = decode_catalog_item(raw, limits=self.limits)
        except DecodeError as error:
            return self._dead_letter(raw, str(error), now, source, "catalog")
        self.apply_catalog(item)
        return None

    def expire_idle(self, states: Iterable[UserState], *, watermark: int) -> list[UserState]:
        """End sessions idle for longer than the gap (event time); returns the states it ended.

        Users who never come back still teach the churn model how their session ended.
        """
        ended = []
        gap = self.config.session_gap_ms
        for state in states:
            if state.session_events and watermark - state.last_ts > gap:
                self._end_session(state)
                ended.append(state)
        return ended

    # -- validation ----------------------------------------------------------------------

    def _reject_reason(
        self, event: BehaviourEvent, state: UserState | None, now: int
    ) -> str | None:
        """Why ``event`` is refused, or None. `process` calls it only when its inline test
        (the cheap half of every check here) fails: a new check belongs in both."""
        config = self.config
        if event.ts < _EARLIEST_TS:
            return f"ts_out_of_range: ts {event.ts} is before 2000-01-01 (epoch ms expected)"
        if event.ts > now + config.max_future_skew_ms:
            return (
                f"ts_out_of_range: ts {event.ts} is {event.ts - now} ms ahead of the clock "
                f"(limit {config.max_future_skew_ms} ms)"
            )
        if state is not None and state.session_events:
            behind = state.last_ts - event.ts
            # The duplicate check second: `process` checks it anyway, and few events are late.
            if behind > config.late_grace_ms and event.event_id not in state.recent_event_ids:
                return (
                    f"late_event: ts is {behind} ms behind the user's latest event "
                    f"(grace {config.late_grace_ms} ms)"
                )
        return None

    # -- sessions --------------------------------------------------------------------------

    def _start_session(self, state: UserState, event: BehaviourEvent) -> None:
        """``event`` starts a new session (`process` decides): the previous one ends."""
        if state.session_events:
            self._end_session(state)
        state.session_id = event.session_id or f"{state.user_id}-{event.ts}"
        state.session_start = event.ts
        state.last_ts = event.ts
        self.counters["sessions_started"] += 1

    def _end_session(self, state: UserState) -> None:
        """Close the session: churn learns how it ended, the taste evidence carries over at a
        discount (and unanswered impressions become negatives, if configured)."""
        for item_id, pending in state.pending.items():
            self._learn_rank(item_id, pending.features, False, pending.artwork_id, state)
        carry = self.config.taste_carry_over
        carry_over(state.genre_evidence, carry)
        carry_over(state.style_evidence, carry)
        churned = not state.has_played
        if self.learning:
            for snapshot in state.churn_snapshot_rows():
                self.models.churn.learn_vector(snapshot, churned)
        self.counters["sessions_ended"] += 1
        self.counters["sessions_ended_without_play"] += int(churned)
        state.sessions_total += 1
        self.arm_metrics.session_ended(state)
        state.reset_session()

    # -- learning from outcomes --------------------------------------------------------

    def _learn_from_outcome(
        self, state: UserState, event: BehaviourEvent, effects: Effects
    ) -> None:
        timeout = self.config.impression_timeout_ms
        if state.pending:
            expired = [
                item_id
                for item_id, pending in state.pending.items()
                if event.ts - pending.shown_ts > timeout
            ]
            for item_id in expired:
                pending = state.pending.pop(item_id)
                self._learn_rank(item_id, pending.features, False, pending.artwork_id, state)
                effects.labels.append((item_id, False))

        item_id = event.item_id
        if item_id is None:
            return
        event_type = event.type
        if event_type == "impression":
            if not self.config.learn_unanswered_impressions:
                return  # not a label: it waits for no answer
            features = self._served_features(event, state)
            previous = state.pending.pop(item_id, None)
            if previous is not None:  # shown again before any answer: the first showing failed
                self._learn_rank(item_id, previous.features, False, previous.artwork_id, state)
                effects.labels.append((item_id, False))
            state.pending_to_add()[item_id] = PendingImpression(
                event.recommendation_id, event.ts, features, event.artwork_id
            )
            if len(state.pending) > self.config.pending_impressions:
                oldest_id = next(iter(state.pending))
                oldest = state.pending.pop(oldest_id)
                self._learn_rank(oldest_id, oldest.features, False, oldest.artwork_id, state)
                effects.labels.append((oldest_id, False))
        elif event_type in _POSITIVE_TYPES or event_type == "scroll_past":
            positive = event_type in _POSITIVE_TYPES
            pending = state.pending.pop(item_id, None)
            if pending is not None:
                self._learn_rank(
                    item_id,
                    pending.features,
                    positive,
                    pending.artwork_id or event.artwork_id,
                    state,
                )
                effects.labels.append((item_id, positive))
            elif event.recommendation_id and (positive or event_type == "scroll_past"):
                # Shown (the event names its page) but the impression was not seen: learn anyway.
                if event_type == "play" and item_id in state.session_clicked:
                    return  # the click already taught the ranker about this showing
                features = self._served_features(event, state)
                self._learn_rank(item_id, features, positive, event.artwork_id, state)
                effects.labels.append((item_id, positive))

    def _served_features(self, event: BehaviourEvent, state: UserState) -> np.ndarray | list[float]:
        """The row the page served the event's item with (a float64 array), or the item's
        row now when that page is not cached (a holdout page, or one evicted)."""
        assert event.item_id is not None
        if event.recommendation_id:
            served = self._served.get(event.recommendation_id)
            if served is not None:
                features = served.row_of(event.item_id)
                if features is not None:
                    return features
        return self.pages.item_features(state, event.item_id, max(event.ts, state.last_ts))

    def _learn_rank(
        self,
        item_id: str,
        features: Sequence[float] | np.ndarray,
        positive: bool,
        artwork_id: str | None,
        state: UserState,
    ) -> None:
        if not self.learning:
            return
        models = self.models
        models.ranker.learn_vector(features, positive)
        models.engagement.observe(item_id, clicked=positive)
        self.counters["labels_positive" if positive else "labels_negative"] += 1
        if artwork_id is not None:
            models.bandit.update(artwork_id, positive, context=state.device or "")

    def _learn_taste(
        self, state: UserState, event: BehaviourEvent, item: CatalogItem | None
    ) -> None:
        """Artwork-style evidence (the user's, and each style's per device) and the
        population's base rates, from one look at a title.

        The style is credited with engagement beyond what the user's genre taste expected
        (``processors.taste``: observed over expected). Called before the window records the
        event, so the expectation is the one the page was built on.
        """
        if item is None or event.type not in TASTE_TYPES:
            return
        engaged, examined = engagement_of(event.type, event.dwell_ms)
        style = artwork_style(item, event.artwork_id)
        engagement = self.models.engagement
        if style is not None and examined > 0.0:
            expected = examined * self._genre_expectation(state, item)
            add_evidence(state.style_evidence, (style,), engaged, expected)
            if self.learning:
                self.models.bandit.update_style(
                    style, engaged, expected, context=state.device or ""
                )
        if self.learning:
            engagement.observe_taste(engaged, examined, item.genres)

    def _genre_expectation(self, state: UserState, item: CatalogItem) -> float:
        """What the user's genre taste predicts for one look at ``item``: their best genre's
        engagement rate (the population's rate for titles without genres)."""
        engagement = self.models.engagement
        base = engagement.taste_rate
        if not item.genres:
            return base
        genre_rate = engagement.genre_rate
        strength = self.config.genre_taste_strength
        evidence = state.genre_evidence
        best = 0.0
        for genre in item.genres:
            engaged, examined = evidence.get(genre, NO_EVIDENCE)
            # `processors.taste.rate`, inlined (every look at a title): the same expression.
            genre_taste = (engaged + strength * genre_rate(genre)) / (examined + strength)
            if genre_taste > best:  # (as max(best, ...): the first of equals, NaN ignored)
                best = genre_taste
        return best

    def _update_indexes(self, state: UserState, event: BehaviourEvent) -> None:
        if self.learning and event.type in SEQUENCE_TYPES and event.item_id is not None:
            self.models.knn.add_item(
                session_key(state.user_id, state.session_id), event.item_id, event.ts
            )
            self.models.trending.add(event.item_id, event.ts, _TRENDING_WEIGHTS[event.type])

    def next_item_candidates(self, state: UserState, n: int = 20) -> list[tuple[str, float]]:
        """The engine's ranked next-item list for a session: session-kNN, then trending.

        This is what offline next-item evaluation scores (HitRate@n, MRR@n); items already in
        the session are kept, as in the published session-based evaluation protocol.
        """
        ranked: list[tuple[str, float]] = []
        if state.last_items:
            ranked = self.models.knn.recommend(
                state.last_items, n, exclude_session=session_key(state.user_id, state.session_id)
            )
        if len(ranked) < n:
            have = {item_id for item_id, _ in ranked}
            floor = ranked[-1][1] if ranked else 1.0
            for item_id, _ in self.models.trending.top(n + len(have), self.watermark):
                if item_id not in have:
                    floor *= 0.999  # below every kNN score, in popularity order
                    ranked.append((item_id, floor))
                    if len(ranked) >= n:
                        break
        return ranked[:n]

    # -- churn -----------------------------------------------------------------------------

    def _churn_check(self, state: UserState, event: BehaviourEvent) -> ChurnAlert | None:
        if state.has_played:
            state.churn_risk = 0.0
            return None
        config = self.config
        row = self._churn_row  # one float64 row for the snapshot's encoder and the model
        write_session_snapshot(row, state, event.ts, config, self._churn_scratch)
        churn = self.models.churn
        risk = churn.predict_proba_vector(row)
        state.churn_risk = risk
        if state.churn_alerted:
            if risk < config.churn_rearm:
                state.churn_alerted = False
            return None
        if risk < config.churn_threshold or churn.n_learned < config.churn_min_labels:
            return None
        state.churn_alerted = True
        named = dict(zip(SESSION_FEATURE_NAMES, row.tolist(), strict=True))
        reasons = tuple(name for name, weight in churn.contributions(named)[:3] if weight > 0)
        self.counters["churn_alerts"] += 1
        return ChurnAlert(
            alert_id=stable_id("churn", state.user_id, event.event_id),
            user_id=state.user_id,
            session_id=state.session_id,
            risk=round(risk, 6),
            reasons=reasons,
            ts=event.ts,
        )

    # -- pages -----------------------------------------------------------------------------

    def _serve_page(
        self, state: UserState, trigger_event_id: str, now: int, coalesced: Sequence[str] = ()
    ) -> Page:
        recommendation_id = stable_id("rec", state.user_id, trigger_event_id)
        served = self.pages.build(
            state,
            recommendation_id=recommendation_id,
            trigger_event_id=trigger_event_id,
            now=state.last_ts,
            generated_at=now,
            coalesced_event_ids=tuple(coalesced),
        )
        if len(served.item_ids):
            self._served[recommendation_id] = served.for_labels()  # no Page kept: memory
            if len(self._served) > self._served_limit:
                self._served.popitem(last=False)
        state.remember_page(recommendation_id)
        self.counters["pages"] += 1
        self.arm_metrics.record_page(served.page.variant)
        return served.page

    # -- dead letters ----------------------------------------------------------------------

    def _dead_letter(
        self, raw: bytes, reason: str, now: int, source: SourcePosition, kind: str
    ) -> DeadLetter:
        self.counters["dead_letters"] += 1
        self.counters[f"dead_letters_{kind}"] += 1
        return DeadLetter(
            original=raw,
            error=reason,
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            ts=now,
        )

    # -- model snapshots ---------------------------------------------------------------

    def replace_models(self, models: EngineModels) -> None:
        """Swap in restored models (worker start-up, offline evaluation from a snapshot)."""
        self.models = models
        self.pages = self._page_builder(models)

    def _page_builder(self, models: EngineModels) -> PageBuilder:
        return PageBuilder(
            self.config,
            self.catalog,
            models.knn,
            models.trending,
            models.ranker,
            models.bandit,
            models.engagement,
        )

    def model_states(self) -> dict[str, dict[str, Any]]:
        """Every model's plain-data state, for an authenticated snapshot."""
        models = self.models
        return {
            "knn": models.knn.to_state(),
            "trending": models.trending.to_state(),
            "ranker": models.ranker.to_state(),
            "churn": models.churn.to_state(),
            "bandit": models.bandit.to_state(),
            "engagement": models.engagement.to_state(),
        }
