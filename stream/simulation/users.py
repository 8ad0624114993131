"""Simulated users and their hidden tastes, drawn from a seed.

A user's taste is never sent anywhere: the engine has to infer it from behaviour, and the
simulator uses it to decide how the user responds (``response``) and what the best possible
page would have been (``oracle``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stream.simulation.world import ARTWORK_STYLES, GENRE_WEIGHTS, GENRES

__all__ = ["DEVICES", "DEVICE_STYLE", "VISIBLE_PER_ROW", "Taste", "build_tastes"]

#: Devices with their share of users.
DEVICES: tuple[tuple[str, float], ...] = (("tv", 0.45), ("mobile", 0.35), ("web", 0.20))
#: The artwork style each device's users lean to (a small screen favours a face, a TV a scene).
#: This correlation is what a per-device artwork bandit can learn; the rest is personal.
DEVICE_STYLE: dict[str, str] = {
    "tv": "action-scene",
    "mobile": "character-closeup",
    "web": "ensemble-cast",
}
#: Items visible in a row without scrolling sideways, per device.
VISIBLE_PER_ROW: dict[str, int] = {"tv": 5, "mobile": 3, "web": 6}
_DEVICE_STYLE_SHARE = 0.6


@dataclass(frozen=True, slots=True)
class Taste:
    """Everything hidden about one user; fixed for the whole run.

    Attributes
    ----------
    genre_pref
        How much the user likes each genre, in [0, 1]: one to three loved genres near 1, the
        rest low.
    style_pref
        The artwork style that draws this user in.
    row_continue
        Probability of scrolling down to the next row after a row without a click.
    col_decay
        Probability of looking at position ``p`` of a row is ``col_decay ** p``.
    patience
        Page views without a click before the user gives up on the session.
    device, other_device
        The device used for most sessions, and the one used otherwise.
    tz_offset_h, active_from_h, active_hours
        Time zone and the local hours in which the user starts sessions.
    return_prob
        Probability of coming back after a session that had a play (less after one without).
    return_gap_min
        Mean minutes between sessions.
    """

    user_id: str
    genre_pref: dict[str, float]
    style_pref: str
    row_continue: float
    col_decay: float
    patience: int
    device: str
    other_device: str
    device_loyalty: float
    tz_offset_h: int
    active_from_h: int
    active_hours: int
    return_prob: float
    return_gap_min: float

    @property
    def loved_genres(self) -> tuple[str, ...]:
        """Genres the user likes a lot, best first."""
        loved = [genre for genre, pref in self.genre_pref.items() if pref >= 0.5]
        return tuple(sorted(loved, key=lambda genre: -self.genre_pref[genre]))

    def is_active_at(self, local_hour: int) -> bool:
        """Whether the user starts sessions at this local hour."""
        return (local_hour - self.active_from_h) % 24 < self.active_hours


def build_tastes(n_users: int, seed: int, id_prefix: str) -> list[Taste]:
    """Draw ``n_users`` users; user ``i`` depends only on ``(seed, i)``.

    Examples
    --------
    >>> users = build_tastes(3, seed=1, id_prefix="u")
    >>> [u.user_id for u in users]
    ['u0000', 'u0001', 'u0002']
    >>> users[1] == build_tastes(2, seed=1, id_prefix="u")[1]
    True
    """
    return [
        _draw_taste(f"{id_prefix}{index:04d}", random.Random(f"user:{seed}:{index}"))
        for index in range(n_users)
    ]


def _draw_taste(user_id: str, rng: random.Random) -> Taste:
    loved_count = rng.choices((1, 2, 3), weights=(0.35, 0.45, 0.2))[0]
    loved: list[str] = []
    while len(loved) < loved_count:
        genre = rng.choices(GENRES, weights=GENRE_WEIGHTS)[0]
        if genre not in loved:
            loved.append(genre)
    genre_pref = {genre: round(rng.uniform(0.0, 0.12), 4) for genre in GENRES}
    for rank, genre in enumerate(loved):
        genre_pref[genre] = round(max(1.0 - 0.2 * rank - rng.uniform(0.0, 0.1), 0.5), 4)
    device = rng.choices([d for d, _ in DEVICES], weights=[s for _, s in DEVICES])[0]
    other_device = rng.choice([d for d, _ in DEVICES if d != device])
    if rng.random() < _DEVICE_STYLE_SHARE:
        style_pref = DEVICE_STYLE[device]
    else:
        style_pref = rng.choice(ARTWORK_STYLES)
    return Taste(
        user_id=user_id,
        genre_pref=genre_pref,
        style_pref=style_pref,
        row_continue=round(rng.uniform(0.45, 0.8), 4),
        col_decay=round(rng.uniform(0.65, 0.9), 4),
        patience=rng.randint(2, 6),
        device=device,
        other_device=other_device,
        device_loyalty=round(rng.uniform(0.7, 0.95), 4),
        tz_offset_h=rng.randint(-8, 9),
        active_from_h=rng.randrange(24),
        active_hours=rng.randint(10, 18),
        return_prob=round(rng.uniform(0.55, 0.95), 4),
        return_gap_min=round(rng.uniform(20.0, 90.0), 2),
    )
