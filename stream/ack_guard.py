"""Commit only what the worker finished: a guard on the Faust consumer's ``ack``.

Faust commits every offset its consumer was told to ``ack``, and it acks input messages the
agent never finished in three places (faust-streaming 0.15.3):

- ``Stream.on_stop`` closes the ``take_events`` generator of a stopping agent, whose
  ``finally`` acks the batch the agent is still working on (SIGTERM mid-batch: the offsets
  were committed on the way out and the batch's state never reached Redis; found by the
  SIGTERM rounds of ``tests/integration/test_faults.py``, one event lost per few runs);
- the stream acks messages it skips while flow control is off or after a generation change
  (shutdown, rebalances) without handing them to the agent;
- ``take_events`` acks a batch in a ``finally`` when the agent was cancelled in it.

Each of those lets a commit run past events whose effects were never made durable. The
guard makes the rule explicit instead of relying on Faust's control flow: the worker calls
:meth:`AckGuard.acknowledge` (or :meth:`AckGuard.finish`, then lets Faust ack) for the
messages of a batch once its outputs are acknowledged and its state is checkpointed, and the
consumer's ``ack`` refuses every other message of the guarded topics. A refused message is
never committed, so the next owner of its partition processes it (after a restart, or when
Faust seeks back to the committed offset on a rebalance). Faust has no hook for this, hence
wrapping the consumer instance's method.

The worker now consumes its topics in batches without Faust streams
(``stream.kafka_transport.consume_in_batches``), so none of the three paths above reaches its
messages any more; the guard stays as the single place that states, and enforces, when an
input offset may be committed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["AckGuard"]


class AckGuard:
    """Lets the consumer acknowledge a message of ``topics`` only after :meth:`finish`.

    Examples
    --------
    >>> class Consumer:
    ...     def ack(self, message): return True
    >>> class Message:
    ...     topic = "events"
    >>> consumer, guard = Consumer(), AckGuard({"events"})
    >>> guard.install(consumer)
    >>> message = Message()
    >>> consumer.ack(message), guard.refused
    (False, 1)
    >>> guard.finish([message])
    >>> consumer.ack(message)
    True
    """

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self._ack: Callable[[Any], bool] | None = None
        #: Messages whose batch is done; weak, so finished messages are not kept alive.
        self._finished: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Acks refused so far (messages not finished: skipped, interrupted, revoked).
        self.refused = 0

    def finish(self, messages: Iterable[Any]) -> None:
        """Allow these messages to be acknowledged (their effects are durable)."""
        self._finished.update(messages)

    def acknowledge(self, messages: Iterable[Any]) -> int:
        """Finish these messages and acknowledge them to the consumer; returns how many took.

        For runtimes that acknowledge themselves (batch delivery): call it only once the
        messages' effects are durable.
        """
        ack = self._ack
        if ack is None:
            raise RuntimeError("AckGuard.install(consumer) must come first")
        finished = list(messages)
        self._finished.update(finished)
        return sum(1 for message in finished if ack(message))

    def allows(self, message: Any) -> bool:
        """Whether the consumer may acknowledge ``message`` now."""
        return message.topic not in self.topics or message in self._finished

    def install(self, consumer: Any) -> None:
        """Wrap ``consumer.ack`` (Faust's ``Consumer.ack(message) -> bool``) with the guard."""
        original: Callable[[Any], bool] = consumer.ack

        def ack(message: Any) -> bool:
            if not self.allows(message):
                self.refused += 1
                return False
            return original(message)

        consumer.ack = ack
        self._ack = ack
