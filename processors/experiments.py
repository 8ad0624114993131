"""Experiment arms: deterministic assignment of users to variants by hashing the user id."""

from __future__ import annotations

from collections.abc import Sequence

from processors.ids import unit_interval

__all__ = ["HOLDOUT", "PERSONALIZED", "ArmAssigner"]

PERSONALIZED = "personalized"
#: The holdout arm gets a non-personalized (popularity) page so personalization stays measurable.
HOLDOUT = "holdout"


class ArmAssigner:
    """Assign each user to an arm, the same arm every time, with configured traffic shares.

    Hashing ``experiment_name`` with the user id means a new experiment reshuffles users, while
    the same experiment keeps everyone where they were across restarts and replays.

    Examples
    --------
    >>> assigner = ArmAssigner("exp", [("a", 0.5), ("b", 0.5)])
    >>> assigner.arm_of("user-1") == assigner.arm_of("user-1")
    True
    >>> ArmAssigner("exp", [("only", 1.0)]).arm_of("anyone")
    'only'
    """

    __slots__ = ("_bounds", "_cache", "experiment_name")

    def __init__(self, experiment_name: str, arms: Sequence[tuple[str, float]]) -> None:
        total = sum(share for _, share in arms)
        if not arms or total <= 0 or any(share < 0 for _, share in arms):
            raise ValueError(f"arms need non-negative shares with a positive sum, got {arms!r}")
        self.experiment_name = experiment_name
        bounds: list[tuple[float, str]] = []
        cumulative = 0.0
        for name, share in arms:
            cumulative += share / total
            bounds.append((cumulative, name))
        self._bounds = tuple(bounds)
        self._cache: dict[str, str] = {}

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms in configuration order."""
        return tuple(name for _, name in self._bounds)

    def arm_of(self, user_id: str) -> str:
        """Return the user's arm."""
        arm = self._cache.get(user_id)
        if arm is None:
            point = unit_interval(self.experiment_name, user_id)
            arm = next((name for bound, name in self._bounds if point < bound), self._bounds[-1][1])
            if len(self._cache) > 100_000:  # bounded memo; recomputing is cheap and exact
                self._cache.clear()
            self._cache[user_id] = arm
        return arm
