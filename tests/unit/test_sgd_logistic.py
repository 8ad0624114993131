"""The hand-written scaler + SGD logistic regression is River's pipeline, bit for bit.

`online_models.sgd_logistic` replaces River's ``StandardScaler | LogisticRegression`` on the
engine's hot path. These tests replay the rows the engine's ranker and churn model really
learn from and score (the in-process simulator's closed loop) through a River pipeline built
with the same settings, and require identical probabilities, weights and statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from river import compose, linear_model, optim, preprocessing, utils

from online_models.factory import build_models
from online_models.logistic import OnlineLogistic
from online_models.sgd_logistic import ScaledSGDLogistic
from processors.config import EngineConfig
from processors.engine import Engine
from stream.simulation.inprocess import run_in_process
from stream.simulation.population import SimConfig, Simulation

_START_MS = 1_700_000_000_000


def _river_pipeline(lr: float, l2: float, prior_intercept: float) -> compose.Pipeline:
    """The River pipeline `OnlineLogistic` used to wrap, configured as it was."""
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(
            optimizer=optim.SGD(lr), l2=l2, intercept_init=prior_intercept, intercept_lr=lr
        ),
    )


def _river_state(pipeline: compose.Pipeline, names: Sequence[str]) -> dict[str, Any]:
    scaler, classifier = pipeline.steps.values()
    weights = classifier.weights
    return {
        "counts": [int(scaler.counts.get(name, 0)) for name in names],
        "means": [float(scaler.means.get(name, 0.0)) for name in names],
        "vars": [float(scaler.vars.get(name, 0.0)) for name in names],
        "weights": [float(weights.get(name, 0.0)) for name in names],
        "intercept": float(classifier.intercept),
        "optimizer_steps": int(classifier.optimizer.n_iterations),
    }


def _own_state(model: OnlineLogistic) -> dict[str, Any]:
    state = model.to_state()
    return {
        "counts": state["scaler"]["counts"],
        "means": state["scaler"]["means"],
        "vars": state["scaler"]["vars"],
        "weights": state["weights"],
        "intercept": state["intercept"],
        "optimizer_steps": state["optimizer_steps"],
    }


def _engine_traffic(monkeypatch: pytest.MonkeyPatch) -> dict[int, tuple[OnlineLogistic, list]]:
    """Every learn and every single-row score of each `OnlineLogistic` in a closed-loop run."""
    calls: dict[int, tuple[OnlineLogistic, list]] = {}
    learn = OnlineLogistic._learn_values
    score = OnlineLogistic.predict_proba_vector

    def recording_learn(
        self: OnlineLogistic, values: list[float], y: bool, *, scored: bool = False
    ) -> float:
        row = list(values)
        proba = learn(self, values, y, scored=scored)
        if scored:  # the label's prequential score: the model's before this learn
            calls.setdefault(id(self), (self, []))[1].append(("score", row, proba))
        calls.setdefault(id(self), (self, []))[1].append(("learn", row, bool(y)))
        return proba

    def recording_score(self: OnlineLogistic, x: Sequence[float]) -> float:
        proba = score(self, x)
        calls.setdefault(id(self), (self, []))[1].append(("score", list(x), proba))
        return proba

    monkeypatch.setattr(OnlineLogistic, "_learn_values", recording_learn)
    monkeypatch.setattr(OnlineLogistic, "predict_proba_vector", recording_score)
    config = EngineConfig()
    engine = Engine(config, build_models(config))
    sim = Simulation(SimConfig(users=150, items=150, seed=3, run_id="sgd"), start_ms=_START_MS)
    run_in_process(sim, engine, sim_minutes=90)
    monkeypatch.undo()
    return calls


def test_engine_traffic_gives_rivers_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = _engine_traffic(monkeypatch)
    learned = {len(model.feature_names): model for model, _ in traffic.values()}
    # Both the ranker's regression (14 features) and the churn model (19) learned and scored.
    assert set(learned) == {14, 19}
    for model, calls in traffic.values():
        names = model.feature_names
        assert sum(kind == "learn" for kind, _, _ in calls) > 100, names
        river = _river_pipeline(model.lr, model.l2, model.prior_intercept)
        replayed = OnlineLogistic(
            names, lr=model.lr, l2=model.l2, prior_intercept=model.prior_intercept
        )
        scored = 0
        for kind, values, outcome in calls:
            row = dict(zip(names, values, strict=True))
            if kind == "learn":
                river.learn_one(row, outcome)
                replayed.learn_vector(values, outcome)
            else:
                # What the engine saw then, what River says now for the same model: identical.
                assert outcome == river.predict_proba_one(row)[True]
                assert replayed.predict_proba_one(row) == outcome
                scored += 1
        assert _own_state(replayed) == _river_state(river, names)
        assert _own_state(model) == _river_state(river, names)
        assert scored > 500, names


@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_random_rows_give_rivers_numbers(l2: float) -> None:
    """Wide value ranges, constant and zero-variance columns, logits past the ±18 and ±30
    branches of River's loss and sigmoid."""
    rng = np.random.default_rng(11)
    names = [f"f{k}" for k in range(9)]
    river = _river_pipeline(0.3, l2, -1.0)
    own = ScaledSGDLogistic(len(names), lr=0.3, l2=l2, intercept=-1.0, intercept_lr=0.3)
    for step in range(3_000):
        x = (rng.normal(size=len(names)) * [1, 10, 1e3, 1e6, 1, 1, 1, 1, 1]).tolist()
        x[4] = 1.0
        x[5] = float(step % 5 == 0)
        x[6] = 0.0 if step < 1_000 else x[6]
        y = bool(rng.random() < 0.2)
        row = dict(zip(names, x, strict=True))
        assert own.predict_proba(x) == river.predict_proba_one(row)[True]
        assert own.scaled(x) == list(river["StandardScaler"].transform_one(row).values())
        river.learn_one(row, y)
        own.learn(x, y)
    state = _river_state(river, names)
    assert own.weights == state["weights"]
    assert own.intercept == state["intercept"]
    assert (own.counts, own.means, own.variances) == (
        state["counts"],
        state["means"],
        state["vars"],
    )
    assert own.steps == state["optimizer_steps"]


