"""The Faust application: topics, tables and the one agent, built from settings.

The agent stays thin: it hands the task-events stream to a ``BatchPipeline``, whose batches
``EventProcessor`` turns into records; a batch is acknowledged only once Kafka has every one of them, and
anything unexpected ends the process before more is acknowledged (see docs/architecture.md for the
delivery guarantee).

Tables are keyed so that they live on the partition of the event that writes them: a task's definition,
its runs' artifact listings and its guard entries all sit on the task's partition, and a worker that owns
the partition owns the task's state.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import faust
import orjson
from aiokafka import ConsumerRecord
from faust.stores.base import SerializedStore
from faust.streams import _current_event  # the only way to write a table for an event of a batch
from faust.types import TP, EventT

from streams.batch_pipeline import BatchPipeline
from streams.core.rules import Rules
from streams.gaps import OffsetWatch
from streams.processor import EventProcessor, RetryPolicy, SourceEvent
from streams.queue_api import QueueClient
from streams.state_guard import GuardEntry
from streams.topics import TABLES
from tc_treeherder.kafka_config import faust_broker_credentials
from tc_treeherder.settings import Settings

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
# lone event after a quiet spell still goes at once. See streams/batch_pipeline.py.
BATCH_LINGER = 0.01


@contextmanager
def _acting_for(event: EventT) -> Iterator[None]:
    """Make Faust route table reads and writes to ``event``'s partition.

    Faust finds a table's partition through the current event; inside a batch, that is whichever event came
    last, so each table access names its own event explicitly.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class Outgoing(NamedTuple):
    """One record to produce: output for a topic, or a table change for its changelog."""

    topic: str
    key: bytes
    value: bytes
    partition: int | None = None  # None: Kafka's partitioner picks from the key
    table: faust.Table | None = None  # set for changelog records: their offset is the table's checkpoint


class BatchWrites:
    """The table writes of one batch, applied to the local store at once and to the changelogs with the output.

    Faust logs each table write with a message of its own through a small buffer, and stalls the stream
    whenever that buffer holds a hundred messages; a batch's writes instead go out together with its output
    and are awaited like it.

    State-guard entries wait longer: until the batch's jobs are in Kafka. The guard suppresses a job that
    would move its run back; an entry that reached the table before the jobs it vouches for (a worker killed,
    or its partition revoked, between the two) would make whoever reads the batch again suppress those
    never-delivered jobs as "backwards". Later events of the batch read the entries from here.
    """

    def __init__(self, unreleased: dict[str, tuple[GuardEntry, int]] | None = None, serial: int = 0) -> None:
        self.changelog: list[Outgoing] = []
        self._guard: dict[str, tuple[GuardEntry, EventT]] = {}
        # Shared by the batches in flight: key -> (entry, serial of the batch that set it), newest first, so a
        # batch sees the entries of those prepared before it but not yet settled.
        self._unreleased = unreleased if unreleased is not None else {}
        self._serial = serial

    def save(self, table: faust.Table, event: EventT, key: bytes, value: bytes) -> None:
        with _acting_for(event):
            table.data[key] = value
        self.changelog.append(Outgoing(table.changelog_topic.get_topic_name(), key, value,
                                       event.message.partition, table))

    def take_changelog(self) -> list[Outgoing]:
        """The changelog records written so far, handed over once."""
        taken, self.changelog = self.changelog, []
        return taken

    def guard_entry(self, key: str) -> GuardEntry | None:
        unreleased = self._unreleased.get(key)
        return None if unreleased is None else unreleased[0]

    def put_guard_entry(self, key: str, entry: GuardEntry, event: EventT) -> None:
        self._guard[key] = (entry, event)
        self._unreleased[key] = (entry, self._serial)

    def release_guard(self, table: faust.Table, progress: faust.Table, last_events: Iterable[Any]) -> list[Outgoing]:
        """Apply the guard entries, and each partition's last processed offset, to the local store; the
        changelog records to send for them."""
        for key, (entry, event) in self._guard.items():
            self.save(table, event, key.encode(), entry.encode())
            if self._unreleased.get(key, (None, None))[1] == self._serial:
                del self._unreleased[key]  # no later batch has moved it on: the table has the newest entry
        self._guard.clear()
        for event in last_events:
            self.save(progress, event, _progress_key(event.message.partition), str(event.message.offset).encode())
        return self.take_changelog()


