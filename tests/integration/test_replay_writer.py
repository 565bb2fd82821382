"""Record batches on the real Kafka: each key's records where ``send`` puts them, and offsets as reported.

The replay and the worker hand the producer record batches they fill themselves (``RecordBatches``) instead
of calling ``send`` per record, so the partition of each key and the order of a key's records are theirs to
get right, and so is where each record landed (the worker's table checkpoints); this checks all three, with
batches small enough that a key's records span several of them.
"""

from __future__ import annotations

import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.replay.runner import JobWriter
from streams.shared.record_batches import RecordBatches
from streams.shared.settings import Settings
from streams.shared.topics import changelog_topic, ensure_topics

pytestmark = pytest.mark.integration


async def read_all(settings: Settings, topic: str, count: int) -> list[tuple[int, bytes, dict]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[tuple[int, bytes, dict]] = []
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found += [(m.partition, m.key, orjson.loads(m.value)) for m in messages]
        return found
    finally:
        await consumer.stop()


async def test_each_keys_records_go_to_the_partition_send_picks_in_the_order_written(settings: Settings) -> None:
    await ensure_topics(settings)
    topic = settings.topic("jobs")
    keys = [f"task-{n}".encode() for n in range(12)] + [b""]  # b"": a record whose taskId is unknown
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                                max_batch_size=4096)  # a few records per batch: each key spans batches
    await producer.start()
    try:
        # Where the producer's own partitioner puts each key: one record per key through send().
        sent = {key: (await producer.send_and_wait(topic, b'{"seq": -1}', key=key)).partition for key in keys}
        writer = JobWriter(producer, topic)
        await writer.start()
        for round_ in range(2):  # two chunks, as the replay does them: confirm the previous, submit this one
            for seq in range(round_ * 40, round_ * 40 + 40):
                for key in keys:
                    writer.add(key, orjson.dumps({"seq": seq, "pad": "x" * 200}))
            await writer.confirm()
            await writer.submit()
        await writer.confirm()
    finally:
        await producer.stop()

    records = await read_all(settings, topic, len(keys) * 81)
    assert len(records) == len(keys) * 81
    for key in keys:
        mine = [(partition, value["seq"]) for partition, k, value in records if (k or b"") == key]
        assert {partition for partition, _ in mine} == {sent[key]}, key
        assert [seq for _, seq in mine] == list(range(-1, 80)), f"records of {key!r} out of order"


async def test_each_submitted_batch_says_where_its_records_landed(settings: Settings) -> None:
    """What the worker moves its table checkpoints by: a batch's first offset and its items, in order."""
    await ensure_topics(settings)
    jobs, changelog = settings.topic("jobs"), changelog_topic(settings, "emitted-states")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_batch_size=4096)
    await producer.start()
    try:
        batches: RecordBatches[str] = RecordBatches(producer)
        await batches.learn([jobs])
        await producer.send_and_wait(changelog, b"before", key=b"before", partition=1)  # batches start past 0
        for n in range(60):
            batches.add(jobs, f"task-{n % 7}".encode(), f"job {n}".encode() + b"x" * 150, f"job {n}")
            batches.add(changelog, f"key-{n}".encode(), f"entry {n}".encode() + b"x" * 150, f"entry {n}", partition=1)
        submitted = await batches.submit()
        landed = {(batch.topic, batch.partition, offset): item for batch in submitted
                  for offset, item in zip(batch.offsets((await batch.delivery).offset), batch.items, strict=True)}
    finally:
        await producer.stop()

    assert len({(batch.topic, batch.partition) for batch in submitted}) < len(submitted)  # a partition spans batches
    assert len(landed) == 120
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        for topic, partition, offset in landed:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            record = (await consumer.getmany(tp, timeout_ms=5000, max_records=1))[tp][0]
            assert record.value.startswith(landed[(topic, partition, offset)].encode() + b"x")
    finally:
        await consumer.stop()
