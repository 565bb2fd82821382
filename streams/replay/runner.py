"""``tc-treeherder replay``: re-run a range of task events through the current transform and re-emit the jobs.

The replay is a reader beside the live pipeline, never part of it: it assigns partitions itself (no consumer
group, no commits), reads the worker's tables from their changelog topics without writing them, keeps its own
state guard, and adds job records to the jobs topic, marked ``replay``, for the live sinks to deliver. Live
processing goes on undisturbed and no live state is rewound.

How it runs, and why it is fast:

1. The range (``--since/--until`` through Kafka's offsets-for-times per partition, or explicit offsets) is
   read once for the taskIds it holds; its records are kept in memory when their values fit ``KEEP_BYTES``.
2. Only those keys are kept from the changelogs of ``task-definitions`` and ``run-artifacts`` (only the
   partitions the range touches): the state the worker had, with no Queue API call for a task already seen.
3. The kept records (or, for a larger range, the range read again) go through ``pipeline.process`` in
   chunks of ``getmany`` size, with lookups answered from memory, so no event awaits the network. Tasks the
   worker never saw are fetched from the Queue API for the whole chunk at once (concurrently), unless
   ``--no-queue``.
4. A chunk's jobs are appended to one record batch per partition (``JobWriter``) and handed to the producer
   whole; they are confirmed while the next chunk is computed.
5. Automatic cycle collection is paused and the tables frozen (``collector_paused``): with the default
   thresholds the collector took a third of the run walking objects that live for the whole replay.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.core.model import Ignored, Jobs, Outcome, Rejected, Stage, reason_class
from streams.replay.plan import (
    JobKey,
    LocalGuard,
    PartitionRange,
    ReplayReport,
    Selection,
    diff_jobs,
    progress_line,
    resolve_range,
    route_prefix,
)
from streams.shared import records
from streams.shared.gc_pause import collector_paused
from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.record_batches import RecordBatches
from streams.shared.settings import Settings
from streams.shared.topics import changelog_topic
from streams.taskcluster.lookup import process
from streams.taskcluster.queue_client import QueueClient, QueueError, QueueUnavailable, TaskNotFound

log = logging.getLogger(__name__)

FETCH_RECORDS = 5000  # records per getmany
KEEP_BYTES = 128 * 1024 * 1024  # a range whose values fit is read once and re-run from memory
QUEUE_CONCURRENCY = 32  # Queue API requests in flight for tasks the worker never saw
NOT_RERUN_STAGES = {"source": "the source could not make an envelope of the Pulse message",
                    "sink": "a sink could not read a job record"}


@dataclass(frozen=True)
class ReplayOptions:
    selection: Selection
    since_ms: int | None = None
    until_ms: int | None = None
    from_offsets: Mapping[int, int] | None = None
    to_offsets: Mapping[int, int] | None = None
    rejected_only: bool = False
    include_ignored: bool = False  # with rejected_only: also re-run events that were ignored
    use_queue: bool = True
    dry_run: bool = False
    diff: bool = False


@dataclass(slots=True)
class ReplayResult:
    report: ReplayReport
    diff_lines: list[str] = field(default_factory=list)
    replay_id: str = ""


@dataclass(slots=True)
class _Input:
    """One record of the range to re-run: an envelope, and the task event's position for the job record."""

    task_id: str | None
    envelope: Any  # decoded JSON (or undecodable text) as the worker would have seen it
    partition: int  # of the task event (for the job record's source and the diff)
    offset: int
    destination: str | None = None  # a rejected record about one destination: re-run for that one only


class Progress:
    """A progress bar with rate and ETA on a terminal; plain lines every few seconds otherwise."""

    def __init__(self, total: int, stream: TextIO, *, interval: float | None = None) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.started = time.monotonic()
        self._shown = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < self.interval:
            return
        self._shown = now
        line = progress_line(done, self.total, now - self.started)
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write("replay: " + line + "\n")
        self.stream.flush()


