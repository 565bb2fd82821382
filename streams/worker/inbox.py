"""A bounded hand-over between Faust's stream and the worker's batch loop.

Faust's ``take_events`` stops filling its buffer while the agent works on a batch and then waits up to its
``within`` for the next one, so a worker alternates between collecting and processing, and a lone event waits
for company it may never get. The worker instead lets Faust's stream fill this inbox all the time and decides
itself when to take a batch from it (``streams.worker.batch_pipeline``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """A FIFO of at most ``limit`` items: ``put`` waits while it is full; ``wait_for`` until enough are in."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an inbox needs room for at least one item, not {limit}")
        self.limit = limit
        self._items: deque[T] = deque()
        self._wanted = 1  # how many items the waiter in wait_for() needs
        self._enough = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        while len(self._items) >= self.limit:
            self._not_full.clear()
            await self._not_full.wait()
        self._items.append(item)
        if len(self._items) >= self._wanted:
            self._enough.set()

    async def wait_for(self, count: int) -> None:
        """Until at least ``count`` items (at most the limit) are waiting. One waiter at a time."""
        count = min(count, self.limit)
        while len(self._items) < count:
            self._wanted = count
            self._enough.clear()
            await self._enough.wait()

    def take_now(self, most: int) -> list[T]:
        """The items waiting, up to ``most``, oldest first (none if the inbox is empty)."""
        taken = [self._items.popleft() for _ in range(min(most, len(self._items)))]
        if taken:
            self._not_full.set()
        return taken

    async def take(self, most: int) -> list[T]:
        """Every item waiting, up to ``most``, oldest first; waits for the first one if there is none."""
        await self.wait_for(1)
        return self.take_now(most)
