"""Consumer lag, read from Kafka itself: each group's committed offsets against the topics' high watermarks.

Lag is computed from what Kafka has, not from what a process believes, so any process (the worker, a sink,
``tc-treeherder status``) sees the same figures, including for a group whose processes are all down. A
``LagMonitor`` keeps one admin client and one group-less consumer open and caches its report for a few
seconds, so a status page reloaded by many browsers costs Kafka one round of requests per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError
from aiokafka.protocol.admin import DescribeGroupsRequest, DescribeGroupsRequest_v1, DescribeGroupsRequest_v2

from streams.shared import records
from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.settings import Destination, Settings
from streams.shared.topics import sink_group

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0  # seconds one refresh may take before it is reported as a failure


@dataclass(frozen=True, slots=True)
class WatchedGroup:
    """A consumer group and the topic it reads, with the name operators know it by."""

    label: str  # "worker", "sink tc-treeherder"
    group: str
    topic: str


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed on this partition
    start: int  # log start offset (older records are deleted)
    end: int  # high watermark: the offset the next record will get

    @property
    def lag(self) -> int:
        """Records the group has yet to process; from the log start when it never committed."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(self.end - position, 0)


@dataclass(frozen=True, slots=True)
class GroupLag:
    watched: WatchedGroup
    partitions: tuple[PartitionLag, ...]
    state: str | None = None  # Kafka's group state: Stable, Empty, PreparingRebalance, Dead...
    members: int | None = None

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.watched.label, "group": self.watched.group, "topic": self.watched.topic,
            "state": self.state, "members": self.members, "lag": self.total,
            "partitions": [{"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag}
                           for p in self.partitions],
        }


@dataclass(frozen=True, slots=True)
class TopicOffsets:
    topic: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @property
    def records(self) -> int:
        """Records currently retained in the topic."""
        return sum(end - start for start, end in zip(self.starts, self.ends, strict=True))

    @property
    def written(self) -> int:
        """Records ever written (the sum of high watermarks)."""
        return sum(self.ends)


@dataclass(frozen=True, slots=True)
class LagReport:
    """One reading of Kafka; ``error`` is set (and the rest empty) when Kafka could not be read."""

    at: float  # time.time() of the reading
    groups: tuple[GroupLag, ...] = ()
    topics: tuple[TopicOffsets, ...] = ()
    error: str | None = None
    seconds: float = 0.0  # how long the reading took

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at, "ok": self.ok, "error": self.error, "seconds": round(self.seconds, 4),
            "groups": [group.to_json() for group in self.groups],
            "topics": [{"topic": t.topic, "records": t.records, "written": t.written} for t in self.topics],
        }


def worker_group(settings: Settings) -> WatchedGroup:
    """Faust commits the worker's task-events offsets under the application id."""
    return WatchedGroup("worker", settings.app_id, settings.topic("task-events"))


def sink_groups(settings: Settings, destinations: Iterable[Destination] | None = None) -> list[WatchedGroup]:
    """One group per enabled destination, named as ``connectors.pulse_sink`` names it."""

    chosen = settings.destinations if destinations is None else destinations
    return [WatchedGroup(f"sink {d.name}", sink_group(settings, d.name), settings.topic("jobs"))
            for d in chosen if d.enabled]


def all_groups(settings: Settings) -> list[WatchedGroup]:
    return [worker_group(settings), *sink_groups(settings)]


