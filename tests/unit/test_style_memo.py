"""The bandit's remembered style posteriors are always the ones computed afresh: an update
of one style forgets that style's posteriors in every context, an evicted context all."""

from __future__ import annotations

import random

from online_models.artwork_bandit import ArtworkBandit

STYLES = ("closeup", "scene", "title", "cast")
CONTEXTS = ("", "tv", "phone", "web", "car")


def test_remembered_posteriors_equal_fresh_ones() -> None:
    rng = random.Random(5)
    bandit = ArtworkBandit(seed=1, max_contexts=3, backoff_observations=4)
    for _ in range(3_000):
        if rng.random() < 0.6:
            observed = rng.choice((0.0, rng.random()))
            expected = rng.choice((0.0, rng.random()))
            bandit.update_style(
                rng.choice(STYLES), observed, expected, context=rng.choice(CONTEXTS)
            )
        style, context = rng.choice(STYLES), rng.choice(CONTEXTS)
        fresh = bandit._compute_style_posterior(style, context)
        assert bandit._style_posterior(style, context) == fresh
        assert bandit.style_multiplier(style, context) == fresh[0] / fresh[1]
        taste = {"scene": (0.5, 1.0)}
        pulls = bandit.user_style_multipliers(STYLES, context=context, taste=taste, strength=3.0)
        expected = {}
        for name in STYLES:
            shape, rate = bandit._compute_style_posterior(name, context)
            observed, examined = taste.get(name, (0.0, 0.0))
            expected[name] = (observed + 3.0 * (shape / rate)) / (examined + 3.0)
        assert pulls == expected
