"""``insession simulate`` end to end: build the simulation, run it live or in-process, report.

Live mode needs a running broker and worker (``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL`` and
the ``INSESSION_*`` settings the worker uses); in-process mode runs the engine in this process
(no Kafka, fully deterministic), which is handy for tuning.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from processors.experiments import HOLDOUT, PERSONALIZED
from stream.simulation.population import SimConfig, Simulation

__all__ = ["SimulateOptions", "live_status", "run_simulate"]

#: In-process runs start at a fixed simulated time, so the same seed gives the same run.
IN_PROCESS_START_MS = 1_790_000_040_000 - 1_790_000_040_000 % 60_000


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    """The command line's choices."""

    users: int = 2_000
    items: int = 400
    rate: float | None = 300.0
    duration_s: float = 180.0
    sim_minutes: float | None = None
    seed: int = 7
    warmup_fraction: float = 0.3
    json: bool = False
    bootstrap: str | None = None
    in_process: bool = False
    arms: str | None = None
    run_id: str | None = None
    page_wait_s: float = 2.0


def run_simulate(options: SimulateOptions) -> int:
    """Run and print; returns 0 when the run produced outcomes for at least one arm."""
    console = Console(stderr=True)
    # In-process runs are reproducible (fixed user ids, so fixed arms); live runs need fresh
    # user ids, or the worker would resume the state of an earlier run's users.
    run_id = options.run_id or ("sim" if options.in_process else f"sim{secrets.token_hex(3)}")
    config = SimConfig(users=options.users, items=options.items, seed=options.seed, run_id=run_id)
    option_values = {
        "users": options.users,
        "items": options.items,
        "rate": options.rate,
        "duration_s": options.duration_s,
        "sim_minutes": options.sim_minutes,
        "seed": options.seed,
        "warmup_fraction": options.warmup_fraction,
        "run_id": run_id,
    }
    if options.in_process:
        summary = _run_in_process(options, config, option_values, console)
    else:
        summary = _run_live(options, config, option_values, console)
    if options.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif summary["arms"]:
        from stream.simulation.report import render_summary

        render_summary(summary, Console())
    if not summary["arms"]:
        console.print(
            f"[red]no page views: {summary['run'].get('stopped_by') or 'nothing happened'}.[/] "
            "Is a worker running against the same broker, topics and Redis prefix "
            "(KAFKA_BOOTSTRAP_SERVERS, INSESSION_* settings)?"
        )
        return 1
    return 0


def live_status(sim: Simulation, extra: str = "") -> str:
    """One line: events, simulated time and each arm's click rate so far."""
    rates = " · ".join(
        f"{name} click rate {totals.click_rate:.1%}"
        for name, totals in sorted(sim.metrics.arms.items(), key=lambda kv: kv[0] != PERSONALIZED)
        if name in (PERSONALIZED, HOLDOUT) or totals.impressions
    )
    minutes = (sim.clock_ms - sim.start_ms) / 60_000
    return f"{sim.counters['events']:,} events · {minutes:.0f} sim min · {extra}{rates}"


def _run_live(
    options: SimulateOptions,
    config: SimConfig,
    option_values: dict[str, Any],
    console: Console,
) -> dict[str, Any]:
    from stream.config import Settings
    from stream.simulation.kafka_loop import ClosedLoop, read_worker_metrics
    from stream.simulation.report import build_summary

    overrides: dict[str, Any] = {}
    if options.bootstrap:
        overrides["bootstrap_servers"] = options.bootstrap
    settings = Settings.from_env(**overrides)
    config = SimConfig(
        users=config.users,
        items=config.items,
        seed=config.seed,
        run_id=config.run_id,
        trigger_types=settings.engine.page_trigger_types,
    )
    now_ms = time.time_ns() // 1_000_000
    sim = Simulation(config, start_ms=now_ms - now_ms % 60_000)
    with Progress(
        SpinnerColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"publishing {config.items} titles, waiting for the worker")

        def on_progress(loop: ClosedLoop) -> None:
            listener = loop.listener
            p50 = listener.latency.percentile_ms(50) if listener and listener.latency.count else 0
            extra = f"{loop.stats.recent_rate:.0f} ev/s · page p50 {p50:.0f} ms · "
            progress.update(task, description=live_status(sim, extra))

        loop = ClosedLoop(
            settings,
            sim,
            rate=options.rate,
            duration_s=options.duration_s,
            sim_minutes=options.sim_minutes,
            page_wait_s=options.page_wait_s,
            on_progress=on_progress,
        )
        try:
            stats = loop.run()
        except KeyboardInterrupt:  # Ctrl-C: report what ran so far
            stats = loop.stats
            stats.stopped_by = "interrupted"
    listener = loop.listener
    assert listener is not None
    run = {
        "wall_s": round(stats.wall_s, 2),
        "events_per_s": round(stats.events_per_s, 1),
        "pages_received": listener.pages,
        "page_waits": stats.page_waits,
        "page_wait_s": round(stats.page_wait_s, 2),
        "stale_page_views": stats.stale_page_views,
        "backpressure_waits": stats.backpressure_waits,
        "lost_pages": stats.lost_pages,
        "catalog_ready": stats.catalog_ready,
        "stopped_by": stats.stopped_by,
        "bootstrap": settings.bootstrap_servers,
        "redis_prefix": settings.redis_prefix,
    }
    return build_summary(
        sim,
        mode="live",
        warmup_fraction=options.warmup_fraction,
        options=option_values,
        run=run,
        latency=listener.latency,
        worker=read_worker_metrics(settings),
    )


def _run_in_process(
    options: SimulateOptions,
    config: SimConfig,
    option_values: dict[str, Any],
    console: Console,
) -> dict[str, Any]:
    from online_models.factory import build_models
    from processors.engine import Engine
    from stream.config import Settings, parse_arms
    from stream.simulation.inprocess import run_in_process
    from stream.simulation.report import build_summary

    # The same INSESSION_ENGINE_* settings as a live worker, so in-process A/B runs match it.
    engine_config = Settings.from_env().engine
    if options.arms:
        engine_config = dataclasses.replace(engine_config, arms=parse_arms(options.arms))
    engine = Engine(engine_config, build_models(engine_config))
    sim = Simulation(config, start_ms=IN_PROCESS_START_MS)
    sim_minutes = options.sim_minutes if options.sim_minutes is not None else 60.0
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("running in-process")
        last = [0.0]

        def on_events(events: list[Any]) -> None:
            now = time.perf_counter()
            if now - last[0] > 0.5:
                last[0] = now
                progress.update(task, description=live_status(sim))

        result = run_in_process(sim, engine, sim_minutes=sim_minutes, on_events=on_events)
    wall = time.perf_counter() - started
    option_values = option_values | {
        "arms": options.arms or "engine default",
        "sim_minutes": sim_minutes,
    }
    return build_summary(
        sim,
        mode="in-process",
        warmup_fraction=options.warmup_fraction,
        options=option_values,
        run={
            "wall_s": round(wall, 2),
            "events_per_s": round(result.events / wall, 1) if wall else 0.0,
            "pages_received": result.pages,
        },
        worker={"arms": engine.arm_metrics.to_dict()["arms"]},
    )
