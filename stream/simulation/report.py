"""The simulation's summary: one JSON-ready dict, and the same rendered as rich tables.

Numbers come from the simulator's ground truth (every event it sent, attributed to the arm of
the page it reacted to), next to the oracle's expectation and, when a live worker published
them, the worker's own online metrics (``{prefix}metrics:arms``).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from processors.attribution import ArmMetrics
from processors.experiments import HOLDOUT, PERSONALIZED
from stream.latency import LatencyRecorder
from stream.simulation.population import Simulation

__all__ = [
    "LEGEND",
    "TARGET_CLICK_RATIO",
    "arm_order",
    "build_summary",
    "render_summary",
    "summary_tables",
    "timeline_table",
]

#: The issue's target: personalized click rate at least this many times the holdout's.
TARGET_CLICK_RATIO = 1.5
_MINUTE_MS = 60_000
_MAX_TIMELINE_ROWS = 15

LEGEND = (
    "Simulated users with hidden tastes (a few loved genres, a favourite artwork style, a "
    "habit of reading only the top rows and the first few titles of a row) open the app, look "
    "at the page the worker served them, hover, click, play, pause, finish or give up, and "
    "leave when bored. Each user is in one experiment arm: 'personalized' gets the engine's "
    "in-session page, 'holdout' the same popularity page as everybody. Click rate = clicks per "
    "title shown (impression); play rate = plays per title shown; completion = completions per "
    "play; 'sessions without a play' is the share of visits that ended without watching "
    "anything (early in a run mostly the short, unhappy visits have ended, so it starts high). "
    "The oracle column is what a page built from the hidden tastes would get in the same "
    "layout: the ceiling. The first part of the run is warm-up (the models start empty)."
)


def arm_order(names: list[str] | set[str]) -> list[str]:
    """Personalized first, holdout second, other arms after in name order."""
    rank = {PERSONALIZED: 0, HOLDOUT: 1}
    return sorted(names, key=lambda name: (rank.get(name, 2), name))


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _rate(clicks: float, impressions: float) -> float:
    return round(clicks / impressions, 6) if impressions else 0.0


def build_summary(
    sim: Simulation,
    *,
    mode: str,
    warmup_fraction: float,
    options: dict[str, Any],
    run: dict[str, Any] | None = None,
    latency: LatencyRecorder | None = None,
    worker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the run measured, JSON-ready (``insession simulate --json`` prints it)."""
    sim_minutes = (sim.clock_ms - sim.start_ms) / _MINUTE_MS
    warmup_minutes = int(sim_minutes * warmup_fraction)
    warm_start = sim.start_ms + warmup_minutes * _MINUTE_MS
    metrics = sim.metrics
    after = metrics.window(warm_start)
    users_in_arm: dict[str, int] = {}
    for user in sim.users.values():
        if user.arm is not None:
            users_in_arm[user.arm] = users_in_arm.get(user.arm, 0) + 1
    expected_after: dict[str, list[float]] = {}
    for minute, arms in sim.expected_by_minute.items():
        if minute >= warmup_minutes:
            for arm, sums in arms.items():
                row = expected_after.setdefault(arm, [0.0, 0.0, 0.0, 0.0])
                for index, value in enumerate(sums):
                    row[index] += value

    arms_out: dict[str, Any] = {}
    for name in arm_order(set(metrics.arms) | set(sim.expected)):
        totals = metrics.arm(name)
        window = after.get(name, {})
        expected = sim.expected.get(name, [0.0, 0.0, 0.0, 0.0])
        expected_warm = expected_after.get(name, [0.0, 0.0, 0.0, 0.0])
        impressions = window.get("impressions", 0)
        sessions = window.get("sessions", 0)
        arms_out[name] = {
            "users": users_in_arm.get(name, 0),
            **totals.to_dict(),
            "expected_click_rate": _rate(expected[0], expected[1]),
            "oracle_click_rate": _rate(expected[2], expected[3]),
            "after_warmup": {
                "impressions": impressions,
                "clicks": window.get("clicks", 0),
                "plays": window.get("plays", 0),
                "click_rate": _rate(window.get("clicks", 0), impressions),
                "play_rate": _rate(window.get("plays", 0), impressions),
                "sessions": sessions,
                "sessions_without_play": window.get("sessions_without_play", 0),
                "no_play_share": _rate(window.get("sessions_without_play", 0), sessions),
                "expected_click_rate": _rate(expected_warm[0], expected_warm[1]),
                "oracle_click_rate": _rate(expected_warm[2], expected_warm[3]),
            },
        }

    comparison: dict[str, Any] = {}
    if PERSONALIZED in arms_out and HOLDOUT in arms_out:
        mine, base = arms_out[PERSONALIZED]["after_warmup"], arms_out[HOLDOUT]["after_warmup"]
        ratio = _ratio(mine["click_rate"], base["click_rate"])
        comparison = {
            "click_rate_ratio_after_warmup": ratio,
            "click_rate_ratio_overall": _ratio(
                arms_out[PERSONALIZED]["click_rate"], arms_out[HOLDOUT]["click_rate"]
            ),
            "play_rate_ratio_after_warmup": _ratio(mine["play_rate"], base["play_rate"]),
            "no_play_share_after_warmup": {
                PERSONALIZED: mine["no_play_share"],
                HOLDOUT: base["no_play_share"],
            },
            "targets": {
                "click_rate_ratio_at_least_1_5": ratio is not None and ratio >= TARGET_CLICK_RATIO,
                "no_play_share_lower": bool(mine["sessions"] and base["sessions"])
                and mine["no_play_share"] < base["no_play_share"],
            },
        }

    summary: dict[str, Any] = {
        "mode": mode,
        "options": options,
        "run": {
            "events": sim.counters["events"],
            "page_views": sim.counters["page_views"],
            "page_views_without_page": sim.counters["views_without_page"],
            "sessions_started": sim.counters["sessions_started"],
            "sessions_ended": sim.counters["sessions_ended"],
            "users_gone": sim.counters["users_gone"],
            "simulated_minutes": round(sim_minutes, 2),
            "warmup_minutes": warmup_minutes,
            **(run or {}),
        },
        "arms": arms_out,
        "comparison": comparison,
        "timeline": _timeline(sim, metrics),
    }
    if latency is not None and latency.count:
        summary["run"]["event_to_page_ms"] = {
            key: round(value, 2) for key, value in latency.summary_ms().items()
        }
    if worker is not None:
        summary["worker"] = {"arms": worker.get("arms", {})}
    return summary


