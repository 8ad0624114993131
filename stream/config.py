"""Worker settings, read from the environment (12-factor), with the engine's settings inside."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from processors.config import EngineConfig
from schemas.codec import CodecLimits

__all__ = ["DEV_SNAPSHOT_KEY", "Settings", "parse_arms"]

#: Used only when INSESSION_SNAPSHOT_KEY is unset; the worker logs a warning when it is.
DEV_SNAPSHOT_KEY = "insession-dev-only-snapshot-key"
_SECRET_FIELDS = frozenset({"sasl_password", "redis_password", "snapshot_key", "ssl_key_password"})


def parse_arms(spec: str) -> tuple[tuple[str, float], ...]:
    """Parse ``"personalized=0.9,holdout=0.1"`` into arms with shares.

    Examples
    --------
    >>> parse_arms("a=3, b=1")
    (('a', 3.0), ('b', 1.0))
    """
    arms = []
    for part in spec.split(","):
        name, _, share = part.strip().partition("=")
        if not name or not share:
            raise ValueError(f"arm {part!r} must look like name=share")
        arms.append((name.strip(), float(share)))
    return tuple(arms)


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to know; ``from_env`` documents the variable for each field."""

    bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str | None = field(default=None, repr=False)
    redis_prefix: str = "insession:"
    redis_ttl_s: int = 86_400
    app_id: str = "insession"
    events_topic: str = "insession.events"
    catalog_topic: str = "insession.catalog"
    recommendations_topic: str = "insession.recommendations"
    churn_topic: str = "insession.churn-alerts"
    dead_letter_topic: str = "insession.dead-letters"
    partitions: int = 8
    output_format: str = "json"
    fetch_max_wait_ms: int = 50
    producer_linger_ms: int = 5
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    rebalance_timeout_s: float = 6.0
    #: Most events handed to the pipeline at once (a fetched round is cut into such slices).
    batch_max: int = 500
    #: Batches processed whose outputs' acks and Redis checkpoint are still awaited; at the
    #: limit the worker stops fetching until the oldest completes (stream/inflight.py).
    max_batches_in_flight: int = 2
    #: One page per user per batch, answering all of that user's triggers in the batch
    #: (``Page.coalesced_event_ids``); false: one page per trigger event (see README).
    coalesce_pages: bool = True
    #: Freeze what survives each full garbage collection (and the start-up objects), so the
    #: next full collection walks only newer objects: shorter pauses (stream/latency.py).
    gc_freeze: bool = True
    #: Also freeze the survivors of every young collection, so no collection walks more than
    #: one young collection's survivors; garbage cycles among frozen objects are then freed
    #: by an hourly sweep (one full walk) instead (stream/latency.py).
    gc_freeze_young: bool = True
    #: Seconds between unfreezes (or, with ``gc_freeze_young``, sweeps) that let garbage
    #: cycles among frozen objects be freed.
    gc_sweep_interval_s: float = 3600.0
    #: Allocations between young garbage collections (Python's default is 700). 0 keeps the
    #: interpreter's setting.
    gc_young_threshold: int = 0
    #: The interpreter's thread switch interval in ms (``sys.setswitchinterval``; Python's is
    #: 5 ms). Faust's consumer runs in a thread of its own: while it parses a fetch, a batch
    #: being processed waits up to this long for the GIL. 0 keeps the interpreter's setting.
    switch_interval_ms: float = 0.0
    model_checkpoint_s: float = 30.0
    expiry_interval_s: float = 5.0
    catalog_refresh_s: float = 2.0
    #: Users whose state is kept in memory; beyond it the least recently touched are dropped
    #: (their checkpoint in Redis stays, and is loaded again on their next event).
    max_users_in_memory: int = 200_000
    #: Catalog items held; beyond it the oldest-inserted item is dropped.
    max_catalog_items: int = 1_000_000
    #: Serve-time feature vectors of recent pages kept for learning from their outcomes.
    served_cache_pages: int = 20_000
    #: Redis writes kept while Redis is unreachable; beyond it the oldest are dropped (counted).
    redis_max_buffered_keys: int = 200_000
    #: Input limits (schemas.codec.CodecLimits): larger input is dead-lettered, not truncated.
    max_message_bytes: int = 65_536
    max_string_len: int = 256
    max_list_len: int = 64
    #: Dead letters carry at most this many bytes of the original message (the producer's
    #: request limit is 1 MB and base64 adds a third); the reason says when it was cut.
    dead_letter_max_original_bytes: int = 262_144
    snapshot_key: str = field(default=DEV_SNAPSHOT_KEY, repr=False)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    #: CA bundle for a ``rediss://`` REDIS_URL (TLS); the system CAs when unset.
    redis_ssl_cafile: str | None = None
    log_level: str = "info"
    engine: EngineConfig = field(default_factory=EngineConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from environment variables (see README, "Settings")."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default: object) -> object:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            if isinstance(default, bool):
                return raw.lower() in ("1", "true", "yes")
            if isinstance(default, int):
                return int(raw)
            if isinstance(default, float):
                return float(raw)
            return raw

        values: dict[str, object] = {
            "bootstrap_servers": get("KAFKA_BOOTSTRAP_SERVERS", defaults.bootstrap_servers),
            "redis_url": get("REDIS_URL", defaults.redis_url),
            "redis_password": env.get("REDIS_PASSWORD") or None,
            "security_protocol": get("KAFKA_SECURITY_PROTOCOL", defaults.security_protocol),
            "sasl_mechanism": env.get("KAFKA_SASL_MECHANISM") or None,
            "sasl_username": env.get("KAFKA_SASL_USERNAME") or None,
            "sasl_password": env.get("KAFKA_SASL_PASSWORD") or None,
            "ssl_cafile": env.get("KAFKA_SSL_CAFILE") or None,
            "ssl_certfile": env.get("KAFKA_SSL_CERTFILE") or None,
            "ssl_keyfile": env.get("KAFKA_SSL_KEYFILE") or None,
            "ssl_key_password": env.get("KAFKA_SSL_KEY_PASSWORD") or None,
            "redis_ssl_cafile": env.get("REDIS_SSL_CAFILE") or None,
        }
        for f in dataclasses.fields(cls):
            if f.name in values or f.name == "engine":
                continue
            values[f.name] = get(f"INSESSION_{f.name.upper()}", getattr(defaults, f.name))
        engine_defaults = EngineConfig()
        engine_values: dict[str, object] = {}
        for f in dataclasses.fields(EngineConfig):
            if f.name in ("arms", "page_trigger_types"):
                continue
            engine_values[f.name] = get(
                f"INSESSION_ENGINE_{f.name.upper()}", getattr(engine_defaults, f.name)
            )
        arms = env.get("INSESSION_ARMS")
        if arms:
            engine_values["arms"] = parse_arms(arms)
        triggers = env.get("INSESSION_PAGE_TRIGGER_TYPES")
        if triggers:
            engine_values["page_trigger_types"] = frozenset(
                t.strip() for t in triggers.split(",") if t.strip()
            )
        values["engine"] = EngineConfig(**engine_values)  # type: ignore[arg-type]
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def codec_limits(self) -> CodecLimits:
        """The input limits every consumed message is decoded with."""
        for name in ("max_message_bytes", "max_string_len", "max_list_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return CodecLimits(
            max_message_bytes=self.max_message_bytes,
            max_string_len=self.max_string_len,
            max_list_len=self.max_list_len,
        )

    @property
    def using_dev_snapshot_key(self) -> bool:
        """True when model snapshots are signed with the public development key."""
        return self.snapshot_key == DEV_SNAPSHOT_KEY

    def __repr__(self) -> str:
        # The default repr would print a password embedded in REDIS_URL.
        shown = ", ".join(f"{name}={value!r}" for name, value in self.redacted().items())
        return f"Settings({shown})"

    def redacted(self) -> dict[str, object]:
        """Settings for logs: secrets replaced by ``***``."""
        shown: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value:
                value = "***"
            elif f.name == "redis_url":
                value = _redact_url(str(value))
            shown[f.name] = value
        return shown

    def output_topics(self) -> dict[str, int]:
        """Every topic the worker uses, with the partition count to create it with."""
        return {
            self.events_topic: self.partitions,
            self.catalog_topic: self.partitions,
            self.recommendations_topic: self.partitions,
            self.churn_topic: self.partitions,
            self.dead_letter_topic: self.partitions,
        }


def _redact_url(url: str) -> str:
    """Hide a password embedded in a URL such as redis://:secret@host:6379/0."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
