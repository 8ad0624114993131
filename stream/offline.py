"""Offline replay and evaluation: recorded events through ``processors.engine.Engine`` in-process.

No Kafka and no Redis: events come from a topic snapshot (``insession snapshot``) or from a
session data set file (session-rec's ``SessionId<TAB>ItemId<TAB>Time``), are fed to the same
``Engine.process`` the worker calls, with ``now`` = event time, and every next-item list the
engine would serve is scored against what the user actually did next. It sits in ``stream``
because it reads files and clocks (latency); the metrics themselves are pure
(``processors.evaluation``).

Modes:

- ``frozen``: the models learn from the training part only; ``engine.learning`` is False while
  the test part runs (user state still advances, as it must to know the session).
- ``streaming``: the models keep learning from each test event right after it was predicted, as
  the live worker does.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from online_models.factory import build_models
from online_models.session_tsv import read_session_tsv
from processors.config import EngineConfig
from processors.engine import Engine
from processors.evaluation import CUTOFFS, BinaryEvaluator, NextItemEvaluator, percentiles_ms
from processors.session_window import SEQUENCE_TYPES
from processors.user_state import UserState
from schemas.codec import DecodeError, decode_catalog_item, decode_event
from schemas.messages import BehaviourEvent, CatalogItem

__all__ = [
    "DATASET_SESSION_GAP_MS",
    "MODES",
    "PREDICTORS",
    "TIMING_KEYS",
    "EvaluationInput",
    "OfflineData",
    "OfflineResult",
    "Prediction",
    "apply_next_item_protocol",
    "by_event_time",
    "deterministic_part",
    "evaluate",
    "limit_sessions",
    "load_reference_lists",
    "load_session_tsv",
    "load_snapshot",
    "reference_comparison",
    "reference_files",
    "resolve_input",
    "run_offline",
    "session_key_of",
    "split_sessions",
]

MODES = ("frozen", "streaming")
#: ``engine``: the engine's next-item list (session-kNN, then trending); ``trending``: the
#: engine's decayed popularity alone; ``popular``: all-time click counts (session-rec's POP).
PREDICTORS = ("engine", "trending", "popular")
#: Report fields that measure speed: they differ run to run, everything else is deterministic.
TIMING_KEYS = frozenset(
    {
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "event_p50_ms",
        "event_p90_ms",
        "event_p99_ms",
        "events_per_s",
        "train_events_per_s",
        "seconds",
    }
)
#: How often (event time) idle sessions are expired, as the worker's timer does in wall time.
_MIN_EXPIRY_INTERVAL_MS = 60_000

Record = BehaviourEvent | CatalogItem


@dataclass(slots=True)
class OfflineData:
    """What to replay, in processing order: the training part, then the test part."""

    train: list[Record]
    test: list[Record]
    #: Counters from loading and filtering (dead letters, dropped clicks and sessions).
    stats: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Prediction:
    """One scored next-item list, for callers that compare lists (reference tables)."""

    session: tuple[str, str]
    position: int
    ranked: tuple[str, ...]
    target: str


@dataclass(slots=True)
class OfflineResult:
    """Deterministic quality figures, speed figures, and the engine's counters."""

    quality: dict[str, Any]
    timing: dict[str, Any]
    counters: dict[str, int]

    def report(self) -> dict[str, Any]:
        """Quality and timing as one flat dict (keys sorted when serialised)."""
        return {**self.quality, **self.timing}


