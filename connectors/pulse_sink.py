"""PulseSink: job records from the jobs topic to each destination's jobs exchange.

Every enabled destination runs its own loop with its own Kafka consumer group
(``<namespace>.tc-treeherder.sink.<destination>``) and its own Pulse connection, so a destination that is
down, slow or misconfigured holds back no other: its offsets simply stay behind and it catches up when it
returns. A loop publishes the records addressed to its destination (and passes over the others) with
publisher confirms, up to ``sink_max_in_flight`` unconfirmed at once, and commits a partition's offset only
up to the last record below which every record is confirmed (or was not for it).

Delivery: at least once. When the Pulse connection fails, the loop rewinds each partition to that committed
position and reads again from there once reconnected, publishing again only what the broker had not
confirmed (``Resend``). A run has at most one unconfirmed message at a time (the next waits for its confirm),
so what is published again is never older than what the exchange already has of that run. A job is published
twice only if it was unconfirmed when the connection failed (at most ``sink_max_in_flight`` per destination
and failure). A killed sink remembers nothing and publishes its window again. Sinks of one destination share
its consumer group; before a rebalance moves partitions, a loop stops dispatching, waits for its confirms and
commits (``DestinationLoop.hand_over``), so the next owner does not publish again what is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from connectors.base import Backoff, Connector
from connectors.pulse_source import AMQP_TRANSIENT, SessionLost
from streams.shared import records
from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.settings import Destination, Settings
from streams.shared.tally import LatencyTally
from streams.shared.topics import TopicNames, sink_group

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.5  # seconds between offset commits while records flow
# A killed sink's partitions wait for its session to expire (TC_TREEHERDER_SINK_SESSION_TIMEOUT, default 6 s,
# the least a broker accepts by default; aiokafka's own default is 10 s) before a restarted or other sink gets
# them. Heartbeats every sixth of it, as the worker's (streams/worker/membership.py).
HEARTBEATS_PER_SESSION = 6
STOP_GRACE = 15.0  # seconds a stopping loop waits for outstanding confirms before it gives up on them
# Seconds a loop whose partitions are revoked waits for its outstanding confirms; the group waits meanwhile.
HANDOVER_GRACE = 5.0
SINK_STAGE = "sink"
ROOT_URL_HEADER = "taskcluster-root-url"  # the job's Taskcluster deployment, for a Treeherder that takes several


@dataclass(slots=True)
class DestinationCounts:
    published: int = 0  # confirmed by the destination's broker
    passed_over: int = 0  # records for other destinations
    rejected: int = 0  # records that are not job records
    reconnects: int = 0
    not_resent: int = 0  # records read again after a failure whose delivery a confirm already vouched for
    confirm_latency: LatencyTally = field(default_factory=LatencyTally)  # publish -> broker confirm


@dataclass(slots=True)
class SinkCounts:
    per_destination: dict[str, DestinationCounts] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{name}: {c.published} published, {c.rejected} rejected, {c.reconnects} reconnects"
                 for name, c in self.per_destination.items()]
        total = sum(c.published for c in self.per_destination.values())
        return f"sink: {total} jobs out ({'; '.join(parts) or 'no destination'})"


class OffsetTracker:
    """Per partition, which fetched records are settled, and the offset it is safe to commit.

    A record is settled when its destination confirmed it, when it was for another destination, or when its
    rejected record is in Kafka. The committable offset is one past the last record below which all are.
    """

    def __init__(self) -> None:
        self._waiting: dict[TopicPartition, deque[int]] = {}
        self._settled: dict[TopicPartition, set[int]] = {}
        self._committable: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def fetched(self, tp: TopicPartition, offset: int) -> None:
        self._waiting.setdefault(tp, deque()).append(offset)

    def settled(self, tp: TopicPartition, offset: int) -> None:
        waiting = self._waiting.get(tp)
        if waiting is None:
            return  # the partition was revoked or rewound meanwhile
        done = self._settled.setdefault(tp, set())
        done.add(offset)
        while waiting and waiting[0] in done:
            done.discard(waiting[0])
            self._committable[tp] = waiting.popleft() + 1

    @property
    def in_flight(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    def position(self, tp: TopicPartition) -> int | None:
        """Where to read ``tp`` again after a failure: the committable offset, if anything settled."""
        return self._committable.get(tp, self._committed.get(tp))

    def to_commit(self) -> dict[TopicPartition, int]:
        return {tp: offset for tp, offset in self._committable.items() if self._committed.get(tp) != offset}

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            for table in (self._waiting, self._settled, self._committable, self._committed):
                table.pop(tp, None)


def run_of(job: object) -> str | None:
    """The run a job message is about: its ``taskId`` (``<task>/<run>``), if it has one."""
    task = job.get("taskId") if isinstance(job, dict) else None
    return task if isinstance(task, str) else None


class Resend:
    """Which records read again after a failed session were confirmed already, per partition.

    While a session runs it remembers the offsets the broker confirmed above the committed offset. When the
    session fails, the records from the committable offset on are read again, and those confirmed are not
    published again. The others are, in order: a run has at most one unconfirmed message at a time
    (``DestinationLoop._publish`` waits for the previous one's confirm), so a record published again is the
    run's furthest state sent, and the exchange never sees the run go back.
    """

    def __init__(self) -> None:
        self._confirmed: dict[TopicPartition, set[int]] = {}
        self._replay: dict[TopicPartition, tuple[set[int], int]] = {}  # confirmed offsets, end of the window

    def confirmed(self, tp: TopicPartition, offset: int) -> None:
        self._confirmed.setdefault(tp, set()).add(offset)

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Records below a committed offset are not read again: forget them."""
        for tp, offset in offsets.items():
            confirmed = self._confirmed.get(tp)
            if confirmed:
                confirmed.difference_update([o for o in confirmed if o < offset])

    def failed(self) -> None:
        """The session failed: its confirms vouch for the records read again."""
        self.set_aside(list(self._confirmed))

    def vouched(self, tp: TopicPartition, offset: int) -> bool:
        """True when the record at ``offset`` was confirmed in a failed session: not published again."""
        replay = self._replay.get(tp)
        if replay is None:
            return False
        confirmed, end = replay
        if offset >= end:
            del self._replay[tp]
            return False
        return offset in confirmed

    def set_aside(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions change hands: should they come back, their confirms vouch for what is read again."""
        for tp in partitions:
            confirmed = self._confirmed.pop(tp, None)
            if confirmed:
                earlier, earlier_end = self._replay.get(tp, (set(), 0))
                self._replay[tp] = (confirmed | earlier, max(max(confirmed) + 1, earlier_end))

    def keep_only(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget what was set aside for partitions that went to another sink."""
        kept = set(partitions)
        for table in (self._confirmed, self._replay):
            for tp in [tp for tp in table if tp not in kept]:
                del table[tp]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: DestinationLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.hand_over(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.tracker.forget(assigned)
        self.loop.resend.keep_only(assigned)


class DestinationLoop:
    """One destination: its consumer group on the jobs topic, its Pulse connection, its offsets."""

    def __init__(self, sink: PulseSink, destination: Destination) -> None:
        self.sink = sink
        self.destination = destination
        self.counts = sink.counts.per_destination.setdefault(destination.name, DestinationCounts())
        self.tracker = OffsetTracker()
        self.resend = Resend()
        self._unconfirmed: dict[str, asyncio.Task[bool]] = {}  # per run, its message not yet confirmed
        self.label = f"sink[{destination.name}]"
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._slots = asyncio.Semaphore(sink.settings.sink_max_in_flight)
        self._epoch = 0  # moves on when partitions are revoked: records fetched before are not dispatched

    async def run(self) -> None:
        settings = self.sink.settings
        self._consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(settings),
            group_id=sink_group(settings, self.destination.name),
            client_id=f"{settings.app_id}-sink-{self.destination.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=round(settings.sink_session_timeout * 1000),
            heartbeat_interval_ms=round(settings.sink_session_timeout * 1000 / HEARTBEATS_PER_SESSION),
        )
        await self._start_consumer()
        try:
            await self.sink.keep_connected(self.label, self._session, AMQP_TRANSIENT)
        finally:
            await self.commit()
            await self._consumer.stop()

    async def _start_consumer(self) -> None:
        assert self._consumer is not None
        backoff = Backoff()
        while True:
            try:
                await self._consumer.start()
                break
            except KafkaConnectionError as error:
                delay = backoff.delay()
                log.warning("%s: Kafka unreachable (%s); retrying in %.1fs", self.label, error, delay)
                if await self.sink.pause(delay):
                    return
        self._consumer.subscribe([self.sink.topics.jobs], listener=_Rebalance(self))

    async def _session(self, backoff: Backoff) -> None:
        connection = await aio_pika.connect(
            self.destination.pulse_url, timeout=15,
            client_properties={"connection_name": f"{self.sink.settings.app_id}-{self.label}"})
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(self.destination.exchange, aio_pika.ExchangeType.TOPIC,
                                                      durable=True)
            backoff.reset()
            log.info("%s: publishing to %s", self.label, self.destination.exchange)
            self._failure = None
            self._failed.clear()
            await self._pump(channel, exchange)
        finally:
            await self._settle()
            if not self.sink.stopping:
                self.counts.reconnects += 1
                await self._rewind()
            with contextlib.suppress(*AMQP_TRANSIENT):
                await connection.close()

    async def _pump(self, channel: AbstractChannel, exchange: AbstractExchange) -> None:
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + COMMIT_INTERVAL
        max_records = self.sink.settings.sink_max_in_flight
        while not self.sink.stopping:
            if self._failure is not None or channel.is_closed:
                raise SessionLost(f"publishing failed: {self._failure!r}")
            batch = await self._consumer.getmany(timeout_ms=200, max_records=max_records)
            epoch = self._epoch  # a batch belongs to the assignment it was returned under
            for tp, messages in batch.items():
                for message in messages:
                    if not await self._take_slot(epoch):
                        break
                    self._dispatch(exchange, tp, message.offset, message.value)
            if loop.time() >= next_commit:
                await self.commit()
                next_commit = loop.time() + COMMIT_INTERVAL

    async def _take_slot(self, epoch: int) -> bool:
        """Wait for room in the in-flight window; False when the session must end instead, or when partitions
        were revoked since the batch in hand was fetched (its rest is read again from the commit)."""
        while self._failure is None and self._epoch == epoch:
            try:
                await asyncio.wait_for(self._slots.acquire(), 1.0)
            except TimeoutError:
                await self.commit()  # confirms are slow: let what did confirm count
                continue
            if self._epoch == epoch:
                return True
            self._slots.release()
        return False

    def _dispatch(self, exchange: AbstractExchange, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        self.tracker.fetched(tp, offset)
        try:
            record = records.decode_job_record(value or b"")
        except records.RecordError as error:
            task = asyncio.create_task(self._reject(tp, offset, value or b"", str(error)))
        else:
            if record.destination != self.destination.name:
                self.counts.passed_over += 1
                self.tracker.settled(tp, offset)
                self._slots.release()
                return
            if self.resend.vouched(tp, offset):  # read again after a failure, and confirmed already
                self.counts.not_resent += 1
                self.tracker.settled(tp, offset)
                self._slots.release()
                return
            run = run_of(record.job)
            task = asyncio.create_task(self._publish(exchange, record, tp, offset, self._unconfirmed.get(run)))
            if run is not None:
                self._unconfirmed[run] = task
                task.add_done_callback(lambda done, run=run: self._confirmed_run(run, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _confirmed_run(self, run: str, task: asyncio.Task[Any]) -> None:
        if self._unconfirmed.get(run) is task:
            del self._unconfirmed[run]

    async def _publish(self, exchange: AbstractExchange, record: records.JobRecord, tp: TopicPartition,
                       offset: int, previous: asyncio.Task[bool] | None = None) -> bool:
        """Publish one job once the previous message of its run (``previous``) is confirmed; True once the
        broker confirmed it. Nothing is published after a message of the same run that was not confirmed: after
        a failure the records are read again in order, and a run never has two unconfirmed messages whose
        arrival is unknown (one arrived, the other not, and sending both again would take the run back)."""
        try:
            if previous is not None and not await previous:
                return False
            root_url = record.root_url or self.sink.settings.taskcluster_root_url
            message = aio_pika.Message(record.job_body(), content_type="application/json",
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                       headers={ROOT_URL_HEADER: root_url})
            started = time.monotonic()
            try:
                await exchange.publish(message, routing_key=record.routing_key)
            except (*AMQP_TRANSIENT, aio_pika.exceptions.DeliveryError) as error:
                self._fail(error)
                return False
            self.counts.confirm_latency.observe(time.monotonic() - started)
            self.counts.published += 1
            self.resend.confirmed(tp, offset)
            self.tracker.settled(tp, offset)
            return True
        finally:
            self._slots.release()

    async def _reject(self, tp: TopicPartition, offset: int, value: bytes, reason: str) -> None:
        """A record that is not a job record cannot be published: it goes to the rejected topic instead."""
        envelope = value.decode("utf-8", "replace")
        rejected = records.encode_rejected_record(
            stage=SINK_STAGE, reason=f"not delivered to {self.destination.name}: {reason}", task_id=None,
            kind="rejected", envelope=envelope, source={"topic": tp.topic, "partition": tp.partition,
                                                        "offset": offset})
        try:
            await self.sink.produce(self.sink.topics.rejected, rejected)
        except KafkaError as error:
            self._fail(error)
        else:
            self.counts.rejected += 1
            self.tracker.settled(tp, offset)
        finally:
            self._slots.release()

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            log.warning("%s: %s: %s", self.label, type(error).__name__, error)
            self._failure = error
        self._failed.set()

    async def _settle(self) -> None:
        """Let outstanding publishes end (confirmed or failed), then commit what is confirmed."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self.commit()

    async def _rewind(self) -> None:
        """After a failed session, read every assigned partition again from its committable position."""
        assert self._consumer is not None
        self.resend.failed()
        assignment = self._consumer.assignment()
        for tp in assignment:
            position = self.tracker.position(tp)
            if position is None:  # nothing settled in this session: the group's committed offset
                position = await self._consumer.committed(tp)
            if position is None:  # nothing ever committed: from the start, as auto_offset_reset says
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, position)
        self.tracker.forget(assignment)

    async def hand_over(self, revoked: list[TopicPartition]) -> None:
        """Before the group gives ``revoked`` to a sink (this one or another): dispatch nothing more of what was
        fetched, let the publishes in flight end, and commit what is confirmed, so the next owner reads on from
        there instead of publishing again what the exchange already has."""
        self._epoch += 1
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=HANDOVER_GRACE)
        await self.commit()
        self.resend.set_aside(revoked)
        self.tracker.forget(revoked)

    async def commit(self) -> None:
        if self._consumer is None:
            return
        assigned = self._consumer.assignment()
        # A partition the consumer no longer holds would make Kafka refuse the whole commit.
        offsets = {tp: offset for tp, offset in self.tracker.to_commit().items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as error:  # rebalancing or Kafka away: the next commit tries again
            log.warning("%s: commit failed (%s: %s)", self.label, type(error).__name__, error)
        else:
            self.tracker.committed(offsets)
            self.resend.committed(offsets)


class PulseSink(Connector):
    """The jobs topic -> each enabled destination's jobs exchange, one independent loop per destination."""

    name = "sink"

    def __init__(self, settings: Settings, destinations: Iterable[Destination] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.topics = TopicNames.from_settings(settings)
        chosen = settings.destinations if destinations is None else tuple(destinations)
        self.destinations = tuple(d for d in chosen if d.enabled)
        self.counts = SinkCounts()
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = await self.start_producer("sink", lambda: AIOKafkaProducer(
            **kafka_client_kwargs(self.settings), acks="all", enable_idempotence=True,
            client_id=f"{self.settings.app_id}-sink"))

    async def run(self) -> None:
        if self._producer is None:
            return
        if not self.destinations:
            log.warning("sink: no enabled destination; nothing to do")
            await self.wait_stopped()
            return
        async with asyncio.TaskGroup() as group:
            for destination in self.destinations:
                group.create_task(DestinationLoop(self, destination).run(), name=f"sink-{destination.name}")

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        log.info("%s", self.counts.summary())

    async def produce(self, topic: str, value: bytes, key: bytes = b"") -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topic, value, key=key)
