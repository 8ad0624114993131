"""The worker's batch loop, independent of Faust: decode → engine → send → checkpoint.

Order matters for at-least-once without loss: a batch's outputs are sent and acknowledged by
the broker *before* the user states that include its events are checkpointed to Redis, and
the batch's offsets are committed (by the runtime) only after both. A crash anywhere replays
events whose effects are either missing (reprocessed, same page ids) or already checkpointed
(dropped as duplicates by the engine's per-user event-id window).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import orjson

from online_models.factory import restore_models
from online_models.snapshot import SnapshotError, dump_snapshot, load_snapshot
from processors.engine import Engine, SourcePosition
from processors.features import public_session_features
from processors.user_state import UserState
from schemas.codec import encode_churn_alert, encode_dead_letter, encode_page
from schemas.messages import DeadLetter
from stream.config import Settings
from stream.latency import LatencyRecorder
from stream.redis_store import RedisStore

__all__ = ["EventPipeline", "RawMessage", "SendFn"]

log = logging.getLogger(__name__)

#: ``send(topic, key, value)`` returns an awaitable that completes when the broker acked.
SendFn = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object]]]


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One consumed Kafka record, as the runtime hands it over."""

    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    headers: dict[str, str] = field(default_factory=dict)


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
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.send = send
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.states: dict[str, UserState] = {}
        self.user_partition: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        self.processing = LatencyRecorder()
        self._catalog_version: int | None = None
        #: One batch, expiry pass or rebalance step at a time: a revocation must not drop
        #: users while a batch that touches them is still between the engine and Redis.
        self._lock = asyncio.Lock()
        #: Events-topic partitions this worker owns; None until the runtime says (offline).
        self.owned_partitions: set[int] | None = None
        self._arm_metrics_published: tuple[tuple[str, int, int], ...] = ()

    # -- events ------------------------------------------------------------------------------

    async def handle_events(self, messages: list[RawMessage]) -> list[RawMessage]:
        """Process one batch end to end; returns only when its effects are durable.

        Returns the messages it skipped because their partition was revoked meanwhile (they
        were fetched before the rebalance): the caller must not acknowledge them, their next
        owner processes them.
        """
        async with self._lock:
            owned = self.owned_partitions
            skipped: list[RawMessage] = []
            if owned is not None and any(m.partition not in owned for m in messages):
                skipped = [m for m in messages if m.partition not in owned]
                messages = [m for m in messages if m.partition in owned]
                self.counters["skipped_not_owned"] += len(skipped)
            if messages:
                await self._handle_events(messages)
            return skipped

    async def _handle_events(self, messages: list[RawMessage]) -> None:
        started = time.perf_counter_ns()
        engine = self.engine
        now = self.clock_ms()
        settings = self.settings
        decoded = []
        for message in messages:
            source = SourcePosition(message.topic, message.partition, message.offset)
            result = engine.decode(
                message.value, now=now, source=source, content_type=_content_type(message)
            )
            decoded.append((message, source, result))
        await self._load_missing_states(
            [r.user_id for _, _, r in decoded if not isinstance(r, DeadLetter)]
        )

        acks: list[Awaitable[object]] = []
        touched: dict[str, UserState] = {}
        pages: dict[str, bytes] = {}
        fmt = settings.output_format
        for message, source, result in decoded:
            if isinstance(result, DeadLetter):
                acks.append(await self._send_dead_letter(message, result))
                continue
            user_id = result.user_id
            try:
                effects = engine.process(
                    result, self.states.get(user_id), now=now, raw=message.value, source=source
                )
            except Exception as error:  # an engine bug costs this event, not the whole batch
                acks.append(await self._internal_error(message, error, now))
                continue
            if effects.dead_letter is not None:
                acks.append(await self._send_dead_letter(message, effects.dead_letter))
                continue
            state = effects.state
            assert state is not None
            # Re-insert so dict order is least recently touched first (eviction order).
            self.states.pop(user_id, None)
            self.states[user_id] = state
            self.user_partition[user_id] = message.partition
            touched[user_id] = state
            key = user_id.encode()
            if effects.page is not None:
                payload = encode_page(effects.page, fmt)
                pages[user_id] = payload
                acks.append(await self.send(settings.recommendations_topic, key, payload))
            if effects.alert is not None:
                acks.append(
                    await self.send(
                        settings.churn_topic, key, encode_churn_alert(effects.alert, fmt)
                    )
                )
        for ack in acks:
            await ack  # broker acknowledged every output of the batch
        await self._checkpoint(touched, pages, now)
        self.counters["batches"] += 1
        self.counters["events"] += len(messages)
        self.counters["pages"] += len(pages)
        self._evict_if_needed()
        self.processing.record_ns(time.perf_counter_ns() - started, count=len(messages))

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
        found = await self.store.load_states(missing)
        for user_id, raw in found.items():
            try:
                self.states[user_id] = UserState.from_dict(orjson.loads(raw))
                self.counters["states_restored"] += 1
            except (ValueError, KeyError, TypeError) as error:
                self.counters["states_unreadable"] += 1
                log.warning("ignoring unreadable state checkpoint of %r: %s", user_id, error)

    async def _checkpoint(
        self, touched: dict[str, UserState], pages: dict[str, bytes], now: int
    ) -> None:
        store = self.store
        config = self.engine.config
        values: dict[str, bytes] = {}
        for user_id, state in touched.items():
            values[store.key("state", user_id)] = orjson.dumps(state.to_dict())
            values[store.key("session", user_id)] = orjson.dumps(
                public_session_features(state, now, config)
            )
        for user_id, payload in pages.items():
            values[store.key("page", user_id)] = payload
        await store.write(values)

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
                now = self.clock_ms()
                await self._checkpoint({s.user_id: s for s in ended}, {}, now)
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
        """Write counters and the processing-time histogram to ``{prefix}metrics:worker``.

        The histogram (time from a batch's consumption to its outputs acked and its state
        checkpointed, once per event of the batch) is cumulative and HDR-encoded:
        ``insession bench`` reads it at the start and the end of a phase and subtracts.
        """
        payload = {
            "ts_ms": self.clock_ms(),
            "events": self.counters["events"],
            "pages": self.counters["pages"],
            "batches": self.counters["batches"],
            "users_in_memory": len(self.states),
            "processing": self.processing.summary_ms(),
            "processing_hdr": self.processing.histogram.encode().decode("ascii"),
        }
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
        """Hand partitions back: wait for the batch in flight, then forget their users.

        Waiting matters: the batch's checkpoint must reach Redis before the next owner loads
        these users, and the batch must not put users back into memory after they were
        dropped (a stale copy would be used if the partition came back later; found by the
        two-worker test in tests/integration/test_faults.py).
        """
        revoked = set(partitions)
        async with self._lock:
            if self.owned_partitions is not None:
                self.owned_partitions -= revoked
            return self.drop_partitions(revoked)

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
