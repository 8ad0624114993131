"""A Faust transport (aiokafka driver) whose consumer fetch wait is configurable.

Faust 0.15.3's aiokafka driver builds its consumer with a hard-coded ``fetch_max_wait_ms=1500``
that no setting exposes (``AIOKafkaConsumerThread._create_worker_consumer``). A broker that
waits out the full max wait on every fetch (Tansu does) then adds ~0.4 s to every event.

This transport builds the consumer exactly as Faust does and then replaces the wait before
``AIOKafkaConsumer.start()`` hands it to the ``Fetcher``. The value comes from the Faust app:
``app.insession_fetch_max_wait_ms`` (an int, milliseconds; default 50).

Select it in either of two ways:

- ``faust.App(..., broker="insession://host:9092")``: the ``faust.transports`` entry point
  named ``insession`` in ``pyproject.toml`` maps the URL scheme to :class:`Transport`.
- keep ``broker="kafka://host:9092"`` and call :func:`install` on the app before it starts
  (it replaces the consumer transport; producers are unaffected by the fetch wait).
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerT

__all__ = [
    "DEFAULT_FETCH_MAX_WAIT_MS",
    "FETCH_MAX_WAIT_ATTR",
    "AIOKafkaConsumerThread",
    "Consumer",
    "Transport",
    "fetch_max_wait_ms",
    "install",
]

#: Name of the Faust app attribute that holds the fetch wait in milliseconds.
FETCH_MAX_WAIT_ATTR = "insession_fetch_max_wait_ms"
#: 50 ms: low latency on Tansu without the stalls seen at 10 ms or less (see BROKER-NOTES.md).
DEFAULT_FETCH_MAX_WAIT_MS = 50


def fetch_max_wait_ms(app: Any) -> int:
    """The fetch wait configured on ``app`` (``app.insession_fetch_max_wait_ms``), validated."""
    value = getattr(app, FETCH_MAX_WAIT_ATTR, DEFAULT_FETCH_MAX_WAIT_MS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{FETCH_MAX_WAIT_ATTR} must be an int >= 0 (ms), got {value!r}")
    return value


def _set_fetch_max_wait(consumer: aiokafka.AIOKafkaConsumer, wait_ms: int) -> None:
    # aiokafka 0.14 stores the constructor argument on the consumer and passes it to the
    # Fetcher it creates in ``start()``; the fetcher copies it, so this must happen before.
    if getattr(consumer, "_fetcher", None) is not None:
        raise RuntimeError("the aiokafka consumer is already started; too late to set the wait")
    if not hasattr(consumer, "_fetch_max_wait_ms"):
        raise RuntimeError(
            "aiokafka.AIOKafkaConsumer has no _fetch_max_wait_ms: aiokafka changed; "
            "revisit stream/kafka_transport.py"
        )
    consumer._fetch_max_wait_ms = wait_ms


class AIOKafkaConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait taken from the app."""

    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        wait_ms = fetch_max_wait_ms(self.app)  # validate before building a consumer to close
        consumer = super()._create_worker_consumer(transport)
        _set_fetch_max_wait(consumer, wait_ms)
        return consumer

    def _create_client_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        wait_ms = fetch_max_wait_ms(self.app)
        consumer = super()._create_client_consumer(transport)
        _set_fetch_max_wait(consumer, wait_ms)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, running :class:`AIOKafkaConsumerThread`."""

    _thread: AIOKafkaConsumerThread

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a configurable consumer fetch wait.

    Any URL scheme works once the class is chosen (only host and port are used).
    """

    Consumer: ClassVar[type[ConsumerT]] = Consumer


def install(app: faust.App) -> Transport:
    """Make ``app`` consume through :class:`Transport` whatever its broker URL scheme is.

    Call before the app's consumer is created (before ``app.start()`` / the worker starts).
    """
    if app._consumer is not None:
        raise RuntimeError("install() must run before the app creates its consumer")
    transport = Transport(app.conf.broker_consumer, app)
    app.transport = transport
    return transport
