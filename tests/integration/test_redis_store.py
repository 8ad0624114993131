"""The Redis store's batch write against a real Redis: one script call, TTLs, the fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ResponseError

from stream.redis_store import RedisStore


@pytest.fixture
def client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    sync = redis.Redis.from_url(redis_url)
    yield sync
    keys = list(sync.scan_iter(match=f"{key_prefix}*", count=1000))
    if keys:
        sync.delete(*keys)
    sync.close()


async def test_a_batch_write_sets_every_key_with_its_ttl(
    redis_url: str, key_prefix: str, client: redis.Redis
) -> None:
    store = RedisStore(redis_url, prefix=key_prefix, ttl_s=600)
    try:
        # More keys than one script call takes: the write is cut into several calls.
        values = {store.key("state", f"u{i}"): f"v{i}".encode() for i in range(4_500)}
        assert await store.write(values) is True
        assert store.scripted_writes
        assert client.get(store.key("state", "u0")) == b"v0"
        assert client.get(store.key("state", "u4499")) == b"v4499"
        assert client.dbsize() >= 4_500
        assert 0 < client.ttl(store.key("state", "u4499")) <= 600
        assert store.counters["redis_keys_written"] == 4_500
    finally:
        await store.close()


async def test_a_store_refused_scripts_falls_back_to_pipelined_sets(
    redis_url: str, key_prefix: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore(redis_url, prefix=key_prefix, ttl_s=60)

    async def refused(**_: object) -> None:
        raise ResponseError("NOPERM this user has no permissions to run the 'evalsha' command")

    monkeypatch.setattr(store, "_set_all", refused)
    try:
        assert await store.write({store.key("page", "u1"): b"p1"}) is True
        assert store.scripted_writes is False
        assert client.get(store.key("page", "u1")) == b"p1"
        assert 0 < client.ttl(store.key("page", "u1")) <= 60
    finally:
        await store.close()


async def test_other_script_errors_are_failed_writes_kept_for_the_next_try(
    redis_url: str, key_prefix: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore(redis_url, prefix=key_prefix, ttl_s=60)

    async def out_of_memory(**_: object) -> None:
        raise ResponseError("OOM command not allowed when used memory > 'maxmemory'")

    monkeypatch.setattr(store, "_set_all", out_of_memory)
    try:
        assert await store.write({store.key("page", "u2"): b"p2"}) is False
        assert store.scripted_writes, "a full Redis is not a reason to stop using the script"
        assert store.buffered == 1 and client.get(store.key("page", "u2")) is None
        monkeypatch.undo()
        assert await store.write({}) is True  # the next write flushes what was kept
        assert client.get(store.key("page", "u2")) == b"p2"
    finally:
        await store.close()
