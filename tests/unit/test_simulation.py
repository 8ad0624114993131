"""The simulator: reproducible given the pages, users follow their hidden tastes, honest oracle."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from online_models.factory import build_models
from processors.config import EngineConfig
from processors.engine import Engine
from schemas.messages import BehaviourEvent, Page, PageItem, PageRow
from stream.simulation.inprocess import run_in_process
from stream.simulation.oracle import Oracle, expected_outcome
from stream.simulation.population import SimConfig, Simulation
from stream.simulation.response import (
    SessionMemory,
    click_probability,
    plan_watch,
    scan_page,
    taste_match,
)
from stream.simulation.users import Taste, build_tastes
from stream.simulation.world import SimItem, World, build_world

START_MS = 1_790_000_040_000 - 1_790_000_040_000 % 60_000


def _page_for(sim: Simulation, user_id: str, step: int) -> Page:
    """A page that depends only on (user, step): what a deterministic server would send."""
    rng = random.Random(f"{user_id}:{step}")
    items = sim.world.items
    rows = []
    for row in range(3):
        chosen = rng.sample(items, 6)
        rows.append(
            PageRow(
                f"row-{row}",
                f"Row {row}",
                tuple(
                    PageItem(it.item_id, 1.0 - k / 10, rng.choice(it.artworks))
                    for k, it in enumerate(chosen)
                ),
            )
        )
    variant = "personalized" if int(user_id[-4:]) % 2 else "holdout"
    return Page(user_id, "s", f"rec-{user_id}-{step}", f"t-{step}", 0, tuple(rows), variant)


def _drive(sim: Simulation, steps: int) -> list[BehaviourEvent]:
    """Advance the simulation with pages that depend only on each user's step count."""
    seen: dict[str, int] = {}
    events = []
    for _ in range(steps):
        head = sim.peek()
        if head is None:
            break
        _, user_id = head
        step = seen.get(user_id, 0)
        seen[user_id] = step + 1
        page = _page_for(sim, user_id, step) if step else None
        events.extend(sim.act(user_id, page))
    return events


def test_same_seed_and_same_pages_give_the_same_events() -> None:
    config = SimConfig(users=40, items=120, seed=3, run_id="det")
    first = _drive(Simulation(config, start_ms=START_MS), 600)
    second = _drive(Simulation(config, start_ms=START_MS), 600)
    assert len(first) > 1_000
    assert first == second
    other = _drive(Simulation(replace(config, seed=4), start_ms=START_MS), 600)
    assert other != first


def test_a_users_events_do_not_depend_on_the_other_users() -> None:
    """User i is a function of (seed, i) and their pages: adding users changes nobody else."""
    small = _drive(
        Simulation(SimConfig(users=5, items=80, seed=9, run_id="x"), start_ms=START_MS), 400
    )
    large = _drive(
        Simulation(SimConfig(users=12, items=80, seed=9, run_id="x"), start_ms=START_MS), 2_000
    )
    for index in range(5):
        user_id = f"x-u{index:04d}"
        mine_small = [e for e in small if e.user_id == user_id]
        mine_large = [e for e in large if e.user_id == user_id][: len(mine_small)]
        assert mine_small and mine_small == mine_large


