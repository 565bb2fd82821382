"""Make sure the worker sees every offset of its partitions, whatever Faust's consumer does around rebalances.

Faust 0.15 can hand the agent an event past others it never delivered: around a rebalance its fetch loop
drops records it was passing to the stream but counts them as read, and after recovery it seeks back only
partitions that have committed an offset. The next commit then covers the skipped records, and their jobs
are lost. The task-events topic is written by an idempotent, non-transactional producer and never compacted,
so its offsets have no holes of their own: a jump is always a loss.

``OffsetWatch`` remembers, per partition, the offset it expects next: after a (re)assignment, the group's
committed offset (or the start of the log), or, when Faust committed past records no worker processed, one
past the last offset the workers recorded as processed (a table of their own, written after each batch's
output is in Kafka); then one past the last event seen. When an event arrives past
that, the missing records are read with a consumer of its own (no group, nothing committed) and handed to
the agent ahead of the batch, so they are processed before anything after them is acknowledged. Going
backwards (Faust seeking back) is simply accepted: the output is the same again.

Records skipped at the end of a partition have no later event to reveal them. So when the stream has been
quiet for a while, the worker compares each partition's expected offset with its consumer's position (the
next offset it will hand over): a position past the expected offset, the same at two looks in a row while
nothing is on its way, is a skipped tail, read back like any other gap (``stalled_tails``).

Once their output is in Kafka, the records read back are acknowledged to Faust's consumer too
(``streams.worker.commits.acknowledge_filled``): they never passed through its stream, and without that the
group's commits stayed at the gap for as long as the worker ran.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Gap:
    partition: int
    start: int  # first missing offset
    end: int  # the offset that arrived instead (exclusive end of the gap)


@dataclass(slots=True)
class OffsetWatch:
    """Expected next offset per partition of one topic, for one consumer group."""

    settings: Settings
    topic: str
    group_id: str
    expected: dict[int, int] = field(default_factory=dict)
    filled: int = 0  # records fetched to fill gaps, since start (for metrics and tests)
    stopping: Callable[[], bool] = lambda: False  # the worker is stopping: give up waiting for Kafka
    # Partitions the consumer had read past the expected offset at the last look: (expected, its position).
    _behind: dict[int, tuple[int, int]] = field(default_factory=dict)

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """After a rebalance: where a partition resumes is the group's committed offset, asked anew."""
        if partitions is None:
            self.expected.clear()
            self._behind.clear()
        else:
            for partition in partitions:
                self.expected.pop(partition, None)
                self._behind.pop(partition, None)

    async def find_gaps(self, offsets: Sequence[tuple[int, int]],
                        processed: Callable[[int], int | None] = lambda partition: None) -> list[Gap]:
        """Gaps before the ``(partition, offset)`` pairs of a batch, in order; updates the expectations.

        ``processed(partition)`` is the last offset this group's workers have processed (their own record of
        it, kept in a table), if known: a committed offset past it means Faust committed records no worker
        saw, and the gap starts right after it.
        """
        await self._expect({partition for partition, _ in offsets}, processed)
        gaps = []
        for partition, offset in offsets:
            expected = self.expected[partition]
            if offset > expected:
                gaps.append(Gap(partition, expected, offset))
            self.expected[partition] = offset + 1
        return gaps

    async def stalled_tails(self, positions: Mapping[int, int],
                            processed: Callable[[int], int | None] = lambda partition: None) -> list[Gap]:
        """Records the consumer has read past (``positions``: its next offset per partition) that never arrived,
        seen so at two calls in a row; updates the expectations.

        For an idle worker only: then nothing is on its way to the agent, and a partition whose consumer sits
        past the expected offset, unchanged since the last look, skipped those records at its end, where no
        later event reveals them (the gaps ``find_gaps`` sees). One look alone could catch records still being
        handed over.
        """
        await self._expect(set(positions), processed)
        behind = {partition: (self.expected[partition], position) for partition, position in positions.items()
                  if position > self.expected[partition]}
        stalled = [Gap(partition, *span) for partition, span in sorted(behind.items())
                   if self._behind.get(partition) == span]
        self._behind = {partition: span for partition, span in behind.items()
                        if all(gap.partition != partition for gap in stalled)}
        for gap in stalled:
            self.expected[gap.partition] = gap.end
        return stalled

    async def _expect(self, partitions: Iterable[int], processed: Callable[[int], int | None]) -> None:
        """Expectations for ``partitions`` that have none: where the group resumes, or where its workers'
        own record of progress says, when the group committed past it."""
        unknown = sorted(partition for partition in partitions if partition not in self.expected)
        if not unknown:
            return
        starts = await self._until_answered("read the group's committed offsets",
                                            lambda: self._starting_offsets(unknown))
        for partition in unknown:
            done = processed(partition)
            if done is not None and done + 1 < starts[partition]:
                log.warning("partition %d: the group committed offset %d but its workers processed only up "
                            "to %d", partition, starts[partition], done)
                starts[partition] = done + 1
        self.expected.update(starts)

    async def fetch(self, gaps: Sequence[Gap]) -> list[ConsumerRecord]:
        """The records of ``gaps``, read directly from Kafka, in offset order per partition."""
        if not gaps:
            return []
        return await self._until_answered("read skipped records", lambda: self._fetch(gaps))

    async def _until_answered(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again after a Kafka error until Kafka answers (a broker restart): the batch waits, as it
        would for the Queue API, rather than ending the worker. Raises the error once the worker is stopping."""
        delay = 0.5
        while True:
            try:
                return await call()
            except KafkaError as error:
                if self.stopping():
                    raise
                log.warning("Kafka unavailable to %s (%s: %s); retrying in %.1fs", what, type(error).__name__,
                            error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _fetch(self, gaps: Sequence[Gap]) -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(**kafka_client_kwargs(self.settings), enable_auto_commit=False,
                                    group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        records: list[ConsumerRecord] = []
        try:
            for gap in gaps:
                tp = TopicPartition(self.topic, gap.partition)
                consumer.assign([tp])
                consumer.seek(tp, gap.start)
                while await consumer.position(tp) < gap.end:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    records.extend(r for r in batch.get(tp, []) if r.offset < gap.end)
        finally:
            await consumer.stop()
        self.filled += len(records)
        for gap in gaps:
            log.warning("partition %d: offsets %d-%d were skipped by the consumer; read them directly",
                        gap.partition, gap.start, gap.end - 1)
        return records

    async def _starting_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Where the group resumes each partition: its committed offset, else the start of the log."""
        tps = [TopicPartition(self.topic, partition) for partition in partitions]
        admin = AIOKafkaAdminClient(**kafka_client_kwargs(self.settings))
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        finally:
            await admin.close()
        starts = {tp.partition: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}
        missing = [tp for tp in tps if tp.partition not in starts]
        if missing:
            consumer = AIOKafkaConsumer(**kafka_client_kwargs(self.settings), enable_auto_commit=False)
            await consumer.start()
            try:
                beginnings = await consumer.beginning_offsets(missing)
            finally:
                await consumer.stop()
            starts.update({tp.partition: offset for tp, offset in beginnings.items()})
        return starts
