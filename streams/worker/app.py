"""The Faust application: topics, tables and the one agent, built from settings.

The agent stays thin: it hands the task-events stream to a ``BatchPipeline``, whose batches
``EventProcessor`` turns into records; a batch is acknowledged only once Kafka has every one of them, and
anything unexpected ends the process before more is acknowledged (see docs/architecture.md for the
delivery guarantee).

A worker that owns a partition owns the state of its tasks: the tables and how a batch reads and writes them
are in ``streams.worker.tables``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple, NoReturn

import faust
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faust.types import TP, EventT

from streams.core.state_guard import GuardEntry
from streams.shared.kafka_config import faust_broker_credentials
from streams.shared.record_batches import SubmittedBatch
from streams.shared.settings import Settings
from streams.shared.topics import TABLES
from streams.taskcluster.queue_client import QueueClient
from streams.worker.batch_pipeline import BatchPipeline
from streams.worker.commits import acknowledge_filled, merge_gaps_before_commits
from streams.worker.gaps import Gap, OffsetWatch
from streams.worker.membership import WorkerApp, heartbeat_interval, leave_when_closing
from streams.worker.processor import EventProcessor, RetryPolicy, SourceEvent
from streams.worker.record_producer import RecordProducer
from streams.worker.tables import (
    BatchWrites,
    Outgoing,
    TableState,
    WorkerTables,
    processed_upto,
)

log = logging.getLogger(__name__)

# Faust opens one RocksDB per table and partition (3 tables x TC_TREEHERDER_PARTITIONS), each by default with
# up to 3 x 64 MiB of memtables and a 2 GiB block cache: memory then grows with the tasks seen until the
# memtables flush, to gigabytes. These bound each database to 2 x 4 MiB of memtables and an 8 MiB cache
# (with 8 partitions: under 400 MiB for all tables); reads of a task's state are point lookups, which a
# small cache serves as well. See benchmarks/memory.py.
ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20,
                   "block_cache_compressed_size": 0}

BATCH_SIZE = 500  # the most events one batch takes; fewer when fewer are waiting
IN_FLIGHT = 2  # batches prepared ahead of the one waiting for Kafka's confirmations
# Seconds between two batches short of full: a busy stream then fills them, and the fixed cost of a batch is
# shared by more events (benchmarks: 10 ms against none cut the worker's CPU per event by a third), while a
# lone event after a quiet spell still goes at once. See streams/worker/batch_pipeline.py.
BATCH_LINGER = 0.01
# Seconds between Faust's commits of acknowledged offsets (its default: 2.8). A partition's new owner, after a
# rebalance, reads again what was acknowledged since the last commit (Faust drops the acknowledgements of
# revoked partitions before its revocation commit), and so does a restarted worker after a kill: each such
# event that a run already moved past comes out as a duplicate of its latest job. One commit request per half
# second costs the broker next to nothing.
COMMIT_INTERVAL = 0.5
# Seconds without events after which the worker looks for records its consumer read past at a partition's
# end (``OffsetWatch.stalled_tails``); two looks agreeing fill them, so within 2-3 of these of going quiet.
TAIL_CHECK_EVERY = 2.0


def faust_app(settings: Settings) -> WorkerApp:
    """The Faust app with the settings every worker needs: explicit partitions, acks from all replicas, one
    standby replica of each table, static membership when ``TC_TREEHERDER_WORKER_ID`` is set, and a short
    session with frequent heartbeats so that a change of the group holds partitions up for seconds, not a
    minute (``streams.worker.membership``)."""
    return WorkerApp(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        table_standby_replicas=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.web_port != 0,
        web_host=settings.web_host,
        web_port=settings.web_port or 6066,
        consumer_group_instance_id=os.environ.get("TC_TREEHERDER_WORKER_ID") or None,
        broker_commit_interval=COMMIT_INTERVAL,
        broker_session_timeout=settings.worker_session_timeout,
        broker_heartbeat_interval=heartbeat_interval(settings.worker_session_timeout),
    )


class Worker:
    """One worker process: the Faust app, its topics and tables, and the agent's two batch stages.

    ``prepare`` processes a batch and hands its output to the producer; ``settle`` waits for Kafka, writes the
    guard entries and progress marks, then acknowledges. ``BatchPipeline`` runs them in order (see
    docs/architecture.md, "The worker, batch by batch").
    """

    def __init__(self, settings: Settings, *, client: QueueClient | None = None,
                 policy: RetryPolicy | None = None) -> None:
        self.settings = settings
        self.app = faust_app(settings)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.events_topic = self.app.topic(settings.topic("task-events"), partitions=settings.partitions, **raw)
        self.outputs = {name: self.app.topic(settings.topic(name), partitions=settings.partitions,
                                             **raw).get_topic_name() for name in ("jobs", "rejected")}
        # In the order of WorkerTables' fields; ensure_topics has created their changelogs already.
        self.tables = WorkerTables(*(_raw_table(self.app, name, settings.partitions) for name in TABLES))
        self.watch = OffsetWatch(settings, self.events_topic.get_topic_name(), settings.app_id,
                                 stopping=lambda: self.app.should_stop)
        self.processor: EventProcessor | None = None  # made inside the loop, with the Queue client's session
        self.producer = RecordProducer(self.app)
        self._client = client
        self._policy = policy
        self._rules = settings.rules()
        self._unreleased: dict[str, tuple[GuardEntry, int]] = {}  # guard entries of batches not yet settled
        self._serials = itertools.count()
        self._wire()

    def _wire(self) -> None:
        self.app.on_before_shutdown.connect(self._close_queue_client)
        self.app.on_partitions_revoked.connect(self._forget_partitions)
        self.app.on_partitions_assigned.connect(self._forget_partitions)
        self.app.on_partitions_assigned.connect(leave_when_closing)  # a LeaveGroup even as a static member
        self.app.on_partitions_assigned.connect(merge_gaps_before_commits)  # commits past what Faust skipped
        worker = self

        @self.app.agent(self.events_topic, name="task-events-to-jobs", concurrency=1)
        async def task_events_to_jobs(stream: faust.StreamT) -> None:
            await worker.consume(stream)

    def event_processor(self) -> EventProcessor:
        if self.processor is None:  # the Queue client's HTTP session must be made inside the loop
            queue = self._client or QueueClient(timeout=self.settings.queue_timeout,
                                                retries=self.settings.queue_retries)
            self.processor = EventProcessor(self._rules, queue, default_root_url=self.settings.taskcluster_root_url,
                                            policy=self._policy, stopping=lambda: self.app.should_stop)
        return self.processor

    async def _close_queue_client(self, app: faust.App, **kwargs: Any) -> None:
        if self.processor is not None:
            await self.processor.client.close()

    async def _forget_partitions(self, app: faust.App, tps: set[TP], **kwargs: Any) -> None:
        """A partition that changes hands (revoked or assigned) starts afresh in the gap watcher."""
        self.watch.forget(tp.partition for tp in tps if tp.topic == self.watch.topic)

    async def consume(self, stream: faust.StreamT) -> None:
        """The agent's body. Events are acknowledged by ``settle`` alone, once their output is confirmed;
        Faust's stream keeps handing events over meanwhile, so the next batch is ready when the pipeline is."""
        events = stream.noack()
        pipeline = BatchPipeline(self.prepare, partial(self.settle, events), _exit_unacknowledged,
                                 batch_size=BATCH_SIZE, in_flight=IN_FLIGHT, linger=BATCH_LINGER,
                                 idle_every=TAIL_CHECK_EVERY)
        pipeline.start()
        try:
            async for event in events.events():
                await pipeline.put(event)
        finally:
            await pipeline.close()

    async def prepare(self, batch: list[EventT]) -> Flight:
        """Process a batch and hand its output and table changes to the producer. An empty batch (the stream
        has been quiet) looks for records Faust read past at the end of a partition instead."""
        writes = BatchWrites(self._unreleased, next(self._serials))
        gaps = await self._skipped_before(batch) if batch else await self._stalled_tails()
        fetched = [_FetchedEvent(record) for record in await self.watch.fetch(gaps)]
        self.event_processor().counts.read_back += len(fetched)
        sources = [_source_event(self.tables, writes, event) for event in [*fetched, *batch]]
        produced = await self.event_processor().process_batch(sources)
        records = [Outgoing(self.outputs[record.topic], record.key, record.value) for record in produced]
        records += writes.take_changelog()
        return Flight(records, await self.producer.send(records), writes, gaps, fetched)

    async def _skipped_before(self, batch: list[EventT]) -> list[Gap]:
        """Where Faust skipped records in the batch's partitions: they come first, as they precede the batch."""
        return await self.watch.find_gaps([(event.message.partition, event.message.offset) for event in batch],
                                          processed=self._processed)

    async def _stalled_tails(self) -> list[Gap]:
        """Records Faust read past at the end of a partition, with no later event to reveal them.

        Only outside rebalances and table recovery, when Faust's stream flows: Faust pauses it and seeks its
        partitions then, and a position it is about to leave says nothing.
        """
        if self.app.rebalancing or not self.app.flow_control.is_active() or self.app.should_stop:
            return []
        consumer = self.app.consumer
        positions = {}
        try:
            for tp in sorted(consumer.assignment()):
                if tp.topic == self.watch.topic:
                    position = await consumer.position(tp)
                    if position is not None:
                        positions[tp.partition] = position
        except Exception as error:
            # A look that fails (a partition revoked under it, the consumer closing) changes nothing, and the
            # next one starts afresh: it must never end the worker, as a failing batch would.
            log.log(logging.DEBUG if isinstance(error, KafkaError) or self.app.should_stop else logging.WARNING,
                    "no look at the partitions' ends this time: %s: %s", type(error).__name__, error)
            return []
        return await self.watch.stalled_tails(positions, processed=self._processed)

    def _processed(self, partition: int) -> int | None:
        return processed_upto(self.tables.progress, partition)

    async def settle(self, events: faust.StreamT, batch: list[EventT], flight: Flight) -> None:
        """Once Kafka has the batch's output: its guard entries and progress marks, then the acknowledgements."""
        await _confirmed(flight)
        last = {event.message.partition: event for event in [*flight.fetched, *batch]}
        await _deliver(self.producer, flight.writes.release_guard(self.tables.emitted, self.tables.progress,
                                                                  last.values()), lambda: self.app.should_stop)
        acknowledge_filled(self.app.consumer, self.watch.topic, flight.filled)
        for event in batch:
            await events.ack(event)


