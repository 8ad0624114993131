"""``insession bench``: every measurement of one run, each beside its baseline.

Order: the broker floor (confluent-kafka relay), the Faust floor (forwarding agent), insession
(real worker), each on fresh topics of one broker (Tansu scans every stored batch on a fetch,
so a topic's latency creeps up as it fills), at the same offered rates of the same traffic;
then the engine alone and memory in this process, with the broker idle.
"""

from __future__ import annotations

import contextlib
import platform
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from schemas.codec import encode_catalog_item
from stream.bench.engine_alone import run_engine_comparison
from stream.bench.kafka_run import COALESCED_FIELD, OutputReceiver, PhaseRunner
from stream.bench.memory import measure_memory
from stream.bench.stats import Drain, Schedule, histogram_difference, summary_ms
from stream.bench.systems import MetricsWatcher, SystemProcess, start_process
from stream.bench.traffic import EventTemplate, Traffic
from stream.broker import EmbeddedBroker, create_topics
from stream.demo_traffic import demo_catalog

__all__ = ["BenchOptions", "machine_info", "run_bench"]

Progress = Callable[[str], None]
#: A phase whose median latency passes this is queueing, not serving: higher rates are skipped.
_SATURATED_P50_MS = 1_000.0
#: A paced phase "keeps up" when every answer arrived and its p99 stayed under this: a worker
#: falling behind shows a p99 that grows with the phase's length (seconds here), one that
#: keeps up stays within a few fetch waits of the floor.
_KEPT_UP_P99_MS = 500.0


@dataclass(frozen=True)
class BenchOptions:
    """What to run and for how long (``quick`` is the smoke-test size)."""

    bootstrap: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    rates: tuple[float, ...] = (200.0, 1_000.0, 3_000.0)
    warmup_s: float = 3.0
    duration_s: float = 10.0
    drain_events: int = 30_000
    #: Shares of the drain rate tried on a paced stream, highest first, until one keeps up
    #: (`_kept_up`): a backlog drains faster than a paced stream is served (fuller batches
    #: coalesce more pages), so the drain rate alone overstates what a worker sustains. Each
    #: share runs on fresh topics with a fresh worker (restoring the states and models the
    #: last one left in Redis): on the embedded Tansu the partitions the drain filled fetch
    #: slower (BROKER-NOTES.md), which measured the broker, not the worker.
    sustained_shares: tuple[float, ...] = (0.9, 0.75, 0.6, 0.45)
    idle_timeout_s: float = 180.0
    drain_s: float = 15.0
    users: int = 2_000
    partitions: int = 8
    fetch_wait_ms: int = 50
    linger_ms: int = 5
    engine_warmup_events: int = 20_000
    engine_events: int = 40_000
    #: Batch sizes of the batched engine runs (beside the one-page-per-trigger baseline).
    engine_batch_sizes: tuple[int, ...] = (50, 500)
    memory_populations: tuple[int, ...] = (10_000, 100_000)
    memory_sample_users: int = 2_000
    memory_sample_events: int = 30_000
    skip: frozenset[str] = frozenset()
    log_dir: Path | None = None

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """Seconds instead of minutes: every measurement, tiny samples (a smoke run)."""
        values: dict[str, Any] = {
            "rates": (200.0, 1_000.0),
            "warmup_s": 0.5,
            "duration_s": 1.5,
            "drain_events": 1_500,
            "users": 300,
            "engine_warmup_events": 1_500,
            "engine_events": 2_000,
            "memory_populations": (1_000, 10_000),
            "memory_sample_users": 100,
            "memory_sample_events": 1_500,
            "idle_timeout_s": 60.0,
            "drain_s": 3.0,
        }
        values.update(overrides)
        return cls(**values)


