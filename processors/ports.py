"""What the engine needs from its models, as Protocols: online_models implements them.

The engine lives in ``processors`` and must not import ``online_models`` (layers flow one way),
so it is handed objects that satisfy these interfaces; tests can hand it simpler ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["ArtworkChooser", "BinaryLearner", "EngagementModel", "NextItemIndex", "Popularity"]


class NextItemIndex(Protocol):
    """Session-based next-item index (V-SKNN), updated online."""

    def add_item(self, session_key: str, item_id: str, ts: int) -> None: ...

    def recommend(
        self, session_items: Sequence[str], n: int = 100, *, exclude_session: str | None = None
    ) -> list[tuple[str, float]]: ...

    def to_state(self) -> dict[str, Any]: ...


class Popularity(Protocol):
    """Windowed popularity in event time."""

    def add(self, item_id: str, ts: int, weight: float = 1.0) -> None: ...

    def score(self, item_id: str, now: int) -> float: ...

    def scores(self, item_ids: Sequence[str], now: int) -> np.ndarray: ...

    def top(self, n: int, now: int) -> list[tuple[str, float]]: ...

    def top_ids(self, n: int) -> list[str]: ...

    def to_state(self) -> dict[str, Any]: ...


class BinaryLearner(Protocol):
    """An online probabilistic classifier over a fixed, ordered feature vector."""

    feature_names: tuple[str, ...]
    n_learned: int

    def predict_proba_one(self, x: Mapping[str, float]) -> float: ...

    def predict_proba_vector(self, x: Sequence[float]) -> float: ...

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray: ...

    def learn_vector(self, x: Sequence[float] | np.ndarray, y: bool) -> None: ...

    def contributions(self, x: Mapping[str, float]) -> list[tuple[str, float]]: ...

    def to_state(self) -> dict[str, Any]: ...


class ArtworkChooser(Protocol):
    """Picks the artwork to show for an item and learns from clicks."""

    def choose(
        self, item_id: str, artworks: Sequence[str], *, context: str, draw_key: str
    ) -> str | None: ...

    def choose_many(
        self, items: Sequence[tuple[str, Sequence[str]]], *, context: str, draw_key: str
    ) -> list[str | None]: ...

    def choose_styled(
        self,
        items: Sequence[tuple[str, Sequence[str], Sequence[str]]],
        *,
        context: str,
        taste: Mapping[str, Sequence[float]],
        strength: float,
        draw_key: str,
        explore: bool = True,
    ) -> list[str | None]: ...

    def style_pulls(
        self,
        styles: Sequence[str],
        *,
        context: str,
        taste: Mapping[str, Sequence[float]],
        strength: float,
        draw_key: str,
        explore: bool = True,
    ) -> dict[str, float]: ...

    def update(self, artwork_id: str, clicked: bool, *, context: str) -> None: ...

    def update_style(
        self, style: str, engaged: float, examined: float, *, context: str
    ) -> None: ...

    def style_multiplier(self, style: str, context: str) -> float: ...

    def user_style_multipliers(
        self,
        styles: Sequence[str],
        *,
        context: str,
        taste: Mapping[str, Sequence[float]],
        strength: float,
        priors: Mapping[str, float] | None = None,
    ) -> dict[str, float]: ...

    def mean(self, artwork_id: str, context: str) -> float: ...

    def to_state(self) -> dict[str, Any]: ...


class EngagementModel(Protocol):
    """Clicks per examination of each title, and the population's base rates."""

    n_learned: int

    @property
    def click_rate(self) -> float: ...

    @property
    def taste_rate(self) -> float: ...

    def observe(self, item_id: str, *, clicked: bool) -> None: ...

    def observe_taste(
        self, engaged: float, examined: float, genres: Sequence[str] = ()
    ) -> None: ...

    def genre_rate(self, genre: str) -> float: ...

    def genre_rates(self) -> dict[str, float]: ...

    def item_lifts(self, item_ids: Sequence[str]) -> np.ndarray: ...

    def to_state(self) -> dict[str, Any]: ...
