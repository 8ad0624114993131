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
"""

from __future__ import annotations

__all__ = ["round6"]

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