def machine_info() -> dict[str, Any]:
    """Cores and CPU model, as the report prints them."""
    import os

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def run_bench(options: BenchOptions, progress: Progress = lambda line: None) -> dict[str, Any]:
    """Run every measurement not in ``options.skip``; returns one JSON-ready object."""
    log_dir = options.log_dir or Path(f"/tmp/insession-bench-{uuid.uuid4().hex[:8]}")
    log_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "options": {
            "rates": list(options.rates),
            "warmup_s": options.warmup_s,
            "measured_s": options.duration_s,
            "drain_events": options.drain_events,
            "fetch_wait_ms": options.fetch_wait_ms,
            "producer_linger_ms": options.linger_ms,
            "partitions": options.partitions,
            "users": options.users,
        },
        "log_dir": str(log_dir),
    }
    started = time.monotonic()
    kafka_parts = {"broker", "faust-agent", "faust", "insession"} - options.skip
    if kafka_parts:
        with _broker(options, progress) as (bootstrap, embedded):
            result["broker"] = {"bootstrap": bootstrap, "embedded": embedded}
            run_id = f"b{uuid.uuid4().hex[:6]}"
            catalog = demo_catalog()
            traffic = Traffic(catalog, users=options.users, run_id=run_id)
            per_rate = sum(
                round(rate * (options.warmup_s + options.duration_s)) for rate in options.rates
            )
            total = per_rate + options.drain_events + 3 * max(options.rates) * options.duration_s
            templates = traffic.templates(int(total) + 1000)
            try:
                if "broker" in kafka_parts:
                    result["broker_floor"] = _measure_relay(
                        options, bootstrap, traffic, templates, run_id, log_dir, progress
                    )
                if "faust-agent" in kafka_parts:
                    result["faust_agent_floor"] = _measure_faust(
                        options,
                        bootstrap,
                        traffic,
                        templates,
                        run_id,
                        log_dir,
                        progress,
                        agent=True,
                    )
                if "faust" in kafka_parts:
                    result["faust_floor"] = _measure_faust(
                        options, bootstrap, traffic, templates, run_id, log_dir, progress
                    )
                if "insession" in kafka_parts:
                    result["insession"] = _measure_worker(
                        options, bootstrap, traffic, templates, run_id, log_dir, progress, catalog
                    )
            finally:
                _delete_topics(bootstrap, f"bench-{run_id}")
    if "engine" not in options.skip:
        progress("engine alone: closed loop in this process, a page per trigger, then batched ...")
        engine = run_engine_comparison(
            warmup_events=options.engine_warmup_events,
            events=options.engine_events,
            batch_sizes=options.engine_batch_sizes,
        )
        result["engine_alone"] = engine
        progress(
            f"  a page per trigger: {engine['events_per_cpu_s']:,.0f} events per CPU-second "
            f"({engine['events_per_s']:,.0f}/s of wall time)"
        )
        for row in engine["batched"]:
            progress(
                f"  {row['mode']}, pages coalesced: {row['events_per_cpu_s']:,.0f} events per "
                f"CPU-second (x{row.get('events_per_cpu_s_over_event_at_a_time')}), "
                f"{row['pages']:,} pages for {row['triggers']:,} triggers"
            )
    if "memory" not in options.skip:
        progress("memory per active session ...")
        result["memory"] = measure_memory(
            options.memory_populations,
            sample_users=options.memory_sample_users,
            sample_events=options.memory_sample_events,
        )
    result["ratios"] = _ratios(result)
    result["machine"]["load_avg_1m_end"] = machine_info()["load_avg_1m"]
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


# -- the broker ----------------------------------------------------------------------------


@contextlib.contextmanager
def _broker(options: BenchOptions, progress: Progress) -> Iterator[tuple[str, bool]]:
    if options.bootstrap:
        yield options.bootstrap, False
        return
    progress("starting the embedded broker (Tansu, memory storage) ...")
    with EmbeddedBroker() as broker:
        yield broker.bootstrap, True


