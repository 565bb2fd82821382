"""PulseSource: Taskcluster's task events from a durable Pulse queue into the task-events topic.

The queue ``settings.pulse_queue("task-events")`` is bound to the six task exchanges with
``route.<prefix>.#`` for each route prefix, so only tasks that carry a Treeherder route reach it; bindings
the configuration no longer asks for are removed at start (listed through Pulse Guardian, or the RabbitMQ
management API of a local broker). Every
message becomes an envelope keyed by its taskId, produced with acks=all; the AMQP message is acknowledged
only once Kafka has confirmed its record (for a message that cannot become an envelope: its rejected
record). Up to ``source_prefetch`` messages are in flight at once and the producer batches them, so there is
no round trip per message.

Delivery: at least once. If Kafka fails or the AMQP connection drops, the unacknowledged messages are
redelivered, including those whose records Kafka had already taken: a duplicate is possible only inside
the in-flight window (at most ``source_prefetch`` messages per failure), and it carries the same
``messageId``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import aiohttp
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connectors.base import Backoff, Connector
from streams.core.model import EventKind, Stage, reason_class
from streams.shared import records
from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.redact import redact_text
from streams.shared.settings import Settings
from streams.shared.topics import TopicNames, max_record_bytes

log = logging.getLogger(__name__)

# Connection-level failures after which a new session starts; anything else is a bug and stops the source.
AMQP_TRANSIENT: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPChannelError,
    # RabbitMQ answers Connection.Open with Connection.Close for an unknown vhost or missing permission:
    # a misconfiguration that an operator fixes while the connector keeps retrying.
    aiormq.exceptions.InvalidFrameError,
    ConnectionError,
    TimeoutError,
)

# Seconds between two acknowledgements while messages flow. Acknowledging each batch as Kafka confirmed it cost
# RabbitMQ an ack per few messages at moderate rates, where batches are small; a pause after each ack lets the
# confirmations gather. Below half the prefetch only, so RabbitMQ never waits for an ack to deliver more. It
# delays no event (records go to Kafka as before); a crash redelivers at most this much more, as duplicates.
ACK_EVERY = 0.01


class SessionLost(ConnectionError):
    """The AMQP channel closed under the session, or Kafka refused a record: start over."""


@dataclass(slots=True)
class SourceCounts:
    received: int = 0  # AMQP deliveries, redeliveries included
    produced: int = 0  # envelopes Kafka confirmed
    rejected: Counter[str] = field(default_factory=Counter)  # rejected records Kafka confirmed, by reason
    acked: int = 0  # AMQP messages acknowledged
    ack_frames: int = 0  # acknowledgements sent, each covering every message up to it (multiple=True)
    redelivered: int = 0  # deliveries flagged as redelivered by RabbitMQ
    reconnects: int = 0
    unbound: int = 0  # stale bindings of the queue removed at start

    def summary(self) -> str:
        rejected = sum(self.rejected.values())
        detail = ", ".join(f"{reason}: {n}" for reason, n in self.rejected.most_common()) or "none"
        return (f"source: {self.received} messages in ({self.redelivered} redelivered), {self.produced} events "
                f"out, {rejected} rejected ({detail}), {self.acked} acked, {self.reconnects} reconnects")


@dataclass(frozen=True, slots=True)
class Conversion:
    """What one Pulse message becomes: a record for one topic, and for a rejection, why."""

    topic: str
    key: bytes
    value: bytes
    rejection: str | None = None


def cc_routes(headers: Any) -> tuple[str, ...]:
    """The ``CC`` header as Taskcluster sends it: a list of ``route.<route>`` routing keys."""
    raw = (headers or {}).get("CC") or ()
    if not isinstance(raw, list | tuple):  # one route, or a header of another type: still never a crash
        raw = (raw,)
    return tuple(item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in raw)


def convert(message: AbstractIncomingMessage, settings: Settings, topics: TopicNames,
            received_at: str | None = None) -> Conversion:
    """One AMQP message -> an envelope on task-events, or a rejected record saying why it cannot be one."""
    return convert_body(message.body, exchange=message.exchange or "", routing_key=message.routing_key or "",
                        headers=message.headers, message_id=message.message_id, settings=settings, topics=topics,
                        received_at=received_at)


def convert_body(body: bytes, *, exchange: str, routing_key: str, headers: Any, message_id: str | None,
                 settings: Settings, topics: TopicNames, received_at: str | None = None) -> Conversion:
    """``convert`` on the message's parts: pure, so every kind of body can be tested without a broker."""
    routes = cc_routes(headers)
    received_at = received_at or records.utc_now_iso()
    message_id = message_id or records.message_id_for(exchange, routing_key, body)

    task_id: str | None = None
    if len(body) > settings.max_body_bytes:
        reason = f"message body is {len(body)} bytes, over the limit of {settings.max_body_bytes}"
    else:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            reason = f"message body is not JSON: {error}"
        else:
            task_id = records.payload_task_id(payload)
            if task_id is not None:
                value = records.encode_envelope(
                    exchange=exchange, routing_key=routing_key, cc_routes=routes, payload=orjson.Fragment(body),
                    root_url=settings.taskcluster_root_url, received_at=received_at, message_id=message_id)
                return Conversion(topics.task_events, records.task_key(task_id), value)
            reason = ("message body is not a JSON object" if not isinstance(payload, dict)
                      else "message body has no status.taskId")

    task_id = task_id or records.task_id_from_routing_key(routing_key)
    envelope = records.raw_message_envelope(
        body, exchange=exchange, routing_key=routing_key, cc_routes=routes, root_url=settings.taskcluster_root_url,
        received_at=received_at, message_id=message_id, max_body_bytes=settings.max_body_bytes)
    value = records.encode_rejected_record(stage=Stage.SOURCE, reason=reason, task_id=task_id, kind="rejected",
                                           envelope=envelope, source=None, at=received_at)
    if len(value) > max_record_bytes(settings):  # escaping or base64 made it too large for Kafka: keep an excerpt
        envelope = records.raw_message_envelope(
            body, exchange=exchange, routing_key=routing_key, cc_routes=routes,
            root_url=settings.taskcluster_root_url, received_at=received_at, message_id=message_id, max_body_bytes=0)
        value = records.encode_rejected_record(stage=Stage.SOURCE, reason=reason, task_id=task_id,
                                               kind="rejected", envelope=envelope, source=None, at=received_at)
    return Conversion(topics.rejected, records.task_key(task_id), value, rejection=reason_class(reason))


