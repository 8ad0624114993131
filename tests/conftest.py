"""Shared fixtures: one embedded broker per session, Redis with per-test key prefixes, fresh names.

Environment:
- ``INSESSION_TEST_BOOTSTRAP``: use this external broker (``host:port``) instead of starting one.
- ``REDIS_URL``: Redis for integration tests (default ``redis://127.0.0.1:6379/0``).
- ``CI``: when true, an unreachable Redis fails the tests instead of skipping them.

Tests that use the ``broker``, ``bootstrap``, ``redis_url`` or ``key_prefix`` fixtures are
marked ``integration`` automatically, so ``pytest -m "not integration"`` runs only unit tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from stream.broker import EmbeddedBroker

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_INTEGRATION_FIXTURES = frozenset({"broker", "bootstrap", "redis_url", "key_prefix"})


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where the test broker listens; ``embedded`` is ``None`` for an external broker."""

    bootstrap: str
    embedded: EmbeddedBroker | None

    @property
    def is_embedded(self) -> bool:
        return self.embedded is not None


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerEndpoint]:
    """One broker per session: embedded Tansu on a free port, or $INSESSION_TEST_BOOTSTRAP."""
    external = os.environ.get("INSESSION_TEST_BOOTSTRAP", "").strip()
    if external:
        yield BrokerEndpoint(bootstrap=external, embedded=None)
        return
    with EmbeddedBroker() as embedded:
        yield BrokerEndpoint(bootstrap=embedded.bootstrap, embedded=embedded)


@pytest.fixture(scope="session")
def bootstrap(broker: BrokerEndpoint) -> str:
    """``host:port`` of the session's broker, for ``bootstrap.servers``."""
    return broker.bootstrap


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis; skips (locally) or fails (in CI) when there is none."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = (
            f"Redis is not reachable at {url} ({exc}). "
            "Run `make redis` or point REDIS_URL at a running Redis."
        )
        if _in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    finally:
        client.close()
    return url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh Redis key prefix ``insession-test-<hex>:``; its keys are deleted after the test."""
    prefix = f"insession-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory for fresh topic/group names: ``unique_name("events")`` -> ``"events-<hex>"``."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make