def create_worker(settings: Settings, *, client: QueueClient | None = None,
                  policy: RetryPolicy | None = None) -> Worker:
    """The worker for ``settings``; ``client`` and ``policy`` let tests bring their own Queue client and retries."""
    return Worker(settings, client=client, policy=policy)


class _FetchedEvent:
    """A record read around Faust (see ``streams.worker.gaps``), shaped enough like a Faust event for the tables."""

    def __init__(self, record: ConsumerRecord) -> None:
        self.message = record
        self.key = record.key
        self.value = record.value


def _source_event(tables: WorkerTables, writes: BatchWrites, event: Any) -> SourceEvent:
    message = event.message
    return SourceEvent(topic=message.topic, partition=message.partition, offset=message.offset, key=event.key,
                       value=event.value, state=TableState(tables, event, writes))


def _exit_unacknowledged(error: BaseException) -> NoReturn:
    """Leave without acknowledging the batch in hand.

    Faust acknowledges a batch whatever ends its loop body, and a later commit would then skip events whose
    jobs never reached Kafka. ``EventProcessor`` turns every bad event into a record, so reaching this is a
    bug, a broken dependency or a shutdown that did not wait for the batch; the batch is read again by
    whichever worker next owns the partitions.
    """
    if isinstance(error, asyncio.CancelledError):
        log.critical("worker cancelled in the middle of a batch: exiting without acknowledging it")
    else:
        log.critical("unexpected failure in the middle of a batch: exiting without acknowledging it",
                     exc_info=error)
    logging.shutdown()
    os._exit(70)