class AckWindow:
    """Which deliveries Kafka has confirmed, and the highest tag below which all of them are.

    Acknowledging with ``multiple=True`` up to that tag never acknowledges a message whose record is still
    on its way, whatever order the confirmations arrive in.
    """

    def __init__(self) -> None:
        self.acked_up_to = 0  # delivery tags start at 1 on every channel
        self.messages: dict[int, AbstractIncomingMessage] = {}
        self._confirmed: set[int] = set()

    def add(self, message: AbstractIncomingMessage) -> None:
        self.messages[message.delivery_tag] = message  # type: ignore[index]

    def confirm(self, tag: int) -> None:
        self._confirmed.add(tag)

    def advance(self) -> tuple[AbstractIncomingMessage | None, int]:
        """The message to acknowledge with ``multiple=True`` (None: nothing new) and how many that covers."""
        top = self.acked_up_to
        while top + 1 in self._confirmed:
            top += 1
            self._confirmed.discard(top)
        covered = top - self.acked_up_to
        if not covered:
            return None, 0
        message = self.messages[top]
        for tag in range(self.acked_up_to + 1, top + 1):
            del self.messages[tag]
        self.acked_up_to = top
        return message, covered

    @property
    def in_flight(self) -> int:
        return len(self.messages)


class PulseSource(Connector):
    """Pulse task events -> Kafka, acknowledging each message only after Kafka has its record."""

    name = "source"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.topics = TopicNames.from_settings(settings)
        self.counts = SourceCounts()
        # how its Kafka client and AMQP connection are named: one source per Taskcluster deployment
        self.label = f"{settings.app_id}-source" + (f"-{settings.deployment}" if settings.deployment else "")
        self._producer: AIOKafkaProducer | None = None

    # Lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._producer = await self.start_producer("source", lambda: AIOKafkaProducer(
            **kafka_client_kwargs(self.settings),
            client_id=self.label,
            acks="all",
            enable_idempotence=True,  # a retried batch is not written twice
            # 1 ms, not 5: a lone record at Firefox CI's 15 events/s waited out the whole linger (p50 end to end
            # 17 -> 13 ms in the benchmark's profile); under load the producer batches while a request is in
            # flight, and the source stage's rate did not move (docs/benchmarks.md, "Short loads and bursts").
            linger_ms=1,
            max_batch_size=512 * 1024,
            max_request_size=max_record_bytes(self.settings) + 1024,
        ))

    async def run(self) -> None:
        if self._producer is None:
            return  # stopped before Kafka was reachable
        await self.keep_connected("source", self._session, AMQP_TRANSIENT)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        log.info("%s", self.counts.summary())

    async def _renew_producer(self, failure: BaseException) -> None:
        """Replace the Kafka producer after it failed a record.

        An idempotent producer that lost its sequence state (OutOfOrderSequenceNumber after a broker restart)
        fails every later record too: reconnecting to RabbitMQ alone would redeliver the same messages into
        the same broken producer forever. A new producer gets a new producer id; the messages it writes
        again are the unacknowledged ones, bounded by the prefetch as before.
        """
        old, self._producer = self._producer, None
        log.warning("source: replacing the Kafka producer after %r", failure)
        if old is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(old.stop(), 10.0)
        await self.start()

    # One AMQP connection -----------------------------------------------------------------------------

    async def declare(self, connection: AbstractConnection) -> AbstractQueue:
        """The durable queue and its bindings; the task exchanges are declared only if they do not exist.

        Taskcluster owns the task exchanges, and a Pulse user may not declare them; so each is first
        declared passively. A missing one (a local stack, a test namespace) is then created as a durable
        topic exchange, with a warning: on a real Pulse it means the exchange prefix is wrong.
        """
        exchanges = [await self._exchange(connection, self.settings.task_exchange(kind.value)) for kind in EventKind]
        channel = await connection.channel()
        queue = await channel.declare_queue(self.settings.pulse_queue("task-events"), durable=True)
        wanted = {(exchange, f"route.{prefix}.#") for exchange in exchanges for prefix in self.settings.route_prefixes}
        for exchange in exchanges:
            for prefix in self.settings.route_prefixes:
                await queue.bind(exchange, routing_key=f"route.{prefix}.#")
        await channel.close()
        await self._prune(connection, queue.name, wanted)
        return queue

    async def _prune(self, connection: AbstractConnection, name: str, wanted: set[tuple[str, str]]) -> None:
        """Remove the bindings of the durable queue that the configuration no longer asks for (a route prefix
        taken out, another exchange prefix), as Treeherder's consumers do: a binding outlives the process that
        made it, and would go on filling the queue with tasks no destination takes.

        On a channel of its own: a refused unbind (the broker closes the channel) is logged and ends the
        pruning, never the source."""
        bindings = await queue_bindings(self.settings, name)
        stale = [(exchange, key) for exchange, key in bindings or () if exchange and (exchange, key) not in wanted]
        if not stale:
            return
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, durable=True)
            for exchange, routing_key in stale:
                await queue.unbind(exchange, routing_key=routing_key)
                self.counts.unbound += 1
                log.info("source: unbound %s from %s with %s: the configuration no longer asks for it",
                         name, exchange, routing_key)
        except aiormq.exceptions.AMQPError as error:
            log.warning("source: could not remove the stale bindings of %s (%s); they stay", name, error)
        finally:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await channel.close()

    async def _exchange(self, connection: AbstractConnection, name: str) -> str:
        probe = await connection.channel()
        try:
            await probe.declare_exchange(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            log.warning("source: exchange %s does not exist; declaring it (expected only on a local stack)",
                        name)
            channel = await connection.channel()
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            await channel.close()
        else:
            await probe.close()
        return name

    async def _session(self, backoff: Backoff) -> None:
        connection = await aio_pika.connect(self.settings.pulse_url, timeout=15,
                                            client_properties={"connection_name": self.label})
        try:
            await self.declare(connection)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.settings.source_prefetch)
            queue = await channel.declare_queue(self.settings.pulse_queue("task-events"), durable=True)
            backoff.reset()
            log.info("source: consuming %s (prefetch %d)", queue.name, self.settings.source_prefetch)
            pump = _Pump(self, channel, queue)
            try:
                await pump.run()
            finally:
                if pump.failure is not None and not self.stopping:
                    await self._renew_producer(pump.failure)
        finally:
            self.counts.reconnects += 0 if self.stopping else 1
            with contextlib.suppress(*AMQP_TRANSIENT):
                await connection.close()


