"""The consumer behaviour the worker's gap watcher (streams/worker/gaps.py) exists for, shown on the real broker.

Read against faust-streaming 0.15.3 with aiokafka 0.14.0. Faust's ``Consumer.getmany``
(faust/transport/consumer.py) walks the records of one fetch and stops (``break``) when a rebalance suspends
the flow or the generation changes: the rest of that fetch is never handed to the stream, but the fetcher's
position is already past it. After the rebalance, Faust's ``perform_seek`` calls aiokafka's
``AIOKafkaConsumer.seek_to_committed``, which seeks only partitions whose committed offset is above 0
(``if offset and offset > 0``). A partition with no commit yet, or committed at 0, stays where the fetcher
was: the dropped records are never read, and Faust's next commit covers them.

This test shows the aiokafka half on a real broker: records fetched, then "seek to committed", and a
partition without a commit does not go back. When it fails (the consumer goes back to the records it dropped),
the library has changed; check Faust's ``getmany`` too, and if both go back, the gap watcher can be removed
(docs/reliability.md, "Rebalances: records Faust skips are read back").
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.stack.shared import Brokers


async def fetched_then_sought_to_committed(brokers: Brokers, topic: str, group: str,
                                           commit: int | None) -> tuple[int, int | None]:
    """Fetch the records of ``topic`` in ``group`` from ``commit`` on (committed first), then seek to the
    committed offsets as Faust does after a rebalance; the position then and what the group had committed."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        if commit is not None:
            await consumer.commit({tp: commit})
        fetched: list[int] = []
        async with asyncio.timeout(30):
            while not fetched or fetched[-1] < 4:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                fetched += [record.offset for record in batch.get(tp, [])]
        assert fetched == list(range(commit or 0, 5))
        # The stream took none of them (a rebalance began): Faust seeks back to the committed offsets.
        committed = (await consumer.seek_to_committed(tp))[tp]
        return await consumer.position(tp), committed
    finally:
        await consumer.stop()


async def test_records_fetched_on_a_partition_without_a_commit_are_not_read_again(
        brokers: Brokers, namespace: str) -> None:
    topic = f"{namespace}.faust-skip"
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=brokers.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for index in range(5):
                await producer.send_and_wait(topic, f"event {index}".encode(), partition=0)
        finally:
            await producer.stop()

        # A commit above 0: the consumer goes back to it, and the records after it are read again.
        assert await fetched_then_sought_to_committed(brokers, topic, f"{namespace}.committed", 2) == (2, 2)
        # No commit, or a commit at 0: the consumer stays past the five records it fetched and dropped.
        assert await fetched_then_sought_to_committed(brokers, topic, f"{namespace}.none", None) == (5, None)
        assert await fetched_then_sought_to_committed(brokers, topic, f"{namespace}.zero", 0) == (5, 0)
    finally:
        await admin.delete_topics([topic])
        await admin.close()
