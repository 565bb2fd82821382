"""Consumer lag and ``tc-treeherder status`` against the real Kafka: figures per partition, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.shared import records
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics
from tc_treeherder.observability.lag import LagMonitor, all_groups, read_recent_rejections


async def fill(settings: Settings) -> None:
    """Five records on task-events partition 0, two on partition 1, one rejected record."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition, count in ((0, 5), (1, 2)):
            for _ in range(count):
                await producer.send_and_wait(settings.topic("task-events"), b"{}", partition=partition)
        rejected = records.encode_rejected_record(stage="config", reason="extra.treeherder.tier: 4 is too big",
                                                  task_id="B3EheQ-IQ5aPzw34KS_a6g", envelope={})
        await producer.send_and_wait(settings.topic("rejected"), rejected, partition=1)
    finally:
        await producer.stop()


@pytest.fixture
async def members(settings: Settings) -> AsyncIterator[dict[str, AIOKafkaConsumer]]:
    """A live member in the worker's group and in each sink group, the worker's group committed at 3 on p0."""
    await ensure_topics(settings)
    await fill(settings)
    consumers: dict[str, AIOKafkaConsumer] = {}
    for group in all_groups(settings):
        consumer = AIOKafkaConsumer(group.topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group.group,
                                    enable_auto_commit=False, auto_offset_reset="latest")
        await consumer.start()
        consumers[group.label] = consumer
    for consumer in consumers.values():  # joined once an assignment arrives
        for _ in range(200):
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
    await consumers["worker"].commit({TopicPartition(settings.topic("task-events"), 0): 3})
    yield consumers
    for consumer in consumers.values():
        await consumer.stop()


async def test_lag_per_partition_and_group_from_kafka(settings: Settings, members: dict) -> None:
    monitor = LagMonitor(settings, all_groups(settings))
    try:
        report = await monitor.report()
    finally:
        await monitor.close()
    assert report.ok, report.error
    worker = next(group for group in report.groups if group.watched.label == "worker")
    assert [(p.partition, p.committed, p.end, p.lag) for p in worker.partitions] == [(0, 3, 5, 2), (1, None, 2, 2)]
    assert worker.state == "Stable" and worker.members == 1
    sinks = [group for group in report.groups if group.watched.label.startswith("sink ")]
    assert {group.watched.group for group in sinks} == {settings.topic("sink.tc-treeherder"),
                                                        settings.topic("sink.tc-treeherder-staging")}
    assert all(group.total == 0 and group.members == 1 for group in sinks)
    recent = await read_recent_rejections(settings)
    assert [(r["stage"], r["taskId"], r["reason"]) for r in recent] == \
        [("config", "B3EheQ-IQ5aPzw34KS_a6g", "extra.treeherder.tier: 4 is too big")]


async def status(test_env: dict[str, str], *args: str) -> tuple[int, dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tc_treeherder.cli", "status", "--json", *args, env=test_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, json.loads(stdout)


async def test_status_exit_code_follows_lag_and_members(test_env: dict[str, str], members: dict) -> None:
    code, healthy = await status(test_env)
    assert code == 0, healthy["summary"]
    assert healthy["summary"] == "healthy"
    code, lagging = await status(test_env, "--max-lag", "3")
    assert code == 1
    assert lagging["summary"] == "unhealthy: worker"
    assert "4 records behind (over 3)" in next(c["detail"] for c in lagging["checks"] if c["name"] == "worker")
    await members["sink tc-treeherder"].stop()
    code, no_sink = await status(test_env)
    assert code == 1 and "sink tc-treeherder" in no_sink["summary"]


async def test_status_without_kafka_or_worker_is_unhealthy(test_env: dict[str, str]) -> None:
    code, result = await status({**test_env, "TC_TREEHERDER_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
                                "--url", "http://127.0.0.1:1")
    assert code == 1
    names = {check["name"]: check for check in result["checks"]}
    assert not names["Kafka"]["ok"] and not names["worker web"]["ok"]