class _Pump:
    """One channel's flow: deliveries -> producer -> confirmations -> acknowledgements."""

    def __init__(self, source: PulseSource, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self.source = source
        self.channel = channel
        self.queue = queue
        self.window = AckWindow()
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.progress = asyncio.Event()  # a confirmation arrived, or a failure
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None

    async def run(self) -> None:
        consumer_tag = await self.queue.consume(self._deliver, no_ack=False)
        acker = asyncio.create_task(self._acknowledge(), name="source-acker")
        try:
            await self._produce_until_stopped()
            # Graceful stop: no new deliveries; what was delivered still goes to Kafka and is acknowledged.
            await self.queue.cancel(consumer_tag)
            await self._produce_available()
            await self._drain()
        finally:
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker
        if self.failure is not None:
            raise SessionLost(f"Kafka did not take a record: {self.failure!r}") from self.failure

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self.inbox.put_nowait(message)

    async def _produce_until_stopped(self) -> None:
        stop = asyncio.create_task(self.source.wait_stopped())
        closed = asyncio.ensure_future(self.channel.closed())
        failed = asyncio.create_task(self.failed.wait())
        try:
            while self.failure is None:
                if self.inbox.empty():
                    getter = asyncio.create_task(self.inbox.get())
                    await asyncio.wait({getter, stop, closed, failed}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await getter
                    if getter.done() and not getter.cancelled():
                        await self._produce(getter.result())
                    if closed.done() and not self.source.stopping:
                        raise SessionLost("the AMQP channel closed")
                    if stop.done():
                        return
                await self._produce_available()
        finally:
            for waiter in (stop, closed, failed):
                waiter.cancel()

    async def _produce_available(self) -> None:
        while not self.inbox.empty() and self.failure is None:
            await self._produce(self.inbox.get_nowait())

    async def _produce(self, message: AbstractIncomingMessage) -> None:
        source = self.source
        assert source._producer is not None
        source.counts.received += 1
        source.counts.redelivered += bool(message.redelivered)
        conversion = convert(message, source.settings, source.topics)
        self.window.add(message)
        try:
            future = await source._producer.send(conversion.topic, conversion.value, key=conversion.key)
        except KafkaError as error:  # no room in the producer's buffer for request_timeout: Kafka is away
            self._fail(error)
            return
        future.add_done_callback(lambda f: self._confirmed(f, message.delivery_tag, conversion))  # type: ignore[arg-type]

    def _confirmed(self, future: asyncio.Future[Any], tag: int, conversion: Conversion) -> None:
        counts = self.source.counts
        if future.cancelled():
            self._fail(KafkaError("produce cancelled"))
        elif (error := future.exception()) is not None:
            self._fail(error)
        else:
            self.window.confirm(tag)
            if conversion.rejection is None:
                counts.produced += 1
            else:
                counts.rejected[conversion.rejection] += 1
        self.progress.set()

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            log.warning("source: Kafka did not take a record (%r); unacknowledged messages will be redelivered",
                        error)
            self.failure = error
        self.failed.set()
        self.progress.set()

    async def _acknowledge(self) -> None:
        while True:
            await self.progress.wait()
            self.progress.clear()
            if self.failure is not None:
                return
            message, covered = self.window.advance()
            if message is not None:
                await message.ack(multiple=True)
                self.source.counts.acked += covered
                self.source.counts.ack_frames += 1
                if self.window.in_flight < self.source.settings.source_prefetch // 2:
                    await asyncio.sleep(ACK_EVERY)  # confirmations gather meanwhile: one ack covers them all

    async def _drain(self) -> None:
        """Wait until every produced record is confirmed and acknowledged (or Kafka failed)."""
        assert self.source._producer is not None
        await self.source._producer.flush()
        while self.window.in_flight and self.failure is None:
            self.progress.set()
            await asyncio.sleep(0.01)


def describe_bindings(settings: Settings) -> Sequence[tuple[str, str]]:
    """(exchange, binding key) pairs of the source's queue, for docs and status output."""
    return [(settings.task_exchange(kind.value), f"route.{prefix}.#")
            for kind in EventKind for prefix in settings.route_prefixes]


PULSE_GUARDIAN_URL = "https://pulseguardian.mozilla.org/"
MANAGEMENT_PORT = 15672


def bindings_api(settings: Settings) -> str | None:
    """Where the source lists its queue's bindings: ``pulse_bindings_api``, or for ``auto`` the local broker's
    RabbitMQ management API, or Pulse Guardian for any other broker (AMQP itself cannot list bindings)."""
    api = settings.pulse_bindings_api
    if api == "off":
        return None
    if api != "auto":
        return api.rstrip("/") + "/"
    host = urlsplit(settings.pulse_url).hostname or "localhost"
    if host == "pulse.mozilla.org" or host.endswith(".pulse.mozilla.org"):
        return PULSE_GUARDIAN_URL
    return f"http://{host}:{MANAGEMENT_PORT}/"  # a RabbitMQ of one's own: its management API, if it has one


async def queue_bindings(settings: Settings, queue: str) -> list[tuple[str, str]] | None:
    """(exchange, routing key) of every binding of ``queue``, or None when they cannot be had (logged: the
    source goes on, and only the pruning is skipped)."""
    base = bindings_api(settings)
    if base is None:
        return None
    parts = urlsplit(settings.pulse_url)
    if urlsplit(base).hostname == urlsplit(PULSE_GUARDIAN_URL).hostname:
        url, headers = f"{base}queue/{queue}/bindings", {}
    else:  # a RabbitMQ management API, with the Pulse URL's credentials
        vhost = unquote(parts.path[1:]) or "/"
        url = f"{base}api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/bindings"
        login = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
        headers = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode("ascii")}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http, \
                http.get(url, headers=headers) as response:
            response.raise_for_status()
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        log.warning("source: cannot list the bindings of %s at %s (%s): stale bindings are not removed",
                    queue, base, redact_text(str(error)))
        return None
    rows = data.get("bindings") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        log.warning("source: the bindings of %s at %s are not a list: stale bindings are not removed", queue, base)
        return None
    return [(str(row.get("source") or ""), str(row.get("routing_key") or "")) for row in rows if isinstance(row, dict)]
