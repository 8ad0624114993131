"""River's ``StandardScaler | LogisticRegression(SGD)`` pipeline, written out over plain lists.

Why by hand: the engine learns a label every ~3 events and scores the churn model on most of
them, one row at a time. Through River each call walks a ``Pipeline`` plan, copies the row
into new dicts (scaled row, gradient, masked weight view) and dispatches per step: ~30 µs per
``learn_one`` and ~15 µs per ``predict_proba_one`` on the bench box, for ~20 features. The
same arithmetic over fixed-order lists is a single pass of a few float operations per feature.

The maths is River's (0.26), operation for operation and in the same order, so the numbers
are bit for bit River's (``tests/unit/test_sgd_logistic.py`` checks that against River on
engine traffic):

- scaler (Welford, per feature): ``count += 1``; ``mean += (x - old_mean) / count``;
  ``var += ((x - old_mean) * (x - mean) - var) / count``; learned *before* the row is scaled,
  so the row is scaled by statistics that already include it (River's pipeline order);
- scaled value: ``(x - mean) / var ** 0.5``, or ``0.0`` where the variance is 0;
- logit: ``sum(w_i * scaled_i)`` in feature order, plus the intercept;
- log-loss gradient (``optim.losses.Log``), clamped to ``±clip_gradient``;
- intercept ``-= intercept_lr * gradient``; each weight ``-= lr * (scaled_i * gradient
  + l2 * w_i)`` (plain SGD with a constant rate);
- probability: River's sigmoid, exactly 0 below a logit of -30 and 1 above 30.

Only what the engine uses is mirrored: constant learning rates, no L1, unit sample weights,
every row carrying every feature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ScaledSGDLogistic"]

#: River's ``LogisticRegression`` default ``clip_gradient``.
_CLIP_GRADIENT = 1e12
#: Past |z| > 18 River's log-loss gradient takes its asymptotic forms.
_ASYMPTOTE = 18.0
_SIGMOID_CLAMP = 30.0


class ScaledSGDLogistic:
    """Running standardisation and an SGD logistic regression over ``n_features`` columns.

    State is public plain lists (one entry per feature, in column order) so the owner can
    snapshot it and build scoring arrays from it. ``weights`` is ``None`` until the first
    learn, like River's empty weight dict (a fresh model's logit is its intercept).
    """

    __slots__ = (
        "counts",
        "intercept",
        "intercept_lr",
        "l2",
        "lr",
        "means",
        "n_features",
        "steps",
        "variances",
        "weights",
    )

    def __init__(
        self, n_features: int, *, lr: float, l2: float, intercept: float, intercept_lr: float
    ) -> None:
        self.n_features = n_features
        self.lr = lr
        self.l2 = l2
        self.intercept_lr = intercept_lr
        self.intercept = intercept
        self.counts = [0] * n_features
        self.means = [0.0] * n_features
        self.variances = [0.0] * n_features
        self.weights: list[float] | None = None
        #: SGD steps taken (River's ``optimizer.n_iterations``).
        self.steps = 0

    def scaled(self, x: Sequence[float]) -> list[float]:
        """The row standardised by the current statistics (River's ``transform_one``)."""
        return [
            (xi - mean) / var**0.5 if var else 0.0
            for xi, mean, var in zip(x, self.means, self.variances, strict=True)
        ]

    def logit(self, x: Sequence[float]) -> float:
        """``w · scaled(x) + intercept``, summed in feature order as River does."""
        weights = self.weights
        if weights is None:
            return 0.0 + self.intercept
        total = 0.0
        for xi, mean, var, weight in zip(x, self.means, self.variances, weights, strict=True):
            total += weight * ((xi - mean) / var**0.5 if var else 0.0)
        return total + self.intercept

    def predict_proba(self, x: Sequence[float]) -> float:
        """Probability of a positive label (River's clamped sigmoid of `logit`)."""
        return _sigmoid(self.logit(x))

    def learn(self, x: Sequence[float], y: bool) -> None:
        """One SGD step on a finite row (the caller checks finiteness)."""
        self._step(x, y, score_first=False)

    def learn_scored(self, x: Sequence[float], y: bool) -> float:
        """`predict_proba` of the row by the model as it was, then `learn` it: one pass.

        Prequential evaluation scores every label before learning it; the score's dot product
        uses the statistics and weights each feature had before this row updated them, taken
        in the same loop as the update instead of a second pass (or numpy arrays rebuilt
        after every step, which cost more than the step itself).
        """
        return self._step(x, y, score_first=True)

    def _step(self, x: Sequence[float], y: bool, *, score_first: bool) -> float:
        counts, means, variances = self.counts, self.means, self.variances
        weights = self.weights
        if weights is None:
            weights = self.weights = [0.0] * self.n_features
        scaled = [0.0] * self.n_features
        total = 0.0  # the logit's dot product, accumulated in feature order as it goes
        before = 0.0  # the same before this row's update (only with score_first)
        for i, xi in enumerate(x):
            count = counts[i] + 1
            counts[i] = count
            old_mean = means[i]
            old_var = variances[i]
            if score_first and old_var:
                before += weights[i] * ((xi - old_mean) / old_var**0.5)
            mean = old_mean + (xi - old_mean) / count
            means[i] = mean
            var = old_var + ((xi - old_mean) * (xi - mean) - old_var) / count
            variances[i] = var
            value = (xi - mean) / var**0.5 if var else 0.0
            scaled[i] = value
            total += weights[i] * value
        proba = _sigmoid(before + self.intercept) if score_first else 0.0
        gradient = _log_loss_gradient(bool(y), total + self.intercept)
        self.intercept -= self.intercept_lr * gradient
        lr, l2 = self.lr, self.l2
        if l2:
            for i, value in enumerate(scaled):
                weight = weights[i]
                weights[i] = weight - lr * (value * gradient + l2 * weight)
        else:
            for i, value in enumerate(scaled):
                weights[i] -= lr * (value * gradient)
        self.steps += 1
        return proba


def _sigmoid(z: float) -> float:
    """River's sigmoid: exactly 0 below a logit of -30 and 1 above 30."""
    if z < -_SIGMOID_CLAMP:
        return 0.0
    if z > _SIGMOID_CLAMP:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


def _log_loss_gradient(y: bool, logit: float) -> float:
    """River's ``optim.losses.Log().gradient`` for a unit weight, then its gradient clamp."""
    sign = 1 if y else -1
    z = logit * sign
    if z > _ASYMPTOTE:
        gradient = math.exp(-z) * -sign
    elif z < -_ASYMPTOTE:
        gradient = 1.0 * -sign
    else:
        gradient = 1.0 * -sign / (math.exp(z) + 1.0)
    return float(max(min(gradient, _CLIP_GRADIENT), -_CLIP_GRADIENT))
