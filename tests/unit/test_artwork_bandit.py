"""ArtworkBandit: it finds the better artwork, draws deterministically, and stays bounded."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from online_models.artwork_bandit import ArtworkBandit

ARTWORKS = ("poster-a", "poster-b")


def _simulate(bandit: ArtworkBandit, rounds: int, *, context: str, seed: int) -> Counter[str]:
    """Play `rounds` shows against true click rates A 0.3, B 0.05; count the choices."""
    true_rates = {"poster-a": 0.3, "poster-b": 0.05}
    rng = np.random.default_rng(seed)
    chosen: Counter[str] = Counter()
    for i in range(rounds):
        artwork = bandit.choose("item-1", ARTWORKS, context=context, draw_key=f"round-{i}")
        assert artwork is not None
        chosen[artwork] += 1
        bandit.update(artwork, bool(rng.random() < true_rates[artwork]), context=context)
    return chosen


def _choices(bandit: ArtworkBandit, n: int, *, context: str, prefix: str = "k") -> list[str | None]:
    return [
        bandit.choose("item-1", ARTWORKS, context=context, draw_key=f"{prefix}-{i}")
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learns_the_better_artwork(seed: int) -> None:
    bandit = ArtworkBandit(seed=seed)
    during = _simulate(bandit, 500, context="tv", seed=seed)
    assert during["poster-a"] > 400, during
    after = Counter(_choices(bandit, 1_000, context="tv", prefix="eval"))
    assert after["poster-a"] > 800, after
    assert bandit.mean("poster-a", "tv") > bandit.mean("poster-b", "tv")


def test_same_draw_key_same_choice() -> None:
    bandit = ArtworkBandit(seed=5)
    bandit.update("poster-a", True, context="")
    bandit.update("poster-b", False, context="")
    first = _choices(bandit, 200, context="")
    assert _choices(bandit, 200, context="") == first
    # Uncertain posteriors: different keys do explore both.
    assert set(first) == set(ARTWORKS)


def test_choice_does_not_depend_on_the_rest_of_the_page() -> None:
    bandit = ArtworkBandit(seed=5)
    alone = bandit.choose("item-7", ARTWORKS, context="", draw_key="page-1")
    for other in range(20):
        bandit.choose(f"item-{other}", ARTWORKS, context="", draw_key="page-1")
    assert bandit.choose("item-7", ARTWORKS, context="", draw_key="page-1") == alone


def test_seed_and_key_parts_change_the_draws() -> None:
    base = _choices(ArtworkBandit(seed=1), 200, context="")
    assert _choices(ArtworkBandit(seed=2), 200, context="") != base
    bandit = ArtworkBandit(seed=1)
    by_item = [bandit.choose(f"i{i}", ARTWORKS, context="", draw_key="k") for i in range(200)]
    assert by_item != base


def test_pinned_draws() -> None:
    """Replays depend on these exact draws: a change here (hashing, PCG64 seeding, numpy's
    beta) changes every replayed choice and needs a changelog entry."""
    bandit = ArtworkBandit(seed=0)
    draws = "".join(
        (bandit.choose("item", ARTWORKS, context="", draw_key=str(i)) or "?")[-1] for i in range(24)
    )
    assert draws == "abaaabababbbbbaabbabbbba"


def test_degenerate_candidate_lists() -> None:
    bandit = ArtworkBandit()
    assert bandit.choose("item", [], context="", draw_key="k") is None
    assert bandit.choose("item", ["only"], context="tv", draw_key="k") == "only"


def test_global_mean_is_the_beta_posterior_mean() -> None:
    bandit = ArtworkBandit(prior_alpha=1.0, prior_beta=3.0)
    for clicked in (True, True, False, False, False):
        bandit.update("poster-a", clicked, context="phone")
    assert bandit.mean("poster-a", "") == pytest.approx((1 + 2) / (4 + 5))
    assert bandit.mean("never-shown", "") == pytest.approx(1 / 4)


def test_new_context_backs_off_to_the_rest_of_the_world() -> None:
    bandit = ArtworkBandit(backoff_observations=20)
    for i in range(1_000):
        bandit.update("poster-a", i % 10 < 3, context="phone")
    # No data in "tv": 300/1000 clicks elsewhere, worth 20 shows, over a Beta(1, 1) prior.
    assert bandit.mean("poster-a", "tv") == pytest.approx((1 + 6) / (2 + 20))
    assert bandit.mean("poster-a", "phone") == pytest.approx((1 + 300) / (2 + 1_000))


def test_context_data_dominates_once_it_has_enough() -> None:
    bandit = ArtworkBandit(backoff_observations=20)
    for i in range(1_000):
        bandit.update("poster-a", i % 10 < 3, context="phone")
    for i in range(500):
        bandit.update("poster-a", i % 50 == 0, context="tv")
    tv_mean = bandit.mean("poster-a", "tv")
    assert tv_mean == pytest.approx((1 + 10 + 6) / (2 + 500 + 20))
    assert tv_mean < 0.05
    assert bandit.mean("poster-a", "") == pytest.approx((1 + 310) / (2 + 1_500))


def test_artworks_are_bounded_and_the_most_shown_survive() -> None:
    bandit = ArtworkBandit(max_artworks=10)
    for _ in range(50):
        bandit.update("popular", True, context="tv")
    for i in range(100):
        bandit.update(f"rare-{i}", False, context="tv")
    tables = dict(bandit.to_state()["tables"])
    for rows in tables.values():
        assert len(rows) <= 10
        assert "popular" in {row[0] for row in rows}
    assert "rare-99" in {row[0] for row in tables[""]}


def test_contexts_are_bounded_and_the_least_shown_goes() -> None:
    bandit = ArtworkBandit(max_contexts=2)
    for _ in range(5):
        bandit.update("a", True, context="tv")
    bandit.update("a", True, context="phone")
    bandit.update("a", True, context="web")
    contexts = [context for context, _ in bandit.to_state()["tables"]]
    assert contexts == ["", "tv", "web"]
    assert bandit.mean("a", "") == pytest.approx((1 + 7) / (2 + 7))


def test_state_round_trip() -> None:
    bandit = ArtworkBandit(seed=11, max_artworks=50, max_contexts=4)
    _simulate(bandit, 300, context="tv", seed=3)
    _simulate(bandit, 100, context="phone", seed=4)
    clone = ArtworkBandit.from_state(json.loads(json.dumps(bandit.to_state())))
    assert clone.to_state() == bandit.to_state()
    for context in ("", "tv", "phone", "web"):
        assert _choices(clone, 100, context=context) == _choices(bandit, 100, context=context)
        for artwork in (*ARTWORKS, "unknown"):
            assert clone.mean(artwork, context) == bandit.mean(artwork, context)
    assert _simulate(clone, 200, context="web", seed=5) == _simulate(
        bandit, 200, context="web", seed=5
    )
    assert clone.to_state() == bandit.to_state()


def test_bad_state_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        ArtworkBandit.from_state({"kind": "online_logistic"})
    state = ArtworkBandit().to_state()
    state["tables"] = [["", [["a", 5, 2]]]]
    with pytest.raises(ValueError, match="clicks"):
        ArtworkBandit.from_state(state)


# -- styles: what one poster teaches carries to every poster of its style ------------------


def _styled_items(n: int) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    styles = ("closeup", "scene", "title")
    return [
        (f"i{k}", (f"i{k}-a", f"i{k}-b"), (styles[k % 3], styles[(k + 1) % 3])) for k in range(n)
    ]


def test_style_multipliers_learn_observed_over_expected_per_context() -> None:
    bandit = ArtworkBandit(seed=1)
    for _ in range(1_000):  # phones engage twice as much as expected with close-ups
        bandit.update_style("closeup", 0.2, 0.1, context="phone")
        bandit.update_style("scene", 0.05, 0.1, context="phone")
        bandit.update_style("scene", 0.2, 0.1, context="tv")
        bandit.update_style("closeup", 0.05, 0.1, context="tv")
    assert (
        bandit.style_multiplier("closeup", "phone")
        > 1.5
        > 0.8
        > bandit.style_multiplier("scene", "phone")
    )
    assert bandit.style_multiplier("scene", "tv") > bandit.style_multiplier("closeup", "tv")
    # A device never seen starts from everyone's record (here: both styles alike).
    assert bandit.style_multiplier("closeup", "web") == pytest.approx(
        bandit.style_multiplier("scene", "web"), rel=0.05
    )


def test_choose_styled_shows_the_style_the_user_is_drawn_to() -> None:
    bandit = ArtworkBandit(seed=2)
    for _ in range(500):
        bandit.update_style("scene", 0.2, 0.1, context="tv")
        bandit.update_style("closeup", 0.1, 0.1, context="tv")
        bandit.update_style("title", 0.1, 0.1, context="tv")
    items = _styled_items(30)
    chosen = bandit.choose_styled(items, context="tv", taste={}, strength=5.0, draw_key="p1")
    style_of = {a: s for _, arts, styles in items for a, s in zip(arts, styles, strict=True)}
    with_scene = [k for k, (_, _, styles) in enumerate(items) if "scene" in styles]
    assert all(style_of[chosen[k]] == "scene" for k in with_scene)
    # This user's own evidence (title posters engage them three times as much as expected)
    # outweighs the device's lean.
    taste = {"title": [3.0, 1.0], "scene": [0.2, 1.0]}
    mine = bandit.choose_styled(items, context="tv", taste=taste, strength=1.0, draw_key="p1")
    with_title = [k for k, (_, _, styles) in enumerate(items) if "title" in styles]
    assert all(style_of[mine[k]] == "title" for k in with_title)
    # Deterministic per draw key; untagged items fall back to the per-artwork bandit.
    again = bandit.choose_styled(items, context="tv", taste={}, strength=5.0, draw_key="p1")
    assert again == chosen
    untagged = [("u1", ("u1-a", "u1-b"), ()), ("u2", (), ())]
    fallback = bandit.choose_styled(untagged, context="tv", taste={}, strength=5.0, draw_key="q")
    assert fallback[0] in ("u1-a", "u1-b") and fallback[1] is None


def test_style_tables_survive_the_state_round_trip() -> None:
    bandit = ArtworkBandit(seed=3)
    bandit.update_style("closeup", 0.3, 0.2, context="phone")
    clone = ArtworkBandit.from_state(json.loads(json.dumps(bandit.to_state())))
    assert clone.style_multiplier("closeup", "phone") == bandit.style_multiplier("closeup", "phone")
    version_1 = {k: v for k, v in bandit.to_state().items() if k != "styles"} | {"state_version": 1}
    assert ArtworkBandit.from_state(version_1).style_multiplier("closeup", "phone") == 1.0


def test_style_draws_are_numpys_vectorized_gamma() -> None:
    """The per-style scalar draws equal ``Generator.gamma(shapes, 1 / rates)`` on the same
    stream, the vectorized draw they replaced: pages keep their artworks."""
    bandit = ArtworkBandit(seed=5)
    styles = ["title", "closeup", "scene", "dark"]
    rng = np.random.default_rng(1)
    for k in range(200):
        bandit.update_style(styles[k % 4], float(rng.random()), 0.5, context="tv")
    for key in range(50):
        draw_key = f"rec-{key}"
        pulls = bandit.style_pulls(
            styles, context="tv", taste={}, strength=5.0, draw_key=draw_key, explore=True
        )
        ordered = sorted(styles)
        posteriors = np.array([bandit._style_posterior(style, "tv") for style in ordered])
        bandit._reseed(draw_key, "\x00styles")
        drawn = bandit._generator.gamma(posteriors[:, 0], 1.0 / posteriors[:, 1]).tolist()
        expected = bandit.user_style_multipliers(
            styles,
            context="tv",
            taste={},
            strength=5.0,
            priors=dict(zip(ordered, drawn, strict=True)),
        )
        assert pulls == expected


def _reference_state(seed: int, draw_key: str, item_id: str) -> dict[str, object]:
    """The PCG64 state the reseed gave before it was sped up: the hash taken whole and the
    state set through numpy's ``state`` dict."""
    seed_bytes = str(seed).encode()
    key = draw_key.encode()
    raw = hashlib.blake2b(
        len(seed_bytes).to_bytes(4, "little")
        + seed_bytes
        + len(key).to_bytes(4, "little")
        + key
        + item_id.encode(),
        digest_size=32,
        person=b"insession-artwrk",
    ).digest()
    return {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(raw[:16], "little"),
            "inc": (int.from_bytes(raw[16:], "little") << 1 | 1) & ((1 << 128) - 1),
        },
        "has_uint32": 0,
        "uinteger": 0,
    }


