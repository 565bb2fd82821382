"""A bounded hand-over between Faust's stream and the worker's batch loop.

Faust's ``take_events`` stops filling its buffer while the agent works on a batch and then waits up to its
``within`` for the next one, so a worker alternates between collecting and processing: every event pays both,
and a lone event waits for company it may never get. The worker instead lets Faust's stream fill this inbox
all the time and takes whatever is there whenever it is free: under load batches grow by themselves (the
events that arrived while the previous batch was waiting on Kafka), and at low rates an event is processed as
soon as it arrives.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """A FIFO of at most ``limit`` items: ``put`` waits while it is full, ``take`` while it is empty."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an inbox needs room for at least one item, not {limit}")
        self.limit = limit
        self._items: deque[T] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        while len(self._items) >= self.limit:
            self._not_full.clear()
            await self._not_full.wait()
        self._items.append(item)
        self._not_empty.set()

    async def take(self, most: int) -> list[T]:
        """Every item waiting, up to ``most``, oldest first; waits for the first one if there is none."""
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        count = min(most, len(self._items))
        taken = [self._items.popleft() for _ in range(count)]
        if not self._items:
            self._not_empty.clear()
        self._not_full.set()
        return taken
