"""The worker's batch loop in two overlapping stages, so neither the CPU nor the wait for Kafka idles the other.

A batch's life: processed and its output handed to the producer (``prepare``), then, once Kafka has confirmed
every record, its follow-up writes made and its events acknowledged (``settle``). Run one after the other, a
worker spends each Kafka round trip doing nothing; taken too eagerly, batches stay tiny and each one's fixed
cost (a produce request, a round trip, the follow-up writes) eats the time that Faust needs to hand over
events. So a batch short of full is taken only when nothing is in flight (as Nagle's algorithm does for small
packets) and ``linger`` seconds after the previous one was taken: a lone event after a quiet spell goes
straight through, and a busy stream fills batches meanwhile. Full batches are taken at once and prepared
ahead, up to ``in_flight`` of them.

Order is kept where it matters: batches are prepared one at a time and settled one at a time, both in the order
they were taken, so a task's records reach the producer (and so its partition) in event order, and an event is
acknowledged only after everything before it in its partition has been settled. Any failure in either stage
goes to ``on_failure``, which must not return (the worker exits without acknowledging): a batch cannot be
retried on its own once later batches have been sent after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, NoReturn, TypeVar

from streams.worker.inbox import Inbox

E = TypeVar("E")  # an event
F = TypeVar("F")  # what prepare hands to settle for one batch

_CLOSED = object()


class BatchPipeline(Generic[E, F]):
    """Batches taken from an inbox, prepared in order, settled in order, at most ``in_flight`` prepared ahead."""

    def __init__(self, prepare: Callable[[list[E]], Awaitable[F]], settle: Callable[[list[E], F], Awaitable[None]],
                 on_failure: Callable[[BaseException], NoReturn], *, batch_size: int, in_flight: int,
                 linger: float = 0.0, idle_every: float | None = None, grace: float = 30.0) -> None:
        self._prepare = prepare
        self._settle = settle
        self._on_failure = on_failure
        self.batch_size = batch_size
        self.inbox: Inbox[E] = Inbox(2 * batch_size)
        # Prepared batches waiting to be settled; put() waits while ``in_flight`` are, which bounds what a crash
        # makes the next owner read again.
        self._prepared: asyncio.Queue[tuple[list[E], F] | object] = asyncio.Queue(maxsize=in_flight)
        self._closing = False
        self._preparing = False
        self._linger = linger  # seconds between batches short of full, so that a busy stream fills them
        self._last_take = float("-inf")
        # Seconds without events after which an empty batch is taken (nothing in flight): the worker's look at
        # what its consumer may have read past. None: batches only ever hold events.
        self._idle_every = idle_every
        self._unsettled = 0  # batches taken and not yet settled
        self._settled = asyncio.Event()  # set whenever a batch is settled
        self._grace = grace  # seconds close() waits for each stage to finish what it has in hand
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._prepare_loop()), asyncio.ensure_future(self._settle_loop())]

    async def put(self, event: E) -> None:
        """Hand an event over; waits while the inbox is full."""
        await self.inbox.put(event)

    async def close(self) -> None:
        """Stop taking batches and settle those already prepared; what is still in the inbox stays unacknowledged."""
        if not self._tasks:
            return
        prepare_task, settle_task = self._tasks
        self._closing = True
        if not self._preparing:
            prepare_task.cancel()  # waiting for events: nothing in hand
        await asyncio.wait([prepare_task], timeout=self._grace)
        if not prepare_task.done():
            prepare_task.cancel()  # still preparing after the timeout: on_failure ends the process
            await asyncio.wait([prepare_task])
        closed = asyncio.ensure_future(self._prepared.put(_CLOSED))  # after the batches already prepared
        await asyncio.wait([settle_task], timeout=self._grace)
        closed.cancel()
        if not settle_task.done():
            settle_task.cancel()  # Kafka still has not confirmed: on_failure ends the process
            await asyncio.wait([settle_task])

    async def _next_batch(self) -> list[E]:
        """A batch once one is full; short of that, at once when nothing is in flight and the last batch was
        taken at least ``linger`` seconds ago, else once both are true. An empty one after ``idle_every``
        seconds without an event, once nothing is in flight."""
        loop = asyncio.get_running_loop()
        while not len(self.inbox):
            try:
                await asyncio.wait_for(self.inbox.wait_for(1), self._idle_every)  # None: no limit
            except TimeoutError:
                if not self._unsettled:
                    self._unsettled += 1
                    return []
        while len(self.inbox) < self.batch_size:
            pause = self._last_take + self._linger - loop.time()
            if not self._unsettled and pause <= 0:
                break
            self._settled.clear()
            waiters = [asyncio.ensure_future(self.inbox.wait_for(self.batch_size))]
            if self._unsettled:
                waiters.append(asyncio.ensure_future(self._settled.wait()))
            try:
                await asyncio.wait(waiters, timeout=None if self._unsettled else pause,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        self._unsettled += 1
        self._last_take = loop.time()
        return self.inbox.take_now(self.batch_size)

    async def _prepare_loop(self) -> None:
        while not self._closing:
            batch = await self._next_batch()
            self._preparing = True
            try:
                prepared = await self._prepare(batch)
                await self._prepared.put((batch, prepared))
            except BaseException as error:  # nothing is swallowed: on_failure does not return
                self._on_failure(error)
            finally:
                self._preparing = False

    async def _settle_loop(self) -> None:
        while True:
            item = await self._prepared.get()
            if item is _CLOSED:
                return
            batch, prepared = item  # type: ignore[misc]
            try:
                await self._settle(batch, prepared)
            except BaseException as error:  # nothing is swallowed: on_failure does not return
                self._on_failure(error)
            self._unsettled -= 1
            self._settled.set()