def test_reseed_reaches_the_reference_state_and_draws() -> None:
    """The copied hash state gives the state and the draws of the reference reseed, bit for
    bit, whatever the generator did before (a buffered 32-bit half-draw included)."""
    bandit = ArtworkBandit(seed=42)
    reference = np.random.Generator(np.random.PCG64(0))
    for index in range(300):
        draw_key, item_id = f"rec-{index:016x}" * (index % 3), ("", "\x00styles", "é")[index % 3]
        bandit._generator.integers(0, 2**32, dtype=np.uint32)  # leaves a half-draw buffered
        bandit._reseed(draw_key, item_id)
        expected = _reference_state(42, draw_key, item_id)
        assert bandit._bit_generator.state == expected
        reference.bit_generator.state = expected
        shapes = np.array([0.5, 1.0, 3.0, 40.0])
        assert (
            bandit._generator.standard_gamma(shapes).tolist()
            == reference.standard_gamma(shapes).tolist()
        )
        assert bandit._generator.integers(0, 2**32, size=3, dtype=np.uint32).tolist() == (
            reference.integers(0, 2**32, size=3, dtype=np.uint32).tolist()
        )


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda b: pickle.loads(pickle.dumps(b))])
def test_a_copied_bandit_reseeds_its_own_generator(clone: Callable[[Any], Any]) -> None:
    """A copy's seeder reseeds the copy's own generator, and reseeding either leaves the
    other alone."""
    bandit = ArtworkBandit(seed=3)
    bandit._reseed("before", "")
    copied = clone(bandit)
    copied._reseed("page-1", "")
    assert bandit._bit_generator.state == _reference_state(3, "before", "")
    assert copied._bit_generator.state == _reference_state(3, "page-1", "")
    bandit._reseed("page-2", "")
    assert copied._bit_generator.state == _reference_state(3, "page-1", "")
