"""Two pull vectors share an order key exactly when every comparison of their entries does."""

from __future__ import annotations

import itertools
import random

from processors.styled_artworks import _order_key


def _comparisons(values: list[float]) -> tuple[tuple[bool, bool], ...]:
    return tuple((a < b, a == b) for a, b in itertools.product(values, repeat=2))


def test_order_keys_match_the_comparisons() -> None:
    rng = random.Random(3)
    grid = (0.5, 1.0, 1.0 + 2**-52, 2.0, 0.0, -0.0)
    vectors = [[rng.choice(grid) for _ in range(4)] for _ in range(400)]
    for first, second in itertools.combinations(vectors, 2):
        same_order = _comparisons(first) == _comparisons(second)
        assert (_order_key(first) == _order_key(second)) == same_order