def _timeline(sim: Simulation, metrics: ArmMetrics) -> list[dict[str, Any]]:
    rows = []
    for start, arms in metrics.timeline():
        minute = (start - sim.start_ms) // _MINUTE_MS
        expected = sim.expected_by_minute.get(minute, {})
        rows.append(
            {
                "minute": minute,
                "arms": {
                    arm: {
                        "impressions": counts[0],
                        "clicks": counts[1],
                        "click_rate": _rate(counts[1], counts[0]),
                        "oracle_click_rate": _rate(*expected.get(arm, [0, 0, 0, 0])[2:4]),
                    }
                    for arm, counts in arms.items()
                },
            }
        )
    return rows


# -- rendering ---------------------------------------------------------------------------


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def summary_tables(summary: dict[str, Any]) -> Group:
    """The arms table, the click-rate-over-time table and the verdict, as one renderable."""
    arms = summary["arms"]
    names = list(arms)
    table = Table(title="Outcomes per arm (simulator's ground truth)", title_justify="left")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("oracle", justify="right", style="dim")
    has_pair = PERSONALIZED in arms and HOLDOUT in arms
    if has_pair:
        table.add_column("personalized ÷ holdout", justify="right")

    def row(
        label: str, key: str, fmt: Any, *, after: bool = False, oracle: str = "", ratio: bool = True
    ) -> None:
        values = [(arms[n]["after_warmup"] if after else arms[n]).get(key) for n in names]
        cells = [fmt(v) for v in values]
        extra = [""] if has_pair else []
        if has_pair and ratio:
            p = (arms[PERSONALIZED]["after_warmup"] if after else arms[PERSONALIZED]).get(key)
            h = (arms[HOLDOUT]["after_warmup"] if after else arms[HOLDOUT]).get(key)
            extra = [_times(_ratio(p, h)) if isinstance(p, int | float) and h else "-"]
        table.add_row(label, *cells, oracle, *extra)

    oracle_all = max((arms[n]["oracle_click_rate"] for n in names), default=0.0)
    oracle_warm = max((arms[n]["after_warmup"]["oracle_click_rate"] for n in names), default=0.0)
    row("users", "users", str, ratio=False)
    row("titles shown (impressions)", "impressions", str, ratio=False)
    row("click rate, whole run", "click_rate", _pct, oracle=_pct(oracle_all))
    row("click rate after warm-up", "click_rate", _pct, after=True, oracle=_pct(oracle_warm))
    row("  expected from the pages served", "expected_click_rate", _pct, after=True)
    row("play rate (plays per title shown)", "play_rate", lambda v: _pct(v, 2))
    row("completion rate (per play)", "completion_rate", _pct)
    row("sessions ended", "sessions", str, ratio=False)
    row("sessions without a play, after warm-up", "no_play_share", _pct, after=True)
    row("session length (events)", "mean_session_events", lambda v: f"{v:.1f}")
    row("session length (minutes)", "mean_session_minutes", lambda v: f"{v:.1f}")

    parts: list[Any] = [table, timeline_table(summary)]
    comparison = summary.get("comparison") or {}
    if comparison:
        targets = comparison["targets"]
        no_play = comparison["no_play_share_after_warmup"]
        verdict = Text()
        verdict.append("After warm-up: personalized click rate is ")
        verdict.append(
            _times(comparison["click_rate_ratio_after_warmup"]),
            style="bold green" if targets["click_rate_ratio_at_least_1_5"] else "bold red",
        )
        verdict.append(
            f" the holdout's (target >= {TARGET_CLICK_RATIO}x); sessions without a play: "
        )
        verdict.append(
            f"{_pct(no_play[PERSONALIZED])} vs {_pct(no_play[HOLDOUT])}",
            style="bold green" if targets["no_play_share_lower"] else "bold red",
        )
        verdict.append(" (target: lower).")
        parts.append(verdict)
    worker = summary.get("worker", {}).get("arms")
    if worker:
        parts.append(
            Text(
                "Worker's own online metrics (Redis metrics:arms, last publish): "
                + ", ".join(
                    f"{name} click rate {_pct(worker[name]['click_rate'])}"
                    for name in arm_order(set(worker))
                ),
                style="dim",
            )
        )
    return Group(*parts)


