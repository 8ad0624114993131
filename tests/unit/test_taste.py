"""Taste evidence and the models that learn the population's side of it."""

from __future__ import annotations

import json
import math
from collections.abc import MutableMapping, Sequence

import numpy as np
import pytest

from online_models.blended_ranker import BlendedRanker
from online_models.engagement import EngagementRates
from processors.config import EngineConfig
from processors.features import genre_taste_rates
from processors.session_window import update_window
from processors.taste import add_evidence, carry_over, engagement_of, lift
from processors.user_state import PairMap, UserState
from schemas.messages import BehaviourEvent, CatalogItem

T0 = 1_700_000_000_000
HORROR = CatalogItem("h1", "Scream", ("horror",), 5400, ("h1-a", "h1-b"), ("closeup", "scene"))
COMEDY = CatalogItem("c1", "Airplane", ("comedy",), 5400, ("c1-a",), ("scene",))


def _event(kind: str, item: CatalogItem, ts: int = T0, **extra: object) -> BehaviourEvent:
    return BehaviourEvent(f"e-{kind}-{item.item_id}-{ts}", "u", kind, ts, item.item_id, **extra)  # type: ignore[arg-type]


def test_a_look_is_engagement_over_examination_never_above_one() -> None:
    for kind, dwell in [("click", None), ("scroll_past", None), ("hover", 10_000), ("hover", 0)]:
        engaged, examined = engagement_of(kind, dwell)
        assert 0.0 <= engaged <= examined <= 1.0
    assert engagement_of("impression", None) == (0.0, 0.0), "shown is not looked at"


def test_scroll_pasts_lower_a_genre_relative_to_what_engages() -> None:
    """Summed signed weights made every genre negative; the rate separates them."""
    state = UserState("u")
    config = EngineConfig()
    for k in range(4):  # four looks at horror: two long hovers; four at comedy: nothing
        ts = T0 + k * 1_000
        if k % 2 == 0:
            update_window(state, _event("hover", HORROR, ts, dwell_ms=3_000), HORROR, config)
        update_window(state, _event("scroll_past", HORROR, ts + 1), HORROR, config)
        update_window(state, _event("scroll_past", COMEDY, ts + 2), COMEDY, config)
    rates = genre_taste_rates(state, {"horror": 0.1, "comedy": 0.1, "drama": 0.1}, 0.1, 2.0)
    assert rates["horror"] > 0.1 == rates["drama"] > rates["comedy"]
    assert lift(*state.genre_evidence["horror"], base_rate=0.1, strength=2.0) > 0


@pytest.mark.parametrize("kind", [dict, PairMap])
def test_evidence_carries_over_sessions_at_a_discount_and_stays_bounded(
    kind: type[MutableMapping[str, Sequence[float]]],
) -> None:
    evidence = kind()
    add_evidence(evidence, ("horror", "comedy"), 1.0, 1.0)
    assert evidence == {"horror": (0.5, 0.5), "comedy": (0.5, 0.5)}
    assert list(evidence) == ["horror", "comedy"]
    carry_over(evidence, 0.5)
    assert evidence["horror"] == (0.25, 0.25)
    for _ in range(5):
        carry_over(evidence, 0.5)
    assert evidence == {}, "faint evidence is dropped"
    for k in range(40):
        add_evidence(evidence, (f"g{k}",), 0.0, 1.0 + k, limit=8)
    assert len(evidence) == 8 and "g39" in evidence and "g0" not in evidence


def test_taste_evidence_survives_the_checkpoint() -> None:
    state = UserState("u")
    state.genre_evidence = PairMap({"horror": (0.5, 2.0), "drama": (0.1, 0.3)})
    state.style_evidence = PairMap({"closeup": (1.5, 0.5)})  # observed may exceed expected
    restored = UserState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored.genre_evidence == state.genre_evidence
    assert list(restored.genre_evidence) == ["horror", "drama"], "insertion order kept"
    assert restored.style_evidence == state.style_evidence
    broken = state.to_dict() | {"genre_evidence": {"horror": [3.0, 1.0]}}
    with pytest.raises(ValueError, match="out of range"):
        UserState.from_dict(broken)


def test_engagement_rates_separate_appealing_titles_and_round_trip() -> None:
    rates = EngagementRates(strength=5.0)
    rng = np.random.default_rng(1)
    for _ in range(3_000):
        item = f"t{rng.integers(6)}"
        rates.observe(item, clicked=bool(rng.random() < (0.3 if item == "t0" else 0.05)))
        rates.observe_taste(0.2, 1.0, ("horror",) if item == "t0" else ("comedy",))
    lifts = rates.item_lifts(["t0", "t1", "unseen"])
    assert lifts[0] > 0.5 > 0.0 > lifts[1] and lifts[2] == 0.0
    clone = EngagementRates.from_state(json.loads(json.dumps(rates.to_state())))
    assert clone.item_lifts(["t0", "t1"]).tolist() == rates.item_lifts(["t0", "t1"]).tolist()
    assert clone.genre_rate("horror") == rates.genre_rate("horror")
    with pytest.raises(ValueError):
        EngagementRates.from_state(rates.to_state() | {"kind": "other"})


def _label_stream(n: int, seed: int, informative_prior: bool) -> list[tuple[list[float], bool]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        signal = rng.normal()
        truth = -1.5 + 2.0 * signal
        prior_logit = truth if informative_prior else rng.normal(-1.5, 1.0)
        clicked = rng.random() < 1.0 / (1.0 + math.exp(-truth))
        rows.append(([prior_logit, signal], bool(clicked)))
    return rows


@pytest.mark.parametrize("informative_prior", [True, False])
def test_the_blend_follows_whichever_predictor_has_been_right(informative_prior: bool) -> None:
    ranker = BlendedRanker(("click_model_logit", "signal"), prior_column="click_model_logit")
    for row, label in _label_stream(4_000, 3, informative_prior):
        ranker.learn_vector(row, label)
    if informative_prior:  # the regression can at best match it: the blend stays with the prior
        assert ranker.learned_weight < 0.9
    else:  # the prior is noise, the regression learns the signal and takes over
        assert ranker.learned_weight > 0.99
    scores = ranker.predict_proba_many(np.array([[0.0, 2.0], [0.0, -2.0]]))
    assert scores[0] > scores[1] or informative_prior
    clone = BlendedRanker.from_state(json.loads(json.dumps(ranker.to_state())))
    probe = np.array([[0.3, 0.1], [-2.0, 1.5]])
    assert clone.predict_proba_many(probe).tolist() == ranker.predict_proba_many(probe).tolist()


def test_pair_map_behaves_like_a_dict_of_pairs() -> None:
    """The compact evidence map against a dict, through the operations the engine uses."""
    rng = np.random.default_rng(5)
    compact, reference = PairMap(), {}
    for _ in range(2_000):
        key = f"g{rng.integers(12)}"
        action = rng.integers(4)
        if action == 0 and key in reference:
            del compact[key], reference[key]
        else:
            pair = (float(rng.random()), float(rng.random()))
            compact[key] = reference[key] = pair
        assert list(compact.items()) == list(reference.items())
        assert compact.get(key, (0.0, 0.0)) == reference.get(key, (0.0, 0.0))
        assert (key in compact) == (key in reference) and len(compact) == len(reference)
    with pytest.raises(KeyError):
        del compact["never"]
    assert compact.keys() | {"x"} == reference.keys() | {"x"}
