"""Filling a gap: where a partition resumes, and the skipped records read straight from Kafka."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.shared.topics import ensure_topics
from streams.worker.gaps import OffsetWatch


async def partition_zero_with(settings, events: int, committed: int) -> tuple[str, str]:
    """``events`` records on partition 0 of the task-events topic, and a group that committed ``committed``."""
    await ensure_topics(settings)
    topic = settings.topic("task-events")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for offset in range(events):
            await producer.send_and_wait(topic, f"event {offset}".encode(), key=b"k", partition=0)
    finally:
        await producer.stop()
    group = settings.topic("gap-test")
    committer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                 enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): committed})
    finally:
        await committer.stop()
    return topic, group


async def test_skipped_records_are_read_back_and_a_partition_resumes_at_the_group_commit(settings):
    topic, group = await partition_zero_with(settings, events=10, committed=4)

    watch = OffsetWatch(settings, topic, group)
    gaps = await watch.find_gaps([(0, 7), (0, 8), (1, 0)])  # partition 1: nothing committed, log starts at 0
    records = await watch.fetch(gaps)

    assert [(gap.partition, gap.start, gap.end) for gap in gaps] == [(0, 4, 7)]
    assert [record.value for record in records] == [b"event 4", b"event 5", b"event 6"]
    assert watch.expected == {0: 9, 1: 1}
    assert watch.filled == 3


async def test_a_commit_past_what_the_workers_processed_is_not_trusted(settings):
    topic, group = await partition_zero_with(settings, events=6, committed=5)  # Faust committed through 4...

    watch = OffsetWatch(settings, topic, group)
    gaps = await watch.find_gaps([(0, 5)], processed=lambda partition: 1)  # ...but the workers did up to 1

    assert [(gap.start, gap.end) for gap in gaps] == [(2, 5)]
    assert [record.value for record in await watch.fetch(gaps)] == [b"event 2", b"event 3", b"event 4"]