def _raw_table(app: faust.App, name: str, partitions: int) -> faust.Table:
    """A table of bytes to bytes, stored and logged as they are.

    Faust picks a table's codec from its key and value types and falls back to JSON for plain ``bytes``;
    the worker encodes values itself (orjson), so both sides are set to raw before the changelog topic and
    the store are made from them.
    """
    options = ROCKSDB_OPTIONS if str(app.conf.store).startswith("rocksdb") else None
    table = app.Table(name, partitions=partitions, key_type=bytes, value_type=bytes, options=options)
    table.key_serializer = "raw"
    table.value_serializer = "raw"
    return table


class Flight(NamedTuple):
    """A batch's output handed to the producer, with the table changes to make once Kafka has it."""

    records: list[Outgoing]
    sent: list[SubmittedBatch[Outgoing]]
    writes: BatchWrites
    filled: list[Gap]  # records Faust skipped, read around it and processed ahead of the batch
    fetched: list[_FetchedEvent]  # those records


async def _confirmed(flight: Flight) -> None:
    """Wait until Kafka has every record of ``flight``, and move the tables' checkpoints to their changelogs.

    A record Kafka refused is not retried here: batches after this one are already with the producer, and a
    late retry would put a task's jobs out of order. The worker exits instead and the batch is read again.
    """
    results = await asyncio.gather(*(sent.delivery for sent in flight.sent), return_exceptions=True)
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        refused = sum(len(sent.items) for sent, result in zip(flight.sent, results, strict=True)
                      if isinstance(result, BaseException))
        raise RuntimeError(f"Kafka refused {refused} of {len(flight.records)} records of a batch: "
                           f"{sorted({type(error).__name__ for error in errors})}") from errors[0]
    _move_checkpoints(flight.sent, results)


