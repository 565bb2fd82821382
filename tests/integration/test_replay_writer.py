"""The replay's job writer on the real Kafka: whole record batches, yet each task's jobs where ``send`` puts them.

The replay hands the producer record batches it fills itself instead of calling ``send`` per record, so the
partition of each key and the order of a key's records are the writer's business; this checks both, with
batches small enough that a key's records span several of them.
"""

from __future__ import annotations

import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.replay.runner import JobWriter
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics

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
