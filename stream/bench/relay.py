"""The broker floor's relay: confluent-kafka consume → produce, each record unchanged.

Event → page crosses the broker twice (events topic → worker → pages topic → reader), so the
floor is the same two hops with nothing in between: this relay reads the input topic with the
consumer settings the worker uses (fetch wait, assigned partitions, ``poll`` then
``consume(n, 0)``) and produces every record to the output topic (linger as the worker's
producer). Run as its own process, like the worker and the Faust forwarder:
``python -m stream.bench.relay BOOTSTRAP IN_TOPIC OUT_TOPIC PARTITIONS [FETCH_WAIT_MS LINGER_MS]``.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

__all__ = ["main", "relay"]


def relay(
    bootstrap: str,
    in_topic: str,
    out_topic: str,
    partitions: int,
    *,
    fetch_wait_ms: int = 50,
    linger_ms: int = 5,
) -> int:
    """Forward records until SIGTERM/SIGINT; returns how many were forwarded."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"relay-{in_topic}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
        }
    )
    consumer.assign([TopicPartition(in_topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all"})
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    forwarded = 0
    try:
        while not stopping:
            first = consumer.poll(0.05)
            if first is None:
                producer.poll(0)
                continue
            batch = [first, *consumer.consume(1000, 0)]
            for message in batch:
                if message.error() is None:
                    producer.produce(out_topic, key=message.key(), value=message.value())
                    forwarded += 1
            producer.poll(0)
    finally:
        producer.flush(5)
        consumer.close()
    return forwarded


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    bootstrap, in_topic, out_topic, partitions = args[0], args[1], args[2], int(args[3])
    fetch_wait = int(args[4]) if len(args) > 4 else 50
    linger = int(args[5]) if len(args) > 5 else 5
    relay(bootstrap, in_topic, out_topic, partitions, fetch_wait_ms=fetch_wait, linger_ms=linger)
    return 0


if __name__ == "__main__":
    sys.exit(main())
