"""Batch completions run in the background, one after the other, a bounded number at a time.

A batch is *processed* (engine run, outputs handed to the producer, state serialized) in the
consumer's drain loop, and *completed* here: its outputs' broker acknowledgements awaited, its
checkpoint written to Redis, its input messages acknowledged. Waiting for the acks (producer
linger plus a round trip, 5-10 ms) and the Redis write before fetching the next batch left the
worker idle most of the time under load; overlapping them with the next batch's processing is
what lets one worker use its core.

At-least-once is kept because a completion acknowledges its input only after its own outputs
are acknowledged and its checkpoint is written, and it starts that work only after the
completion before it has finished: checkpoints reach Redis in batch order, and an
acknowledged offset is never ahead of an effect that is not durable (Faust commits only the
contiguous acknowledged prefix of each partition, so a failed batch also holds back the
commits of the batches after it in its partitions).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["InFlight"]

log = logging.getLogger(__name__)

#: Called with the exception when a completion fails (the worker stops: see stream/app.py).
FailureHandler = Callable[[BaseException], Awaitable[None]]


async def _log_failure(error: BaseException) -> None:
    log.error("a batch completion failed: %r", error)


class InFlight:
    """Ordered background completions, at most ``limit`` submitted and not yet finished.

    Examples
    --------
    >>> async def demo() -> list[int]:
    ...     done: list[int] = []
    ...     inflight = InFlight(limit=2)
    ...     for n in range(3):
    ...         async def complete(n: int = n) -> None:
    ...             await asyncio.sleep(0.001 * (3 - n))  # later batches finish sooner ...
    ...             done.append(n)
    ...         await inflight.submit(complete)
    ...     await inflight.drain()
    ...     return done
    >>> asyncio.run(demo())  # ... but complete in submission order
    [0, 1, 2]
    """

    def __init__(self, limit: int, on_failure: FailureHandler = _log_failure) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.on_failure = on_failure
        self._slots = asyncio.Semaphore(limit)
        self._last: asyncio.Task[None] | None = None
        self._pending = 0

    @property
    def pending(self) -> int:
        """Completions submitted and not finished yet."""
        return self._pending

    async def submit(self, completion: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Start ``completion`` after every earlier one; waits while ``limit`` are pending.

        The wait is the worker's backpressure: while it lasts, nothing more is fetched.
        """
        await self._slots.acquire()
        self._pending += 1
        task = asyncio.ensure_future(self._run(self._last, completion))
        self._last = task
        return task

    async def drain(self) -> None:
        """Wait until everything submitted so far has finished (failed ones included)."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])  # neither its failure nor its cancellation is ours

    async def _run(
        self, previous: asyncio.Task[None] | None, completion: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            if previous is not None:
                await previous  # order; a cancelled one cancels this one (not acknowledged)
            try:
                await completion()
            except Exception as error:  # reported, not raised: nothing awaits the last task
                await self.on_failure(error)
        finally:
            self._pending -= 1
            self._slots.release()
