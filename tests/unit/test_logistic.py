"""OnlineLogistic: it learns, its numpy scores equal River's, and its state round-trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from online_models.logistic import OnlineLogistic

FEATURES = ("genre_affinity", "clicks_count_session", "hover_dwell_mean_5m", "constant_one")


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label depends on genre_affinity only; other features are noise or constant."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.uniform(0.0, 1.0, n),
            rng.poisson(3.0, n).astype(float),
            rng.exponential(2_000.0, n),
            np.ones(n),
        ]
    )
    p = 1.0 / (1.0 + np.exp(-(6.0 * X[:, 0] - 3.0)))
    y = rng.random(n) < p
    return X, y


def _as_dict(row: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURES, row.tolist(), strict=True))


def _trained(n: int, seed: int = 0, **kwargs: float) -> OnlineLogistic:
    model = OnlineLogistic(FEATURES, **kwargs)
    X, y = _stream(n, seed)
    for row, label in zip(X, y, strict=True):
        model.learn_vector(row, bool(label))
    return model


def test_learning_learns() -> None:
    model = _trained(3_000, lr=0.05)
    grid = np.tile([[0.0, 3.0, 2_000.0, 1.0]], (11, 1))
    grid[:, 0] = np.linspace(0.0, 1.0, 11)
    scores = model.predict_proba_many(grid)
    assert np.all(np.diff(scores) > 0), scores
    assert scores[-1] - scores[0] > 0.5
    reasons = model.contributions(_as_dict(grid[-1]))
    assert reasons[0][0] == "genre_affinity"


def test_untrained_model_scores_the_prior() -> None:
    model = OnlineLogistic(FEATURES, prior_intercept=-2.0)
    expected = 1.0 / (1.0 + math.exp(2.0))
    assert model.predict_proba_one(_as_dict(np.ones(4))) == pytest.approx(expected, abs=1e-15)
    assert model.predict_proba_many(np.ones((3, 4))) == pytest.approx([expected] * 3, abs=1e-15)


@pytest.mark.parametrize("n_learned", [0, 1, 2, 10, 500])
def test_numpy_scores_equal_river_row_by_row(n_learned: int) -> None:
    model = _trained(n_learned, lr=0.2)
    candidates, _ = _stream(200, seed=99)
    # Far-out rows push logits past River's +-30 sigmoid clamp.
    candidates[:5, 2] = [1e9, -1e9, 1e7, -1e7, 0.0]
    river_scores = np.array([model.predict_proba_one(_as_dict(row)) for row in candidates])
    assert np.allclose(model.predict_proba_many(candidates), river_scores, rtol=0.0, atol=1e-9)


def test_numpy_scores_follow_learning() -> None:
    """The cached arrays are rebuilt after every learn, never stale."""
    model = OnlineLogistic(FEATURES)
    X, y = _stream(300, seed=4)
    for row, label in zip(X, y, strict=True):
        many = model.predict_proba_many(X[:20])
        one = np.array([model.predict_proba_one(_as_dict(r)) for r in X[:20]])
        assert np.allclose(many, one, rtol=0.0, atol=1e-9)
        model.learn_one(_as_dict(row), bool(label))


def test_scoring_does_not_learn() -> None:
    model = _trained(50)
    before = model.to_state()
    X, _ = _stream(30, seed=5)
    model.predict_proba_many(X)
    for row in X:
        model.predict_proba_one(_as_dict(row))
        model.contributions(_as_dict(row))
    assert model.to_state() == before


def test_scaler_statistics_match_numpy_on_the_prefix() -> None:
    X, y = _stream(400, seed=6)
    model = OnlineLogistic(FEATURES)
    for i, (row, label) in enumerate(zip(X, y, strict=True), start=1):
        model.learn_vector(row, bool(label))
        if i in (1, 2, 37, 400):
            scaler = model.to_state()["scaler"]
            assert scaler["counts"] == [i] * len(FEATURES)
            assert np.allclose(scaler["means"], X[:i].mean(axis=0), rtol=1e-12, atol=1e-12)
            assert np.allclose(scaler["vars"], X[:i].var(axis=0), rtol=1e-9, atol=1e-9)


def test_learn_vector_is_learn_one() -> None:
    X, y = _stream(100, seed=7)
    by_vector, by_dict = OnlineLogistic(FEATURES), OnlineLogistic(FEATURES)
    for row, label in zip(X, y, strict=True):
        assert by_vector.learn_vector(list(row), bool(label)) is None
        assert by_dict.learn_one(_as_dict(row), bool(label)) is None
    assert by_vector.to_state() == by_dict.to_state()
    assert by_vector.n_learned == 100


def test_training_is_deterministic() -> None:
    assert _trained(300, seed=3).to_state() == _trained(300, seed=3).to_state()


def test_row_keys_order_and_extras_do_not_matter() -> None:
    model = _trained(100)
    row = _as_dict(np.array([0.7, 2.0, 900.0, 1.0]))
    shuffled = {name: row[name] for name in reversed(FEATURES)} | {"unused": 5.0}
    assert model.predict_proba_one(shuffled) == model.predict_proba_one(row)


def test_state_round_trip_predicts_and_learns_identically() -> None:
    X, y = _stream(1_000, seed=8)
    model_a = OnlineLogistic(FEATURES, lr=0.1, l2=0.001, prior_intercept=-1.0)
    for row, label in zip(X[:500], y[:500], strict=True):
        model_a.learn_vector(row, bool(label))
    state = json.loads(json.dumps(model_a.to_state(), allow_nan=False))
    model_b = OnlineLogistic.from_state(state)
    assert model_b.to_state() == model_a.to_state()
    for row, label in zip(X[500:], y[500:], strict=True):
        model_a.learn_vector(row, bool(label))
        model_b.learn_vector(row, bool(label))
    probe, _ = _stream(100, seed=9)
    assert model_a.predict_proba_many(probe).tolist() == model_b.predict_proba_many(probe).tolist()
    assert [model_a.predict_proba_one(_as_dict(r)) for r in probe] == [
        model_b.predict_proba_one(_as_dict(r)) for r in probe
    ]
    assert model_b.to_state() == model_a.to_state()
    assert model_b.n_learned == 1_000


def test_untrained_state_round_trip() -> None:
    model = OnlineLogistic(FEATURES, prior_intercept=0.5)
    clone = OnlineLogistic.from_state(model.to_state())
    X, y = _stream(50, seed=10)
    for row, label in zip(X, y, strict=True):
        model.learn_vector(row, bool(label))
        clone.learn_vector(row, bool(label))
    assert clone.to_state() == model.to_state()


def test_contributions_explain_the_logit() -> None:
    model = _trained(500)
    row = _as_dict(np.array([0.9, 1.0, 50.0, 1.0]))
    reasons = model.contributions(row)
    values = [value for _, value in reasons]
    assert values == sorted(values, reverse=True)
    assert {name for name, _ in reasons} == set(FEATURES)
    assert dict(reasons)["constant_one"] == 0.0
    logit = sum(values) + model.to_state()["intercept"]
    assert 1.0 / (1.0 + math.exp(-logit)) == pytest.approx(model.predict_proba_one(row), abs=1e-12)


def test_non_finite_rows_are_refused_without_learning() -> None:
    model = _trained(20)
    before = model.to_state()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="hover_dwell_mean_5m"):
            model.learn_vector([0.5, 1.0, bad, 1.0], True)
    assert model.to_state() == before


def test_non_finite_array_rows_are_refused_by_the_kernel_without_learning() -> None:
    # Arrays skip the Python check: the learning kernel refuses them before changing anything.
    model = _trained(20)
    before = model.to_state()
    for bad in (math.nan, math.inf, -math.inf):
        for scored in (False, True):
            row = np.array([0.5, 1.0, 1.0, bad])
            learn = model.learn_vector_scored if scored else model.learn_vector
            with pytest.raises(ValueError, match="constant_one"):
                learn(row, True)
    assert model.to_state() == before


def test_array_and_list_rows_learn_the_same() -> None:
    # The engine learns served rows as float64 arrays and fallback rows as lists.
    by_list, by_array = OnlineLogistic(FEATURES), OnlineLogistic(FEATURES)
    X, y = _stream(300, 3)
    for row, label in zip(X, y, strict=True):
        scored = by_list.learn_vector_scored(row.tolist(), bool(label))
        assert by_array.learn_vector_scored(row.copy(), bool(label)) == scored
    assert by_list.to_state() == by_array.to_state()


def test_bad_inputs_are_refused() -> None:
    model = OnlineLogistic(FEATURES)
    with pytest.raises(KeyError, match="constant_one"):
        model.learn_one({"genre_affinity": 1.0, "clicks_count_session": 1.0}, True)
    with pytest.raises(ValueError, match="values"):
        model.learn_vector([1.0, 2.0], True)
    with pytest.raises(ValueError, match="shape"):
        model.predict_proba_many(np.ones((3, 5)))
    with pytest.raises(ValueError, match="shape"):
        model.predict_proba_many(np.ones(4))
    with pytest.raises(ValueError, match="unique"):
        OnlineLogistic(["a", "a"])
    with pytest.raises(ValueError, match="empty"):
        OnlineLogistic([])
    with pytest.raises(ValueError, match="lr"):
        OnlineLogistic(FEATURES, lr=0.0)
    with pytest.raises(ValueError, match="kind"):
        OnlineLogistic.from_state({"kind": "artwork_bandit"})
    state = model.to_state()
    state["weights"] = state["weights"][:-1]
    with pytest.raises(ValueError, match="weights"):
        OnlineLogistic.from_state(state)


@pytest.mark.parametrize("n_learned", [0, 1, 10, 500])
def test_a_scored_learn_returns_the_score_before_it_then_learns_the_same(n_learned: int) -> None:
    scored, plain = _trained(n_learned, lr=0.2), _trained(n_learned, lr=0.2)
    rows, labels = _stream(100, seed=12)
    rows[:4, 2] = [1e9, -1e9, 1e7, -1e7]  # past the ±30 clamp both ways
    for row, label in zip(rows, labels, strict=True):
        values = row.tolist()
        before = scored.predict_proba_vector(values)
        matrix = scored.predict_proba_many(row[None, :])[0]
        assert scored.learn_vector_scored(values, bool(label)) == before
        assert before == pytest.approx(matrix, rel=1e-12, abs=1e-15)
        plain.learn_vector(values, bool(label))
        assert scored.to_state() == plain.to_state()
