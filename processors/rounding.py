"""``round(x, 6)`` of a page's scores without the decimal-string round trip.

Why by hand: Python's ``round(x, 6)`` converts ``x`` to its correctly rounded 6-decimal
string and parses it back (``_Py_dg_dtoa``/``_Py_dg_strtod``), ~0.3 µs a score, and a page
rounds every score it shows. For a probability there is a shortcut that is exact:

Let ``X = x * 10**6`` (the exact real), ``t = fl(X)`` the computed product and ``n`` the
integer nearest ``t``. For ``0 < x <= 1``, ``|t - X| <= ulp(10**6) / 2 < 1.2e-10``, so if
``|t - n| < 0.4999999`` then ``|X - n| < 0.5``: ``n`` is ``X`` rounded to an integer, with
no tie to break, i.e. ``round(x, 6)``'s decimal is exactly ``n / 10**6``. ``n`` and ``10**6``
are exact doubles and IEEE division rounds correctly, so ``n / 1e6`` is the double nearest
that decimal, which is what ``round`` returns. Anything else (a product within 1e-7 of a
half, zeros, whose sign ``round`` keeps, values outside ``(0, 1]``, NaN) goes to ``round``
itself.

`round6_many` rounds a page's scores in one compiled loop with the same operations
(``np.rint`` is the round-half-even of Python's ``round(float)``, and ``n / 1e6`` is the
same division whether ``n`` is an int or the equal float), so each result is ``round6``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from processors.compiled import kernel

__all__ = ["round6", "round6_many"]

#: Farther than this from a half, the computed product rounds as the exact one does.
_MARGIN = 0.4999999


def round6(x: float) -> float:
    """``round(x, 6)``, bit for bit (see the module docstring)."""
    if 0.0 < x <= 1.0:  # zeros keep their sign through round()
        scaled = x * 1e6
        nearest = round(scaled)
        if -_MARGIN < scaled - nearest < _MARGIN:
            return nearest / 1e6
    return round(x, 6)


def round6_many(values: Sequence[float] | np.ndarray) -> list[float]:
    """``[round(x, 6) for x in values]``, bit for bit, in one kernel call: a page's ~60
    scores cost ~2 µs instead of ~0.2 µs each. The few the shortcut cannot take (see the
    module docstring) go to ``round`` one by one. ``values`` may be a float64 array (a
    page's scores are one): no list of floats to build first."""
    array = np.asarray(values, dtype=np.float64)  # read only
    out = np.empty_like(array)
    misses = _round6_shortcut(array, out)
    rounded: list[float] = out.tolist()
    if misses:
        for index, x in enumerate(array.tolist()):
            if rounded[index] != rounded[index]:  # NaN: the shortcut did not apply
                # Python's round of the float (numpy's scalar round is not correctly rounded).
                rounded[index] = round(x, 6)
    return rounded


@kernel
def _round6_shortcut(values: np.ndarray, out: np.ndarray) -> int:  # pragma: no cover - numba
    """`round6`'s shortcut for each value; NaN where it does not apply. Returns how many."""
    misses = 0
    for index in range(values.shape[0]):
        x = values[index]
        if 0.0 < x <= 1.0:
            scaled = x * 1e6
            nearest = np.rint(scaled)
            if -_MARGIN < scaled - nearest < _MARGIN:
                out[index] = nearest / 1e6
                continue
        out[index] = np.nan
        misses += 1
    return misses