def deterministic_part(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its timing fields: byte-identical across runs of the same input."""
    return {key: value for key, value in report.items() if key not in TIMING_KEYS}


# -- loading -------------------------------------------------------------------------------


def load_session_tsv(path: str | PathLike[str], *, part: str) -> list[BehaviourEvent]:
    """Clicks of a session-rec TSV file as engine events, in file order.

    Each row becomes ``BehaviourEvent(type="click", user_id=f"s{SessionId}",
    session_id=SessionId, item_id=ItemId, ts=Time*1000)`` with the deterministic, unique id
    ``f"{part}-{SessionId}-{n}"`` (``n``: the click's index in its session), so a re-run
    produces the same ids and the engine's duplicate filter never drops a genuine repeat click.
    """
    events = []
    clicks_in: Counter[str] = Counter()
    for session_id, item_id, ts in read_session_tsv(path):
        n = clicks_in[session_id]
        clicks_in[session_id] = n + 1
        events.append(
            BehaviourEvent(
                event_id=f"{part}-{session_id}-{n}",
                user_id=f"s{session_id}",
                type="click",
                ts=ts,
                item_id=item_id,
                session_id=session_id,
            )
        )
    return events


def load_snapshot(
    path: str | PathLike[str], *, catalog_topics: Iterable[str] = ()
) -> tuple[list[Record], Counter[str]]:
    """Events and catalog items of a snapshot, in the order a live consumer could see them.

    Records are merged across partitions by Kafka timestamp while each partition keeps its
    offset order (what per-key ordering guarantees live). Records of a topic named in
    ``catalog_topics``, or whose name contains ``catalog``, are catalog items; every other value
    is decoded as a behaviour event with the same codec the worker uses (honouring a
    ``content-type`` header). Undecodable values are counted, as the worker dead-letters them.
    """
    from stream.topic_snapshot import read_snapshot, time_ordered

    catalog_names = set(catalog_topics)
    merged = time_ordered(read_snapshot(path))
    stats: Counter[str] = Counter()
    records: list[Record] = []
    for record in merged:
        value = record["value"]
        topic = record["topic"]
        stats["records"] += 1
        if value is None:
            stats["dead_letters"] += 1
            continue
        try:
            if topic in catalog_names or "catalog" in topic:
                records.append(decode_catalog_item(value))
            else:
                content_type = _header(record, "content-type") or _header(record, "content_type")
                records.append(decode_event(value, content_type=content_type))
        except DecodeError:
            stats["dead_letters"] += 1
    return records, stats


def _header(record: dict[str, Any], name: str) -> str | None:
    for header in record.get("headers") or ():
        if header["key"] == name and header["value"] is not None:
            return bytes(header["value"]).decode("latin-1")
    return None


# -- splitting and filtering -----------------------------------------------------------------


def session_key_of(event: BehaviourEvent) -> tuple[str, str]:
    """The session an event belongs to for evaluation: ``(user_id, session_id or "")``."""
    return event.user_id, event.session_id or ""


def _is_sequence(record: Record) -> bool:
    return (
        isinstance(record, BehaviourEvent)
        and record.type in SEQUENCE_TYPES
        and record.item_id is not None
    )


def split_sessions(
    records: Sequence[Record], train_fraction: float
) -> tuple[list[Record], list[Record]]:
    """Split by session: the first ``train_fraction`` of sessions (by first appearance) train.

    Catalog items before the first test-session event belong to the training part, the rest to
    the test part. Each part keeps the input order.
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in [0, 1], got {train_fraction}")
    order: dict[tuple[str, str], int] = {}
    for record in records:
        if isinstance(record, BehaviourEvent):
            order.setdefault(session_key_of(record), len(order))
    n_train = int(len(order) * train_fraction)
    train: list[Record] = []
    test: list[Record] = []
    test_started = False
    for record in records:
        if isinstance(record, CatalogItem):
            (test if test_started else train).append(record)
        elif order[session_key_of(record)] < n_train:
            train.append(record)
        else:
            test_started = True
            test.append(record)
    return train, test


def apply_next_item_protocol(
    train: Sequence[Record], test: Sequence[Record]
) -> tuple[list[Record], Counter[str]]:
    """The session-rec test filter: drop test clicks on items never seen in training, then
    drop test sessions left with fewer than two sequence events (nothing to predict)."""
    known = {r.item_id for r in train if _is_sequence(r)}
    stats: Counter[str] = Counter()
    kept: list[Record] = []
    for record in test:
        if _is_sequence(record) and record.item_id not in known:  # type: ignore[union-attr]
            stats["dropped_unseen_clicks"] += 1
            continue
        kept.append(record)
    sequence_count: Counter[tuple[str, str]] = Counter(
        session_key_of(r)
        for r in kept
        if _is_sequence(r)  # type: ignore[arg-type]
    )
    sessions = {session_key_of(r) for r in kept if isinstance(r, BehaviourEvent)}
    short = {s for s in sessions if sequence_count[s] < 2}
    stats["dropped_short_sessions"] = len(short)
    out = [r for r in kept if isinstance(r, CatalogItem) or session_key_of(r) not in short]
    return out, stats


def limit_sessions(records: Sequence[Record], n: int) -> list[Record]:
    """Keep the events of the first ``n`` sessions (by first appearance) and every catalog
    item."""
    chosen: set[tuple[str, str]] = set()
    out: list[Record] = []
    for record in records:
        if isinstance(record, BehaviourEvent):
            key = session_key_of(record)
            if key not in chosen:
                if len(chosen) >= n:
                    continue
                chosen.add(key)
        out.append(record)
    return out


def by_event_time(records: Sequence[Record]) -> list[Record]:
    """Stable sort by event time (catalog items stay before the events that follow them)."""
    keyed = []
    clock = 0
    for record in records:
        if isinstance(record, BehaviourEvent):
            clock = record.ts
        keyed.append((clock, record))
    keyed.sort(key=_first)
    return [record for _, record in keyed]


def _first(pair: tuple[int, Record]) -> int:
    return pair[0]


# -- running ---------------------------------------------------------------------------------


class _PrequentialRanker:
    """Wraps the engine's ranker: each label is first predicted, then learned (prequential).

    The engine learns from the feature vector snapshotted when the item was shown, so the
    prediction recorded here is the current model's probability for exactly what was served.
    """

    def __init__(self, inner: Any, sink: BinaryEvaluator) -> None:
        self._inner = inner
        self._sink = sink
        self.recording = False

    def learn_vector(self, x: Sequence[float] | np.ndarray, y: bool) -> None:
        if self.recording:
            row = np.asarray(x, dtype=np.float64).reshape(1, -1)
            self._sink.add(float(self._inner.predict_proba_many(row)[0]), y)
        self._inner.learn_vector(x, y)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _AllTimePopular:
    """All-time click counts with a cached top list (session-rec's POP baseline)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._top: list[str] | None = None

    def add(self, item_id: str) -> None:
        self.counts[item_id] += 1
        self._top = None

    def top(self, n: int) -> list[str]:
        if self._top is None or len(self._top) < n:
            best = heapq.nsmallest(n, self.counts.items(), key=_popular_order)
            self._top = [item_id for item_id, _ in best]
        return self._top[:n]


def _popular_order(pair: tuple[str, int]) -> tuple[int, str]:
    return -pair[1], pair[0]


def _targets(test: Sequence[Record]) -> tuple[list[str | None], list[int]]:
    """For each test record: the session's next sequence item (None: nothing to predict) and
    the record's position among its session's sequence events."""
    targets: list[str | None] = [None] * len(test)
    positions = [-1] * len(test)
    following: dict[tuple[str, str], str] = {}
    for index in range(len(test) - 1, -1, -1):
        record = test[index]
        if _is_sequence(record):
            assert isinstance(record, BehaviourEvent) and record.item_id is not None
            key = session_key_of(record)
            targets[index] = following.get(key)
            following[key] = record.item_id
    seen: Counter[tuple[str, str]] = Counter()
    for index, record in enumerate(test):
        if _is_sequence(record):
            key = session_key_of(record)  # type: ignore[arg-type]
            positions[index] = seen[key]
            seen[key] += 1
    return targets, positions


def run_offline(
    data: OfflineData,
    *,
    config: EngineConfig | None = None,
    mode: str = "frozen",
    predictor: str = "engine",
    n: int = 20,
    cutoffs: Sequence[int] = CUTOFFS,
    on_prediction: Callable[[Prediction], None] | None = None,
) -> OfflineResult:
    """Replay ``data`` through a fresh engine and evaluate it.

    The training part is processed with learning on. Then, for every test event, the engine
    processes it (learning only in ``streaming`` mode) and, when the session has a next
    sequence event, the ``n``-item list ``predictor`` gives is scored against it. Latency is
    measured separately for the list (per prediction) and for ``Engine.process`` (per event,
    including the page the event triggers).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    config = config or EngineConfig()
    models = build_models(config)
    labels = BinaryEvaluator()
    ranker = _PrequentialRanker(models.ranker, labels)
    models.ranker = ranker  # type: ignore[assignment]
    engine = Engine(config, models)
    states: dict[str, UserState] = {}
    active: dict[str, UserState] = {}
    popular = _AllTimePopular()
    expiry_interval = max(_MIN_EXPIRY_INTERVAL_MS, config.session_gap_ms // 8)
    next_expiry = 0

    def feed(record: Record, learn_popular: bool) -> UserState | None:
        nonlocal next_expiry
        if isinstance(record, CatalogItem):
            engine.apply_catalog(record)
            return None
        effects = engine.process(record, states.get(record.user_id), now=record.ts)
        state = effects.state
        if state is None or effects.dead_letter is not None or effects.duplicate:
            return None
        states[record.user_id] = state
        active[record.user_id] = state
        if learn_popular and _is_sequence(record):
            popular.add(record.item_id)  # type: ignore[arg-type]
        if engine.watermark >= next_expiry:
            if next_expiry:
                for ended in engine.expire_idle(list(active.values()), watermark=engine.watermark):
                    del active[ended.user_id]
            next_expiry = engine.watermark + expiry_interval
        return state

    engine.learning = True
    started = time.perf_counter()
    for record in data.train:
        feed(record, True)
    train_seconds = time.perf_counter() - started
    train_popularity = Counter(popular.counts)

    streaming = mode == "streaming"
    engine.learning = streaming
    ranker.recording = True
    evaluator = NextItemEvaluator(cutoffs, popularity=train_popularity)
    targets, positions = _targets(data.test)
    event_ns: list[int] = []  # behaviour events only: catalog updates are not events
    prediction_ns: list[int] = []
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for index, record in enumerate(data.test):
        t0 = clock()
        state = feed(record, streaming)
        t1 = clock()
        if isinstance(record, BehaviourEvent):
            event_ns.append(t1 - t0)
        target = targets[index]
        if target is None or state is None:
            continue
        if predictor == "engine":
            ranked = [item_id for item_id, _ in engine.next_item_candidates(state, n)]
        elif predictor == "trending":
            ranked = [item_id for item_id, _ in engine.models.trending.top(n, engine.watermark)]
        else:
            ranked = popular.top(n)
        prediction_ns.append(clock() - t1)
        evaluator.add(ranked, target)
        if on_prediction is not None:
            assert isinstance(record, BehaviourEvent)
            on_prediction(
                Prediction(session_key_of(record), positions[index], tuple(ranked), target)
            )
    test_seconds = time.perf_counter() - started

    test_events = sum(1 for r in data.test if isinstance(r, BehaviourEvent))
    quality: dict[str, Any] = {
        "mode": mode,
        "predictor": predictor,
        "seed": config.seed,
        "pages": bool(config.page_trigger_types),
        "train_events": sum(1 for r in data.train if isinstance(r, BehaviourEvent)),
        "test_events": test_events,
        "test_sessions": len(
            {session_key_of(r) for r in data.test if isinstance(r, BehaviourEvent)}
        ),
        "train_items": len(train_popularity),
        **{key: data.stats[key] for key in sorted(data.stats)},
        **evaluator.result(),
        **labels.result(),
    }
    prediction_ms = percentiles_ms(prediction_ns)
    event_ms = percentiles_ms(event_ns)
    timing = {
        "p50_ms": prediction_ms[50],
        "p90_ms": prediction_ms[90],
        "p99_ms": prediction_ms[99],
        "event_p50_ms": event_ms[50],
        "event_p90_ms": event_ms[90],
        "event_p99_ms": event_ms[99],
        "events_per_s": round(test_events / test_seconds, 1) if test_seconds > 0 else None,
        "train_events_per_s": (
            round(quality["train_events"] / train_seconds, 1) if train_seconds > 0 else None
        ),
        "seconds": round(train_seconds + test_seconds, 3),
    }
    return OfflineResult(quality, timing, dict(sorted(engine.counters.items())))


# -- reference lists -------------------------------------------------------------------------


def load_reference_lists(path: str | PathLike[str]) -> dict[tuple[str, int], list[str]]:
    """Top lists of a session-rec ``reference-recs-*.csv`` file.

    ``SessionId;Position;Recommendations;Scores``: the list made after the first
    ``Position + 1`` clicks of the session, keyed by ``(SessionId, Position)``.
    """
    lists: dict[tuple[str, int], list[str]] = {}
    with open(path, encoding="utf-8") as lines:
        header = lines.readline().rstrip("\r\n").split(";")
        if header[:3] != ["SessionId", "Position", "Recommendations"]:
            raise ValueError(f"{path}: unexpected header {header!r}")
        for line in lines:
            fields = line.rstrip("\r\n").split(";")
            if len(fields) < 3:
                continue
            items = fields[2].split(",") if fields[2] else []
            lists[(fields[0], int(fields[1]))] = items
    return lists


def reference_files(directory: str | PathLike[str]) -> dict[str, Path]:
    """``reference-recs-NAME.csv`` files of a directory, by NAME (sorted)."""
    found = sorted(Path(directory).glob("reference-recs-*.csv"))
    return {p.stem.removeprefix("reference-recs-"): p for p in found}


def reference_comparison(
    references: dict[str, dict[tuple[str, int], list[str]]],
    engine_lists: dict[tuple[str, int], Prediction],
    *,
    cutoffs: Sequence[int] = CUTOFFS,
    name: str = "engine",
) -> list[dict[str, Any]]:
    """HitRate/MRR of each reference list and of the engine, at the same positions, by the
    same code.

    Only positions every reference and the engine predicted are scored; the target is the next
    click the engine's run saw at that position (the filtered test data).
    """
    keys = set(engine_lists)
    for lists in references.values():
        keys &= set(lists)
    ordered = sorted(keys, key=_reference_order)
    rows = []
    candidates = {name: {k: list(p.ranked) for k, p in engine_lists.items()}, **references}
    for label, lists in candidates.items():
        evaluator = NextItemEvaluator(cutoffs)
        for key in ordered:
            evaluator.add(lists[key], engine_lists[key].target)
        result = evaluator.result()
        rows.append(
            {"name": label, "predictions": result["predictions"]}
            | {f"{m}@{k}": result[f"{m}@{k}"] for k in evaluator.cutoffs for m in ("hr", "mrr")}
        )
    return rows


def _reference_order(key: tuple[str, int]) -> tuple[int, str, int]:
    session, position = key
    return (int(session) if session.isdigit() else -1, session, position)


# -- the evaluate command --------------------------------------------------------------------

#: Session data sets name their sessions (``SessionId``): the engine's inactivity gap must not
#: split them, or a long pause would wipe the session the data set says continues.
DATASET_SESSION_GAP_MS = 7 * 86_400_000


@dataclass(slots=True)
class EvaluationInput:
    """Resolved inputs of ``insession evaluate``."""

    test: Path
    format: str
    train: Path | None = None
    reference_dir: Path | None = None


def resolve_input(
    path: str | PathLike[str],
    *,
    fmt: str | None = None,
    train: str | PathLike[str] | None = None,
    reference_dir: str | PathLike[str] | None = None,
) -> EvaluationInput:
    """Work out the files: a directory in session-rec layout (``*_train_full.txt``,
    ``*_test.txt``, ``reference-recs-*.csv``) supplies all three; a file is the test part."""
    source = Path(path)
    train_path = Path(train) if train is not None else None
    references = Path(reference_dir) if reference_dir is not None else None
    if source.is_dir():
        tests = sorted(source.glob("*_test.txt"))
        if len(tests) != 1:
            raise ValueError(f"{source}: expected one *_test.txt file, found {len(tests)}")
        if train_path is None:
            trains = sorted(source.glob("*_train_full.txt")) or sorted(source.glob("*_train.txt"))
            train_path = trains[0] if trains else None
        if references is None and reference_files(source):
            references = source
        source = tests[0]
    if fmt is None:
        fmt = "snapshot" if source.suffix == ".avro" else "session-tsv"
    if fmt not in ("session-tsv", "snapshot"):
        raise ValueError(f"format must be session-tsv or snapshot, got {fmt!r}")
    return EvaluationInput(source, fmt, train_path, references)


def _load(path: Path, fmt: str, part: str, stats: Counter[str]) -> list[Record]:
    if fmt == "session-tsv":
        return list(load_session_tsv(path, part=part))
    records, loaded = load_snapshot(path)
    stats.update({f"{part}_{key}": value for key, value in loaded.items()})
    return records


def evaluate(
    source: EvaluationInput,
    *,
    mode: str = "frozen",
    predictor: str = "engine",
    seed: int = 7,
    pages: bool = True,
    limit_sessions_n: int | None = None,
    train_fraction: float = 0.8,
    config: EngineConfig | None = None,
) -> dict[str, Any]:
    """Load, filter, replay and score; returns the flat report (see ``TIMING_KEYS``).

    Without a training file the input's sessions are split: the first ``train_fraction`` (by
    first appearance) train, the rest are tested.
    """
    stats: Counter[str] = Counter()
    test = _load(source.test, source.format, "test", stats)
    if source.train is not None:
        train = _load(source.train, source.format, "train", stats)
    else:
        train, test = split_sessions(test, train_fraction)
    test, dropped = apply_next_item_protocol(train, test)
    stats["dropped_unseen_clicks"] = dropped["dropped_unseen_clicks"]
    stats["dropped_short_sessions"] = dropped["dropped_short_sessions"]
    if limit_sessions_n is not None:
        test = limit_sessions(test, limit_sessions_n)
    base = config or EngineConfig()
    overrides: dict[str, Any] = {"seed": seed}
    if source.format == "session-tsv":
        overrides["session_gap_ms"] = max(base.session_gap_ms, DATASET_SESSION_GAP_MS)
        train, test = by_event_time(train), by_event_time(test)
    if not pages:
        overrides["page_trigger_types"] = frozenset()
    engine_config = replace(base, **overrides)

    references: dict[str, dict[tuple[str, int], list[str]]] = {}
    if source.reference_dir is not None:
        references = {
            name: load_reference_lists(path)
            for name, path in reference_files(source.reference_dir).items()
        }
    wanted = {key for lists in references.values() for key in lists}
    captured: dict[tuple[str, int], Prediction] = {}

    def capture(prediction: Prediction) -> None:
        key = (prediction.session[1], prediction.position)
        if key in wanted:
            captured[key] = prediction

    result = run_offline(
        OfflineData(train, test, stats),
        config=engine_config,
        mode=mode,
        predictor=predictor,
        on_prediction=capture if references else None,
    )
    report: dict[str, Any] = {
        "input": str(source.test),
        "train": str(source.train) if source.train is not None else None,
        "format": source.format,
        "limit_sessions": limit_sessions_n,
        **result.report(),
    }
    if references:
        report["reference"] = reference_comparison(references, captured, name=predictor)
    return report
