"""The compiled PCG64 gamma draws are numpy's, bit for bit, and the bandit's style pulls are
the draws through numpy's own generator."""

from __future__ import annotations

import numpy as np

from online_models.artwork_bandit import ArtworkBandit
from online_models.pcg64_gamma import standard_gamma_draws

_MASK_128 = (1 << 128) - 1


def _numpy_generator(raw: bytes) -> np.random.Generator:
    generator = np.random.Generator(np.random.PCG64(0))
    generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(raw[:16], "little"),
            "inc": (int.from_bytes(raw[16:], "little") << 1 | 1) & _MASK_128,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }
    return generator


def test_draws_equal_numpys_standard_gamma() -> None:
    rng = np.random.default_rng(11)
    for trial in range(300):
        raw = rng.bytes(32)
        count = 1 + trial % 40
        # Wide shapes, and shapes just above 1 (where the loop rejects most).
        shapes = np.nextafter(1.0, 2.0) + np.exp(rng.normal(-1.0, 3.0, size=count))
        scales = 1.0 / (shapes * rng.random(count) + 0.1)
        generator = _numpy_generator(raw)
        posteriors = np.stack([shapes, 1.0 / scales], axis=1)
        expected = [
            float(generator.standard_gamma(shape) * (1.0 / rate))
            for shape, rate in posteriors.tolist()
        ]
        assert standard_gamma_draws(raw, posteriors) == expected
    # A long stream: the ziggurat's rare branches (its tail, its wedges) are taken too.
    raw = rng.bytes(32)
    shapes = 1.0 + rng.random(200_000) * 30.0
    drawn = standard_gamma_draws(raw, np.stack([shapes, np.ones_like(shapes)], axis=1))
    assert drawn == _numpy_generator(raw).standard_gamma(shapes).tolist()


def test_shapes_it_does_not_draw_are_refused() -> None:
    for odd in (1.0, 0.5, 0.0, np.inf, np.nan):
        assert standard_gamma_draws(bytes(32), np.array([[2.0, 1.0], [odd, 1.0]])) is None


def test_style_pulls_with_small_shapes_take_numpy() -> None:
    """Priors below 1 make shapes the kernel does not draw: numpy's generator draws them,
    as before."""
    bandit = ArtworkBandit(seed=2, prior_alpha=0.2, prior_beta=0.3)
    styles = ["a", "b", "c"]
    pulls = bandit.style_pulls(
        styles, context="tv", taste={}, strength=4.0, draw_key="rec-1", explore=True
    )
    bandit._reseed("rec-1", "\x00styles")
    # Shape and rate are both the prior's 0.5: a scale of 2.
    drawn = [float(x * (1.0 / 0.5)) for x in bandit._generator.standard_gamma([0.5] * 3)]
    expected = bandit.user_style_multipliers(
        styles, context="tv", taste={}, strength=4.0, priors=dict(zip(styles, drawn, strict=True))
    )
    assert pulls == expected
