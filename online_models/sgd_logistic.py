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

The loops are compiled (`processors.compiled.kernel`): float arithmetic in numba is IEEE
double arithmetic as in Python, and ``var ** 0.5`` is the C library's ``pow`` as Python's
is, not the ``sqrt`` LLVM turns a constant exponent of 0.5 into (the two differ for about
one variance in a thousand): the exponent is passed in, so it is not a constant. A learn
went from ~10 µs (over lists) to ~1-2 µs; the tests above still compare with River.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from processors.compiled import kernel

__all__ = ["ScaledSGDLogistic"]

#: River's ``LogisticRegression`` default ``clip_gradient``.
_CLIP_GRADIENT = 1e12
#: Past |z| > 18 River's log-loss gradient takes its asymptotic forms.
_ASYMPTOTE = 18.0
_SIGMOID_CLAMP = 30.0
#: The exponent of River's ``var ** 0.5``, passed to the kernels as a value (see above).
_HALF = 0.5


class ScaledSGDLogistic:
    """Running standardisation and an SGD logistic regression over ``n_features`` columns.

    State is per-feature float64 arrays (counts as int64), one entry per feature in column
    order, read by the owner to snapshot it and to build scoring arrays; `counts`, `means`,
    `variances` and `weights` give them as lists. ``weights`` is ``None`` until the first
    learn, like River's empty weight dict (a fresh model's logit is its intercept).
    """

    __slots__ = (
        "_counts",
        "_learned",
        "_means",
        "_prior",
        "_prior_logit",
        "_scaled",
        "_variances",
        "_weights",
        "intercept",
        "intercept_lr",
        "l2",
        "lr",
        "n_features",
        "steps",
    )

    def __init__(
        self, n_features: int, *, lr: float, l2: float, intercept: float, intercept_lr: float
    ) -> None:
        self.n_features = n_features
        self.lr = lr
        self.l2 = l2
        self.intercept_lr = intercept_lr
        self.intercept = intercept
        self._counts = np.zeros(n_features, dtype=np.int64)
        self._means = np.zeros(n_features)
        self._variances = np.zeros(n_features)
        self._weights = np.zeros(n_features)
        self._scaled = np.zeros(n_features)  # scratch of a learn step
        self._learned = False
        #: A fresh model's probability and the logit it is of (`predict_proba`).
        self._prior_logit = math.nan
        self._prior = math.nan
        #: SGD steps taken (River's ``optimizer.n_iterations``).
        self.steps = 0

    @property
    def counts(self) -> list[int]:
        """Rows seen per feature (River's scaler ``counts``)."""
        return self._counts.tolist()  # type: ignore[no-any-return]

    @property
    def means(self) -> list[float]:
        """Running mean per feature."""
        return self._means.tolist()  # type: ignore[no-any-return]

    @property
    def variances(self) -> list[float]:
        """Running (population) variance per feature."""
        return self._variances.tolist()  # type: ignore[no-any-return]

    @property
    def mean_array(self) -> np.ndarray:
        """The running means themselves (learning updates them in place: read, don't write)."""
        return self._means

    @property
    def variance_array(self) -> np.ndarray:
        """The running variances themselves (read, don't write)."""
        return self._variances

    @property
    def weight_array(self) -> np.ndarray:
        """The weights themselves, zeros before the first learn (read, don't write)."""
        return self._weights

    @property
    def weights(self) -> list[float] | None:
        """The weights, or None before the first learn."""
        return self._weights.tolist() if self._learned else None

    def restore(
        self,
        counts: Sequence[int],
        means: Sequence[float],
        variances: Sequence[float],
        weights: Sequence[float] | None,
        *,
        intercept: float,
        steps: int,
    ) -> None:
        """Set the whole state (a snapshot being read back)."""
        self._counts[:] = counts
        self._means[:] = means
        self._variances[:] = variances
        self._learned = weights is not None
        self._weights[:] = weights if weights is not None else 0.0
        self.intercept = intercept
        self.steps = steps

    def scaled(self, x: Sequence[float]) -> list[float]:
        """The row standardised by the current statistics (River's ``transform_one``)."""
        return [
            (xi - mean) / var**0.5 if var else 0.0
            for xi, mean, var in zip(x, self.means, self.variances, strict=True)
        ]

    def logit(self, x: Sequence[float]) -> float:
        """``w · scaled(x) + intercept``, summed in feature order as River does."""
        if not self._learned:
            return 0.0 + self.intercept
        return _logit(_row(x), self._means, self._variances, self._weights, self.intercept, _HALF)

    def predict_proba(self, x: Sequence[float]) -> float:
        """Probability of a positive label (River's clamped sigmoid of `logit`)."""
        if not self._learned:
            # The intercept's sigmoid, kept while the intercept stays: the churn check asks a
            # model that has no label yet on every event, and a kernel call cost ~2k
            # instructions. (A NaN intercept is never equal to itself: recomputed, as before.)
            logit = 0.0 + self.intercept
            if logit != self._prior_logit:
                self._prior_logit, self._prior = logit, _sigmoid(logit)
            return self._prior
        # `_sigmoid(self.logit(x))` in one kernel call (the churn check's, every event)
        return _proba(_row(x), self._means, self._variances, self._weights, self.intercept, _HALF)

    def learn(self, x: Sequence[float], y: bool) -> bool:
        """One SGD step; False, and nothing learned, if the row holds a non-finite value."""
        return self.learn_scored(x, y, scored=False) is not None

    def learn_scored(self, x: Sequence[float], y: bool, *, scored: bool = True) -> float | None:
        """`predict_proba` of the row by the model as it was, then `learn` it: one pass.

        Prequential evaluation scores every label before learning it; the score's dot product
        uses the statistics and weights each feature had before this row updated them, taken
        in the same loop as the update instead of a second pass (or numpy arrays rebuilt
        after every step, which cost more than the step itself). 0.0 instead of the score
        unless ``scored``; None, and nothing learned, if the row holds a non-finite value.
        """
        proba, self.intercept, finite = _learn_step(
            _row(x),
            bool(y),
            self._counts,
            self._means,
            self._variances,
            self._weights,
            self._scaled,
            self.intercept,
            self.intercept_lr,
            self.lr,
            self.l2,
            scored,
            _HALF,
        )
        if not finite:
            return None
        self._learned = True
        self.steps += 1
        return proba


