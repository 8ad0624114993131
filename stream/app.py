"""The Faust app: topics, the thin batch handlers, timers, and the signals that keep state right.

The input topics are consumed in batches (``stream.kafka_transport.consume_in_batches``), not
through Faust agents and streams, whose per-event machinery cost more CPU than the engine (see
that module); handlers only convert → call the pipeline (which calls the engine) → send through
Faust's producer. All state the worker needs after a restart is checkpointed to Redis by the
pipeline, not kept in Faust tables: on the embedded broker Faust's changelog recovery stops
short (see README, "State and restarts").
"""

from __future__ import annotations

import gc
import logging
import ssl
import sys
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from faust.types import TP

from online_models.factory import build_models
from processors.catalog import Catalog
from processors.engine import Engine
from stream.ack_guard import AckGuard
from stream.config import Settings
from stream.kafka_transport import consume_in_batches, producer_send
from stream.latency import GcPauses
from stream.pipeline import EventPipeline, RawMessage
from stream.redis_store import RedisStore
from stream.warmup import warm_up_engine

__all__ = [
    "WorkerApp",
    "create_app",
    "faust_broker_urls",
    "make_faust_app",
    "raw_topic",
]

log = logging.getLogger(__name__)


def faust_broker_urls(bootstrap_servers: str) -> list[str]:
    """Faust URLs for a Kafka bootstrap list, using our transport (configurable fetch wait).

    Examples
    --------
    >>> faust_broker_urls("k1:9092,k2:9092")
    ['insession://k1:9092', 'insession://k2:9092']
    """
    return [f"insession://{host.strip()}" for host in bootstrap_servers.split(",") if host.strip()]


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS to the brokers: the CA bundle, plus a client certificate for mutual TLS if given."""
    context = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.ssl_certfile:
        context.load_cert_chain(
            settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_key_password
        )
    return context


def _credentials(settings: Settings) -> Any:
    """Faust broker credentials from the security settings (None for PLAINTEXT)."""
    protocol = settings.security_protocol.upper()
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ValueError(
            f"KAFKA_SECURITY_PROTOCOL={settings.security_protocol!r}: expected PLAINTEXT, SSL, "
            "SASL_PLAINTEXT or SASL_SSL"
        )
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings) if "SSL" in protocol else None
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def make_faust_app(settings: Settings, app_id: str) -> faust.App:
    """A Faust app with the worker's settings: raw bytes, our transport, latency-tuned timings.

    Shared by the worker and the benchmark's Faust floor, so the floor measures exactly the
    Faust configuration the worker runs with. Both consume with
    ``stream.kafka_transport.consume_in_batches`` and send with
    ``stream.kafka_transport.producer_send``.
    """
    app = faust.App(
        app_id,
        broker=faust_broker_urls(settings.bootstrap_servers),
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_commit_interval=1.0,
        producer_linger_ms=settings.producer_linger_ms,
        producer_acks=-1,
        stream_wait_empty=False,
    )
    app.insession_fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    return app


def raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    """A topic of raw bytes keys and values (decoding is ours, never Faust's codecs)."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )


class WorkerApp:
    """A Faust app wired to one EventPipeline."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_faust_app(settings, settings.app_id)
        self.topics = {
            name: raw_topic(self.app, name, partitions)
            for name, partitions in settings.output_topics().items()
        }
        self.store = RedisStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            ttl_s=settings.redis_ttl_s,
            password=settings.redis_password,
            max_buffered_keys=settings.redis_max_buffered_keys,
            ssl_ca_certs=settings.redis_ssl_cafile,
        )
        engine = Engine(
            settings.engine,
            build_models(settings.engine),
            Catalog(max_items=settings.max_catalog_items),
            served_cache_pages=settings.served_cache_pages,
            limits=settings.codec_limits(),
        )
        # Before the app starts: the first batch must not pay the kernels' compilation.
        log.info("engine kernels ready in %.2f s", warm_up_engine(settings.engine))
        self.pipeline = EventPipeline(
            settings, engine, self.store, self._send, on_failure=self._completion_failed
        )
        self.ack_guard = AckGuard({settings.events_topic, settings.catalog_topic})
        self.ack_guard.install(self.app.consumer)
        self._started = False
        self._last_stats = (time.monotonic(), 0, 0)
        self._wire()

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[object]:
        return await producer_send(self.app, topic, key, value)

    async def _ensure_started(self) -> None:
        """Restore models and catalog once, before the first batch is processed."""
        if self._started:
            return
        self._started = True
        await self.app.maybe_start_producer()
        if self.settings.using_dev_snapshot_key:
            log.warning("INSESSION_SNAPSHOT_KEY is not set: model snapshots use the dev key")
        restored = await self.pipeline.restore_models()
        loaded = await self.pipeline.refresh_catalog(force=True)
        # After the restore: the models and the catalog are the bulk of what lives for good.
        self.pipeline.gc_pauses = GcPauses(
            freeze_survivors=self.settings.gc_freeze, freeze_young=self.settings.gc_freeze_young
        ).install()
        if self.settings.gc_young_threshold > 0:
            gc.set_threshold(self.settings.gc_young_threshold, *gc.get_threshold()[1:])
        if self.settings.switch_interval_ms > 0:
            sys.setswitchinterval(self.settings.switch_interval_ms / 1000.0)
        log.info("worker ready: models restored=%s, catalog items loaded=%d", restored, loaded)

    def _wire(self) -> None:
        app, settings, pipeline = self.app, self.settings, self.pipeline
        consume_in_batches(
            app,
            self.topics[settings.events_topic],
            self.personalize_events,
            batch_max=settings.batch_max,
        )
        consume_in_batches(
            app,
            self.topics[settings.catalog_topic],
            self.ingest_catalog,
            batch_max=settings.batch_max,
        )

        @app.timer(settings.expiry_interval_s)
        async def expire_idle_sessions() -> None:
            ended = await pipeline.expire_idle()
            if ended:
                log.info("ended %d idle sessions", ended)

        @app.timer(settings.model_checkpoint_s)
        async def checkpoint_models() -> None:
            if self._started:
                await pipeline.checkpoint_models()

        @app.timer(settings.catalog_refresh_s)
        async def refresh_catalog() -> None:
            if self._started:
                await pipeline.refresh_catalog()

        @app.timer(5.0)
        async def log_stats() -> None:
            self._log_stats()

        @app.timer(1.0)
        async def publish_worker_metrics() -> None:
            if self._started:  # read by `insession bench` (processing-time histogram)
                await pipeline.publish_worker_metrics()

        @app.timer(1.0)
        async def freeze_gc_survivors() -> None:
            if self.pipeline.gc_pauses is not None:
                self.pipeline.gc_pauses.freeze_if_due()

        @app.timer(settings.gc_sweep_interval_s)
        async def unfreeze_gc() -> None:  # cycles among frozen objects get collected again
            pauses = self.pipeline.gc_pauses
            swept = pauses.release_frozen_cycles() if pauses is not None else None
            if swept is not None:
                log.info("garbage cycles swept: %d objects", swept)

        @app.timer(5.0)
        async def publish_arm_metrics() -> None:
            if self._started:
                await pipeline.publish_arm_metrics()

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
            dropped = await pipeline.revoke_partitions(
                tp.partition for tp in revoked if tp.topic == settings.events_topic
            )
            log.info("partitions revoked: %d users handed back to Redis", dropped)

        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            pipeline.assign_partitions(
                tp.partition for tp in assigned if tp.topic == settings.events_topic
            )

        @app.on_before_shutdown.connect
        async def on_shutdown(sender: Any, **kwargs: Any) -> None:
            if self._started:
                await pipeline.drain()  # batches in flight complete, so they are committed
                await pipeline.checkpoint_models()

    async def personalize_events(self, batch: Sequence[Any], received: float) -> None:
        """Events: processed now, acknowledged once their effects are durable (in order)."""
        await self._ensure_started()
        messages = [_raw_message(message) for message in batch]
        originals = {id(raw): message for raw, message in zip(messages, batch, strict=True)}

        def durable(done: Sequence[RawMessage]) -> None:
            # Only now may these offsets be committed (see stream/ack_guard.py); messages
            # skipped because their partition was revoked meanwhile are never in ``done``.
            self.ack_guard.acknowledge(originals[id(raw)] for raw in done)

        try:
            await self.pipeline.submit_events(messages, received=received, on_durable=durable)
        except Exception as error:  # the batch is dead-lettered, never silently dropped
            await self._dead_letter_failed(messages, error)
            self.ack_guard.acknowledge(batch)

    async def ingest_catalog(self, batch: Sequence[Any], received: float) -> None:
        """Catalog items: applied, stored in Redis, then acknowledged."""
        await self._ensure_started()
        messages = [_raw_message(message) for message in batch]
        try:
            await self.pipeline.handle_catalog(messages)
        except Exception as error:
            await self._dead_letter_failed(messages, error)
        self.ack_guard.acknowledge(batch)

    async def _dead_letter_failed(self, messages: list[RawMessage], error: Exception) -> None:
        """Turn a failed batch into dead letters; only if even that fails, stop the worker."""
        log.error("batch of %d failed; dead-lettering it", len(messages), exc_info=error)
        self.pipeline.counters["internal_errors"] += 1
        try:
            await self.pipeline.dead_letter_batch(messages, f"internal_error: {error!r}")
        except Exception as fatal:
            # Nowhere to put the batch. Carrying on would leave a gap that stops every
            # later commit, and the long redelivery after the eventual restart could
            # outrun the per-user dedup window. Stop now: the ack guard keeps the batch
            # uncommitted and a restarted worker gets it again.
            log.critical("cannot dead-letter a failed batch (%r): stopping the worker", fatal)
            await self.app.crash(fatal)
            raise

    async def _completion_failed(self, error: BaseException) -> None:
        """A batch whose outputs failed could not even be dead-lettered: stop, uncommitted."""
        log.critical("cannot dead-letter a failed batch (%r): stopping the worker", error)
        await self.app.crash(error)

    def _log_stats(self) -> None:
        counters = self.pipeline.counters
        then, events_then, pages_then = self._last_stats
        now = time.monotonic()
        elapsed = max(now - then, 1e-9)
        events, pages = counters["events"], counters["pages"]
        summary = self.pipeline.processing.summary_ms()
        if events != events_then:
            log.info(
                "events/s=%.0f pages/s=%.0f processing p50=%.2fms p99=%.2fms users=%d "
                "dead_letters=%d duplicates=%d redis_buffered=%d redis_write_failures=%d",
                (events - events_then) / elapsed,
                (pages - pages_then) / elapsed,
                summary["p50_ms"],
                summary["p99_ms"],
                len(self.pipeline.states),
                counters["dead_letters"],
                self.pipeline.engine.counters["duplicates"],
                self.store.buffered,
                self.store.counters["redis_write_failures"],
            )
        self._last_stats = (now, events, pages)


def _raw_message(message: Any) -> RawMessage:
    headers = message.headers or {}
    if not isinstance(headers, dict):
        headers = {k: v for k, v in headers}
    return RawMessage(
        value=message.value if message.value is not None else b"",
        key=message.key,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        headers={
            str(k): (v.decode(errors="replace") if isinstance(v, bytes) else str(v))
            for k, v in headers.items()
        },
    )


def create_app(settings: Settings | None = None) -> WorkerApp:
    """Build the worker app from settings (default: from the environment)."""
    return WorkerApp(settings or Settings.from_env())