class LagMonitor:
    """Reads lag for ``groups``; ``report()`` answers from a cache younger than ``max_age`` seconds."""

    def __init__(self, settings: Settings, groups: Sequence[WatchedGroup], *, max_age: float = 5.0,
                 extra_topics: Sequence[str] = ()) -> None:
        self.settings = settings
        self.groups = tuple(groups)
        self.max_age = max_age
        self.topics = tuple(dict.fromkeys([*(g.topic for g in self.groups), *extra_topics]))
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._last: LagReport | None = None
        self._refreshing: asyncio.Future[LagReport] | None = None

    @property
    def last(self) -> LagReport | None:
        """The latest reading, without asking Kafka (for synchronous readers such as metric collectors)."""
        return self._last

    async def report(self) -> LagReport:
        if self._last is not None and time.time() - self._last.at < self.max_age:
            return self._last
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._refreshing)

    async def close(self) -> None:
        await self._disconnect()

    async def _read(self) -> LagReport:
        started = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                report = await self._read_kafka()
        except (KafkaError, OSError, TimeoutError) as error:
            text, name = str(error), type(error).__name__
            message = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
            if isinstance(error, TimeoutError):
                message = f"Kafka at {self.settings.kafka_bootstrap} did not answer within {PROBE_TIMEOUT:g}s"
            log.warning("consumer lag: %s", message)
            await self._disconnect()  # start afresh next time: the connection may be what is broken
            report = LagReport(at=time.time(), error=message)
        self._last = LagReport(at=report.at, groups=report.groups, topics=report.topics, error=report.error,
                               seconds=time.monotonic() - started)
        return self._last

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(**kafka_client_kwargs(self.settings),
                                        client_id=f"{self.settings.app_id}-lag")
            consumer = AIOKafkaConsumer(**kafka_client_kwargs(self.settings), enable_auto_commit=False,
                                        client_id=f"{self.settings.app_id}-lag")
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                await admin.close()
                await consumer.stop()
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def _disconnect(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if admin is not None:
            await admin.close()
        if consumer is not None:
            await consumer.stop()

    async def _read_kafka(self) -> LagReport:
        admin, consumer = await self._connect()
        at = time.time()
        count = self.settings.partitions
        missing = [topic for topic in self.topics if topic not in await consumer.topics()]
        if missing:  # asking offsets of a missing topic would wait for its metadata until the timeout
            return LagReport(at=at, error=f"topic(s) {', '.join(missing)} do not exist: no process has created "
                                          f"them yet (check TC_TREEHERDER_NAMESPACE and the Kafka address)")
        partitions = [TopicPartition(topic, p) for topic in self.topics for p in range(count)]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        topics = tuple(TopicOffsets(topic, tuple(starts[TopicPartition(topic, p)] for p in range(count)),
                                    tuple(ends[TopicPartition(topic, p)] for p in range(count)))
                       for topic in self.topics)
        described = await _describe(admin, [g.group for g in self.groups])
        groups = []
        for watched in self.groups:
            tps = [TopicPartition(watched.topic, p) for p in range(count)]
            committed = await admin.list_consumer_group_offsets(watched.group, partitions=tps)
            rows = []
            for tp in tps:
                offset = committed.get(tp)
                rows.append(PartitionLag(tp.partition, None if offset is None or offset.offset < 0 else offset.offset,
                                         starts[tp], ends[tp]))
            state, members = described.get(watched.group, (None, None))
            groups.append(GroupLag(watched, tuple(rows), state, members))
        return LagReport(at=at, groups=tuple(groups), topics=topics)


class _DescribeGroups(DescribeGroupsRequest):
    """DescribeGroups at v1-v2 only: aiokafka 0.14 decodes a v3 answer with the v2 layout and loses the
    connection (its ``DescribeGroupsRequest_v3.RESPONSE_TYPE`` lacks ``authorized_operations``)."""

    def prepare(self, versions: dict[int, tuple[int, int]]) -> Any:
        low, high = versions.get(self.API_KEY, (0, 2))
        for struct in (DescribeGroupsRequest_v2, DescribeGroupsRequest_v1):
            if low <= struct.API_VERSION <= high:
                return struct(self._groups)
        raise IncompatibleBrokerVersion(f"DescribeGroups v{low}-v{high} is not supported here")


async def _describe(admin: AIOKafkaAdminClient, group_ids: list[str]) -> dict[str, tuple[str | None, int | None]]:
    """Group id -> (state, member count); each group asked of its coordinator."""
    result: dict[str, tuple[str | None, int | None]] = {}
    for group_id in group_ids:
        coordinator = await admin.find_coordinator(group_id)
        response = await admin._send_request(_DescribeGroups([group_id]), coordinator)
        for error_code, name, state, _protocol_type, _protocol, members, *_ in response.groups:
            if error_code == 0:
                result[name] = (state or None, len(members))
    return result


@dataclass(slots=True)
class RecentRejections:
    """The newest records of the rejected topic, read on demand and cached like the lag."""

    settings: Settings
    per_partition: int = 10
    max_age: float = 5.0
    _cache: tuple[float, list[dict[str, Any]]] | None = field(default=None)

    async def read(self) -> list[dict[str, Any]]:
        if self._cache is not None and time.time() - self._cache[0] < self.max_age:
            return self._cache[1]
        records = await read_recent_rejections(self.settings, self.per_partition)
        self._cache = (time.time(), records)
        return records


async def read_recent_rejections(settings: Settings, per_partition: int = 10,
                                 wait: float = PROBE_TIMEOUT) -> list[dict[str, Any]]:
    """The last ``per_partition`` records of each rejected partition, newest first, decoded.

    Ignored events (not meant for Treeherder) are on the same topic; they are kept, marked by ``kind``.
    """

    topic = settings.topic("rejected")
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False,
                                client_id=f"{settings.app_id}-recent-rejections")
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(wait):
            await consumer.start()
            if topic not in await consumer.topics():
                return []
            tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            wanted = {tp: ends[tp] for tp in tps if ends[tp] > starts[tp]}
            if not wanted:
                return []
            consumer.assign(list(wanted))
            for tp in wanted:
                consumer.seek(tp, max(starts[tp], ends[tp] - per_partition))
            while wanted:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, messages in batch.items():
                    for message in messages:
                        try:
                            record = records.decode_rejected_record(message.value or b"")
                        except records.RecordError as error:
                            found.append({"stage": "?", "kind": "rejected", "reason": str(error), "taskId": None,
                                          "at": None, "partition": tp.partition, "offset": message.offset})
                            continue
                        found.append({"stage": record.stage, "kind": record.kind, "reason": record.reason,
                                      "taskId": record.task_id, "at": record.at, "partition": tp.partition,
                                      "offset": message.offset, "destination": record.destination})
                        if message.offset + 1 >= wanted.get(tp, 0):
                            wanted.pop(tp, None)
                    if messages and messages[-1].offset + 1 >= ends[tp]:
                        wanted.pop(tp, None)
    finally:
        await consumer.stop()
    found.sort(key=lambda r: (r["at"] or "", r["offset"]), reverse=True)
    return found
