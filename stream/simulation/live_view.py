"""The demo's live terminal view: traffic, per-arm outcomes next to the oracle, one user's page.

Written for someone who has never seen the code: every number has a label saying what it is,
and a legend explains the experiment in one paragraph.
"""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from processors.experiments import HOLDOUT, PERSONALIZED
from stream.simulation.kafka_loop import ClosedLoop
from stream.simulation.population import Simulation
from stream.simulation.report import arm_order

__all__ = ["FeaturedUser", "render_live"]

_SPARK = "▁▂▃▄▅▆▇█"
_MINUTE_MS = 60_000
_RECENT_MINUTES = 5
_PAGE_ROWS_SHOWN = 4
_ITEMS_SHOWN = 5


class FeaturedUser:
    """Picks one personalized user in a session to follow, and switches when they leave."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.user_id: str | None = None

    def current(self) -> str | None:
        """The followed user, re-chosen when the current one is not in a session anymore."""
        sim = self.sim
        if self.user_id is not None and sim.users[self.user_id].phase in ("browse", "watch_end"):
            return self.user_id
        for user_id, user in sim.users.items():
            if user.arm == PERSONALIZED and user.phase == "browse" and user.views <= 1:
                self.user_id = user_id
                sim.follow(user_id)
                return user_id
        return self.user_id


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _spark(values: list[float | None], top: float) -> str:
    if top <= 0:
        return ""
    chars = []
    for value in values:
        if value is None:
            chars.append(" ")
        else:
            chars.append(_SPARK[min(int(value / top * (len(_SPARK) - 1) + 0.5), len(_SPARK) - 1)])
    return "".join(chars)


def _traffic(loop: ClosedLoop, duration_s: float) -> Table:
    sim, stats, listener = loop.sim, loop.stats, loop.listener
    elapsed = time.perf_counter() - loop.started if loop.started else 0.0
    sim_minutes = (sim.clock_ms - sim.start_ms) / _MINUTE_MS
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "time",
        f"{elapsed:5.0f} s of {duration_s:.0f} s  ·  simulated clock +{sim_minutes:.0f} min "
        "(users live faster than real time)",
    )
    table.add_row(
        "events sent",
        f"{stats.recent_rate:5.0f} events/s  ·  {stats.events_sent:,} in total "
        "(impressions, hovers, clicks, plays, ...)",
    )
    if listener is not None:
        latency = listener.latency
        if latency.count:
            summary = latency.summary_ms()
            timing = (
                f"p50 {summary['p50_ms']:.0f} ms · p90 {summary['p90_ms']:.0f} ms · "
                f"p99 {summary['p99_ms']:.0f} ms"
            )
        else:
            timing = "waiting for the first page"
        table.add_row("event → new page", f"{timing}  ({listener.pages:,} pages received)")
    active = sum(1 for u in sim.users.values() if u.phase in ("browse", "watch_end"))
    table.add_row(
        "users",
        f"{active} in a session now · {sim.counters['sessions_started']:,} sessions started · "
        f"{sim.counters['users_gone']} left for good",
    )
    return table


def _arms(sim: Simulation) -> Table:
    metrics = sim.metrics
    names = arm_order(set(metrics.arms))
    recent_start = sim.clock_ms - _RECENT_MINUTES * _MINUTE_MS
    recent_start -= recent_start % _MINUTE_MS
    recent = metrics.window(recent_start)
    table = Table(
        title="What each arm achieves (so far)", title_justify="left", box=box.SIMPLE_HEAD
    )
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("oracle", justify="right", style="cyan")
    pair = PERSONALIZED in names and HOLDOUT in names
    if pair:
        table.add_column("pers. ÷ holdout", justify="right", style="bold")

    def ratio(values: dict[str, float | None]) -> list[str]:
        if not pair:
            return []
        p, h = values.get(PERSONALIZED), values.get(HOLDOUT)
        return [f"{p / h:.2f}x" if p is not None and h else "-"]

    def add(label: str, values: dict[str, float | None], oracle: str = "", fmt: Any = _pct) -> None:
        table.add_row(label, *[fmt(values.get(n)) for n in names], oracle, *ratio(values))

    arms = {name: metrics.arm(name) for name in names}
    oracle_sums = [0.0, 0.0]
    for sums in sim.expected.values():
        oracle_sums[0] += sums[2]
        oracle_sums[1] += sums[3]
    oracle = oracle_sums[0] / oracle_sums[1] if oracle_sums[1] else None
    add(
        "click rate (clicks per title shown)",
        {n: t.click_rate for n, t in arms.items()},
        _pct(oracle),
    )
    add(
        f"  … in the last {_RECENT_MINUTES} simulated minutes",
        {
            n: (r["clicks"] / r["impressions"] if r["impressions"] else None)
            for n, r in recent.items()
        },
    )
    add("play rate (plays per title shown)", {n: t.play_rate for n, t in arms.items()})
    add(
        "sessions ending without a play",
        {n: (t.no_play_share if t.sessions else None) for n, t in arms.items()},
    )
    add(
        "session length (events)",
        {n: (t.mean_session_events if t.sessions else None) for n, t in arms.items()},
        fmt=lambda v: "-" if v is None else f"{v:.0f}",
    )
    table.add_row(
        "users · titles shown",
        *[
            f"{sum(1 for u in sim.users.values() if u.arm == n)} · {arms[n].impressions:,}"
            for n in names
        ],
        "",
        *([""] if pair else []),
    )
    return table


def _learning(sim: Simulation) -> Text:
    """Click rate per arm in 2-minute buckets of simulated time, as sparklines."""
    buckets: dict[int, dict[str, list[int]]] = {}
    for start, arms in sim.metrics.timeline():
        index = (start - sim.start_ms) // (2 * _MINUTE_MS)
        if index < 0:
            continue
        for arm, counts in arms.items():
            sums = buckets.setdefault(index, {}).setdefault(arm, [0, 0])
            sums[0] += counts[0]
            sums[1] += counts[1]
    text = Text(
        "Learning over time (click rate per 2 simulated minutes, oldest left)\n", style="bold"
    )
    if not buckets:
        return text
    last = max(buckets)
    names = arm_order({arm for slot in buckets.values() for arm in slot})
    series = {
        name: [
            (s[1] / s[0] if (s := buckets.get(i, {}).get(name)) and s[0] >= 30 else None)
            for i in range(max(0, last - 39), last + 1)
        ]
        for name in names
    }
    top = max((v for values in series.values() for v in values if v is not None), default=0.0)
    for name in names:
        values = series[name]
        shown = [v for v in values if v is not None]
        first, latest = (shown[0], shown[-1]) if shown else (None, None)
        style = "green" if name == PERSONALIZED else "yellow" if name == HOLDOUT else ""
        text.append(f"  {name:>13} ", style="bold")
        text.append(_spark(values, top), style=style)
        text.append(f"  first {_pct(first)} → latest {_pct(latest)}\n")
    return text


def _featured(sim: Simulation, featured: FeaturedUser, loop: ClosedLoop) -> Panel:
    user_id = featured.current()
    if user_id is None or loop.listener is None:
        return Panel("waiting for a personalized user to open the app…", title="Follow one user")
    view = sim.view(user_id)
    user = sim.users[user_id]
    loved = set(view.loved_genres)
    header = Text()
    header.append(f"{user_id}", style="bold")
    header.append(f" · arm: {view.arm} · {view.device} · session {view.session_no}\n")
    header.append("secretly loves: ")
    header.append(", ".join(view.loved_genres), style="bold green")
    header.append(" · drawn to artwork style: ")
    header.append(view.style_pref, style="bold magenta")
    header.append(" (hidden from the engine)\n")
    page = loop.listener.latest.get(user_id)
    body = Table.grid(padding=(0, 1))
    body.add_column(style="bold", width=26, no_wrap=True)
    body.add_column()
    if page is None:
        body.add_row("page", "(no page yet)")
    else:
        for row in page.rows[:_PAGE_ROWS_SHOWN]:
            cells = Text()
            for page_item in row.items[:_ITEMS_SHOWN]:
                item = sim.world.by_id.get(page_item.item_id)
                if item is None:
                    cells.append("? ")
                    continue
                liked = any(genre in loved for genre in item.genres)
                style_match = (
                    sim.world.style_of_artwork.get(page_item.artwork_id or "") == view.style_pref
                )
                cells.append(
                    item.genres[0][:8] + ("★" if liked else ""),
                    style="bold green" if liked else "dim",
                )
                cells.append("◆" if style_match else "", style="magenta")
                cells.append("  ")
            body.add_row(row.title[:26], cells)
    log = sim.log.get(user_id) or []
    actions = Text("what they did, latest last:\n", style="bold")
    for line in list(log)[-4:]:
        actions.append(f"  · {line}\n")
    if user.phase == "watch_end":
        actions.append("  (watching now)\n", style="dim")
    caption = Text(
        "current page, top rows: ★ a genre they love · ◆ artwork in their favourite style",
        style="dim",
    )
    return Panel(Group(header, body, caption, actions), title="Follow one user", title_align="left")


def render_live(loop: ClosedLoop, featured: FeaturedUser, duration_s: float) -> Group:
    """The whole live view."""
    sim = loop.sim
    return Group(
        Panel(
            _traffic(loop, duration_s),
            title="insession demo: broker + worker + simulated users",
            title_align="left",
        ),
        _arms(sim),
        _learning(sim),
        _featured(sim, featured, loop),
    )