def test_extreme_logits_follow_rivers_branches() -> None:
    """Far-out rows push the logit past ±30: probabilities exactly 0 and 1, as River's."""
    names = ["a", "b"]
    river = _river_pipeline(1.0, 0.0, 0.0)
    own = ScaledSGDLogistic(2, lr=1.0, l2=0.0, intercept=0.0, intercept_lr=1.0)
    for k in range(40):
        x = [float(k % 2) * 50.0, 1.0]
        river.learn_one(dict(zip(names, x, strict=True)), bool(k % 2))
        own.learn(x, bool(k % 2))
    for x in ([1e9, 1.0], [-1e9, 1.0], [25.0, 1.0], [0.0, 1.0]):
        assert (
            own.predict_proba(x) == river.predict_proba_one(dict(zip(names, x, strict=True)))[True]
        )
    assert math.isfinite(own.intercept)


def _is_river_step(obj: object) -> bool:
    return type(obj).__name__ in {"StandardScaler", "LogisticRegression"}


def test_rivers_pipeline_order_is_the_one_mirrored(caplog: pytest.LogCaptureFixture) -> None:
    """Pinned River behaviour the hand-written learner copies: the scaler learns x, then
    scales it, then the classifier learns; scoring only scales."""
    river = _river_pipeline(0.05, 0.0, 0.0)
    row = {"a": 1.0, "b": 2.0}
    river.learn_one(row, True)
    caplog.set_level(logging.DEBUG)
    with utils.log_method_calls(_is_river_step):
        river.learn_one(row, True)
    assert [record.getMessage() for record in caplog.records] == [
        "StandardScaler.learn_one",
        "StandardScaler.transform_one",
        "LogisticRegression.learn_one",
    ]
    caplog.clear()
    with utils.log_method_calls(_is_river_step):
        river.predict_proba_one(row)
    assert [record.getMessage() for record in caplog.records] == [
        "StandardScaler.transform_one",
        "LogisticRegression.predict_proba_one",
    ]


def test_a_fresh_models_kept_probability_follows_its_intercept() -> None:
    """Before its first label a model answers its intercept's sigmoid, kept between calls
    (the churn check's): a changed or restored intercept is answered anew, NaN included."""
    from online_models.sgd_logistic import _sigmoid

    model = ScaledSGDLogistic(3, lr=0.1, l2=0.0, intercept=0.25, intercept_lr=0.1)
    row = [1.0, 2.0, 3.0]
    assert model.predict_proba(row) == model.predict_proba(row) == _sigmoid(0.25)
    for intercept in (-40.0, 0.0, -0.0, 3.5, math.nan, math.nan, 0.25):
        model.intercept = intercept
        expected = _sigmoid(0.0 + intercept)
        got = model.predict_proba(row)
        assert got == expected or (math.isnan(got) and math.isnan(expected))
    model.restore(
        counts=[0, 0, 0],
        means=[0.0] * 3,
        variances=[0.0] * 3,
        weights=None,
        intercept=-1.5,
        steps=0,
    )
    assert model.predict_proba(row) == _sigmoid(-1.5)
    model.learn(row, True)
    assert model.predict_proba(row) == _sigmoid(model.logit(row))  # learned: the row's own