def _row(x: Sequence[float]) -> np.ndarray:
    """A row as the float64 array the kernels take (no copy when it already is one)."""
    return np.asarray(x, dtype=np.float64)


@kernel
def _sigmoid(z: float) -> float:  # pragma: no cover - compiled
    """River's sigmoid: exactly 0 below a logit of -30 and 1 above 30."""
    if z < -_SIGMOID_CLAMP:
        return 0.0
    if z > _SIGMOID_CLAMP:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


@kernel(called_by_kernels_only=True)  # (and by `ScaledSGDLogistic.logit`: not the engine)
def _logit(
    x: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray,
    intercept: float,
    half: float,
) -> float:  # pragma: no cover - compiled (tests compare it with River)
    """``w · scaled(x) + intercept`` in feature order (zero-variance features scale to 0)."""
    total = 0.0
    for i in range(x.shape[0]):
        var = variances[i]
        total += weights[i] * ((x[i] - means[i]) / var**half if var else 0.0)
    return total + intercept


@kernel
def _proba(
    x: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray,
    intercept: float,
    half: float,
) -> float:  # pragma: no cover - compiled (tests compare it with River)
    """``_sigmoid(_logit(...))``: the same two steps in one call."""
    return _sigmoid(_logit(x, means, variances, weights, intercept, half))


@kernel
def _learn_step(
    x: np.ndarray,
    y: bool,
    counts: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray,
    scaled: np.ndarray,
    intercept: float,
    intercept_lr: float,
    lr: float,
    l2: float,
    score_first: bool,
    half: float,
) -> tuple[float, float, bool]:  # pragma: no cover - compiled (tests compare it with River)
    """One SGD step in place; returns (the probability before it if ``score_first``, else
    0.0; the new intercept; True), or (0.0, the intercept, False) with nothing changed if
    the row holds a non-finite value (one NaN would poison the statistics for good)."""
    for i in range(x.shape[0]):
        if not math.isfinite(x[i]):
            return 0.0, intercept, False
    total = 0.0  # the logit's dot product, accumulated in feature order as it goes
    before = 0.0  # the same before this row's update (only with score_first)
    for i in range(x.shape[0]):
        xi = x[i]
        count = counts[i] + 1
        counts[i] = count
        old_mean = means[i]
        old_var = variances[i]
        if score_first and old_var:
            before += weights[i] * ((xi - old_mean) / old_var**half)
        mean = old_mean + (xi - old_mean) / count
        means[i] = mean
        var = old_var + ((xi - old_mean) * (xi - mean) - old_var) / count
        variances[i] = var
        value = (xi - mean) / var**half if var else 0.0
        scaled[i] = value
        total += weights[i] * value
    proba = _sigmoid(before + intercept) if score_first else 0.0
    # River's optim.losses.Log().gradient for a unit weight, then its gradient clamp.
    sign = 1.0 if y else -1.0
    z = (total + intercept) * sign
    if z > _ASYMPTOTE:
        gradient = math.exp(-z) * -sign
    elif z < -_ASYMPTOTE:
        gradient = 1.0 * -sign
    else:
        gradient = 1.0 * -sign / (math.exp(z) + 1.0)
    gradient = max(min(gradient, _CLIP_GRADIENT), -_CLIP_GRADIENT)
    intercept -= intercept_lr * gradient
    if l2:
        for i in range(x.shape[0]):
            weight = weights[i]
            weights[i] = weight - lr * (scaled[i] * gradient + l2 * weight)
    else:
        for i in range(x.shape[0]):
            weights[i] -= lr * (scaled[i] * gradient)
    return proba, intercept, True
