"""What every connector shares: a lifecycle (start, run until asked to stop, close) and reconnecting.

A connector writes only its sessions: one session is one connection's lifetime to the brokers it joins. The
base runs sessions again and again with a growing, jittered delay when a broker goes away, and stops them
cleanly on SIGINT/SIGTERM (a second signal cancels whatever the first one is still waiting for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaConnectionError

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(slots=True)
class Backoff:
    """Delays between reconnection attempts: doubling from ``first`` up to ``longest``, each one jittered
    (between half and all of it) so that many processes restarting together do not hammer a broker in step."""

    first: float = 0.5
    longest: float = 30.0
    _next: float = field(default=0.0, init=False)

    def delay(self) -> float:
        current = self._next or self.first
        self._next = min(current * 2, self.longest)
        return current * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self._next = 0.0


class Connector(ABC):
    """Lifecycle of one connector process: ``serve()`` = start, run until stopped, close."""

    name = "connector"

    def __init__(self) -> None:
        self._stop_requested = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def request_stop(self) -> None:
        """Finish what is in flight, then return from ``serve()``. Safe to call from a signal handler."""
        if not self.stopping:
            log.info("%s: stopping", self.name)
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        await self._stop_requested.wait()

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless asked to stop first; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
        return self.stopping

    async def start(self) -> None:  # noqa: B027 (a hook: most connectors need nothing here)
        """Acquire what lives as long as the process (not per connection)."""

    @abstractmethod
    async def run(self) -> None:
        """Do the work until ``stopping``, then return once what was in flight is settled."""

    async def close(self) -> None:  # noqa: B027 (a hook)
        """Release what ``start`` acquired; called even when ``start`` or ``run`` failed."""

    async def start_producer(self, label: str, make: Callable[[], Any]) -> Any | None:
        """A started Kafka producer from ``make()``, retried with backoff while Kafka does not answer.

        None when the connector was asked to stop before Kafka answered.
        """

        backoff = Backoff()
        while not self.stopping:
            producer = make()
            try:
                await producer.start()
            except KafkaConnectionError as error:
                await producer.stop()
                delay = backoff.delay()
                log.warning("%s: Kafka unreachable (%s); retrying in %.1fs", label, error, delay)
                await self.pause(delay)
                continue
            return producer
        return None

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Run the connector; SIGINT/SIGTERM stop it gracefully, a second one cancels the graceful stop."""
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        signals_seen = 0

        def on_signal(signum: signal.Signals) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("%s: %s received, finishing in-flight work (again to stop at once)", self.name,
                         signum.name)
                self.request_stop()
            elif main is not None:
                main.cancel()

        if handle_signals:
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, on_signal, signum)
        try:
            await self.start()
            await self.run()
        finally:
            try:
                await self.close()
            finally:
                if handle_signals:
                    for signum in STOP_SIGNALS:
                        loop.remove_signal_handler(signum)

    async def keep_connected(self, label: str, session: Callable[[Backoff], Awaitable[None]],
                             transient: tuple[type[BaseException], ...]) -> None:
        """Run ``session`` until stopping, starting it again after a transient failure.

        ``session`` gets the backoff and calls ``reset()`` once it is connected, so a broker that comes back
        is used at once, and one that keeps failing is retried ever more slowly (up to 30 s).
        """
        backoff = Backoff()
        while not self.stopping:
            try:
                await session(backoff)
            except transient as error:
                if self.stopping:
                    break
                delay = backoff.delay()
                log.warning("%s: %s: %s; reconnecting in %.1fs", label, type(error).__name__, error, delay)
                await self.pause(delay)
