"""Which artwork to show for an item: Beta-Bernoulli Thompson sampling per context."""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["ArtworkBandit"]

_STATE_KIND = "artwork_bandit"
_STATE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_GLOBAL = ""
# Read-only stand-ins for a context or an artwork with no record yet.
_EMPTY_TABLE: Mapping[str, Sequence[int]] = MappingProxyType({})
_NO_COUNTS = (0, 0)
_NO_EVIDENCE = (0.0, 0.0)
_EMPTY_STYLES: Mapping[str, Sequence[float]] = MappingProxyType({})
_MASK_128 = (1 << 128) - 1
_HASH_PERSON = b"insession-artwrk"
# Evicting a tenth of a full artwork table at once makes the O(n) scan for the least-observed
# entries rare instead of once per new artwork.
_ARTWORK_EVICTION_FRACTION = 10


class ArtworkBandit:
    """Thompson sampling over artworks, learning click rates per context.

    Each ``(context, artwork)`` pair keeps click and show counts. The global context ``""``
    counts every update; a named context (a device, a user segment) counts its own. The
    posterior of an artwork in a named context is

        Beta(prior_alpha + clicks_ctx + clicks_rest,
             prior_beta + misses_ctx + misses_rest)

    where *rest* is the artwork's global record minus the context's own, scaled down to at most
    `backoff_observations` pseudo-observations. So a context with no data samples around the
    rest of the world's click rate, with only that many shows' worth of confidence (wider than
    the global posterior: a new context may differ), and once the context has more shows of its
    own than `backoff_observations`, its own record dominates. A smooth blend rather than a
    switch at a threshold, so choices do not jump when the 20th show arrives.

    Draws are deterministic: `choose` reseeds the generator from a BLAKE2b hash of ``(seed,
    draw_key, item_id)``, so the same key replays the same choice on the same state, offline
    and live alike, whatever else is on the page. Not thread-safe (one generator is reused).

    Memory is bounded: at most `max_contexts` named contexts (a new one evicts the least
    shown), and at most `max_artworks` artworks per context table (when full, the least shown
    tenth is evicted at once). At most ``(max_contexts + 1) * max_artworks`` entries in all.

    Parameters
    ----------
    seed
        Mixed into every draw; change it to get independent choices from the same state.
    prior_alpha, prior_beta
        The Beta prior of an artwork nobody has seen, in clicks and misses.
    backoff_observations
        How many observations' worth the rest of the world counts for in a named context.
    max_artworks
        Artworks tracked per context table.
    max_contexts
        Named contexts tracked (the global context is always kept).

    Examples
    --------
    >>> bandit = ArtworkBandit(seed=7)
    >>> for _ in range(50):
    ...     bandit.update("poster-a", True, context="tv")
    ...     bandit.update("poster-b", False, context="tv")
    >>> bandit.choose("item-1", ["poster-a", "poster-b"], context="tv", draw_key="page-1")
    'poster-a'
    >>> round(bandit.mean("poster-b", "tv"), 3)
    0.019

    A context with no data of its own starts from everyone else's record, worth 20 shows:

    >>> round(bandit.mean("poster-a", "phone"), 3)
    0.955

    """

    def __init__(
        self,
        *,
        seed: int = 0,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        backoff_observations: int = 20,
        max_artworks: int = 10_000,
        max_contexts: int = 64,
    ) -> None:
        if not (math.isfinite(prior_alpha) and prior_alpha > 0):
            raise ValueError(f"prior_alpha must be positive and finite, got {prior_alpha!r}")
        if not (math.isfinite(prior_beta) and prior_beta > 0):
            raise ValueError(f"prior_beta must be positive and finite, got {prior_beta!r}")
        if backoff_observations < 0:
            raise ValueError(f"backoff_observations must be >= 0, got {backoff_observations!r}")
        if max_artworks < 1 or max_contexts < 0:
            raise ValueError("max_artworks must be >= 1 and max_contexts >= 0")
        self.seed = int(seed)
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.backoff_observations = int(backoff_observations)
        self.max_artworks = int(max_artworks)
        self.max_contexts = int(max_contexts)
        # context -> artwork -> [clicks, shows]; lists are updated in place on the hot path.
        self._tables: dict[str, dict[str, list[int]]] = {_GLOBAL: {}}
        # context -> artwork -> Beta parameters, filled by choose_many, dropped on update.
        self._params: dict[str, dict[str, tuple[float, float]]] = {}
        # context -> artwork style -> [observed, expected] engagement (see update_style).
        self._styles: dict[str, dict[str, list[float]]] = {_GLOBAL: {}}
        # style -> context -> posterior, until the next update_style of that style (its
        # global record feeds every context's): a page asks twice, and the few updates
        # between two pages leave most styles as they were.
        self._style_memo: dict[str, dict[str, tuple[float, float]]] = {}
        seed_bytes = str(self.seed).encode()
        self._seed_prefix = len(seed_bytes).to_bytes(4, "little") + seed_bytes
        # One generator, reseeded per draw: building a Generator costs ~27 µs (SeedSequence),
        # setting a PCG64 state through its dict ~2 µs.
        self._bit_generator = np.random.PCG64(0)
        self._generator = np.random.Generator(self._bit_generator)
        self._seeder = _Seeder(self._seed_prefix, self._bit_generator)

    def __repr__(self) -> str:
        return (
            f"ArtworkBandit({len(self._tables[_GLOBAL])} artworks, "
            f"{len(self._tables) - 1} contexts, seed={self.seed})"
        )

    def choose(
        self, item_id: str, artworks: Sequence[str], *, context: str, draw_key: str
    ) -> str | None:
        """Pick the artwork to show for an item by Thompson sampling.

        Parameters
        ----------
        item_id
            The item the artworks belong to; part of the draw's seed.
        artworks
            The candidate artwork ids.
        context
            The context whose click rates to use (``""`` for global).
        draw_key
            Names this draw, e.g. the page or request id; the same key, item and state give
            the same choice.

        Returns
        -------
        str or None
            The chosen artwork id, or None if `artworks` is empty.

        """
        if len(artworks) <= 1:
            return artworks[0] if artworks else None
        self._reseed(draw_key, item_id)
        beta = self._generator.beta
        global_table = self._tables[_GLOBAL]
        table = self._tables.get(context, _EMPTY_TABLE) if context != _GLOBAL else None
        prior_alpha, prior_beta, backoff = (
            self.prior_alpha,
            self.prior_beta,
            self.backoff_observations,
        )
        best = artworks[0]
        best_draw = -1.0
        for artwork_id in artworks:
            alpha, beta_ = _blend(
                global_table.get(artwork_id),
                table.get(artwork_id, _NO_COUNTS) if table is not None else None,
                prior_alpha,
                prior_beta,
                backoff,
            )
            draw = beta(alpha, beta_)
            if draw > best_draw:
                best, best_draw = artwork_id, draw
        return best

    def choose_many(
        self,
        items: Sequence[tuple[str, Sequence[str]]],
        *,
        context: str,
        draw_key: str,
    ) -> list[str | None]:
        """Pick artworks for every item of a page with one vectorized Thompson draw.

        One generator reseed and one ``Generator.beta`` call per page instead of one per item:
        a page of 60 titles costs tens of microseconds instead of about a millisecond. The
        draws are seeded by ``draw_key`` alone, so the same page (same items, same order, same
        state) gets the same artworks; an item's artwork may differ between two pages.

        Examples
        --------
        >>> bandit = ArtworkBandit(seed=1)
        >>> for _ in range(200):
        ...     bandit.update("good", True, context="")
        ...     bandit.update("bad", False, context="")
        >>> bandit.choose_many([("i1", ["bad", "good"]), ("i2", [])], context="", draw_key="p")
        ['good', None]
        """
        params = self._params.get(context)
        if params is None or len(params) > self.max_artworks:
            params = self._params[context] = {}
        widths = [len(artworks) for _, artworks in items]
        widest = max(widths, default=0)
        if widest <= 1:
            return [artworks[0] if artworks else None for _, artworks in items]
        n_items = len(items)
        # Items with one artwork (or none) keep Beta(1, 1) draws: the draw stream, and so every
        # choice, is the same as drawing each item separately with the same parameters.
        uniform = widths.count(widest) == n_items
        if uniform:
            drawn = [artwork_id for _, artworks in items for artwork_id in artworks]
        else:
            drawn = [
                artwork_id for _, artworks in items if len(artworks) > 1 for artwork_id in artworks
            ]
        pairs = list(map(params.get, drawn))
        if None in pairs:
            posterior = self._posterior
            for index, pair in enumerate(pairs):
                if pair is None:
                    artwork_id = drawn[index]
                    pair = params.get(artwork_id)  # an artwork may repeat on a page
                    if pair is None:
                        pair = params[artwork_id] = posterior(artwork_id, context)
                    pairs[index] = pair
        alpha_values = np.array([pair[0] for pair in pairs], dtype=np.float64)
        beta_values = np.array([pair[1] for pair in pairs], dtype=np.float64)
        if uniform:
            alphas = alpha_values.reshape(n_items, widest)
            betas = beta_values.reshape(n_items, widest)
        else:
            width = np.array(widths)
            cells = np.arange(widest) < width[:, None]
            filled = cells & (width[:, None] > 1)
            alphas = np.ones((n_items, widest))
            betas = np.ones((n_items, widest))
            alphas[filled] = alpha_values
            betas[filled] = beta_values
        self._reseed(draw_key, "")
        draws = self._generator.beta(alphas, betas)
        if not uniform:
            draws[~cells] = -1.0  # padding never wins
        best = draws.argmax(axis=1).tolist()
        return [
            artworks[best[row]] if artworks else None for row, (_, artworks) in enumerate(items)
        ]

    def update_style(self, style: str, observed: float, expected: float, *, context: str) -> None:
        """Record a look at an artwork of ``style``: engagement observed, and expected from
        everything but the poster (``processors.taste``: observed over expected).

        Styles are shared by every title's artworks, so what one poster teaches about a style
        carries to every other poster of that style: a per-artwork record needs each of
        thousands of artworks to be shown dozens of times before it knows anything.
        """
        if expected <= 0.0 and observed <= 0.0:
            return
        self._style_memo.pop(style, None)
        for table_context in (_GLOBAL, context) if context != _GLOBAL else (_GLOBAL,):
            table = self._styles.get(table_context)
            if table is None:
                if len(self._styles) - 1 >= self.max_contexts:
                    self._evict_style_context()
                    if self.max_contexts == 0:
                        return
                table = self._styles[table_context] = {}
            counts = table.get(style)
            if counts is None:
                counts = table[style] = [0.0, 0.0]
            counts[0] += observed
            counts[1] += expected

    def style_multiplier(self, style: str, context: str) -> float:
        """How much a style's posters lift engagement in a context: observed over expected,
        smoothed toward 1 with ``prior_alpha + prior_beta`` expected engagements, the rest of
        the world blended in as for artworks (worth at most `backoff_observations`)."""
        observed, expected = self._style_posterior(style, context)
        return observed / expected

    def choose_styled(
        self,
        items: Sequence[tuple[str, Sequence[str], Sequence[str]]],
        *,
        context: str,
        taste: Mapping[str, Sequence[float]],
        strength: float,
        draw_key: str,
        explore: bool = True,
    ) -> list[str | None]:
        """Artworks for a page's items, chosen by the style this user is drawn to.

        ``items`` are ``(item_id, artworks, styles)`` with one style per artwork (or none).
        Each style's pull on this user is a multiplier: their own ``taste`` evidence
        (``[observed, expected]`` engagement per style) over ``strength`` expected
        engagements at the style's multiplier in this context (a device: small screens
        favour faces, TVs scenes). With ``explore`` the context's multipliers are a Thompson
        draw from their Gamma-Poisson posteriors, one per style per page: the population's
        uncertainty is what needs exploring (a greedy choice never learns about a style it
        stopped showing), and it shrinks as evidence grows; the user's part is the mean. Then
        every item shows the artwork whose style scored highest, so the page is consistent.
        Titles lacking the best style show the next best, which keeps evidence about the
        others coming. Items without style tags fall back to `choose_many`.
        """
        styles = sorted({style for _, _, item_styles in items for style in item_styles})
        pulls = self.style_pulls(
            styles,
            context=context,
            taste=taste,
            strength=strength,
            draw_key=draw_key,
            explore=explore,
        )
        chosen: list[str | None] = [None] * len(items)
        untagged: list[int] = []
        for index, (_, artworks, item_styles) in enumerate(items):
            if not artworks:
                continue
            if len(item_styles) != len(artworks):
                untagged.append(index)
                continue
            best, best_pull = artworks[0], pulls[item_styles[0]]
            for artwork_id, style in zip(artworks, item_styles, strict=True):
                pull = pulls[style]
                if pull > best_pull:  # ties keep the earlier artwork
                    best, best_pull = artwork_id, pull
            chosen[index] = best
        if untagged:
            fallback = self.choose_many(
                [(items[k][0], items[k][1]) for k in untagged], context=context, draw_key=draw_key
            )
            for index, artwork_id in zip(untagged, fallback, strict=True):
                chosen[index] = artwork_id
        return chosen

    def style_pulls(
        self,
        styles: Sequence[str],
        *,
        context: str,
        taste: Mapping[str, Sequence[float]],
        strength: float,
        draw_key: str,
        explore: bool = True,
    ) -> dict[str, float]:
        """The pull of each style on this user for one page (see `choose_styled`): the
        posterior mean multiplier, on a Thompson draw of the context's multipliers when
        ``explore``. A page's artworks are each title's highest-pulling style."""
        priors = None
        if explore and styles:
            ordered = sorted(styles)
            self._reseed(draw_key, "\x00styles")
            # One standard-gamma draw per style, times the scale: numpy's gamma(shape, scale)
            # is exactly ``scale * standard_gamma(shape)`` on the same stream, and for the
            # handful of styles a page has, scalar draws cost less than broadcasting arrays.
            standard_gamma = self._generator.standard_gamma
            priors = {}
            for style in ordered:
                shape, rate = self._style_posterior(style, context)
                priors[style] = float(standard_gamma(shape) * (1.0 / rate))
        return self.user_style_multipliers(
            styles, context=context, taste=taste, strength=strength, priors=priors
        )

    def user_style_multipliers(
        self,
        styles: Sequence[str],
        *,
        context: str,
        taste: Mapping[str, Sequence[float]],
        strength: float,
        priors: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Each style's posterior mean multiplier for one user (see `choose_styled`); the
        context's multipliers are the prior unless ``priors`` gives drawn ones."""
        pulls = {}
        # A user has evidence for a few styles at most: their keys once, and a taste lookup
        # (a method call for a state's `PairMap`) only for those.
        own = set(taste)
        posterior_of = self._style_posterior
        for style in styles:
            observed, expected = taste.get(style, _NO_EVIDENCE) if style in own else _NO_EVIDENCE
            if priors is not None:
                prior = priors[style]
            else:  # `style_multiplier`, without its call
                posterior = posterior_of(style, context)
                prior = posterior[0] / posterior[1]
            pulls[style] = (observed + strength * prior) / (expected + strength)
        return pulls

    def update(self, artwork_id: str, clicked: bool, *, context: str) -> None:
        """Record one show of an artwork and whether it was clicked.

        Parameters
        ----------
        artwork_id
            The artwork that was shown.
        clicked
            Whether the user clicked it.
        context
            The context it was shown in (``""`` for global only).

        """
        click = 1 if clicked else 0
        for params in self._params.values():  # the global record feeds every context's blend
            params.pop(artwork_id, None)
        self._count(self._tables[_GLOBAL], artwork_id, click)
        if context != _GLOBAL:
            table = self._tables.get(context)
            if table is None:
                if len(self._tables) - 1 >= self.max_contexts:
                    self._evict_context()
                    if self.max_contexts == 0:
                        return
                table = self._tables[context] = {}
            self._count(table, artwork_id, click)

    def mean(self, artwork_id: str, context: str = _GLOBAL) -> float:
        """Posterior mean click rate of an artwork in a context.

        Parameters
        ----------
        artwork_id
            The artwork.
        context
            The context (``""`` for global).

        Returns
        -------
        float
            The mean of the (blended) posterior `choose` samples from.

        """
        alpha, beta = self._posterior(artwork_id, context)
        return alpha / (alpha + beta)

    # State

    def to_state(self) -> dict[str, Any]:
        """Configuration and counts as JSON-safe plain data.

        Tables are lists of ``[artwork_id, clicks, shows]`` rather than dicts so their order,
        which breaks eviction ties, survives serializers that sort keys.

        Returns
        -------
        dict

        """
        return {
            "kind": _STATE_KIND,
            "state_version": _STATE_VERSION,
            "seed": self.seed,
            "prior_alpha": self.prior_alpha,
            "prior_beta": self.prior_beta,
            "backoff_observations": self.backoff_observations,
            "max_artworks": self.max_artworks,
            "max_contexts": self.max_contexts,
            "tables": [
                [
                    context,
                    [[artwork_id, clicks, shows] for artwork_id, (clicks, shows) in t.items()],
                ]
                for context, t in self._tables.items()
            ],
            "styles": [
                [
                    context,
                    [[style, observed, expected] for style, (observed, expected) in t.items()],
                ]
                for context, t in self._styles.items()
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ArtworkBandit:
        """Rebuild a bandit from `to_state` output.

        Parameters
        ----------
        state
            A dict produced by `to_state`.

        Returns
        -------
        ArtworkBandit

        Raises
        ------
        ValueError
            If the state is not an `ArtworkBandit` state this version understands.

        Examples
        --------
        >>> bandit = ArtworkBandit(seed=1)
        >>> bandit.update("a", True, context="phone")
        >>> ArtworkBandit.from_state(bandit.to_state()).mean("a", "phone") == bandit.mean(
        ...     "a", "phone")
        True

        """
        if state.get("kind") != _STATE_KIND:
            raise ValueError(f"not an {_STATE_KIND} state: kind={state.get('kind')!r}")
        if state.get("state_version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"unsupported {_STATE_KIND} state_version {state.get('state_version')!r}; "
                f"this code reads versions {_READABLE_VERSIONS}"
            )
        try:
            bandit = cls(
                seed=int(state["seed"]),
                prior_alpha=float(state["prior_alpha"]),
                prior_beta=float(state["prior_beta"]),
                backoff_observations=int(state["backoff_observations"]),
                max_artworks=int(state["max_artworks"]),
                max_contexts=int(state["max_contexts"]),
            )
            tables: dict[str, dict[str, list[int]]] = {}
            for context, rows in state["tables"]:
                table = tables[str(context)] = {}
                for artwork_id, clicks, shows in rows:
                    if not 0 <= int(clicks) <= int(shows):
                        raise ValueError(f"clicks {clicks!r} outside [0, shows={shows!r}]")
                    table[str(artwork_id)] = [int(clicks), int(shows)]
            styles: dict[str, dict[str, list[float]]] = {}
            for context, rows in state.get("styles", ()):
                style_table = styles[str(context)] = {}
                for style, observed, expected in rows:
                    if not (float(observed) >= 0.0 and float(expected) >= 0.0):
                        raise ValueError(f"style evidence {observed!r}, {expected!r} negative")
                    style_table[str(style)] = [float(observed), float(expected)]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed {_STATE_KIND} state: {exc!r}") from exc
        tables.setdefault(_GLOBAL, {})
        styles.setdefault(_GLOBAL, {})
        bandit._tables = tables
        bandit._styles = styles
        bandit._style_memo.clear()
        return bandit

    # Helpers

    def _posterior(self, artwork_id: str, context: str) -> tuple[float, float]:
        """Beta parameters of an artwork in a context, global record blended in."""
        table = self._tables.get(context, _EMPTY_TABLE) if context != _GLOBAL else None
        return _blend(
            self._tables[_GLOBAL].get(artwork_id),
            table.get(artwork_id, _NO_COUNTS) if table is not None else None,
            self.prior_alpha,
            self.prior_beta,
            self.backoff_observations,
        )

    def _style_posterior(self, style: str, context: str) -> tuple[float, float]:
        """Observed and expected engagement of a style in a context, plus the prior (a
        multiplier of 1 worth ``prior_alpha + prior_beta``) and the rest of the world's
        record scaled to at most `backoff_observations` expected engagements."""
        by_context = self._style_memo.get(style)
        if by_context is None:
            by_context = self._style_memo[style] = {}
        posterior = by_context.get(context)
        if posterior is None:
            posterior = by_context[context] = self._compute_style_posterior(style, context)
        return posterior

    def _compute_style_posterior(self, style: str, context: str) -> tuple[float, float]:
        prior = self.prior_alpha + self.prior_beta
        global_counts = self._styles[_GLOBAL].get(style, _NO_EVIDENCE)
        if context == _GLOBAL:
            observed, expected = global_counts
            return prior + observed, prior + expected
        observed, expected = self._styles.get(context, _EMPTY_STYLES).get(style, _NO_EVIDENCE)
        rest_observed = max(global_counts[0] - observed, 0.0)
        rest_expected = max(global_counts[1] - expected, 0.0)
        if rest_expected > self.backoff_observations:
            rest_observed *= self.backoff_observations / rest_expected
            rest_expected = float(self.backoff_observations)
        return prior + observed + rest_observed, prior + expected + rest_expected

    def _evict_style_context(self) -> None:
        """Drop the named style context with the fewest examinations."""
        named = [context for context in self._styles if context != _GLOBAL]
        if named:
            least = min(named, key=lambda c: sum(n for _, n in self._styles[c].values()))
            del self._styles[least]
            self._style_memo.clear()

    def _reseed(self, draw_key: str, item_id: str) -> None:
        """Point the generator at the stream of ``(seed, draw_key, item_id)``."""
        self._seeder.reseed(draw_key, item_id)

    def _count(self, table: dict[str, list[int]], artwork_id: str, click: int) -> None:
        """Add one show (and maybe a click) to a table, evicting when a new entry overflows."""
        counts = table.get(artwork_id)
        if counts is None:
            if len(table) >= self.max_artworks:
                n_evicted = max(1, self.max_artworks // _ARTWORK_EVICTION_FRACTION)
                for evicted, _ in heapq.nsmallest(n_evicted, table.items(), key=_entry_shows):
                    del table[evicted]
                self._params.clear()  # cached posteriors may mention evicted entries
            counts = table[artwork_id] = [0, 0]
        counts[0] += click
        counts[1] += 1

    def _evict_context(self) -> None:
        """Drop the named context with the fewest shows (the oldest on ties)."""
        named = [context for context in self._tables if context != _GLOBAL]
        if named:
            least = min(named, key=self._context_shows)
            del self._tables[least]
            self._params.pop(least, None)

    def _context_shows(self, context: str) -> int:
        """Total shows recorded in a context."""
        return sum(shows for _, shows in self._tables[context].values())


def _pcg64_state(state: int, inc: int) -> dict[str, Any]:
    """The `numpy.random.PCG64.state` dict of a position and increment, nothing buffered."""
    return {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": inc},
        "has_uint32": 0,
        "uinteger": 0,
    }


class _Seeder:
    """Points a PCG64 at the stream of ``(seed, draw_key, item_id)``: the state is a BLAKE2b
    hash of them, so the same key replays the same draws in every process.

    Holds the hash state after the seed prefix, copied per draw instead of hashing the prefix
    and parsing the personalization again. (Writing the generator's C struct through its
    ``ctypes`` interface would save ~1.5 µs more a page; numpy documents that interface for
    reading, so the state goes through the ``state`` setter.)
    """

    __slots__ = ("_bit_generator", "_prefix", "_seed_hash")

    def __init__(self, seed_prefix: bytes, bit_generator: np.random.PCG64) -> None:
        self._prefix = seed_prefix
        self._bit_generator = bit_generator
        self._seed_hash = hashlib.blake2b(seed_prefix, digest_size=32, person=_HASH_PERSON)

    def __reduce__(self) -> tuple[Any, ...]:
        # Hash objects cannot be copied by pickle or deepcopy: rebuild from the prefix and the
        # (copied) generator.
        return (_Seeder, (self._prefix, self._bit_generator))

    def reseed(self, draw_key: str, item_id: str) -> None:
        """Set the generator's state from the hash of ``(draw_key, item_id)``."""
        key = draw_key.encode()
        # Length-prefixed so ("ab", "c") and ("a", "bc") differ; item_id comes last, unprefixed.
        hasher = self._seed_hash.copy()
        hasher.update(len(key).to_bytes(4, "little") + key + item_id.encode())
        raw = hasher.digest()
        # A PCG64 state is a 128-bit position and an odd 128-bit increment (its stream).
        inc = (int.from_bytes(raw[16:], "little") << 1 | 1) & _MASK_128
        self._bit_generator.state = _pcg64_state(int.from_bytes(raw[:16], "little"), inc)


def _entry_shows(entry: tuple[str, list[int]]) -> int:
    """Key function: the show count of an ``(artwork_id, [clicks, shows])`` table entry."""
    return entry[1][1]


def _blend(
    global_counts: Sequence[int] | None,
    counts: Sequence[int] | None,
    prior_alpha: float,
    prior_beta: float,
    backoff_observations: int,
) -> tuple[float, float]:
    """Beta parameters from a context's counts (None in the global context) and the global ones.

    A module function rather than a method: `choose` calls it per artwork on the hot path.
    """
    global_clicks, global_shows = global_counts if global_counts is not None else (0, 0)
    if counts is None:
        return prior_alpha + global_clicks, prior_beta + global_shows - global_clicks
    clicks, shows = counts
    # The global record includes this context's own; only the rest is prior evidence.
    # Clamped: either side may have been evicted and recounted independently.
    rest_shows = max(global_shows - shows, 0)
    rest_clicks: float = min(max(global_clicks - clicks, 0), rest_shows)
    if rest_shows > backoff_observations:
        rest_clicks *= backoff_observations / rest_shows
        rest_shows = backoff_observations
    return (
        prior_alpha + clicks + rest_clicks,
        prior_beta + (shows - clicks) + (rest_shows - rest_clicks),
    )
