"""round6 is round(x, 6), bit for bit: random scores, every near-half, the edges."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.rounding import round6, round6_many


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def test_random_probabilities() -> None:
    rng = random.Random(3)
    for _ in range(200_000):
        x = rng.random() ** rng.choice((1, 3, 12))
        assert _same(round6(x), round(x, 6)), x


def test_values_next_to_every_half_and_every_grid_point() -> None:
    """Where the shortcut could round the wrong way: products within an ulp of a half."""
    for k in range(0, 1_000_001, 7):
        for x in ((k + 0.5) / 1e6, k / 1e6):
            for y in (math.nextafter(x, 0.0), x, math.nextafter(x, 2.0)):
                assert _same(round6(y), round(y, 6)), y


@pytest.mark.parametrize(
    "x",
    [0.0, -0.0, 1.0, 5e-324, 1e-300, 5e-7, 0.9999995, 1.0000001, 2.5, -1e-9, -0.3, math.inf],
)
def test_edges(x: float) -> None:
    for value in (x, -x):
        assert _same(round6(value), round(value, 6))
    assert math.isnan(round6(math.nan))


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float(x: float) -> None:
    assert _same(round6(x), round(x, 6))


def _same_lists(got: list[float], values: list[float]) -> bool:
    return len(got) == len(values) and all(
        _same(a, round(x, 6)) for a, x in zip(got, values, strict=True)
    )


def test_many_random_probabilities() -> None:
    rng = random.Random(5)
    values = [rng.random() ** rng.choice((1, 3, 12)) for _ in range(200_000)]
    assert _same_lists(round6_many(values), values)


def test_many_next_to_every_half_and_every_grid_point() -> None:
    values = []
    for k in range(0, 1_000_001, 7):
        for x in ((k + 0.5) / 1e6, k / 1e6):
            values.extend((math.nextafter(x, 0.0), x, math.nextafter(x, 2.0)))
    assert _same_lists(round6_many(values), values)


def test_many_edges_among_ordinary_scores() -> None:
    """Values the shortcut leaves to ``round`` keep their places among those it takes."""
    edges = [0.0, -0.0, 1.0, 5e-324, 5e-7, 0.9999995, 1.0000001, 2.5, -0.3, math.inf, -math.inf]
    values = [v for x in edges for v in (0.123456789, x, -x)] + [0.25]
    got = round6_many(values)
    assert len(got) == len(values)
    for a, x in zip(got, values, strict=True):
        assert _same(a, round(x, 6)), x
    assert math.isnan(round6_many([0.5, math.nan])[1])
    assert round6_many([]) == []


@given(st.lists(st.floats(allow_nan=False, allow_infinity=True), max_size=70))
def test_many_any_floats(values: list[float]) -> None:
    assert _same_lists(round6_many(values), values)
