"""A user's taste as evidence: how often what they examined in a genre or style engaged them.

Counting clicks alone says little in a session (a few clicks per visit); summing signed
weights (a hover plus, a scroll-past minus) makes every genre negative after a few scroll-pasts,
because most things a user looks at are passed over, loved genres included. What does carry
the taste is a *rate*: of the titles of a genre the user looked at (clicked or explicitly
scrolled past), how much engagement did they give (a click, a long hover)? Each genre and each
artwork style keeps ``(engagement, examined)``; the rate is Beta-smoothed toward the population's
rate, so one hover does not make a favourite and a genre never shown stays neutral.

Artwork styles are measured against expectation instead: ``(observed, expected)`` engagement,
where the expectation is what the user's genre taste predicted for that title. Most titles a
user looks at are passed over for their genre, whatever their poster; counted as plain rates,
the style shown most would collect the most rejections and look worst. Observed over expected
is the poster's own effect (a multiplier around 1), the way click models separate a result's
attractiveness from its position.

Evidence survives the session (a returning user's first page already knows them) but counts
for less each session, so an old taste fades when behaviour changes.

Examples
--------
>>> evidence: dict[str, tuple[float, float]] = {}
>>> add_evidence(evidence, ("horror",), *engagement_of("click", None))
>>> add_evidence(evidence, ("comedy", "drama"), *engagement_of("scroll_past", None))
>>> evidence
{'horror': (1.0, 1.0), 'comedy': (0.0, 0.5), 'drama': (0.0, 0.5)}
>>> lift(*evidence["horror"], base_rate=0.1, strength=3.0) > 0 > lift(
...     *evidence["comedy"], base_rate=0.1, strength=3.0)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping, Sequence

from processors.user_state import PairMap

__all__ = [
    "NO_EVIDENCE",
    "TASTE_TYPES",
    "add_evidence",
    "carry_over",
    "engagement_of",
    "lift",
    "multiplier",
    "rate",
]

#: The evidence of a key nobody has seen engage or be examined.
NO_EVIDENCE: tuple[float, float] = (0.0, 0.0)
#: Events that say the user looked at a title (and how it went): the ones that move a taste.
TASTE_TYPES = frozenset({"click", "scroll_past", "hover"})
#: Dwell at which a hover counts as much engagement as half a click.
_FULL_DWELL_MS = 3_000.0
_HOVER_WEIGHT = 0.5
_NONE = (0.0, 0.0)


def engagement_of(event_type: str, dwell_ms: int | None) -> tuple[float, float]:
    """``(engagement, examined)`` one event adds to the titles' genres and artwork style.

    A click is full engagement and one examination; a scroll-past is an examination without
    engagement; a hover is a partial look that engaged, weighted by its dwell (up to half a
    click). Engagement never exceeds examinations, so every rate stays a proportion (and a
    valid Beta posterior): a long hover then a scroll-past is a rate of 1/3, a click alone 1.

    >>> engagement_of("click", None), engagement_of("scroll_past", None)
    ((1.0, 1.0), (0.0, 1.0))
    >>> engagement_of("hover", 1500)
    (0.25, 0.25)
    """
    if event_type == "click":
        return 1.0, 1.0
    if event_type == "scroll_past":
        return 0.0, 1.0
    if event_type == "hover":
        weight = _HOVER_WEIGHT * min((dwell_ms or 0) / _FULL_DWELL_MS, 1.0)
        return weight, weight
    return 0.0, 0.0


def add_evidence(
    evidence: MutableMapping[str, Sequence[float]],
    keys: Iterable[str],
    engaged: float,
    examined: float,
    *,
    limit: int = 32,
) -> None:
    """Add one observation, shared equally among ``keys`` (a title's genres).

    Past ``limit`` keys the one with the least evidence is forgotten.
    """
    keys = tuple(keys)
    if not keys or (engaged == 0.0 and examined == 0.0):
        return
    share = 1.0 / len(keys)
    if type(evidence) is PairMap:  # the states' evidence: one copy of its values, same sums
        size = evidence.add_to_each(keys, engaged * share, examined * share)  # (its new len)
    else:
        for key in keys:
            first, second = evidence.get(key, _NONE)
            evidence[key] = (first + engaged * share, second + examined * share)
        size = len(evidence)
    if size > limit:
        weakest = min(evidence, key=lambda key: evidence[key][1] + evidence[key][0])
        del evidence[weakest]


def carry_over(evidence: MutableMapping[str, Sequence[float]], factor: float) -> None:
    """Discount the evidence when a session ends (``factor`` in [0, 1]); drop what is faint."""
    for key in list(evidence):
        first, second = evidence[key]
        first *= factor
        second *= factor
        if first + second < 0.05:
            del evidence[key]
        else:
            evidence[key] = (first, second)


def rate(engaged: float, examined: float, *, base_rate: float, strength: float) -> float:
    """Engagement per examination, Beta-smoothed toward ``base_rate`` with ``strength`` looks."""
    return (engaged + strength * base_rate) / (examined + strength)


def lift(engaged: float, examined: float, *, base_rate: float, strength: float) -> float:
    """``log(rate / base_rate)``: 0 without evidence, positive for what engages the user."""
    if base_rate <= 0.0:
        return 0.0
    return math.log(rate(engaged, examined, base_rate=base_rate, strength=strength) / base_rate)


def multiplier(observed: float, expected: float, *, prior: float, strength: float) -> float:
    """Observed over expected engagement, smoothed toward ``prior`` with ``strength``
    expected engagements' worth of evidence (the Gamma-Poisson posterior mean)."""
    return (observed + strength * prior) / (expected + strength)