def _move_checkpoints(sent: Sequence[SubmittedBatch[Outgoing]], results: Sequence[Any]) -> None:
    """Changelog records move their table's checkpoint, as Faust's own table writes do, so a restart recovers
    only what is newer."""
    checkpoints: dict[tuple[faust.Table, TP], int] = {}
    for batch, result in zip(sent, results, strict=True):
        table = batch.items[0].table  # a changelog topic holds one table's records
        if table is not None and not isinstance(result, BaseException):
            tp = TP(batch.topic, batch.partition)
            checkpoints[(table, tp)] = max(batch.offsets(result.offset)[-1], checkpoints.get((table, tp), -1))
    for (table, tp), offset in checkpoints.items():
        table.data.set_persisted_offset(tp, offset)


async def _deliver(producer: RecordProducer, records: list[Outgoing], stopping: Callable[[], bool]) -> None:
    """Produce ``records`` and wait until Kafka has each one; retry what failed until it lands.

    For a settled batch's guard entries and progress marks: ``settle`` acknowledges the batch only after this
    returns, and settles batches one at a time, so a retry here cannot reorder anything. If the worker is asked
    to stop while Kafka still refuses, it raises, and the worker exits without acknowledging the batch.
    """
    pending = records
    delay = 0.5
    while pending:
        sent = await producer.send(pending)
        results = await asyncio.gather(*(batch.delivery for batch in sent), return_exceptions=True)
        _move_checkpoints(sent, results)
        failed = [record for batch, result in zip(sent, results, strict=True) if isinstance(result, BaseException)
                  for record in batch.items]
        if not failed:
            return
        errors = {type(result).__name__ for result in results if isinstance(result, BaseException)}
        log.error("%d of %d records not delivered to Kafka (%s); retrying", len(failed), len(pending), errors)
        if stopping():
            raise RuntimeError(f"stopping with {len(failed)} records Kafka has not taken")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
        pending = failed
