"""A worker commits its partitions to the end of what it processed, records its consumer skipped included.

Faust's consumer can skip records (streams/worker/gaps.py): at a group's first start on a backlog it drops
the rest of a fetch when it seeks to the committed offsets. The gap watcher reads those records back and the
worker processes them, but Faust commits an offset only once every offset before it was acknowledged through
its stream, which the skipped records never passed: the group's commits stopped at the gap for as long as the
worker ran, and whichever worker next took the partitions processed everything since again. Faust's own
bookkeeping of skipped ranges could also stall them, counting offsets twice (streams/worker/commits.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import slugid
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.partitioner import DefaultPartitioner

from devtools.factories import make_envelope, make_event, make_task
from devtools.harness import end_offsets
from devtools.queue_standin import QueueStandIn
from streams.shared.settings import Settings
from streams.shared.topics import changelog_topic, ensure_topics

TASKS = 2000  # three events each: a backlog of thousands of events, several fetches on each partition
# Definitions already in the worker's table (its changelog) before it first starts, as after a migration or a
# long run: the first start restores them while Faust's consumer already fetches the backlog, which is when it
# skips records.
KNOWN_DEFINITIONS = 10_000
TAIL_TASKS = 800  # three events each: about 300 records per partition
SETUP = {"TC_TREEHERDER_PARTITIONS": "8", "TC_TREEHERDER_STORE": "rocksdb://"}


async def send_events(settings: Settings, root_url: str, events: list[tuple[str, str]]) -> dict[int, int]:
    """``(kind, taskId)`` events on the task-events topic, in order; the topic's end offsets after them."""
    topic = settings.topic("task-events")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, orjson.dumps(make_envelope(make_event(kind, task_id=task_id),
                                                                      root_url=root_url)), key=task_id.encode())
                for kind, task_id in events]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return await end_offsets(settings, topic)


def one_per_partition(settings: Settings, task_ids: list[str]) -> list[str]:
    """A task of each task-events partition (the producer's partitioner)."""
    partitioner, everyone = DefaultPartitioner(), list(range(settings.partitions))
    by_partition = {partitioner(task_id.encode(), everyone, everyone): task_id for task_id in task_ids}
    return [by_partition[partition] for partition in everyone]


async def known_definitions(settings: Settings, task_ids: list[str]) -> None:
    """The worker's definitions table, through its changelog: the tasks' and ``KNOWN_DEFINITIONS`` others."""
    topic = changelog_topic(settings, "task-definitions")
    definition = orjson.dumps(make_task())
    keys = task_ids + [slugid.nice() for _ in range(KNOWN_DEFINITIONS)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=10)
    await producer.start()
    try:
        # The changelog has as many partitions as task-events: the key alone puts each definition on its
        # task's partition, where the worker looks for it.
        await asyncio.gather(*[await producer.send(topic, definition, key=key.encode()) for key in keys])
    finally:
        await producer.stop()


async def committed(settings: Settings) -> dict[int, int]:
    """What the worker's group has committed on the task-events topic (nothing while its coordinator starts)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
    except GroupCoordinatorNotAvailableError:
        return {}
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == settings.topic("task-events") and meta is not None}


async def committed_until(settings: Settings, done: Any, wait: float) -> dict[int, int]:
    """The group's committed offsets once ``done(offsets)`` holds, or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    seen: dict[int, int] = {}
    while not done(seen) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        seen = await committed(settings)
    return seen


async def worker_on_backlog(settings: Settings, worker_process: Any, root_url: str,
                            task_ids: list[str]) -> dict[int, int]:
    """A worker started on a backlog of three events per task, with ``KNOWN_DEFINITIONS`` to restore first
    (Faust's skip window); the topic's end offsets after the backlog."""
    await known_definitions(settings, task_ids)
    ends = await send_events(settings, root_url, [(kind, task_id) for kind in ("pending", "running", "completed")
                                                  for task_id in task_ids])
    worker_process(**SETUP)
    return ends


def skipped_lines(tmp_path: Path) -> list[str]:
    log = (tmp_path / "worker-0.log").read_text()
    return [line for line in log.splitlines() if "were skipped by the consumer" in line]


async def test_the_group_commits_to_the_end_of_a_backlog_past_records_the_consumer_skipped(
        make_settings, worker_process, tmp_path: Path) -> None:
    settings = make_settings(**SETUP)
    await ensure_topics(settings)
    task_ids = [slugid.nice() for _ in range(TASKS)]
    async with QueueStandIn() as standin:
        await worker_on_backlog(settings, worker_process, standin.root_url, task_ids)
        # Once the group has committed on every partition, one more event on each: records skipped before
        # it are then found as it arrives (the next test leaves them to the worker's look at idle partitions).
        await committed_until(settings, lambda seen: len(seen) == settings.partitions, wait=60)
        ends = await send_events(settings, standin.root_url,
                                 [("completed", task_id) for task_id in one_per_partition(settings, task_ids)])
        seen = await committed_until(settings, lambda seen: seen == ends, wait=60)

    assert seen == ends, f"the group committed {seen} of {ends}; skipped by the consumer: {skipped_lines(tmp_path)}"


async def test_records_the_consumer_skipped_at_the_end_of_a_partition_are_read_back_without_a_later_event(
        make_settings, worker_process, tmp_path: Path) -> None:
    settings = make_settings(**SETUP)
    await ensure_topics(settings)
    # A backlog each partition's first fetch holds whole: what Faust skips there is the partition's tail.
    task_ids = [slugid.nice() for _ in range(TAIL_TASKS)]
    async with QueueStandIn() as standin:
        ends = await worker_on_backlog(settings, worker_process, standin.root_url, task_ids)
        seen = await committed_until(settings, lambda seen: seen == ends, wait=90)

    assert seen == ends, f"the group committed {seen} of {ends}; skipped by the consumer: {skipped_lines(tmp_path)}"
