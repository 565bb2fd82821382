"""Publish a simulated workload as the Taskcluster Queue does: to Pulse, with its definitions on the stand-in.

Two jobs, kept apart:

- :class:`StandInRegistrar` puts task definitions and artifact listings on the Queue API stand-in through its
  bulk admin API, a few task groups ahead of the events, so the pipeline can always fetch what an event refers
  to and registration never holds the publisher back;
- :class:`PulsePublisher` sends each event to its task exchange (durable topic, declared if absent) under the
  primary routing key, with the task's routes in the ``CC`` header as ``route.<route>`` (RabbitMQ's
  sender-selected distribution, as Taskcluster publishes them), persistent JSON, with publisher confirms and
  many messages in flight. One channel and FIFO publishing keep each task's events in order.

:func:`publish_workload` runs both over a stream of task groups, paced to a rate when asked.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiormq
import orjson
from aio_pika import ExchangeType, connect
from aio_pika.abc import AbstractConnection
from aiormq.abc import ConfirmationFrameType
from pamqp.commands import Basic

from devtools.workload import KINDS, Envelope, SimulatedTask, TaskGroup, event_kind

ADMIN = "/__standin"


class PublishError(Exception):
    """Publishing cannot go on; the message says what failed and what to check."""


class StandInUnavailable(PublishError):
    """The Queue API stand-in cannot be reached or refused the definitions."""


class BrokerUnavailable(PublishError):
    """Pulse (RabbitMQ) cannot be reached, refused a declaration, or dropped the connection."""


class StandInRegistrar:
    """Registers definitions and artifact listings with a running stand-in, in bulk and concurrently."""

    def __init__(self, root_url: str, session: aiohttp.ClientSession, concurrency: int = 4) -> None:
        self.root_url = root_url.rstrip("/")
        self.session = session
        self._slots = asyncio.Semaphore(concurrency)
        self.tasks_registered = 0

    async def check(self) -> None:
        """Fail early, with a clear message, when ``root_url`` is not a stand-in we can reach."""
        url = f"{self.root_url}{ADMIN}/stats"
        try:
            async with self.session.get(url) as response:
                if response.status != 200:
                    raise StandInUnavailable(
                        f"{self.root_url} is not a Queue API stand-in (GET {ADMIN}/stats answered {response.status});"
                        " start one with `tc-treeherder queue-standin` and pass its URL with --root-url")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise StandInUnavailable(f"cannot reach the Queue API stand-in at {self.root_url}: {error}") from None

    async def register(self, tasks: Sequence[SimulatedTask]) -> None:
        """Definitions and listings of ``tasks``; both bulk requests go out together."""
        definitions = {task.task_id: task.definition for task in tasks}
        listings = {task.task_id: {str(run): artifacts for run, artifacts in task.artifacts.items()}
                    for task in tasks if task.artifacts}
        requests = [self._post("tasks", definitions)]
        if listings:
            requests.append(self._post("artifacts", listings))
        await asyncio.gather(*requests)
        self.tasks_registered += len(tasks)

    async def _post(self, what: str, body: dict[str, Any]) -> None:
        url = f"{self.root_url}{ADMIN}/{what}"
        async with self._slots:
            try:
                async with self.session.post(url, data=orjson.dumps(body),
                                             headers={"Content-Type": "application/json"}) as response:
                    if response.status != 200:
                        text = (await response.text())[:200]
                        raise StandInUnavailable(f"the stand-in refused POST {ADMIN}/{what}: {response.status} {text}")
            except (aiohttp.ClientError, TimeoutError) as error:
                raise StandInUnavailable(f"cannot reach the Queue API stand-in at {self.root_url}: {error}") from None


class PulsePublisher:
    """Publishes envelopes to the task exchanges with confirms; ``max_in_flight`` bounds unconfirmed messages."""

    def __init__(self, pulse_url: str, task_exchange: Callable[[str], str], max_in_flight: int = 1000) -> None:
        self.pulse_url = pulse_url
        self.exchanges = {kind: task_exchange(kind) for kind in KINDS}
        self.max_in_flight = max_in_flight
        self._connection: AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._window = asyncio.Semaphore(max_in_flight)
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._failure: BaseException | None = None
        self.confirmed = 0

    async def open(self) -> None:
        try:
            self._connection = await connect(self.pulse_url, timeout=10)
            channel = await self._connection.channel(publisher_confirms=True)
            for name in self.exchanges.values():
                await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)
            self._channel = await channel.get_underlay_channel()
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as error:
            await self.close()
            raise BrokerUnavailable(f"cannot publish to Pulse at {redact(self.pulse_url)}: {error!r}") from None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def __aenter__(self) -> PulsePublisher:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def publish(self, envelope: Envelope) -> None:
        """Send one event; returns once it is handed to the connection (its confirm is awaited by flush)."""
        if self._failure is not None:
            raise self._as_error(self._failure)
        channel = self._channel
        if channel is None:
            raise BrokerUnavailable("the publisher is not open")
        await self._window.acquire()
        properties = Basic.Properties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            headers={"CC": envelope["ccRoutes"]},
        )
        publish = channel.basic_publish(orjson.dumps(envelope["payload"]), exchange=envelope["exchange"],
                                        routing_key=envelope["routingKey"], properties=properties, wait=False)
        # Tasks start in creation order and take the channel's FIFO lock before their first pause, so frames
        # leave in the order publish() was called: a task's events stay in order.
        task = asyncio.ensure_future(publish)
        self._in_flight.add(task)
        task.add_done_callback(self._confirmed)

    def _confirmed(self, task: asyncio.Task[ConfirmationFrameType | None]) -> None:
        self._in_flight.discard(task)
        self._window.release()
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            if self._failure is None:
                self._failure = error
            return
        if not isinstance(task.result(), Basic.Ack):
            self._failure = self._failure or PublishError(f"the broker did not confirm a message: {task.result()}")
            return
        self.confirmed += 1

    async def flush(self) -> None:
        """Wait for every message in flight to be confirmed; raise if any was not."""
        while self._in_flight:
            await asyncio.wait(list(self._in_flight))
        if self._failure is not None:
            raise self._as_error(self._failure)

    def _as_error(self, error: BaseException) -> PublishError:
        if isinstance(error, PublishError):
            return error
        return BrokerUnavailable(f"publishing to Pulse at {redact(self.pulse_url)} failed: {error!r}")


@dataclass(slots=True)
class PublishReport:
    """What went out: events by kind, tasks and task groups, and the rate reached."""

    events: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    groups: int = 0
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.events.values())

    @property
    def rate(self) -> float:
        return self.total / self.elapsed if self.elapsed > 0 else 0.0


class Pacer:
    """Spaces events to ``rate`` per second (0: no limit) against a fixed schedule, so short sleeps that
    overshoot are made up by the following events and the average rate stays exact."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._start: float | None = None
        self._sent = 0

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._sent / self.rate
        self._sent += 1
        if due > now:
            await asyncio.sleep(due - now)


