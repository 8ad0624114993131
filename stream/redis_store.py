"""Redis: the serving copy of pages and session features, and the checkpoint of user state.

Keys (``prefix`` defaults to ``insession:``), every one with a TTL so Redis never grows forever:

- ``{prefix}page:{user_id}``: the latest page (JSON, as on the recommendations topic);
- ``{prefix}session:{user_id}``: the session features (JSON);
- ``{prefix}state:{user_id}``: the engine's full user state, the worker's restart checkpoint;
- ``{prefix}catalog`` (hash item_id → catalog JSON) and ``{prefix}catalog:version``;
- ``{prefix}models``: the latest signed model snapshot.

Writes go out once per batch, as one server-side script call (``SET key value EX ttl`` for
every key, atomically): a pipeline of as many ``SET`` commands cost ~33 µs of client CPU per
key in redis-py's asyncio client (9.3 ms for a batch's 280 keys, against 1.1 ms for the
script), the largest cost of the worker around the engine. Where scripting is refused (an ACL
without ``EVALSHA``, a proxy without scripting) the store falls back to the pipeline, once,
and logs it. When Redis is down the writes are kept (latest value per key, bounded) and
retried with the next batch, so the worker keeps serving from Kafka meanwhile.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

#: KEYS are the keys, ARGV[1] the TTL in seconds and ARGV[i + 1] the value of KEYS[i].
_SET_ALL_WITH_TTL = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""
#: Keys per script call: a flush after an outage can hold 200,000; one call would block Redis.
_KEYS_PER_CALL = 2_000


def _scripting_refused(error: ResponseError) -> bool:
    """Whether Redis said no to scripts as such (ACL, disabled command), not to this write."""
    text = str(error).lower()
    return "noperm" in text or "unknown command" in text or "disabled" in text


class RedisStore:
    """Async, pipelined access to the keys above, tolerant of Redis outages."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "insession:",
        ttl_s: int = 86_400,
        password: str | None = None,
        max_buffered_keys: int = 200_000,
        ssl_ca_certs: str | None = None,
    ) -> None:
        options: dict[str, object] = {}
        if ssl_ca_certs and url.startswith("rediss://"):
            options["ssl_ca_certs"] = ssl_ca_certs  # TLS comes from the rediss:// scheme
        self.client = aioredis.Redis.from_url(
            url, password=password, socket_timeout=2.0, socket_connect_timeout=2.0, **options
        )
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.counters: Counter[str] = Counter()
        self._buffer: OrderedDict[str, bytes] = OrderedDict()
        self._max_buffered = max_buffered_keys
        self._catalog_pending: OrderedDict[str, bytes] = OrderedDict()
        self._failing = False
        self._set_all = self.client.register_script(_SET_ALL_WITH_TTL)
        #: False once Redis refused the script: writes use a pipeline of SET commands.
        self.scripted_writes = True

    def key(self, kind: str, name: str = "") -> str:
        """Full key for a kind of value (``page``, ``session``, ``state``, ...)."""
        return f"{self.prefix}{kind}:{name}" if name else f"{self.prefix}{kind}"

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    # -- user state ----------------------------------------------------------------------

    async def load_states(self, user_ids: list[str]) -> dict[str, bytes]:
        """Checkpointed states of these users (missing users are absent from the result).

        A state still waiting in the outage buffer is newer than Redis's copy, so it wins.
        """
        found: dict[str, bytes] = {}
        wanted = []
        for user_id in user_ids:
            buffered = self._buffer.get(self.key("state", user_id))
            if buffered is not None:
                found[user_id] = buffered
            else:
                wanted.append(user_id)
        if not wanted:
            return found
        try:
            values = await self.client.mget([self.key("state", u) for u in wanted])
        except (RedisError, OSError) as error:
            self.counters["redis_read_failures"] += 1
            log.warning(
                "redis read failed (%s); starting %d users from empty state", error, len(wanted)
            )
            return found
        for user_id, value in zip(wanted, values, strict=True):
            if value is not None:
                found[user_id] = value
        return found

    async def write(self, values: dict[str, bytes]) -> bool:
        """SET every key with the TTL; on failure keep them for the next try."""
        if self._buffer:
            self._buffer.update(values)
            values = dict(self._buffer)
        if not values:
            return True
        try:
            await self._set_with_ttl(values)
        except (RedisError, OSError) as error:
            self.counters["redis_write_failures"] += 1
            if not self._failing:
                log.warning("redis write failed (%s); buffering writes until it is back", error)
            self._failing = True
            self._keep(values)
            return False
        if self._failing:
            log.info("redis is back; wrote %d buffered keys", len(values))
            self._failing = False
        self._buffer.clear()
        self.counters["redis_keys_written"] += len(values)
        return True

    async def _set_with_ttl(self, values: dict[str, bytes]) -> None:
        """``SET key value EX ttl`` for every key: by script, or by pipeline if refused."""
        if self.scripted_writes:
            try:
                items = list(values.items())
                for start in range(0, len(items), _KEYS_PER_CALL):
                    chunk = items[start : start + _KEYS_PER_CALL]
                    await self._set_all(
                        keys=[key for key, _ in chunk],
                        args=[self.ttl_s, *(value for _, value in chunk)],
                    )
                return
            except ResponseError as error:
                if not _scripting_refused(error):
                    raise  # e.g. OOM: a failed write like any other (buffered, retried)
                log.warning("redis refused the write script (%s); using pipelined SETs", error)
                self.scripted_writes = False
        pipe = self.client.pipeline(transaction=False)
        ttl = self.ttl_s
        for key, value in values.items():
            pipe.set(key, value, ex=ttl)
        await pipe.execute()

    def _keep(self, values: dict[str, bytes]) -> None:
        buffer = self._buffer
        for key, value in values.items():
            buffer.pop(key, None)
            buffer[key] = value
        while len(buffer) > self._max_buffered:
            buffer.popitem(last=False)
            self.counters["redis_writes_dropped"] += 1
        self.counters["redis_buffered_keys"] = len(buffer)

    @property
    def buffered(self) -> int:
        """Writes waiting for Redis to come back."""
        return len(self._buffer)

    @property
    def catalog_pending(self) -> int:
        """Catalog items waiting for Redis to come back."""
        return len(self._catalog_pending)

    # -- catalog ---------------------------------------------------------------------------

    async def put_catalog(self, items: dict[str, bytes]) -> bool:
        """Store catalog items (no TTL: the catalog is reference data) and bump the version.

        Items that cannot be written (Redis down) are kept, bounded like the other writes,
        and retried with the next call (``put_catalog({})`` retries only them): the catalog
        topic's offsets are committed regardless, so this copy is the only one left.
        """
        pending = self._catalog_pending
        for item_id, value in items.items():
            pending.pop(item_id, None)
            pending[item_id] = value
        while len(pending) > self._max_buffered:
            pending.popitem(last=False)
            self.counters["redis_writes_dropped"] += 1
        if not pending:
            return True
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.key("catalog"), mapping=dict(pending))
            pipe.incr(self.key("catalog", "version"))
            await pipe.execute()
        except (RedisError, OSError) as error:
            self.counters["redis_write_failures"] += 1
            log.warning("redis catalog write failed (%s); %d items kept", error, len(pending))
            return False
        pending.clear()
        return True

    async def catalog_version(self) -> int | None:
        """Counter bumped on every catalog write, so workers reload only when it moved."""
        try:
            value = await self.client.get(self.key("catalog", "version"))
        except (RedisError, OSError):
            return None
        return int(value) if value is not None else 0

    async def load_catalog(self) -> list[bytes]:
        """Every stored catalog item."""
        try:
            return list((await self.client.hgetall(self.key("catalog"))).values())
        except (RedisError, OSError) as error:
            log.warning("redis catalog read failed (%s)", error)
            return []

    # -- models ----------------------------------------------------------------------------

    async def save_models(self, blob: bytes) -> bool:
        """Store the signed model snapshot."""
        try:
            await self.client.set(self.key("models"), blob)
        except (RedisError, OSError) as error:
            log.warning("redis model checkpoint failed (%s)", error)
            return False
        return True

    async def load_models(self) -> bytes | None:
        """The latest model snapshot, if any."""
        try:
            return await self.client.get(self.key("models"))
        except (RedisError, OSError) as error:
            log.warning("redis model snapshot read failed (%s)", error)
            return None