class ReplayLookup:
    """``TaskLookup`` over the tables read from the changelogs; the Queue API only for what they lack."""

    def __init__(self, definitions: dict[str, Any], listings: dict[str, Any], client: QueueClient | None,
                 report: ReplayReport) -> None:
        self.definitions = definitions
        self.listings = listings
        self._client = client
        self._report = report
        self._gate = asyncio.Semaphore(QUEUE_CONCURRENCY)

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        found = self.definitions.get(task_id)
        if found is not None:
            return found
        if self._client is None:  # (the event's own task is checked before; this is e.g. a decision task)
            raise TaskNotFound(f"task({task_id}): not in the task-definitions table and --no-queue forbids asking",
                               call="task", task_id=task_id, root_url=root_url)
        definition = await self._fetch(lambda: self._client.task(root_url, task_id))  # type: ignore[union-attr]
        self.definitions[task_id] = definition
        return definition

    async def artifacts(self, root_url: str, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]]:
        key = f"{task_id}/{run_id}"
        found = self.listings.get(key)
        if found is not None:
            return found
        if self._client is None:
            raise _NoQueue(f"listing of {key} is not in the run-artifacts table and --no-queue forbids asking",
                           call="listArtifacts", task_id=task_id, root_url=root_url)
        listing = await self._fetch(lambda: self._client.list_artifacts(root_url, task_id, run_id))  # type: ignore[union-attr]
        self.listings[key] = listing
        return listing

    async def _fetch(self, call: Callable[[], Awaitable[Any]]) -> Any:
        async with self._gate:
            self._report.queue_fetches += 1
            return await call()


class _NoQueue(QueueError):
    """A listing the tables lack while the Queue API may not be asked: the job goes out without links."""


def _payload_task_id(envelope: object) -> str | None:
    """The taskId of an envelope's message body, for the rejections that come before the envelope is parsed."""
    return records.payload_task_id(envelope.get("payload")) if isinstance(envelope, Mapping) else None


# --- Kafka writing ----------------------------------------------------------------------------------------