def test_events_are_well_formed_and_move_forward_in_time() -> None:
    sim = Simulation(SimConfig(users=30, items=100, seed=5, run_id="wf"), start_ms=START_MS)
    events = _drive(sim, 800)
    by_user: dict[str, list[BehaviourEvent]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append(event)
        assert event.session_id and event.device in ("tv", "mobile", "web")
        assert 0 <= (event.local_hour or 0) < 24
        if event.type != "session_start":
            assert event.item_id in sim.world.by_id
        if event.type in ("impression", "hover", "click", "scroll_past"):
            assert event.recommendation_id and event.row_id and event.position is not None
        if event.type == "hover":
            assert event.dwell_ms and event.dwell_ms >= 300
    for user_events in by_user.values():
        stamps = [e.ts for e in user_events]
        assert stamps == sorted(stamps), "a user's events are in time order"
        assert len({e.event_id for e in user_events}) == len(user_events)
    types = {e.type for e in events}
    assert {"session_start", "impression", "hover", "click", "scroll_past", "play"} <= types
    assert types & {"completion", "drop_off", "pause"}


# -- the response model follows the hidden taste ----------------------------------------------


def _taste(**overrides: object) -> Taste:
    base = build_tastes(1, seed=1, id_prefix="t")[0]
    prefs = dict.fromkeys(base.genre_pref, 0.05)
    prefs["horror"] = 1.0
    values = {
        "genre_pref": prefs,
        "style_pref": "landscape",
        "col_decay": 0.8,
        "row_continue": 0.7,
        "device": "tv",
    } | overrides
    return replace(base, **values)  # type: ignore[arg-type]


def _world() -> World:
    def item(item_id: str, genre: str, styles: tuple[str, ...], quality: float = 1.0) -> SimItem:
        return SimItem(
            item_id,
            item_id,
            (genre,),
            3_000,
            tuple(f"{item_id}-a{k}" for k in range(len(styles))),
            styles,
            quality,
        )

    items = [
        item("h1", "horror", ("landscape", "action-scene")),
        item("h2", "horror", ("minimal-title", "action-scene")),
        item("c1", "comedy", ("landscape", "action-scene")),
        item("c2", "comedy", ("minimal-title", "ensemble-cast")),
    ]
    return World(
        items=tuple(items),
        by_id={i.item_id: i for i in items},
        style_of_artwork={
            a: s for i in items for a, s in zip(i.artworks, i.artwork_styles, strict=True)
        },
    )


def test_click_probability_follows_genre_taste_artwork_and_memory() -> None:
    taste, world = _taste(), _world()
    empty = SessionMemory.empty()
    loved_art = click_probability(taste, world.by_id["h1"], "landscape", empty)
    loved_other = click_probability(taste, world.by_id["h1"], "action-scene", empty)
    unloved_art = click_probability(taste, world.by_id["c1"], "landscape", empty)
    assert loved_art > loved_other > unloved_art
    assert loved_art / loved_other == pytest.approx(2.0)  # the artwork doubles the odds
    passed = SessionMemory({"h1": 2}, set(), {})
    assert click_probability(taste, world.by_id["h1"], "landscape", passed) < loved_art / 2
    finished = SessionMemory({}, {"h1"}, {})
    assert click_probability(taste, world.by_id["h1"], "landscape", finished) < 0.1 * loved_art
    assert taste_match(taste, world.by_id["h1"]) > 10 * taste_match(taste, world.by_id["c1"])


def _page(*slots: tuple[str, str]) -> Page:
    return Page(
        "u",
        "s",
        "rec-1",
        "t",
        0,
        (PageRow("r", "Row", tuple(PageItem(i, 1.0, a) for i, a in slots)),),
    )


def test_users_click_what_they_love_in_the_style_they_like() -> None:
    """Empirical click rates over many page views match the hidden model, position by position."""
    taste, world = _taste(), _world()
    clicks = {"h1": 0, "c1": 0}
    hover_dwell: dict[str, list[int]] = {"h1": [], "c1": []}
    rng = random.Random(0)
    views = 20_000
    for index in range(views):
        order = ["h1", "c1"] if index % 2 == 0 else ["c1", "h1"]  # both positions, equally often
        page = _page(*((i, f"{i}-a0") for i in order))
        actions, click = scan_page(taste, world, page, "tv", SessionMemory.empty(), rng)
        if click is not None:
            clicks[click.item_id] += 1
        for action in actions:
            if action.type == "hover":
                hover_dwell[action.item_id].append(action.dwell_ms or 0)
    q_loved = click_probability(taste, world.by_id["h1"], "landscape", SessionMemory.empty())
    q_other = click_probability(taste, world.by_id["c1"], "landscape", SessionMemory.empty())
    decay = taste.col_decay
    # Position 0 is always looked at; position 1 with col_decay, if position 0 was not clicked.
    expected_loved = 0.5 * q_loved + 0.5 * (1 - q_other) * decay * q_loved
    expected_other = 0.5 * q_other + 0.5 * (1 - q_loved) * decay * q_other
    assert clicks["h1"] / views == pytest.approx(expected_loved, abs=0.015)
    assert clicks["c1"] / views == pytest.approx(expected_other, abs=0.01)
    mean = {k: sum(v) / len(v) for k, v in hover_dwell.items()}
    assert mean["h1"] > 2 * mean["c1"], "dwell grows with interest"
    assert len(hover_dwell["h1"]) > 3 * len(hover_dwell["c1"]), "interesting titles get hovered"


def test_position_bias_top_rows_and_first_positions_get_the_clicks() -> None:
    taste, world = _taste(col_decay=0.6, row_continue=0.5), _world()
    rng = random.Random(1)
    first = second_row = 0
    for _ in range(10_000):
        rows = (
            PageRow("a", "A", (PageItem("h1", 1.0, "h1-a0"), PageItem("c2", 1.0, "c2-a0"))),
            PageRow("b", "B", (PageItem("h2", 1.0, "h2-a0"),)),
        )
        page = Page("u", "s", "r", "t", 0, rows)
        _, click = scan_page(taste, world, page, "tv", SessionMemory.empty(), rng)
        if click is not None and click.item_id == "h1":
            first += 1
        elif click is not None and click.item_id == "h2":
            second_row += 1
    assert first > 3 * second_row > 0


def test_watching_completes_loved_titles_more_often() -> None:
    taste, world = _taste(), _world()
    rng = random.Random(2)
    outcomes = {
        item_id: [
            plan_watch(taste, world.by_id[item_id], SessionMemory.empty(), rng).end_type
            for _ in range(4_000)
        ]
        for item_id in ("h1", "c1")
    }
    completion = {k: v.count("completion") / len(v) for k, v in outcomes.items()}
    assert completion["h1"] > 0.7 and completion["c1"] < 0.2
    resumed = plan_watch(taste, world.by_id["h1"], SessionMemory({}, set(), {"h1": 0.4}), rng)
    assert resumed.start_progress == 0.4 and resumed.end_progress > 0.4


# -- the oracle --------------------------------------------------------------------------------


def test_oracle_expectation_matches_what_the_model_delivers() -> None:
    """The oracle's arithmetic is the response model in expectation (Monte Carlo check)."""
    world = build_world(60, seed=11)
    taste = build_tastes(1, seed=11, id_prefix="o")[0]
    taste = replace(taste, device="web")
    rng = random.Random(3)
    rows = tuple(
        PageRow(
            f"r{r}",
            "R",
            tuple(
                PageItem(it.item_id, 1.0, it.artworks[(r + k) % 3])
                for k, it in enumerate(world.items[r * 6 : r * 6 + 6])
            ),
        )
        for r in range(3)
    )
    page = Page(taste.user_id, "s", "rec", "t", 0, rows)
    memory = SessionMemory({world.items[0].item_id: 1}, set(), {})
    expected = Oracle(world).served(taste, page, "web", memory)
    views, clicks, impressions = 20_000, 0, 0
    for _ in range(views):
        actions, click = scan_page(
            taste, world, page, "web", SessionMemory(dict(memory.passes), set(), {}), rng
        )
        clicks += click is not None
        impressions += sum(1 for a in actions if a.type == "impression")
    assert clicks / views == pytest.approx(expected.clicks, abs=0.01)
    assert impressions / views == pytest.approx(expected.impressions, rel=0.02)


def test_oracle_page_beats_any_served_page_and_puts_loved_titles_first() -> None:
    world = build_world(200, seed=5)
    oracle = Oracle(world)
    tastes = build_tastes(20, seed=5, id_prefix="b")
    rng = random.Random(4)
    for taste in tastes:
        rows = tuple(
            PageRow(
                f"r{r}",
                "R",
                tuple(
                    PageItem(it.item_id, 1.0, rng.choice(it.artworks))
                    for it in rng.sample(world.items, 6)
                ),
            )
            for r in range(4)
        )
        page = Page(taste.user_id, "s", "rec", "t", 0, rows)
        served = oracle.served(taste, page, taste.device, SessionMemory.empty())
        best = oracle.best(taste, page, taste.device, SessionMemory.empty())
        assert best.clicks / best.impressions >= served.clicks / served.impressions
        top = oracle._top_items(taste, SessionMemory.empty(), 3)
        for item_id, artwork in top:
            item = world.by_id[item_id]
            assert set(item.genres) & set(taste.loved_genres)
            assert (
                world.style_of_artwork[artwork] == taste.style_pref
                or taste.style_pref not in item.artwork_styles
            )
    assert expected_outcome(tastes[0], world, [], SessionMemory.empty()).impressions == 0.0


def test_in_process_closed_loop_is_deterministic() -> None:
    def run() -> tuple[list[BehaviourEvent], dict[str, tuple[int, int]]]:
        config = EngineConfig(arms=(("personalized", 0.5), ("holdout", 0.5)))
        engine = Engine(config, build_models(config))
        sim = Simulation(
            SimConfig(users=60, items=150, seed=2, run_id="ip", ramp_minutes=5.0), start_ms=START_MS
        )
        events: list[BehaviourEvent] = []
        run_in_process(sim, engine, sim_minutes=12, on_events=events.extend)
        return events, {a: (t.impressions, t.clicks) for a, t in sim.metrics.arms.items()}

    first, second = run(), run()
    assert len(first[0]) > 500
    assert first == second
    assert set(first[1]) == {"personalized", "holdout"}