def _producer(bootstrap: str, options: BenchOptions) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": options.linger_ms,
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def _phases(
    name: str,
    runner: PhaseRunner,
    options: BenchOptions,
    progress: Progress,
    on_phase: Callable[[float, dict[str, Any], int, int], None] | None = None,
) -> dict[str, Any]:
    """Readiness, one phase per offered rate, then the drain (maximum throughput)."""
    ready_s = runner.wait_ready()
    progress(f"  {name} ready after {ready_s:.1f} s")
    out: dict[str, Any] = {"ready_s": round(ready_s, 1), "offered": [], "saturated_at": None}
    for rate in options.rates:
        if out["saturated_at"] is not None:  # a higher rate only measures a longer queue
            out["offered"].append({"offered_rate": rate, "skipped": "saturated at a lower rate"})
            continue
        schedule = Schedule(rate=rate, duration_s=options.duration_s, warmup_s=options.warmup_s)
        begin_ms = time.time_ns() // 1_000_000
        summary = runner.offered(schedule)
        end_ms = time.time_ns() // 1_000_000
        if on_phase is not None:
            on_phase(rate, summary, begin_ms + int(options.warmup_s * 1000), end_ms)
        out["offered"].append(summary)
        latency = summary["latency"]
        produced = summary.get("in_worker_page_produced")
        in_worker = f"; in-worker page produced p99 {produced['p99_ms']:.1f} ms" if produced else ""
        progress(
            f"  {name} @ {rate:,.0f}/s: p50 {latency['p50_ms']:.1f} ms, "
            f"p99 {latency['p99_ms']:.1f} ms, p99.9 {latency['p999_ms']:.1f} ms "
            f"({summary['answers']}/{summary['expected_answers']}){in_worker}"
        )
        if summary["missing"] or latency["p50_ms"] > _SATURATED_P50_MS:
            out["saturated_at"] = rate
    # The drain times a backlog from empty: whatever a saturated phase left must go first.
    out["idle_before_drain"] = runner.wait_idle(options.idle_timeout_s)
    # A backlog of ~drain_s seconds at the best rate this system kept up with (x3), so a slow
    # system is not left with minutes of queue for the phases after it.
    kept_up = [
        phase["offered_rate"]
        for phase in out["offered"]
        if "latency" in phase and phase["offered_rate"] != out["saturated_at"]
    ]
    guess = 3 * max(kept_up) if kept_up else 100.0
    backlog = int(min(options.drain_events, max(guess * options.drain_s, 500)))
    drain = runner.drain(backlog, max_wait_s=options.drain_s * 4)
    out["max_throughput"] = _drain_summary(drain)
    progress(
        f"  {name} drain of {drain.messages:,} events: {drain.events_per_s:,.0f} events/s"
        f" ({drain.answers}/{drain.expected} answered)"
    )
    return out


def _kept_up(summary: dict[str, Any]) -> bool:
    """Whether a paced phase was served without falling behind (see `_KEPT_UP_P99_MS`)."""
    latency = summary.get("latency")
    return bool(latency) and not summary["missing"] and latency["p99_ms"] <= _KEPT_UP_P99_MS


def _drain_summary(drain: Drain) -> dict[str, Any]:
    return {
        "events": drain.messages,
        "events_per_s": round(drain.events_per_s, 1),
        "answers": drain.answers,
        "expected_answers": drain.expected,
        "complete": drain.complete,
        "elapsed_s": round((drain.last_answer_ns - drain.first_sent_ns) / 1e9, 2),
        "send_s": drain.extra.get("send_s"),
    }