class JobWriter:
    """Job records go out as whole record batches, one per partition (``RecordBatches``), confirmed once per chunk.

    The replay confirms a chunk's batches only after it has built the next chunk, so Kafka writes one while
    the replay works on the other; a refusal still stops the replay, one chunk later.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.topic = topic
        self._batches: RecordBatches[None] = RecordBatches(producer)
        self._unconfirmed: list[asyncio.Future[Any]] = []  # delivery of the batches submitted

    async def start(self) -> None:
        await self._batches.learn([self.topic])

    def add(self, key: bytes, value: bytes) -> None:
        self._batches.add(self.topic, key, value, None)

    async def submit(self) -> None:
        """Hand every batch filled so far to the producer; ``confirm`` waits for Kafka to have them."""
        self._unconfirmed += [batch.delivery for batch in await self._batches.submit()]

    async def confirm(self) -> None:
        """Wait until Kafka has every batch submitted so far (raises when it refuses one)."""
        futures, self._unconfirmed = self._unconfirmed, []
        if futures:
            await asyncio.gather(*futures)


# --- Kafka reading ----------------------------------------------------------------------------------------


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    # retry_backoff_ms: the first offsets request for a topic the client has no metadata for yet always
    # fails once and waits this long before asking again; at the default 100 ms that was a tenth of a
    # short replay.
    return AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", client_id=f"{settings.app_id}-replay",
                            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
                            retry_backoff_ms=10)


async def _read(consumer: AIOKafkaConsumer, topic: str, ranges: Sequence[PartitionRange],
                on_batch: Callable[[list[Any]], Awaitable[None] | None]) -> None:
    """Every record of ``ranges``, handed over in getmany batches (records of one partition in order)."""
    await _read_topics(consumer, {topic: ranges}, on_batch)


async def _read_topics(consumer: AIOKafkaConsumer, ranges: Mapping[str, Sequence[PartitionRange]],
                       on_batch: Callable[[list[Any]], Awaitable[None] | None]) -> None:
    """``_read`` over the ranges of several topics at once."""
    todo = {TopicPartition(topic, r.partition): r for topic, topic_ranges in ranges.items()
            for r in topic_ranges if r.size}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, r in todo.items():
        consumer.seek(tp, r.start)
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=FETCH_RECORDS)
        chunk = []
        for tp, messages in batches.items():
            end = todo[tp].end
            chunk.extend(m for m in messages if m.offset < end)
            if messages and messages[-1].offset >= end - 1:
                del todo[tp]
                consumer.pause(tp)
        for tp in list(todo):  # a partition whose range ends in records that are gone (compaction, deletion)
            if await consumer.position(tp) >= todo[tp].end:
                del todo[tp]
                consumer.pause(tp)
        if chunk:
            result = on_batch(chunk)
            if result is not None:
                await result
    consumer.unsubscribe()


async def _offsets(consumer: AIOKafkaConsumer, topic: str, partitions: Iterable[int]
                   ) -> tuple[dict[int, int], dict[int, int]]:
    tps = [TopicPartition(topic, p) for p in partitions]
    low = await consumer.beginning_offsets(tps)
    high = await consumer.end_offsets(tps)
    return {tp.partition: o for tp, o in low.items()}, {tp.partition: o for tp, o in high.items()}


async def _at_time(consumer: AIOKafkaConsumer, topic: str, partitions: Iterable[int], ms: int
                   ) -> dict[int, int | None]:
    found = await consumer.offsets_for_times({TopicPartition(topic, p): ms for p in partitions})
    return {tp.partition: (None if hit is None else hit.offset) for tp, hit in found.items()}


async def _load_tables(consumer: AIOKafkaConsumer, wanted: Mapping[str, Callable[[str], bool]],
                       partitions: set[int]) -> dict[str, dict[str, Any]]:
    """Each changelog's table as the changelog leaves it, for the keys its ``wanted`` accepts only.

    The changelogs are read together, in one pass over their ``partitions``: one metadata and one offsets
    round trip for all of them. A changelog that does not exist (the worker never ran) gives an empty table.
    """
    existing = await consumer.topics() if partitions else set()
    topics = [topic for topic in wanted if topic in existing]
    tables: dict[str, dict[str, Any]] = {topic: {} for topic in wanted}
    if not topics:
        return tables
    tps = [TopicPartition(topic, p) for topic in topics for p in sorted(partitions)]
    low = await consumer.beginning_offsets(tps)
    high = await consumer.end_offsets(tps)

    def keep(chunk: list[Any]) -> None:
        for message in chunk:
            key = message.key.decode("utf-8", "replace") if message.key else ""
            if not wanted[message.topic](key):
                continue
            table = tables[message.topic]
            if message.value is None:
                table.pop(key, None)  # a tombstone
            else:
                table[key] = message.value  # decoded once the last value of the key is known

    await _read_topics(consumer, {topic: [PartitionRange(tp.partition, low[tp], high[tp]) for tp in tps
                                          if tp.topic == topic] for topic in topics}, keep)
    return {topic: {key: orjson.loads(value) for key, value in table.items()} for topic, table in tables.items()}


# --- The replay -------------------------------------------------------------------------------------------


class _RangeScan:
    """The key pass over a range: which tasks (and partitions) it holds, its earliest timestamp, and its records
    while they fit ``KEEP_BYTES``, so the re-run need not read the range a second time."""

    def __init__(self, replay: Replay, *, decode_keys: bool) -> None:
        self.replay = replay
        self.decode_keys = decode_keys  # task-events keys are taskIds; rejected records must be decoded
        self.task_ids: set[str] = set()
        self.partitions: set[int] = set()
        self.kept: list[list[Any]] | None = []
        self.kept_bytes = 0

    def note(self, chunk: list[Any]) -> None:
        earliest = min(message.timestamp for message in chunk)
        replay = self.replay
        if replay.first_event_ms is None or earliest < replay.first_event_ms:
            replay.first_event_ms = earliest
        if self.kept is not None:
            self.kept_bytes += sum(len(message.value or b"") for message in chunk)
            if self.kept_bytes <= KEEP_BYTES:
                self.kept.append(chunk)
            else:
                self.kept = None  # too big to hold: the re-run reads the range again
        if self.decode_keys:  # the key is the taskId: no need to decode the envelope
            for message in chunk:
                if message.key:
                    self.task_ids.add(message.key.decode("utf-8", "replace"))
                    self.partitions.add(message.partition)
            return
        for item in replay._inputs(chunk, count=False):
            if item.task_id:
                self.task_ids.add(item.task_id)
                self.partitions.add(item.partition)


class Replay:
    def __init__(self, settings: Settings, options: ReplayOptions, *, progress: TextIO | None = None,
                 client: QueueClient | None = None) -> None:
        self.settings = settings
        self.options = options
        self.progress_stream = progress if progress is not None else sys.stderr
        self.client = client
        self.report = ReplayReport(dry_run=options.dry_run)
        self.replay_id = uuid.uuid4().hex[:12]
        self.guard = LocalGuard()
        self.emitted: dict[JobKey, Mapping[str, Any]] = {}  # for --diff: (partition, offset, old destination)
        self.positions: set[tuple[int, int]] = set()  # --diff: task events re-run for a selected destination
        self.first_event_ms: int | None = None  # timestamp of the earliest task event in the range
        self._prefixes: dict[str, str | None] = {}  # taskId -> route prefix of its definition
        self._froze = False  # whether this replay froze the objects alive once the tables were loaded
        self.diff_limit = 20

    @property
    def source_topic(self) -> str:
        return self.settings.topic("rejected" if self.options.rejected_only else "task-events")

    async def run(self) -> ReplayResult:
        # A replay keeps tens of thousands of long-lived objects (the decoded tables, the chunk being re-run)
        # and makes millions of short-lived ones, which reference counting frees. The default collector walked
        # the long-lived ones hundreds of times per replay: a third of the run. So it is paused, the tables are
        # frozen once loaded (gc.freeze), and the young generations are collected after each chunk, when the
        # chunk is garbage (cyclic garbage never outlives one chunk). All of it is undone on the way out.
        with collector_paused():
            self._froze = False
            try:
                return await self._run()
            finally:
                if self._froze:
                    gc.unfreeze()

    async def _run(self) -> ReplayResult:
        """Read the range once for its task ids, load their tables, re-run the range, then report."""
        self.report.source_topic = self.source_topic
        consumer = _consumer(self.settings)
        await consumer.start()
        self._producer: AIOKafkaProducer | None = None
        self._own_client = False
        try:
            ranges = await self._ranges(consumer)
            jobs_end: dict[int, int] = {}
            if self.options.diff:  # what the live worker had emitted before this replay adds anything
                _, jobs_end = await _offsets(consumer, self.settings.topic("jobs"), range(self.settings.partitions))
            started = time.monotonic()
            scan = _RangeScan(self, decode_keys=not self.options.rejected_only)
            await _read(consumer, self.source_topic, ranges, scan.note)
            lookup = await self._lookup(consumer, scan)
            writer = await self._writer()
            bar = Progress(sum(r.size for r in ranges), self.progress_stream)
            done = await self._rerun_range(consumer, ranges, scan, lookup, writer, bar)
            if writer is not None:
                await writer.confirm()  # the last chunk's jobs
            bar.update(done, final=True)
            self.report.seconds = time.monotonic() - started
            self.report.suppressed = self.guard.suppressed
            diff_lines = await self._diff(consumer, jobs_end) if self.options.diff else []
            return ReplayResult(self.report, diff_lines, self.replay_id)
        finally:
            if self._producer is not None:
                await self._producer.stop()
            if self._own_client and self.client is not None:
                await self.client.close()
            await consumer.stop()

    async def _lookup(self, consumer: AIOKafkaConsumer, scan: _RangeScan) -> ReplayLookup:
        """Definitions and listings of the range's tasks from the worker's changelogs, then the Queue API."""
        definitions_topic = changelog_topic(self.settings, "task-definitions")
        listings_topic = changelog_topic(self.settings, "run-artifacts")
        tables = await _load_tables(consumer, {
            definitions_topic: scan.task_ids.__contains__,
            listings_topic: lambda key: key.partition("/")[0] in scan.task_ids,
        }, scan.partitions)
        definitions, listings = tables[definitions_topic], tables[listings_topic]
        self.report.from_tables = len(definitions) + len(listings)
        if gc.get_freeze_count() == 0:  # (a process that froze objects of its own is left alone)
            gc.freeze()  # the tables live as long as the replay: no collection needs to walk them again
            self._froze = True
        if self.options.use_queue and self.client is None:
            self.client = QueueClient(timeout=self.settings.queue_timeout, retries=self.settings.queue_retries)
            self._own_client = True
        return ReplayLookup(definitions, listings, self.client if self.options.use_queue else None, self.report)

    async def _writer(self) -> JobWriter | None:
        """Where re-run jobs go: the jobs topic, through an idempotent producer; none for a dry run."""
        if self.options.dry_run:
            return None
        self._producer = AIOKafkaProducer(**kafka_client_kwargs(self.settings), acks="all", enable_idempotence=True,
                                          max_batch_size=512 * 1024, client_id=f"{self.settings.app_id}-replay")
        await self._producer.start()
        writer = JobWriter(self._producer, self.settings.topic("jobs"))
        await writer.start()
        return writer

    async def _rerun_range(self, consumer: AIOKafkaConsumer, ranges: Sequence[PartitionRange], scan: _RangeScan,
                           lookup: ReplayLookup, writer: JobWriter | None, bar: Progress) -> int:
        """Re-run every record of the range, chunk by chunk, from memory when the key pass kept it all."""
        done = 0

        async def rerun(chunk: list[Any]) -> None:
            nonlocal done
            await self._rerun(self._inputs(chunk), lookup, writer)
            gc.collect(1)  # the chunk's cycles, if any (see Replay.run)
            done += len(chunk)
            bar.update(done)

        if scan.kept is None:
            await _read(consumer, self.source_topic, ranges, rerun)
        else:
            kept = scan.kept
            for index in range(len(kept)):
                chunk, kept[index] = kept[index], []  # let each chunk go once it is done
                await rerun(chunk)
                del chunk
        return done

    async def _ranges(self, consumer: AIOKafkaConsumer) -> list[PartitionRange]:
        options, topic = self.options, self.source_topic
        partitions = range(self.settings.partitions)
        low, high = await _offsets(consumer, topic, partitions)
        since = None if options.since_ms is None else await _at_time(consumer, topic, partitions, options.since_ms)
        until = None if options.until_ms is None else await _at_time(consumer, topic, partitions, options.until_ms)
        return resolve_range(low, high, since=since, until=until, from_offsets=options.from_offsets,
                             to_offsets=options.to_offsets)

    def _inputs(self, chunk: list[Any], *, count: bool = True) -> list[_Input]:
        """The records of a chunk as inputs to re-run; rejected-topic records that cannot be re-run are counted."""
        out = []
        for message in chunk:
            if count:
                self.report.events += 1
            if not self.options.rejected_only:
                task_id = message.key.decode("utf-8", "replace") if message.key else None
                try:
                    envelope = orjson.loads(message.value)
                except orjson.JSONDecodeError:
                    envelope = None  # re-run as the worker would: a rejection, counted
                out.append(_Input(task_id, envelope if envelope is not None else message.value,
                                  message.partition, message.offset))
                continue
            try:
                rejected = records.decode_rejected_record(message.value)
            except records.RecordError as error:
                if count:
                    self.report.skipped_records[reason_class(str(error))] += 1
                continue
            skip = NOT_RERUN_STAGES.get(rejected.stage)
            if skip is None and rejected.kind == "ignored" and not self.options.include_ignored:
                skip = "ignored, not rejected (add --include-ignored)"
            if skip is not None:
                if count:
                    self.report.skipped_records[skip] += 1
                continue
            source = rejected.source or {}
            partition, offset = source.get("partition"), source.get("offset")
            if not isinstance(partition, int) or not isinstance(offset, int):
                partition, offset = message.partition, -1 - message.offset  # never on task-events
            out.append(_Input(rejected.task_id, rejected.envelope, partition, offset, rejected.destination))
        return out

    async def _rerun(self, inputs: list[_Input], lookup: ReplayLookup, writer: JobWriter | None) -> None:
        by_task: dict[str | None, list[_Input]] = {}
        for item in inputs:
            by_task.setdefault(item.task_id, []).append(item)
        # Tasks whose definition is in the tables never wait on the network: run them inline, in order, and
        # only the others concurrently (their Queue API calls overlap).
        outcomes: list[list[Outcome]] = [[] for _ in by_task]
        remote = []
        for index, (task_id, group) in enumerate(by_task.items()):
            if task_id is None or task_id in lookup.definitions or not self.options.use_queue:
                outcomes[index] = await self._task_outcomes(group, lookup)
            else:
                remote.append(index)
        if remote:
            groups = list(by_task.values())
            fetched = await asyncio.gather(*(self._task_outcomes(groups[i], lookup) for i in remote))
            for index, result in zip(remote, fetched, strict=True):
                outcomes[index] = result
        marker = {"id": self.replay_id, "at": records.utc_now_iso(),
                  "from": "rejected" if self.options.rejected_only else "task-events"}
        for (task_id, group), group_outcomes in zip(by_task.items(), outcomes, strict=True):
            key = records.task_key(task_id)
            for item, outcome in zip(group, group_outcomes, strict=True):
                for value in self._records(item, outcome, lookup, marker):
                    if writer is not None:
                        writer.add(key, value)
        if writer is not None:
            await writer.confirm()  # the previous chunk's jobs; raises when Kafka refused: the replay stops
            await writer.submit()

    async def _task_outcomes(self, group: list[_Input], lookup: ReplayLookup) -> list[Outcome]:
        outcomes = []
        for item in group:
            outcomes.append(await self._outcome(item, lookup))
        return outcomes

    async def _outcome(self, item: _Input, lookup: ReplayLookup) -> Outcome:
        if isinstance(item.envelope, bytes | str):
            return Rejected(item.task_id, "task-events record is not JSON", Stage.ENVELOPE)
        if not self.options.use_queue:
            task_id = _payload_task_id(item.envelope)
            if task_id and task_id not in lookup.definitions:
                return Rejected(task_id, "task definition not in the worker's task-definitions table "
                                         "(--no-queue forbids asking the Queue API)", Stage.TASK)
        try:
            return await process(item.envelope, lookup, self.options.selection.replay_rules,
                                 default_root_url=self.settings.taskcluster_root_url)
        except QueueUnavailable as error:
            return Rejected(_payload_task_id(item.envelope), f"Queue API unavailable: {error}", Stage.TASK)

    def _records(self, item: _Input, outcome: Outcome, lookup: ReplayLookup, marker: Mapping[str, str]
                 ) -> list[bytes]:
        """Job records of one outcome that pass the selection and the local guard; counts the rest."""
        selection, report = self.options.selection, self.report
        prefix = self._route_prefix(item.task_id, lookup)
        if (prefix is not None and not selection.wants_prefix(prefix)) or (
                item.destination is not None and item.destination not in selection.destinations):
            report.other_destination += 1
            return []
        if prefix is not None and self.options.diff:
            self.positions.add((item.partition, item.offset))
        if not isinstance(outcome, Jobs):
            counter = report.ignored if isinstance(outcome, Ignored) else report.rejected
            counter[reason_class(outcome.reason)] += 1
            return []
        for declined in outcome.declined:  # a chosen destination that does not take the job, and why
            if item.destination is None or selection.target is not None or declined.destination == item.destination:
                counter = report.ignored if isinstance(declined, Ignored) else report.rejected
                counter[reason_class(declined.reason)] += 1
        out = []
        source = {"partition": item.partition, "offset": item.offset} if item.offset >= 0 else None
        for message in outcome.messages:
            if item.destination is not None and selection.target is None and message.destination != item.destination:
                continue  # the record was about another destination of the event, which had its job at the time
            if not selection.wants_project(message.project):
                report.other_project += 1
                continue
            if not self.guard.admit(message):
                continue
            report.jobs[message.destination] += 1
            if self.options.diff and prefix is not None:
                was = message.destination if selection.target is None else selection.original_destination(prefix)
                self.emitted[(item.partition, item.offset, was)] = message.job
            record = message.to_record()
            record["source"] = source
            record["replay"] = marker
            out.append(orjson.dumps(record))
        return out

    def _route_prefix(self, task_id: str | None, lookup: ReplayLookup) -> str | None:
        """The route prefix of a task's definition, worked out once per task (definitions never change)."""
        key = task_id or ""
        if key in self._prefixes:
            return self._prefixes[key]
        task = lookup.definitions.get(key)
        if task is None:
            return None  # not known (yet): nothing to remember
        prefix = self._prefixes[key] = route_prefix(task, self.options.selection.rules)
        return prefix

    async def _diff(self, consumer: AIOKafkaConsumer, jobs_end: Mapping[int, int]) -> list[str]:
        """Old job records (no replay marker) of the re-run events, matched by source position and destination."""
        selection = self.options.selection
        positions = self.positions
        destinations = selection.destinations
        topic = self.settings.topic("jobs")
        partitions = range(self.settings.partitions)
        low, _ = await _offsets(consumer, topic, partitions)
        start = low
        if self.first_event_ms is not None:  # the worker wrote these jobs after it read their events
            found = await _at_time(consumer, topic, partitions, self.first_event_ms)
            start = {p: (jobs_end[p] if found[p] is None else found[p]) for p in partitions}
        ranges = [PartitionRange(p, start[p], jobs_end[p]) for p in partitions]
        old: dict[JobKey, Mapping[str, Any]] = {}

        def keep(chunk: list[Any]) -> None:
            for message in chunk:
                try:
                    data = orjson.loads(message.value)
                except orjson.JSONDecodeError:
                    continue
                source = data.get("source") if isinstance(data, dict) else None
                if not isinstance(source, dict) or "replay" in data:
                    continue  # not a job record, or one a replay emitted
                position = (source.get("partition"), source.get("offset"))
                if position in positions and data.get("destination") in destinations \
                        and selection.wants_project(data.get("project")):
                    old[(*position, data["destination"])] = data.get("job")

        await _read(consumer, topic, ranges, keep)
        return diff_jobs(old, self.emitted).lines(self.diff_limit)
