"""The ranker: a click model and River's logistic regression, weighted by how well each predicts.

The click model is one feature column (``click_model_logit``: the log-odds that a looked-at
title is clicked, from the population's rate times the user's genre taste, the title's appeal
and the poster's pull; ``processors.features``). It needs no training, so it ranks well from
the first page; the logistic regression learns from every click and scroll-past, the click
model's logit among its inputs, so it can learn how far to trust it and what it misses. Early
on, or whenever traffic shifts, the regression is the worse predictor of the two.

Which to believe is itself learned online, by exponential weights (Hedge) on each predictor's
log loss over recent labels (``decay`` per label): each label is scored by both before the
regression learns from it (prequential), and the blend weight moves toward whichever has lost
less. Averaging experts by exponential weights is the standard way to be nearly as good as the
best of them without knowing in advance which one that is.

Examples
--------
>>> import numpy as np
>>> ranker = BlendedRanker(("click_model_logit", "noise"), prior_column="click_model_logit")
>>> rng = np.random.default_rng(0)
>>> for _ in range(400):
...     logit = rng.normal(-2.0, 1.5)
...     clicked = rng.random() < 1.0 / (1.0 + np.exp(-logit))
...     ranker.learn_vector([logit, rng.normal()], bool(clicked))
>>> bool(0.0 < ranker.learned_weight < 1.0), ranker.n_learned
(True, 400)
>>> scores = ranker.predict_proba_many(np.array([[1.0, 0.0], [-3.0, 0.0]]))
>>> bool(scores[0] > scores[1])
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from online_models.logistic import OnlineLogistic
from processors.compiled import kernel

__all__ = ["BlendedRanker"]

_STATE_KIND = "blended_ranker"
_STATE_VERSION = 1
_EPS = 1e-9


class BlendedRanker:
    """Hedge blend of the click-model column and an `OnlineLogistic` over every column.

    Parameters
    ----------
    feature_names
        The feature columns, in order; ``prior_column`` among them.
    prior_column
        The column holding the click model's logit.
    lr, l2
        The logistic regression's SGD learning rate and L2 penalty.
    decay
        Per-label discount of past log losses (0.999: about the last thousand labels count).
    eta
        Hedge learning rate: the blend weight is ``sigmoid(eta * (loss_prior - loss_learned))``.
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        prior_column: str,
        lr: float = 0.05,
        l2: float = 0.0,
        decay: float = 0.999,
        eta: float = 1.0,
    ) -> None:
        names = tuple(feature_names)
        if prior_column not in names:
            raise ValueError(f"prior_column {prior_column!r} is not one of {names!r}")
        if not 0.0 < decay <= 1.0 or not (math.isfinite(eta) and eta > 0):
            raise ValueError("decay must be in (0, 1] and eta positive")
        self.feature_names = names
        self.prior_column = prior_column
        self._prior_index = names.index(prior_column)
        self.decay = float(decay)
        self.eta = float(eta)
        self.learned = OnlineLogistic(names, lr=lr, l2=l2)
        #: Discounted log losses of the click model and of the regression on recent labels.
        self.loss_prior = 0.0
        self.loss_learned = 0.0

    def __repr__(self) -> str:
        return f"BlendedRanker(learned_weight={self.learned_weight:.3f}, {self.learned!r})"

    @property
    def n_learned(self) -> int:
        """Labels learned from."""
        return self.learned.n_learned

    @property
    def learned_weight(self) -> float:
        """The regression's share of the blend, in [0, 1]."""
        return _sigmoid(self.eta * (self.loss_prior - self.loss_learned))

    # -- scoring -----------------------------------------------------------------------------

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        """Blended click probabilities of many rows."""
        X = np.asarray(X, dtype=np.float64)
        weight = self.learned_weight
        if weight < 1e-6:  # the click model alone: _blend writes the prior over every entry
            weight, learned = 0.0, np.empty(len(X))
        else:
            learned = self.learned.predict_proba_many(X)
        _blend(X, self._prior_index, learned, weight)
        return learned

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        """Blended click probability of one row given by name."""
        row = np.array([[float(x[name]) for name in self.feature_names]])
        return float(self.predict_proba_many(row)[0])

    def predict_proba_vector(self, x: Sequence[float]) -> float:
        """Blended click probability of one row given in `feature_names` order."""
        return float(self.predict_proba_many(np.array([x], dtype=np.float64))[0])

    def contributions(self, x: Mapping[str, float]) -> list[tuple[str, float]]:
        """The regression's per-feature share of its logit (see `OnlineLogistic`)."""
        return self.learned.contributions(x)

    # -- learning ------------------------------------------------------------------------

    def learn_vector(self, x: np.ndarray | Sequence[float], y: bool) -> None:
        """Score the label with both predictors, charge their log losses, then learn it."""
        learned = self.learned.learn_vector_scored(x, y)  # scored before learning, one pass
        prior = _sigmoid(float(x[self._prior_index]))
        self.loss_prior = self.decay * self.loss_prior + _log_loss(prior, y)
        self.loss_learned = self.decay * self.loss_learned + _log_loss(learned, y)

    # -- state -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Settings, the two discounted losses and the regression's state."""
        return {
            "kind": _STATE_KIND,
            "state_version": _STATE_VERSION,
            "prior_column": self.prior_column,
            "decay": self.decay,
            "eta": self.eta,
            "loss_prior": self.loss_prior,
            "loss_learned": self.loss_learned,
            "learned": self.learned.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BlendedRanker:
        """Rebuild from `to_state` output; ValueError for anything else."""
        if state.get("kind") != _STATE_KIND or state.get("state_version") != _STATE_VERSION:
            raise ValueError(
                f"not a {_STATE_KIND} v{_STATE_VERSION} state: kind={state.get('kind')!r}"
            )
        try:
            learned = OnlineLogistic.from_state(state["learned"])
            ranker = cls(
                learned.feature_names,
                prior_column=str(state["prior_column"]),
                lr=learned.lr,
                l2=learned.l2,
                decay=float(state["decay"]),
                eta=float(state["eta"]),
            )
            loss_prior, loss_learned = float(state["loss_prior"]), float(state["loss_learned"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed {_STATE_KIND} state: {error!r}") from error
        if not (math.isfinite(loss_prior) and math.isfinite(loss_learned)):
            raise ValueError(f"{_STATE_KIND} losses must be finite")
        ranker.learned = learned
        ranker.loss_prior, ranker.loss_learned = loss_prior, loss_learned
        return ranker


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _log_loss(p: float, y: bool) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return -math.log(p if y else 1.0 - p)


@kernel
def _blend(
    X: np.ndarray, prior_column: int, learned: np.ndarray, weight: float
) -> None:  # pragma: no cover - compiled
    """In place: ``learned`` becomes ``weight * learned + (1 - weight) * prior`` per row, the
    prior being the sigmoid of the click model's logit (clipped to ±30); with a weight of 0
    the prior alone (not ``0 * learned + prior``, which a NaN would poison)."""
    for i in range(X.shape[0]):
        clipped = min(max(X[i, prior_column], -30.0), 30.0)
        prior = 1.0 / (1.0 + math.exp(-clipped))
        if weight == 0.0:
            learned[i] = prior
        else:
            learned[i] = weight * learned[i] + (1.0 - weight) * prior