async def publish_workload(
    groups: Iterable[TaskGroup],
    publisher: PulsePublisher | None,
    registrar: StandInRegistrar | None,
    rate: float = 0.0,
    on_event: Callable[[Envelope], None] | None = None,
    on_group: Callable[[TaskGroup], None] | None = None,
    on_progress: Callable[[PublishReport, int], None] | None = None,
    lookahead: int = 4,
) -> PublishReport:
    """Register each group's definitions, then publish its events; returns once every event is confirmed.

    ``lookahead`` groups are generated and registered ahead of the one being published. ``on_event`` sees each
    envelope as it is published (e.g. to write it to a file); ``on_group`` each group once registered;
    ``on_progress`` is called about once a second with the report so far and the messages in flight.
    """
    report = PublishReport()
    pacer = Pacer(rate)
    source = iter(groups)
    ahead: deque[tuple[TaskGroup, asyncio.Task[None] | None]] = deque()
    started = time.monotonic()
    next_progress = started + 1.0

    def fill() -> None:
        while len(ahead) < lookahead:
            group = next(source, None)
            if group is None:
                return
            registration = asyncio.ensure_future(registrar.register(group.tasks)) if registrar else None
            ahead.append((group, registration))

    try:
        fill()
        while ahead:
            group, registration = ahead.popleft()
            if registration is not None:
                await registration
            if on_group is not None:
                on_group(group)
            fill()
            for envelope in group.events:
                await pacer.wait()
                if publisher is not None:
                    await publisher.publish(envelope)
                if on_event is not None:
                    on_event(envelope)
                report.events[event_kind(envelope)] += 1
                if on_progress is not None and time.monotonic() >= next_progress:
                    next_progress += 1.0
                    report.elapsed = time.monotonic() - started
                    on_progress(report, publisher.in_flight if publisher else 0)
            report.tasks += len(group.tasks)
            report.groups += 1
        if publisher is not None:
            await publisher.flush()
    finally:
        for _, registration in ahead:
            if registration is not None:
                registration.cancel()
    report.elapsed = time.monotonic() - started
    return report


def redact(url: str) -> str:
    """The URL without its password, for messages and summaries."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}@{host}"