def timeline_table(summary: dict[str, Any], max_rows: int = _MAX_TIMELINE_ROWS) -> Table:
    """Click rate per arm over simulated time, in at most ``max_rows`` equal bins."""
    timeline = [entry for entry in summary["timeline"] if entry["minute"] >= 0]
    names = list(summary["arms"])
    last = max((entry["minute"] for entry in timeline), default=0)
    width = max(1, -(-(last + 1) // max_rows))
    table = Table(
        title=f"Click rate per {width} simulated minute{'s' if width > 1 else ''} "
        "(learning over time)",
        title_justify="left",
    )
    table.add_column("sim minutes", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    has_pair = PERSONALIZED in names and HOLDOUT in names
    if has_pair:
        table.add_column("ratio", justify="right")
    table.add_column("oracle", justify="right", style="dim")
    bins: dict[int, dict[str, list[float]]] = {}
    for entry in timeline:
        slot = bins.setdefault(entry["minute"] // width, {})
        for arm, values in entry["arms"].items():
            sums = slot.setdefault(arm, [0.0, 0.0, 0.0])
            sums[0] += values["impressions"]
            sums[1] += values["clicks"]
            sums[2] += values["oracle_click_rate"] * values["impressions"]
    warmup = summary["run"].get("warmup_minutes", 0)
    for index in sorted(bins):
        slot = bins[index]
        rates = {arm: _rate(s[1], s[0]) if s[0] else None for arm, s in slot.items()}
        cells = [f"{_pct(rates.get(n))} ({int(slot[n][0]) if n in slot else 0})" for n in names]
        if has_pair:
            p, h = rates.get(PERSONALIZED), rates.get(HOLDOUT)
            cells.append(_times(_ratio(p, h)) if p is not None and h else "-")
        shown = sum(s[0] for s in slot.values())
        oracle = sum(s[2] for s in slot.values()) / shown if shown else None
        start = index * width
        label = f"{start}-{start + width - 1}" if width > 1 else str(start)
        style = "dim" if start < warmup else None
        table.add_row(label, *cells, _pct(oracle), style=style)
    table.caption = "(impressions in brackets; dim rows are warm-up)"
    return table


def render_summary(summary: dict[str, Any], console: Console) -> None:
    """Print the run line, the tables and the verdict."""
    run = summary["run"]
    line = (
        f"{summary['mode']} run: {run['events']:,} events, {run['page_views']:,} page views, "
        f"{run['sessions_started']:,} sessions, {run['simulated_minutes']:.0f} simulated minutes"
    )
    if "wall_s" in run:
        line += f" in {run['wall_s']:.0f} s ({run.get('events_per_s', 0):.0f} events/s)"
    if "event_to_page_ms" in run:
        latency = run["event_to_page_ms"]
        line += f"; event → page p50 {latency['p50_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms"
    console.print(line)
    console.print(summary_tables(summary))
