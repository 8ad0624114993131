"""The worker's batch loop, independent of Faust: decode → engine → send → checkpoint.

Order matters for at-least-once without loss: a batch's outputs are sent and acknowledged by
the broker *before* the user states that include its events are checkpointed to Redis, and
the batch's offsets are committed (by the runtime) only after both. A crash anywhere replays
events whose effects are either missing (reprocessed, same page ids) or already checkpointed
(dropped as duplicates by the engine's per-user event-id window).

A batch is processed at once (:meth:`EventPipeline.submit_events`) and completed in the
background (``stream.inflight``): acknowledgements awaited, then the checkpoint written, then
``on_durable`` told which input messages may be acknowledged, in batch order. The checkpoint is
the states serialized at the end of their batch, before the next batch mutates them; a user
loaded from Redis while their checkpoint is still on its way is taken from that pending copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from online_models.factory import restore_models
from online_models.snapshot import SnapshotError, dump_snapshot, load_snapshot
from processors.engine import Engine, SourcePosition
from processors.features import public_session_features
from processors.user_state import UserState
from schemas.codec import encode_churn_alert, encode_dead_letter, encode_page
from schemas.messages import BehaviourEvent, DeadLetter, Page
from stream.config import Settings
from stream.inflight import FailureHandler, InFlight
from stream.latency import GcPauses, LatencyRecorder
from stream.redis_store import RedisStore

__all__ = ["EventPipeline", "RawMessage", "SendFn"]

log = logging.getLogger(__name__)

#: ``send(topic, key, value)`` returns an awaitable that completes when the broker acked.
SendFn = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object]]]
#: Told which input messages of a batch are done (outputs acked, state checkpointed).
DurableFn = Callable[[Sequence["RawMessage"]], None]


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One consumed Kafka record, as the runtime hands it over."""

    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Batch:
    """What processing one batch left to do: await these acks, write these keys."""

    messages: list[RawMessage]
    received_ns: int
    acks: list[Awaitable[object]] = field(default_factory=list)
    checkpoint: dict[str, bytes] = field(default_factory=dict)
    #: user id → serialized state in ``checkpoint`` (visible to loads until written).
    states: dict[str, bytes] = field(default_factory=dict)


def _no_op(messages: Sequence[RawMessage]) -> None:
    return None


