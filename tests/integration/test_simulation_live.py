"""The closed loop live: simulated users against a real worker on the embedded broker.

Half the users get the engine's pages and half the popularity holdout; in a short run the
personalized arm must win on click rate by a clear margin, and the worker's own online
per-arm metrics (published to Redis) must agree with the simulator's ground truth.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream.config import Settings
from stream.simulation.kafka_loop import ClosedLoop
from stream.simulation.population import SimConfig, Simulation
from tests.integration.harness import Cluster, Topics, wait_until

#: A world and population where in-process runs give personalized about 1.5x the holdout.
SIM = SimConfig(users=600, items=150, seed=4, run_id="live", ramp_minutes=10.0)
RATE = 350.0
DURATION_S = 40.0


@pytest.fixture
def cluster(bootstrap: str, redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    run = uuid.uuid4().hex[:10]
    topics = Topics(
        *(
            f"sim-{name}-{run}"
            for name in ("events", "catalog", "recommendations", "churn", "dead-letters")
        )
    )
    cluster = Cluster(
        bootstrap,
        redis_url,
        key_prefix,
        topics,
        f"insession-sim-{run}",
        tmp_path,
        extra_env={"INSESSION_ARMS": "personalized=0.5,holdout=0.5"},
    )
    try:
        yield cluster
    finally:
        cluster.stop_all()


def _z_score(clicks_a: int, shown_a: int, clicks_b: int, shown_b: int) -> float:
    """Two-proportion z statistic (a above b is positive)."""
    pooled = (clicks_a + clicks_b) / (shown_a + shown_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / shown_a + 1 / shown_b))
    return (clicks_a / shown_a - clicks_b / shown_b) / spread


def test_personalized_beats_holdout_in_a_short_closed_loop_run(cluster: Cluster) -> None:
    cluster.start_worker()
    settings = Settings.from_env(cluster.env())
    now_ms = time.time_ns() // 1_000_000
    sim = Simulation(SIM, start_ms=now_ms - now_ms % 60_000)
    loop = ClosedLoop(settings, sim, rate=RATE, duration_s=DURATION_S, catalog_wait_s=60.0)
    stats = loop.run()
    assert loop.listener is not None
    assert stats.catalog_ready, f"worker never stored the catalog\n{cluster.worker_logs()}"
    assert stats.stopped_by == "duration", f"{stats}\n{cluster.worker_logs()}"
    assert stats.events_sent > 0.8 * RATE * DURATION_S
    views = sim.counters["page_views"]
    assert stats.stale_page_views < 0.02 * views, "users saw the page served for what they did"

    truth = sim.metrics.arms
    mine, base = truth["personalized"], truth["holdout"]
    assert min(mine.impressions, base.impressions) > 2_000
    z = _z_score(mine.clicks, mine.impressions, base.clicks, base.impressions)
    ratio = mine.click_rate / base.click_rate
    print(  # shown with -s: the margin of this run
        f"personalized {mine.click_rate:.4f} ({mine.impressions}) holdout {base.click_rate:.4f} "
        f"({base.impressions}) ratio {ratio:.2f} z {z:.2f} events {stats.events_sent}"
    )
    assert ratio >= 1.2 and z >= 2.0, (
        f"personalized {mine.click_rate:.4f} vs holdout {base.click_rate:.4f} "
        f"(ratio {ratio:.2f}, z {z:.2f})"
    )

    # The worker's online metrics, published to Redis every few seconds, reach the ground truth.
    key = f"{cluster.key_prefix}metrics:arms"

    def worker_counts() -> dict[str, tuple[int, int]]:
        raw = cluster.redis.get(key)
        arms = orjson.loads(raw)["arms"] if raw else {}
        return {arm: (values["impressions"], values["clicks"]) for arm, values in arms.items()}

    expected = {arm: (t.impressions, t.clicks) for arm, t in truth.items()}
    wait_until(
        lambda: worker_counts() == expected,
        timeout=20,
        describe=lambda: f"worker metrics {worker_counts()} != simulator's {expected}",
    )
