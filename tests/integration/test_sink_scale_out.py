"""Two sinks share each destination: one joins and leaves mid-stream, and no run goes back or is lost.

An operator runs a second sink for availability; each destination's consumer group then splits the jobs
topic's partitions between them and rebalances whenever one starts or stops. A sink whose partitions are
revoked must not leave a run half-published: what it sent is confirmed and committed before the other sink
reads on from the committed offset, so nothing it already published goes out again behind a later state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from devtools.harness import (
    JobObserver,
    LocalPipeline,
    StagedWorkload,
    group_assignments,
    wait_for_consumer,
    wait_settled,
)
from devtools.queue_standin import QueueStandIn
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import ensure_topics, sink_group

PARTITIONS = 4
EVENTS = 6000
RATE = 400.0  # events/s


@pytest.fixture
async def standin() -> AsyncIterator[QueueStandIn]:
    async with QueueStandIn() as server:
        yield server


async def group_size(settings: Settings, group: str) -> int:
    try:
        return len(await group_assignments(settings.kafka_bootstrap, group))
    except KafkaError:  # no coordinator yet
        return 0


async def wait_group_size(settings: Settings, count: int, limit: float = 60.0) -> None:
    """Until every destination's sink group has ``count`` members."""
    groups = [sink_group(settings, destination.name) for destination in settings.destinations]
    deadline = time.monotonic() + limit
    while [await group_size(settings, group) for group in groups] != [count] * len(groups):
        assert time.monotonic() < deadline, f"the sink groups did not reach {count} members"
        await asyncio.sleep(0.5)


async def test_a_sink_joining_and_leaving_mid_stream_sends_no_run_back(
        test_env: dict[str, str], standin: QueueStandIn, tmp_path: Path) -> None:
    env = {**test_env, "TASKCLUSTER_ROOT_URL": standin.root_url, "TC_TREEHERDER_PARTITIONS": str(PARTITIONS)}
    settings = load_settings(env=env)
    await ensure_topics(settings)
    workload = StagedWorkload.simulate(settings, standin.root_url, events=EVENTS, seed=47)
    wanted = workload.wanted

    pipeline = LocalPipeline(env, tmp_path / "logs", sinks=2)
    observer = JobObserver(settings)
    await observer.start()
    publishing: asyncio.Future[None] | None = None
    try:
        pipeline.start("source", "worker-0", "sink")
        assert await wait_for_consumer(settings.pulse_url, settings.pulse_queue("task-events")), \
            pipeline.log_tail("source")
        await wait_group_size(settings, 1)

        joined, left = asyncio.Event(), asyncio.Event()
        publishing = asyncio.ensure_future(workload.publish(settings, standin, rate=RATE, gates=[joined, left]))
        assert await observer.wait_for(wanted // 5, idle=60, limit=120), pipeline.log_tail("sink")
        pipeline.start("sink-1")
        await wait_group_size(settings, 2)
        joined.set()
        joined_at = observer.received
        assert await observer.wait_for(joined_at + wanted // 8, idle=60, limit=120), pipeline.log_tail("sink-1")
        await asyncio.to_thread(pipeline.stop, "sink-1")
        left.set()
        left_at = observer.received
        await publishing
        result = await wait_settled(observer, workload.expected, idle=60, limit=300)
    finally:
        if publishing is not None:
            publishing.cancel()
        await asyncio.to_thread(pipeline.stop)
        await observer.close()

    print(f"{result.duplicates} duplicates, {result.backward_steps} runs went back")
    assert joined_at < left_at < wanted, "the join and the leave both happened while jobs were flowing"
    assert pipeline.processes["sink-1"].process.returncode == 0, pipeline.log_tail("sink-1")
    assert result.lost == 0, f"{result.lost} of {result.expected_jobs} jobs lost: {result.examples}"
    assert result.wrong_final == 0, f"{result.wrong_final} runs not in their final state: {result.examples[:2]}"
    assert result.backward_steps == 0, f"a run went back to a state it had: {result.examples}"