class TableState:
    """The worker's tables as seen from one event: what ``EventProcessor`` reads and writes."""

    def __init__(self, tables: WorkerTables, event: EventT, writes: BatchWrites) -> None:
        self._tables = tables
        self._event = event
        self._writes = writes

    def definition(self, task_id: str) -> Mapping[str, Any] | None:
        return self._load(self._tables.definitions, task_id)

    def store_definition(self, task_id: str, definition: Mapping[str, Any]) -> None:
        self._save(self._tables.definitions, task_id, orjson.dumps(definition))

    def artifacts(self, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]] | None:
        return self._load(self._tables.artifacts, f"{task_id}/{run_id}")

    def store_artifacts(self, task_id: str, run_id: int, artifacts: Sequence[Mapping[str, Any]]) -> None:
        self._save(self._tables.artifacts, f"{task_id}/{run_id}", orjson.dumps(list(artifacts)))

    def emitted(self, key: str) -> GuardEntry | None:
        pending = self._writes.guard_entry(key)
        if pending is not None:
            return pending
        raw = self._raw(self._tables.emitted, key)
        return None if raw is None else GuardEntry.decode(raw)

    def store_emitted(self, key: str, entry: GuardEntry) -> None:
        self._writes.put_guard_entry(key, entry, self._event)

    def _raw(self, table: faust.Table, key: str) -> bytes | None:
        with _acting_for(self._event):
            return _read(table, key.encode())

    def _load(self, table: faust.Table, key: str) -> Any:
        raw = self._raw(table, key)
        return None if raw is None else orjson.loads(raw)

    def _save(self, table: faust.Table, key: str, value: bytes) -> None:
        self._writes.save(table, self._event, key.encode(), value)


@dataclass(frozen=True, slots=True)
class WorkerTables:
    definitions: faust.Table  # taskId -> task definition, as the Queue API returned it
    artifacts: faust.Table  # taskId/runId -> artifact listing of a resolved run, all pages
    emitted: faust.Table  # destination/taskId/runId -> GuardEntry: states emitted, furthest offset (state guard)
    progress: faust.Table  # partition number -> last offset whose output is in Kafka (see streams/gaps.py)


@dataclass(slots=True)
class Worker:
    """Everything one worker process runs, built from settings in one place."""

    app: faust.App
    tables: WorkerTables
    processor: EventProcessor | None = None