class EventPipeline:
    """Owns the engine, the in-memory user states and the Redis checkpoint of one worker."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: RedisStore,
        send: SendFn,
        *,
        clock_ms: Callable[[], int] | None = None,
        on_failure: FailureHandler | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.send = send
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.states: dict[str, UserState] = {}
        self.user_partition: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        #: Consumed → outputs acked and state checkpointed, once per event of the batch.
        self.processing = LatencyRecorder()
        #: Consumed → page handed to the producer, once per page (issue 5's definition).
        self.page_produced = LatencyRecorder()
        #: Consumed → the batch's processing starts, once per event: the part of the two
        #: above spent waiting (for the event loop, the previous batch, the lock).
        self.batch_wait = LatencyRecorder()
        #: The process's garbage-collector pauses, when the runtime records them.
        self.gc_pauses: GcPauses | None = None
        self._catalog_version: int | None = None
        #: One batch, expiry pass or rebalance step at a time: a revocation must not drop
        #: users while a batch that touches them is still between the engine and Redis.
        self._lock = asyncio.Lock()
        self._inflight: InFlight | None = None
        self._on_failure = on_failure
        #: Serialized states submitted for checkpointing and not written yet, by user id.
        self._unwritten: dict[str, bytes] = {}
        #: Events-topic partitions this worker owns; None until the runtime says (offline).
        self.owned_partitions: set[int] | None = None
        self._arm_metrics_published: tuple[tuple[str, int, int], ...] = ()

    @property
    def inflight(self) -> InFlight:
        """The background completions (created on first use: it needs the running loop)."""
        if self._inflight is None:
            kwargs = {} if self._on_failure is None else {"on_failure": self._on_failure}
            self._inflight = InFlight(self.settings.max_batches_in_flight, **kwargs)
        return self._inflight

    # -- events ------------------------------------------------------------------------------

    async def handle_events(self, messages: list[RawMessage]) -> list[RawMessage]:
        """Process one batch end to end; returns only when its effects are durable.

        Returns the messages it skipped because their partition was revoked meanwhile (they
        were fetched before the rebalance): the caller must not acknowledge them, their next
        owner processes them.
        """
        skipped, done = await self.submit_events(messages)
        await asyncio.wait([done])
        return skipped

    async def submit_events(
        self,
        messages: list[RawMessage],
        *,
        received: float | None = None,
        on_durable: DurableFn = _no_op,
    ) -> tuple[list[RawMessage], asyncio.Task[None]]:
        """Process one batch now; its completion runs in the background, in batch order.

        ``received`` is when the runtime received the batch (``time.monotonic()``), the start
        of both latency histograms. ``on_durable`` is called with the processed messages once
        their outputs are acknowledged and their states checkpointed (never for the skipped
        ones, whose partition was revoked meanwhile; see :meth:`handle_events`). The returned
        task finishes with the completion. Waits first while the maximum number of batches
        is in flight (backpressure).
        """
        received_ns = time.monotonic_ns() if received is None else int(received * 1e9)
        inflight = self.inflight
        async with self._lock:
            owned = self.owned_partitions
            skipped: list[RawMessage] = []
            if owned is not None and any(m.partition not in owned for m in messages):
                skipped = [m for m in messages if m.partition not in owned]
                messages = [m for m in messages if m.partition in owned]
                self.counters["skipped_not_owned"] += len(skipped)
            batch = _Batch(messages, received_ns)
            if messages:
                await self._process(batch)
            self._unwritten.update(batch.states)
            done = await inflight.submit(lambda: self._complete(batch, on_durable))
        return skipped, done

    async def _process(self, batch: _Batch) -> None:
        """Engine over the batch, outputs handed to the producer, checkpoint serialized."""
        waited_ns = time.monotonic_ns() - batch.received_ns
        engine = self.engine
        now = self.clock_ms()
        decoded = self._decode(batch.messages, now)
        await self._load_missing_states(
            [r.user_id for _, _, r in decoded if not isinstance(r, DeadLetter)]
        )
        plan = (
            engine.serving_plan([r for _, _, r in decoded])
            if self.settings.coalesce_pages
            else [True] * len(decoded)
        )
        touched: dict[str, UserState] = {}
        pages: dict[str, bytes] = {}
        try:
            for (message, source, result), serve in zip(decoded, plan, strict=True):
                await self._process_one(batch, message, source, result, serve, touched, pages, now)
            for page in engine.settle_pages(self.states, now=now):
                await self._send_page(batch, page, pages)
        finally:
            engine.settle_pages({}, now=now)  # after a failure: nothing owed leaks onwards
        self._serialize(batch, touched, pages, now)
        self.counters["batches"] += 1
        self.counters["events"] += len(batch.messages)
        # Recorded with the counters: a metrics snapshot taken while the batch awaits a send
        # sees neither, so a phase's waits and events stay one for one.
        self.batch_wait.record_ns(waited_ns, count=len(batch.messages))
        self._evict_if_needed()

    def _decode(
        self, messages: list[RawMessage], now: int
    ) -> list[tuple[RawMessage, SourcePosition, BehaviourEvent | DeadLetter]]:
        engine = self.engine
        decoded = []
        for message in messages:
            source = SourcePosition(message.topic, message.partition, message.offset)
            result = engine.decode(
                message.value, now=now, source=source, content_type=_content_type(message)
            )
            decoded.append((message, source, result))
        return decoded

    async def _process_one(
        self,
        batch: _Batch,
        message: RawMessage,
        source: SourcePosition,
        result: BehaviourEvent | DeadLetter,
        serve: bool,
        touched: dict[str, UserState],
        pages: dict[str, bytes],
        now: int,
    ) -> None:
        """One event: engine, then its outputs to the producer (an engine bug costs only it)."""
        acks = batch.acks
        if isinstance(result, DeadLetter):
            acks.append(await self._send_dead_letter(message, result))
            return
        engine = self.engine
        user_id = result.user_id
        try:
            effects = engine.process(
                result,
                self.states.get(user_id),
                now=now,
                raw=message.value,
                source=source,
                serve_page=serve,
            )
        except Exception as error:  # an engine bug costs this event, not the whole batch
            acks.append(await self._internal_error(message, error, now))
            return
        if effects.dead_letter is not None:
            acks.append(await self._send_dead_letter(message, effects.dead_letter))
            return
        state = effects.state
        assert state is not None
        # Re-insert so dict order is least recently touched first (eviction order).
        self.states.pop(user_id, None)
        self.states[user_id] = state
        self.user_partition[user_id] = message.partition
        touched[user_id] = state
        if effects.page is not None:
            await self._send_page(batch, effects.page, pages)
        if effects.alert is not None:
            payload = encode_churn_alert(effects.alert, self.settings.output_format)
            acks.append(await self.send(self.settings.churn_topic, user_id.encode(), payload))

    async def _send_page(self, batch: _Batch, page: Page, pages: dict[str, bytes]) -> None:
        """Hand a page to the producer; the time it took since consumption is recorded."""
        payload = encode_page(page, self.settings.output_format)
        pages[page.user_id] = payload
        batch.acks.append(
            await self.send(self.settings.recommendations_topic, page.user_id.encode(), payload)
        )
        # Counted where its latency is recorded: a metrics snapshot sees both or neither.
        self.counters["pages"] += 1
        self.page_produced.record_ns(time.monotonic_ns() - batch.received_ns)

    def _serialize(
        self, batch: _Batch, touched: dict[str, UserState], pages: dict[str, bytes], now: int
    ) -> None:
        """The batch's checkpoint as bytes, now: the next batch mutates these states."""
        store = self.store
        config = self.engine.config
        values = batch.checkpoint
        for user_id, state in touched.items():
            raw = orjson.dumps(state.to_dict())
            batch.states[user_id] = raw
            values[store.key("state", user_id)] = raw
            values[store.key("session", user_id)] = orjson.dumps(
                public_session_features(state, now, config)
            )
        for user_id, payload in pages.items():
            values[store.key("page", user_id)] = payload

    async def _complete(self, batch: _Batch, on_durable: DurableFn) -> None:
        """Acks, then the checkpoint, then the input may be acknowledged (in batch order)."""
        try:
            for ack in batch.acks:
                await ack  # broker acknowledged every output of the batch
        except Exception as error:
            # As before the overlap: the batch is dead-lettered (not lost); if even that
            # fails this raises, the batch stays unacknowledged and the worker stops.
            log.exception("outputs of a batch of %d failed; dead-lettering it", len(batch.messages))
            self.counters["internal_errors"] += 1
            self._forget_unwritten(batch)
            await self.dead_letter_batch(batch.messages, f"internal_error: {error!r}")
        else:
            if batch.checkpoint:
                await self.store.write(batch.checkpoint)
            self._forget_unwritten(batch)
        if batch.messages:
            self.processing.record_ns(
                time.monotonic_ns() - batch.received_ns, count=len(batch.messages)
            )
        on_durable(batch.messages)

    def _forget_unwritten(self, batch: _Batch) -> None:
        """Loads read Redis (or its outage buffer) again for users this batch wrote."""
        unwritten = self._unwritten
        for user_id, raw in batch.states.items():
            if unwritten.get(user_id) is raw:
                del unwritten[user_id]

    async def _internal_error(
        self, message: RawMessage, error: Exception, now: int
    ) -> Awaitable[object]:
        self.counters["internal_errors"] += 1
        log.exception(
            "engine failed on %s[%d]@%d; dead-lettering that event",
            message.topic,
            message.partition,
            message.offset,
        )
        dead_letter = DeadLetter(
            original=message.value,
            error=f"internal_error: {error!r}"[:1000],
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            ts=now,
        )
        return await self._send_dead_letter(message, dead_letter)

    async def _send_dead_letter(
        self, message: RawMessage, dead_letter: DeadLetter
    ) -> Awaitable[object]:
        self.counters["dead_letters"] += 1
        limit = self.settings.dead_letter_max_original_bytes
        size = len(dead_letter.original)
        if size > limit:  # a 1 MB original would make a dead letter the broker refuses
            dead_letter = dataclasses.replace(
                dead_letter,
                original=dead_letter.original[:limit],
                error=f"{dead_letter.error} [original truncated to its first {limit} of "
                f"{size} bytes]",
                headers={**dead_letter.headers, "original_size": str(size)},
            )
        payload = encode_dead_letter(dead_letter, "json")
        log.debug("dead letter at %s/%s: %s", message.partition, message.offset, dead_letter)
        return await self.send(self.settings.dead_letter_topic, message.key, payload)

    async def dead_letter_batch(self, messages: list[RawMessage], reason: str) -> None:
        """Dead-letter a whole batch whose processing failed unexpectedly."""
        now = self.clock_ms()
        acks = []
        for message in messages:
            dead_letter = DeadLetter(
                original=message.value,
                error=reason,
                source_topic=message.topic,
                source_partition=message.partition,
                source_offset=message.offset,
                ts=now,
            )
            acks.append(await self._send_dead_letter(message, dead_letter))
        for ack in acks:
            await ack

    async def _load_missing_states(self, user_ids: list[str]) -> None:
        missing = list({u: None for u in user_ids if u not in self.states})
        if not missing:
            return
        unwritten = self._unwritten
        found = {u: unwritten[u] for u in missing if u in unwritten}  # newer than Redis
        wanted = [u for u in missing if u not in found]
        if wanted:
            found.update(await self.store.load_states(wanted))
        for user_id, raw in found.items():
            try:
                self.states[user_id] = UserState.from_dict(orjson.loads(raw))
                self.counters["states_restored"] += 1
            except (ValueError, KeyError, TypeError) as error:
                self.counters["states_unreadable"] += 1
                log.warning("ignoring unreadable state checkpoint of %r: %s", user_id, error)

    def _evict_if_needed(self) -> None:
        """Keep memory bounded: least recently touched users go (Redis holds their state)."""
        limit = self.settings.max_users_in_memory
        if len(self.states) <= limit or self.store.buffered:
            return
        for user_id in list(itertools.islice(self.states, len(self.states) - limit)):
            del self.states[user_id]
            self.user_partition.pop(user_id, None)
            self.counters["states_evicted"] += 1

    # -- catalog -----------------------------------------------------------------------------

    async def handle_catalog(self, messages: list[RawMessage]) -> None:
        """Apply catalog items and share them with the other workers through Redis."""
        now = self.clock_ms()
        good: dict[str, bytes] = {}
        acks = []
        for message in messages:
            source = SourcePosition(message.topic, message.partition, message.offset)
            dead_letter = self.engine.apply_catalog_raw(message.value, now=now, source=source)
            if dead_letter is not None:
                acks.append(await self._send_dead_letter(message, dead_letter))
            else:
                item_id = (message.key or b"").decode(errors="replace")
                good[item_id or str(message.offset)] = message.value
        for ack in acks:
            await ack
        if good:
            await self.store.put_catalog(good)

    async def refresh_catalog(self, *, force: bool = False) -> int:
        """Reload the catalog from Redis when another worker changed it; returns items loaded."""
        if self.store.catalog_pending:
            await self.store.put_catalog({})  # items kept while Redis was down
        version = await self.store.catalog_version()
        if version is None or (version == self._catalog_version and not force):
            return 0
        loaded = 0
        for raw in await self.store.load_catalog():
            if self.engine.apply_catalog_raw(raw, now=self.clock_ms()) is None:
                loaded += 1
        self._catalog_version = version
        return loaded

    # -- periodic work -----------------------------------------------------------------------

    async def expire_idle(self) -> int:
        """End idle sessions (event time) so churn learns from sessions that just stopped."""
        async with self._lock:
            ended = self.engine.expire_idle(self.states.values(), watermark=self.engine.watermark)
            if ended:
                # Through the batches' queue: a checkpoint still in flight must not land after
                # (and over) this newer one.
                batch = _Batch([], time.monotonic_ns())
                self._serialize(batch, {s.user_id: s for s in ended}, {}, self.clock_ms())
                self._unwritten.update(batch.states)
                await self.inflight.submit(lambda: self._complete(batch, _no_op))
            return len(ended)

    async def publish_arm_metrics(self) -> bool:
        """Write the per-arm outcome metrics to ``{prefix}metrics:arms`` (JSON) and log them.

        This worker's view only: with several workers each publishes the users it owns, so the
        key holds the last writer's share (``ArmMetrics.merge`` adds views up).
        """
        metrics = self.engine.arm_metrics
        arms = metrics.arms
        fingerprint = tuple((name, t.impressions, t.sessions) for name, t in sorted(arms.items()))
        if not arms or fingerprint == self._arm_metrics_published:
            return False
        self._arm_metrics_published = fingerprint
        log.info(
            "arms: %s",
            "; ".join(
                f"{name} click_rate={t.click_rate:.4f} play_rate={t.play_rate:.4f} "
                f"no_play_share={t.no_play_share:.3f} sessions={t.sessions}"
                for name, t in sorted(arms.items())
            ),
        )
        return await self.store.write(
            {self.store.key("metrics", "arms"): orjson.dumps(metrics.to_dict())}
        )

    async def publish_worker_metrics(self) -> bool:
        """Write counters and the processing-time histograms to ``{prefix}metrics:worker``.

        Three histograms, all from the time the consumer received the batch:
        ``page_produced`` ends when a page is handed to the producer (once per page: the
        in-worker processing of issue 5), ``processing`` when the batch's outputs are acked
        and its states checkpointed (once per event of the batch: what at-least-once waits
        for before an offset may be committed), ``batch_wait`` when the batch's processing
        starts (once per event: the share of both that is waiting, not work). All are
        cumulative and HDR-encoded:
        ``insession bench`` reads them at the start and the end of a phase and subtracts.
        """
        payload = {
            "ts_ms": self.clock_ms(),
            "events": self.counters["events"],
            "pages": self.counters["pages"],
            "batches": self.counters["batches"],
            "users_in_memory": len(self.states),
            "processing": self.processing.summary_ms(),
            "processing_hdr": self.processing.histogram.encode().decode("ascii"),
            "page_produced": self.page_produced.summary_ms(),
            "page_produced_hdr": self.page_produced.histogram.encode().decode("ascii"),
            "batch_wait": self.batch_wait.summary_ms(),
            "batch_wait_hdr": self.batch_wait.histogram.encode().decode("ascii"),
            "batches_in_flight": self.inflight.pending,
        }
        if self.gc_pauses is not None:
            payload["gc_pauses"] = self.gc_pauses.summary_ms()
        return await self.store.write({self.store.key("metrics", "worker"): orjson.dumps(payload)})

    async def checkpoint_models(self) -> bool:
        """Save a signed snapshot of every model to Redis."""
        blob = dump_snapshot(
            self.engine.model_states(),
            key=self.settings.snapshot_key.encode(),
            created_at=self.clock_ms(),
            metadata={"app_id": self.settings.app_id},
        )
        saved = await self.store.save_models(blob)
        self.counters["model_checkpoints"] += int(saved)
        return saved

    async def restore_models(self) -> bool:
        """Load the latest model snapshot; a tampered or foreign one is refused, loudly."""
        blob = await self.store.load_models()
        if blob is None:
            return False
        try:
            snapshot = load_snapshot(blob, key=self.settings.snapshot_key.encode())
        except SnapshotError as error:
            log.error("refusing model snapshot: %s; starting with fresh models", error)
            self.counters["model_snapshots_refused"] += 1
            return False
        self.engine.replace_models(restore_models(snapshot.models, self.engine.config))
        return True

    def assign_partitions(self, partitions: Iterable[int]) -> None:
        """The runtime's new assignment (the whole set of partitions this worker now owns)."""
        self.owned_partitions = set(partitions)

    async def revoke_partitions(self, partitions: Iterable[int]) -> int:
        """Hand partitions back: wait for the batches in flight, then forget their users.

        Waiting matters: the batches' checkpoints must reach Redis before the next owner loads
        these users, and the batch must not put users back into memory after they were
        dropped (a stale copy would be used if the partition came back later; found by the
        two-worker test in tests/integration/test_faults.py).
        """
        revoked = set(partitions)
        async with self._lock:
            if self.owned_partitions is not None:
                self.owned_partitions -= revoked
            await self.inflight.drain()  # every checkpoint of these users is in Redis now
            return self.drop_partitions(revoked)

    async def drain(self) -> None:
        """Wait for every batch submitted so far to complete (graceful stop)."""
        await self.inflight.drain()

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget users of revoked partitions: their next owner loads them from Redis."""
        revoked = set(partitions)
        gone = [u for u, p in self.user_partition.items() if p in revoked]
        for user_id in gone:
            self.states.pop(user_id, None)
            del self.user_partition[user_id]
        return len(gone)


def _content_type(message: RawMessage) -> str | None:
    return message.headers.get("content-type") or message.headers.get("content_type")