def _measure_relay(
    options: BenchOptions,
    bootstrap: str,
    traffic: Traffic,
    templates: list[EventTemplate],
    run_id: str,
    log_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    progress("broker floor: confluent-kafka relay (2 hops, like event → page) ...")
    in_topic, out_topic = f"bench-{run_id}-relay-in", f"bench-{run_id}-relay-out"
    create_topics(bootstrap, {in_topic: options.partitions, out_topic: options.partitions})
    relay = start_process(
        "relay",
        [
            "-m",
            "stream.bench.relay",
            bootstrap,
            in_topic,
            out_topic,
            str(options.partitions),
            str(options.fetch_wait_ms),
            str(options.linger_ms),
        ],
        log_dir=log_dir,
    )
    return _with_receiver(
        "broker floor",
        relay,
        options,
        bootstrap,
        traffic,
        templates,
        run_id,
        in_topic,
        out_topic,
        b'"event_id":"',
        lambda template: True,
        progress,
    )


def _measure_faust(
    options: BenchOptions,
    bootstrap: str,
    traffic: Traffic,
    templates: list[EventTemplate],
    run_id: str,
    log_dir: Path,
    progress: Progress,
    *,
    agent: bool = False,
) -> dict[str, Any]:
    """A Faust forwarder: the stock agent (``agent``) or the worker's batch runtime."""
    name, kind, module = (
        ("Faust agent floor", "faust-agent", "stream.bench.faust_agent_forward")
        if agent
        else ("Faust floor", "faust", "stream.bench.faust_forward")
    )
    what = "a stock agent" if agent else "the worker's batch runtime"
    progress(f"{name}: {what} forwarding each event unchanged ...")
    in_topic, out_topic = f"bench-{run_id}-{kind}-in", f"bench-{run_id}-{kind}-out"
    create_topics(bootstrap, {in_topic: options.partitions, out_topic: options.partitions})
    forwarder = start_process(
        f"{kind}-forwarder",
        ["-m", module, "worker"],
        log_dir=log_dir,
        env={
            "BENCH_BOOTSTRAP": bootstrap,
            "BENCH_IN_TOPIC": in_topic,
            "BENCH_OUT_TOPIC": out_topic,
            "BENCH_APP_ID": f"bench-{run_id}-{kind}",
            "BENCH_PARTITIONS": str(options.partitions),
            "INSESSION_FETCH_MAX_WAIT_MS": str(options.fetch_wait_ms),
            "INSESSION_PRODUCER_LINGER_MS": str(options.linger_ms),
        },
    )
    return _with_receiver(
        name,
        forwarder,
        options,
        bootstrap,
        traffic,
        templates,
        run_id,
        in_topic,
        out_topic,
        b'"event_id":"',
        lambda template: True,
        progress,
    )


def _with_receiver(
    name: str,
    system: SystemProcess,
    options: BenchOptions,
    bootstrap: str,
    traffic: Traffic,
    templates: list[EventTemplate],
    run_id: str,
    in_topic: str,
    out_topic: str,
    id_field: bytes,
    answers: Callable[[EventTemplate], bool],
    progress: Progress,
    on_phase: Callable[[float, dict[str, Any], int, int], None] | None = None,
    after: Callable[[PhaseRunner, dict[str, Any]], None] | None = None,
    coalesced_field: bytes | None = None,
) -> dict[str, Any]:
    producer = _producer(bootstrap, options)
    runner = _start_runner(
        options,
        bootstrap,
        producer,
        traffic,
        templates,
        run_id,
        in_topic,
        out_topic,
        id_field,
        answers,
        coalesced_field,
    )
    receiver = runner.receiver
    try:
        out = _phases(name, runner, options, progress, on_phase)
        if after is not None:
            after(runner, out)
        return out
    except TimeoutError as error:
        return {"error": f"{error}; log tail:\n{system.log_tail()}"}
    finally:
        producer.flush(5)
        receiver.stop()
        system.stop()


def _start_runner(
    options: BenchOptions,
    bootstrap: str,
    producer: Producer,
    traffic: Traffic,
    templates: list[EventTemplate],
    run_id: str,
    in_topic: str,
    out_topic: str,
    id_field: bytes,
    answers: Callable[[EventTemplate], bool],
    coalesced_field: bytes | None,
) -> PhaseRunner:
    """A phase runner sending to ``in_topic``, its receiver reading ``out_topic`` (started:
    stop it with ``runner.receiver.stop()``)."""
    receiver = OutputReceiver(
        bootstrap,
        out_topic,
        options.partitions,
        id_field=id_field,
        run_id=run_id,
        fetch_wait_ms=options.fetch_wait_ms,
        coalesced_field=coalesced_field,
    )
    receiver.start()
    return PhaseRunner(producer, receiver, in_topic, traffic, templates, answers, run_id)


def _measure_worker(
    options: BenchOptions,
    bootstrap: str,
    traffic: Traffic,
    templates: list[EventTemplate],
    run_id: str,
    log_dir: Path,
    progress: Progress,
    catalog: list[Any],
) -> dict[str, Any]:
    progress("insession: a real `insession worker` process, event → page ...")
    client = redis.Redis.from_url(options.redis_url, socket_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as error:
        return {"error": f"Redis is not reachable at {options.redis_url}: {error}"}
    prefix = f"bench-{run_id}:"
    catalog_topic = f"bench-{run_id}-catalog"

    def fresh_topics(tag: str) -> dict[str, str]:
        """The worker's topics, new ones per worker (the catalog is shared), created."""
        topics = {
            kind: f"bench-{run_id}{tag}-{kind}"
            for kind in ("events", "recommendations", "churn", "dead-letters")
        }
        create_topics(bootstrap, dict.fromkeys(topics.values(), options.partitions))
        return topics | {"catalog": catalog_topic}

    def start_worker(tag: str, topics: dict[str, str]) -> SystemProcess:
        """A worker on ``topics``; every worker of the run shares the Redis prefix, so a later
        one restores the user states and the models (saved at a graceful stop) of the last."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "REDIS_URL": options.redis_url,
            "INSESSION_REDIS_PREFIX": prefix,
            "INSESSION_APP_ID": f"bench-{run_id}{tag}-worker",
            "INSESSION_EVENTS_TOPIC": topics["events"],
            "INSESSION_CATALOG_TOPIC": topics["catalog"],
            "INSESSION_RECOMMENDATIONS_TOPIC": topics["recommendations"],
            "INSESSION_CHURN_TOPIC": topics["churn"],
            "INSESSION_DEAD_LETTER_TOPIC": topics["dead-letters"],
            "INSESSION_PARTITIONS": str(options.partitions),
            "INSESSION_FETCH_MAX_WAIT_MS": str(options.fetch_wait_ms),
            "INSESSION_PRODUCER_LINGER_MS": str(options.linger_ms),
            "INSESSION_SNAPSHOT_KEY": f"bench-{run_id}",
            "INSESSION_LOG_LEVEL": "info",
        }
        return start_process(
            f"worker{tag}", ["-m", "stream.cli", "worker"], log_dir=log_dir, env=env
        )

    create_topics(bootstrap, {catalog_topic: options.partitions})
    topics = fresh_topics("")
    producer = _producer(bootstrap, options)
    for item in catalog:
        producer.produce(catalog_topic, key=item.item_id.encode(), value=encode_catalog_item(item))
    producer.flush(10)
    worker = start_worker("", topics)
    watcher = MetricsWatcher(options.redis_url, f"{prefix}metrics:worker").start()
    deadline = time.monotonic() + 90
    while client.hlen(f"{prefix}catalog") < len(catalog):
        if time.monotonic() > deadline or not worker.alive():
            watcher.stop()
            worker.stop()
            return {"error": f"worker never loaded the catalog; log tail:\n{worker.log_tail()}"}
        time.sleep(0.1)

    def on_phase(rate: float, summary: dict[str, Any], begin_ms: int, end_ms: int) -> None:
        earlier = watcher.first_after(begin_ms)
        later = watcher.first_after(end_ms)
        if earlier is None or later is None:
            summary["in_worker_processing"] = None
            summary["in_worker_page_produced"] = None
            summary["in_worker_batch_wait"] = None
            return
        phase = histogram_difference(watcher.histogram(later), watcher.histogram(earlier))
        summary["in_worker_processing"] = summary_ms(phase)
        produced = histogram_difference(
            watcher.histogram(later, "page_produced_hdr"),
            watcher.histogram(earlier, "page_produced_hdr"),
        )
        summary["in_worker_page_produced"] = summary_ms(produced)
        if "batch_wait_hdr" in later and "batch_wait_hdr" in earlier:
            waited = histogram_difference(
                watcher.histogram(later, "batch_wait_hdr"),
                watcher.histogram(earlier, "batch_wait_hdr"),
            )
            summary["in_worker_batch_wait"] = summary_ms(waited)
        summary["in_worker_events"] = later["events"] - earlier["events"]
        summary["in_worker_pages"] = later["pages"] - earlier["pages"]

    def sustained(runner: PhaseRunner, out: dict[str, Any]) -> None:
        last = watcher.first_after(time.time_ns() // 1_000_000)
        if last is not None:  # the worker's GC pauses over the whole run (cumulative)
            out["gc_pauses"] = last.get("gc_pauses")
        worker.stop()  # graceful: its models are saved for the next worker
        _sustained(runner.next_seq, out)

    def _sustained(next_seq: int, out: dict[str, Any]) -> None:
        """Paced shares of the drain rate, highest first, until one keeps up: each on fresh
        topics with a fresh worker process, as the rates above (not on the partitions the
        drain filled, whose fetches are slower on Tansu). Then once more halfway between it
        and the share above it, which fell behind: the ladder's steps are 15% of the drain
        rate, too coarse to say on which side of a target the worker is."""
        capacity = out["max_throughput"]["events_per_s"]
        attempts: list[dict[str, Any]] = []
        out["sustained_attempts"] = attempts
        if capacity <= 0:
            return
        failed: float | None = None
        for share in options.sustained_shares:
            next_seq, kept_up = _paced(next_seq, share, capacity, attempts, out)
            if kept_up is None:
                return
            if kept_up:
                break
            failed = share
        else:
            return
        if failed is not None:  # one step of bisection between the last share that fell
            _paced(next_seq, (failed + share) / 2, capacity, attempts, out)  # behind and this

    def _paced(
        next_seq: int,
        share: float,
        capacity: float,
        attempts: list[dict[str, Any]],
        out: dict[str, Any],
    ) -> tuple[int, bool | None]:
        """One paced share of the drain rate; whether it kept up (None: no worker answered).

        A share that keeps up at a higher rate than the one reported so far is reported as
        the sustained rate (``out["at_sustained_rate"]``)."""
        rate = round(capacity * share, -1)
        tag = f"-s{len(attempts)}"
        fresh = fresh_topics(tag)
        process = start_worker(tag, fresh)
        runner = _start_runner(
            options,
            bootstrap,
            producer,
            traffic,
            templates,
            run_id,
            fresh["events"],
            fresh["recommendations"],
            _PAGE_ID_FIELD,
            _triggers_page,
            COALESCED_FIELD,
        )
        runner.next_seq = next_seq
        try:
            try:
                runner.wait_ready()
            except TimeoutError as error:
                attempts.append({"offered_rate": rate, "kept_up": False, "error": str(error)})
                progress(f"  insession @ {rate:,.0f}/s: {error}\n{process.log_tail()}")
                return runner.next_seq, None
            schedule = Schedule(rate=rate, duration_s=options.duration_s, warmup_s=options.warmup_s)
            begin_ms = time.time_ns() // 1_000_000
            summary = runner.offered(schedule)
            on_phase(
                rate,
                summary,
                begin_ms + int(options.warmup_s * 1000),
                time.time_ns() // 1_000_000,
            )
        finally:
            next_seq = runner.next_seq
            runner.receiver.stop()
            process.stop()
        summary["share_of_drain_rate"] = share
        latency = summary["latency"]
        kept_up = _kept_up(summary)
        # The worker's own part beside the end-to-end figure: which side fell behind.
        produced = summary.get("in_worker_page_produced") or {}
        attempts.append(
            {
                "offered_rate": rate,
                "share_of_drain_rate": share,
                "p50_ms": latency["p50_ms"],
                "p99_ms": latency["p99_ms"],
                "in_worker_page_produced_p99_ms": produced.get("p99_ms"),
                "kept_up": kept_up,
            }
        )
        progress(
            f"  insession @ {rate:,.0f}/s ({share:.0%} of its drain rate, fresh topics "
            f"and worker): p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms"
            f"{'' if kept_up else ' (falls behind)'}; in-worker page produced p99 "
            f"{produced.get('p99_ms', float('nan')):.1f} ms"
        )
        best = out.get("at_sustained_rate")
        if kept_up and (best is None or rate > best["offered_rate"]):
            out["at_sustained_rate"] = summary
        return next_seq, kept_up

    try:
        return _with_receiver(
            "insession",
            worker,
            options,
            bootstrap,
            traffic,
            templates,
            run_id,
            topics["events"],
            topics["recommendations"],
            _PAGE_ID_FIELD,
            _triggers_page,
            progress,
            on_phase,
            sustained,
            coalesced_field=COALESCED_FIELD,
        )
    finally:
        watcher.stop()
        producer.flush(5)
        _delete_prefix(client, prefix)
        client.close()


#: Where a page names the event it answers (the receiver matches it to its send time).
_PAGE_ID_FIELD = b'"trigger_event_id":"'


def _triggers_page(template: EventTemplate) -> bool:
    return template.triggers_page


def _delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete this run's topics (Faust's internal ones too): on a real Kafka they would stay."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    with contextlib.suppress(Exception):
        names = [name for name in admin.list_topics(timeout=10).topics if name.startswith(prefix)]
        if names:
            for future in admin.delete_topics(names, operation_timeout=10).values():
                with contextlib.suppress(Exception):
                    future.result(10)


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


# -- ratios ----------------------------------------------------------------------------------


def _ratios(result: dict[str, Any]) -> dict[str, Any]:
    """insession / broker floor latency per rate, insession / Faust throughput."""
    ratios: dict[str, Any] = {"latency": []}
    broker = _latencies(result, "broker_floor")
    faust = _latencies(result, "faust_floor")
    agent = _latencies(result, "faust_agent_floor")
    for phase in result.get("insession", {}).get("offered", []):
        if "latency" not in phase:
            continue
        rate = phase["offered_rate"]
        mine = phase["latency"]
        row: dict[str, Any] = {"offered_rate": rate}
        if rate in broker and broker[rate]["p99_ms"]:
            row["p50_over_broker"] = round(mine["p50_ms"] / broker[rate]["p50_ms"], 2)
            row["p99_over_broker"] = round(mine["p99_ms"] / broker[rate]["p99_ms"], 2)
            row["p99_minus_broker_ms"] = round(mine["p99_ms"] - broker[rate]["p99_ms"], 1)
        if rate in faust and faust[rate]["p99_ms"]:
            row["p99_over_faust"] = round(mine["p99_ms"] / faust[rate]["p99_ms"], 2)
        if rate in agent and agent[rate]["p99_ms"]:
            row["p99_over_faust_agent"] = round(mine["p99_ms"] / agent[rate]["p99_ms"], 2)
        ratios["latency"].append(row)
    mine_tp = result.get("insession", {}).get("max_throughput", {}).get("events_per_s")
    faust_tp = result.get("faust_floor", {}).get("max_throughput", {}).get("events_per_s")
    broker_tp = result.get("broker_floor", {}).get("max_throughput", {}).get("events_per_s")
    agent_tp = result.get("faust_agent_floor", {}).get("max_throughput", {}).get("events_per_s")
    if mine_tp and faust_tp:
        ratios["throughput_over_faust"] = round(mine_tp / faust_tp, 2)
    if mine_tp and agent_tp:
        ratios["throughput_over_faust_agent"] = round(mine_tp / agent_tp, 2)
    if mine_tp and broker_tp:
        ratios["throughput_over_broker"] = round(mine_tp / broker_tp, 3)
    engine = result.get("engine_alone") or {}
    for row in engine.get("batched", []):
        ratios.setdefault("engine_batched_over_event_at_a_time", {})[str(row["batch_events"])] = (
            row.get("events_per_cpu_s_over_event_at_a_time")
        )
    return ratios


def _latencies(result: dict[str, Any], name: str) -> dict[float, dict[str, float]]:
    return {
        phase["offered_rate"]: phase["latency"]
        for phase in result.get(name, {}).get("offered", [])
        if "latency" in phase
    }
