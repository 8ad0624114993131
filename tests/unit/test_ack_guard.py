"""The ack guard: Faust may commit an input offset only after the agent finished its batch."""

from __future__ import annotations

from typing import Any

import pytest
from faust.types.tuples import TP, ConsumerMessage

from stream.ack_guard import AckGuard
from stream.app import WorkerApp
from stream.config import Settings


class _Consumer:
    def __init__(self) -> None:
        self.acked: list[tuple[str, int]] = []

    def ack(self, message: Any) -> bool:
        self.acked.append((message.topic, message.offset))
        return True


def _message(topic: str, offset: int) -> ConsumerMessage:
    return ConsumerMessage(topic, 0, offset, 0.0, 0, None, b"k", b"v", None, tp=TP(topic, 0))


def test_messages_reach_the_consumer_only_once_finished() -> None:
    consumer, guard = _Consumer(), AckGuard({"events"})
    guard.install(consumer)
    done, unfinished, other = _message("events", 1), _message("events", 2), _message("x", 3)
    guard.finish([done])
    # Faust's own path: Message.ack -> on_final_ack -> consumer.ack
    for message in (done, unfinished, other):
        message.refcount = 1
        message.ack(consumer)  # type: ignore[arg-type]
    assert consumer.acked == [("events", 1), ("x", 3)]
    assert guard.refused == 1
    assert unfinished.acked is False, "a refused message stays unacknowledged"


def test_the_worker_guards_its_input_topics() -> None:
    settings = Settings(events_topic="ev", catalog_topic="cat")
    app = WorkerApp(settings)
    assert app.ack_guard.topics == {"ev", "cat"}
    message = _message("ev", 7)
    message.refcount = 1
    assert message.ack(app.app.consumer) is False  # type: ignore[arg-type]
    assert app.ack_guard.refused == 1


def test_acknowledge_finishes_and_acks_through_the_guard() -> None:
    """Batch delivery acknowledges itself: ``acknowledge`` is the one way past the guard."""
    consumer, guard = _Consumer(), AckGuard({"events"})
    with pytest.raises(RuntimeError):
        guard.acknowledge([_message("events", 0)])  # not installed yet
    guard.install(consumer)
    done = [_message("events", 1), _message("events", 2)]
    assert guard.acknowledge(done) == 2
    assert consumer.acked == [("events", 1), ("events", 2)]
    assert consumer.ack(_message("events", 3)) is False and guard.refused == 1