def create_worker(settings: Settings, *, client: QueueClient | None = None,
                  policy: RetryPolicy | None = None) -> Worker:
    app = faust.App(
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
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(settings.topic("task-events"), partitions=settings.partitions, **raw)
    jobs_topic = app.topic(settings.topic("jobs"), partitions=settings.partitions, **raw)
    rejected_topic = app.topic(settings.topic("rejected"), partitions=settings.partitions, **raw)
    # In the order of WorkerTables' fields; ensure_topics has created their changelogs already.
    tables = WorkerTables(*(_raw_table(app, name, settings.partitions) for name in TABLES))
    worker = Worker(app=app, tables=tables)
    rules = Rules.from_settings(settings)
    outputs = {"jobs": jobs_topic.get_topic_name(), "rejected": rejected_topic.get_topic_name()}

    def processor() -> EventProcessor:
        if worker.processor is None:  # the Queue client's HTTP session must be made inside the loop
            queue = client or QueueClient(timeout=settings.queue_timeout, retries=settings.queue_retries)
            worker.processor = EventProcessor(rules, queue, default_root_url=settings.taskcluster_root_url,
                                              policy=policy, stopping=lambda: app.should_stop)
        return worker.processor

    @app.on_before_shutdown.connect
    async def close_queue_client(app: faust.App, **kwargs: Any) -> None:
        if worker.processor is not None:
            await worker.processor.client.close()

    watch = OffsetWatch(settings, events_topic.get_topic_name(), settings.app_id)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        watch.forget(tp.partition for tp in revoked if tp.topic == watch.topic)

    @app.on_partitions_assigned.connect
    async def forget_assigned(app: faust.App, assigned: set[TP], **kwargs: Any) -> None:
        watch.forget(tp.partition for tp in assigned if tp.topic == watch.topic)

    unreleased: dict[str, tuple[GuardEntry, int]] = {}  # guard entries of batches not yet settled (BatchWrites)
    serials = itertools.count()

    async def prepare(batch: list[EventT]) -> Flight:
        """Process a batch and hand its output and table changes to the producer."""
        writes = BatchWrites(unreleased, next(serials))
        # Records Faust skipped come first: they precede the batch in their partitions.
        first = {}
        for event in batch:
            first.setdefault(event.message.partition, event)
        skipped = await watch.fetch(await watch.find_gaps(
            [(event.message.partition, event.message.offset) for event in batch],
            processed=lambda partition: _processed_upto(tables.progress, first[partition])))
        sources = [_source_event(tables, writes, _FetchedEvent(record), record.key, record.value)
                   for record in skipped]
        sources += [_source_event(tables, writes, event, event.key, event.value) for event in batch]
        produced = await processor().process_batch(sources)
        records = [Outgoing(outputs[record.topic], record.key, record.value) for record in produced]
        records += writes.take_changelog()
        return Flight(records, await _send(app, records), writes)

    @app.agent(events_topic, name="task-events-to-jobs", concurrency=1)
    async def task_events_to_jobs(stream: faust.StreamT) -> None:
        # Events are acknowledged by ``settle`` alone, once their output is confirmed; Faust's stream keeps
        # handing events over meanwhile, so the next batch is ready when the pipeline is.
        events = stream.noack()

        async def settle(batch: list[EventT], flight: Flight) -> None:
            """Once Kafka has the batch's output: its guard entries and progress marks, then the acknowledgements."""
            await _confirmed(flight)
            last = {event.message.partition: event for event in batch}
            await _deliver(app, flight.writes.release_guard(tables.emitted, tables.progress, last.values()))
            for event in batch:
                await events.ack(event)

        pipeline = BatchPipeline(prepare, settle, _exit_unacknowledged, batch_size=BATCH_SIZE, in_flight=IN_FLIGHT,
                                 linger=BATCH_LINGER)
        pipeline.start()
        try:
            async for event in events.events():
                await pipeline.put(event)
        finally:
            await pipeline.close()

    return worker


def _read(table: faust.Table, key: bytes) -> bytes | None:
    """A table's value for ``key`` with one store lookup, for the current event's partition.

    ``Table.get`` asks a RocksDB store twice (whether the key is there, then its value); the worker's tables
    are raw bytes to bytes, so the store's own lookup answers directly.
    """
    store = table.data
    if isinstance(store, SerializedStore):
        return store._get(key)
    return store.get(key)


def _progress_key(partition: int) -> bytes:
    return str(partition).encode()


def _processed_upto(progress: faust.Table, event: Any) -> int | None:
    """The last offset of ``event``'s partition that a worker of the group recorded as processed."""
    with _acting_for(event):
        raw = _read(progress, _progress_key(event.message.partition))
    return None if raw is None else int(raw)


class _FetchedEvent:
    """A record read around Faust (see ``streams.gaps``), shaped enough like a Faust event for the tables."""

    def __init__(self, record: ConsumerRecord) -> None:
        self.message = record


def _source_event(tables: WorkerTables, writes: BatchWrites, event: Any, key: bytes | None,
                  value: bytes) -> SourceEvent:
    message = event.message
    return SourceEvent(topic=message.topic, partition=message.partition, offset=message.offset, key=key,
                       value=value, state=TableState(tables, event, writes))


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
    futures: list[asyncio.Future[Any]]
    writes: BatchWrites


async def _send(app: faust.App, records: list[Outgoing]) -> list[asyncio.Future[Any]]:
    return [await app.producer.send(record.topic, record.key, record.value, record.partition, None, None)
            for record in records]


async def _confirmed(flight: Flight) -> None:
    """Wait until Kafka has every record of ``flight``, and move the tables' checkpoints to their changelogs.

    A record Kafka refused is not retried here: batches after this one are already with the producer, and a
    late retry would put a task's jobs out of order. The worker exits instead and the batch is read again.
    """
    results = await asyncio.gather(*flight.futures, return_exceptions=True)
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        raise RuntimeError(f"Kafka refused {len(errors)} of {len(results)} records of a batch: "
                           f"{sorted({type(error).__name__ for error in errors})}") from errors[0]
    _move_checkpoints(flight.records, results)


def _move_checkpoints(records: Sequence[Outgoing], results: Sequence[Any]) -> None:
    """Changelog records move their table's checkpoint, as Faust's own table writes do, so a restart recovers
    only what is newer."""
    checkpoints: dict[tuple[faust.Table, TP], int] = {}
    for record, result in zip(records, results, strict=True):
        if record.table is not None and not isinstance(result, BaseException):
            tp = TP(result.topic, result.partition)
            checkpoints[(record.table, tp)] = max(result.offset, checkpoints.get((record.table, tp), -1))
    for (table, tp), offset in checkpoints.items():
        table.data.set_persisted_offset(tp, offset)


async def _deliver(app: faust.App, records: list[Outgoing]) -> None:
    """Produce ``records`` and wait until Kafka has each one; retry what failed until it lands.

    The batch is acknowledged once the agent's loop body ends, so this may only return when everything is
    in Kafka. If the worker is asked to stop while Kafka still refuses, it raises, and the agent exits without
    acknowledging: the batch is read again by whichever worker takes the partition over. Changelog records
    move their table's checkpoint, as Faust's own table writes do, so a restart recovers only what is newer.
    """
    pending = records
    delay = 0.5
    while pending:
        results = await asyncio.gather(*await _send(app, pending), return_exceptions=True)
        _move_checkpoints(pending, results)
        failed = [record for record, result in zip(pending, results, strict=True) if isinstance(result, BaseException)]
        if not failed:
            return
        errors = {type(result).__name__ for result in results if isinstance(result, BaseException)}
        log.error("%d of %d records not delivered to Kafka (%s); retrying", len(failed), len(pending), errors)
        if app.should_stop:
            raise RuntimeError(f"stopping with {len(failed)} records Kafka has not taken")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
        pending = failed
