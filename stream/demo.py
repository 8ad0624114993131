"""``insession demo``: embedded broker + a real worker process + the closed-loop simulator, live.

Everything is real: the broker speaks Kafka, the worker is the same ``insession worker`` a
deployment runs, simulated users read the pages it serves over the recommendations topic and
react to them (``stream.simulation``). Each run uses a fresh app id (consumer group) and a fresh
Redis prefix, so the models start empty and the learning is visible; the Redis keys of the
run are deleted at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import redis
from rich.console import Console
from rich.live import Live
from rich.text import Text

from stream.broker import EmbeddedBroker, create_topics
from stream.config import Settings
from stream.simulation.kafka_loop import ClosedLoop, read_worker_metrics
from stream.simulation.live_view import FeaturedUser, render_live
from stream.simulation.population import SimConfig, Simulation
from stream.simulation.report import LEGEND, build_summary, render_summary

__all__ = ["DEMO_ARMS", "run_demo"]

#: The demo splits users evenly so both arms are measured equally well in a few minutes
#: (the engine's default is 90/10); ``INSESSION_ARMS`` overrides it.
DEMO_ARMS = "personalized=0.5,holdout=0.5"
_PLAIN_PROGRESS_EVERY_S = 10.0


def run_demo(
    duration_s: float = 180.0,
    users: int = 1_500,
    rate: float = 250.0,
    seed: int = 7,
    items: int = 400,
) -> int:
    """Run the demo; returns 0 when pages flowed, 1 otherwise."""
    console = Console()
    run_id = uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if external:
            bootstrap = external
        else:
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap = broker.bootstrap
            console.print(f"embedded Kafka-protocol broker (Tansu) on {bootstrap}")
        # On someone else's broker, topics of our own: a worker already running there on the
        # default topics would otherwise answer our users too.
        topics = (
            {
                f"{kind}_topic": f"insession-demo-{run_id}.{kind}"
                for kind in ("events", "catalog", "recommendations", "churn", "dead_letter")
            }
            if external
            else {}
        )
        settings = Settings.from_env(
            bootstrap_servers=bootstrap,
            app_id=f"insession-demo-{run_id}",
            redis_prefix=f"insession-demo-{run_id}:",
            **topics,
        )
        create_topics(bootstrap, settings.output_topics())
        stack.callback(_delete_keys, settings)

        log_dir = Path(tempfile.mkdtemp(prefix="insession-demo-"))
        worker_log = log_dir / "worker.log"
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            INSESSION_APP_ID=settings.app_id,
            INSESSION_REDIS_PREFIX=settings.redis_prefix,
            INSESSION_EVENTS_TOPIC=settings.events_topic,
            INSESSION_CATALOG_TOPIC=settings.catalog_topic,
            INSESSION_RECOMMENDATIONS_TOPIC=settings.recommendations_topic,
            INSESSION_CHURN_TOPIC=settings.churn_topic,
            INSESSION_DEAD_LETTER_TOPIC=settings.dead_letter_topic,
            INSESSION_ARMS=os.environ.get("INSESSION_ARMS") or DEMO_ARMS,
        )
        with open(worker_log, "wb") as log_file:
            worker = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        stack.callback(_stop, worker)
        console.print(
            f"worker started (pid {worker.pid}, log {worker_log}); Redis at {settings.redis_url}, "
            f"arms {env['INSESSION_ARMS']}"
        )

        now_ms = time.time_ns() // 1_000_000
        sim = Simulation(
            SimConfig(users=users, items=items, seed=seed, run_id=f"demo{run_id}"),
            start_ms=now_ms - now_ms % 60_000,
        )
        featured = FeaturedUser(sim)
        console.print(Text(LEGEND, style="dim"))
        console.print(
            f"publishing {items} titles; {users} simulated users arrive over the first hour of "
            "simulated time. Ctrl-C ends the demo early (the summary still prints).\n"
        )
        live = (
            stack.enter_context(Live(console=console, auto_refresh=False))
            if console.is_terminal
            else None
        )
        last_plain = [0.0]

        def on_progress(loop: ClosedLoop) -> None:
            if worker.poll() is not None:
                loop.stop_requested.set()
            if live is not None:
                live.update(render_live(loop, featured, duration_s), refresh=True)
            elif loop.stats.wall_s - last_plain[0] >= _PLAIN_PROGRESS_EVERY_S:
                last_plain[0] = loop.stats.wall_s
                rates = ", ".join(
                    f"{name} click rate {totals.click_rate:.1%}"
                    for name, totals in sorted(sim.metrics.arms.items())
                )
                console.print(
                    f"[{loop.stats.wall_s:4.0f} s] {loop.stats.recent_rate:.0f} events/s, "
                    f"{loop.stats.events_sent:,} events; {rates}"
                )

        loop = ClosedLoop(settings, sim, rate=rate, duration_s=duration_s, on_progress=on_progress)
        interrupted = False
        try:
            stats = loop.run()
        except KeyboardInterrupt:  # Ctrl-C also stops the worker (same process group)
            stats, interrupted = loop.stats, True
        if live is not None:
            live.update(render_live(loop, featured, duration_s), refresh=True)
            live.stop()
        if worker.poll() is not None and not interrupted:
            console.print(f"[red]the worker exited with {worker.returncode}; its log:[/]")
            console.print(worker_log.read_text(errors="replace")[-3_000:])
            return 1
        listener = loop.listener
        summary = build_summary(
            sim,
            mode="demo",
            warmup_fraction=0.3,
            options={"users": users, "items": items, "rate": rate, "seed": seed},
            run={
                "wall_s": round(stats.wall_s, 2),
                "events_per_s": round(stats.events_per_s, 1),
                "pages_received": listener.pages if listener else 0,
            },
            latency=listener.latency if listener else None,
            worker=read_worker_metrics(settings),
        )
        console.rule("Summary")
        render_summary(summary, console)
        return 0 if listener is not None and listener.pages else 1


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _delete_keys(settings: Settings) -> None:
    """Remove the run's Redis keys (catalog and model snapshot have no TTL)."""
    try:
        client = redis.Redis.from_url(settings.redis_url, password=settings.redis_password)
        keys = list(client.scan_iter(match=f"{settings.redis_prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    except redis.RedisError:
        pass  # Redis gone: nothing to clean, and the TTLs expire the rest
