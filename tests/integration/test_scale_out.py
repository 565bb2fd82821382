"""Scaling out by partition: workers join and leave mid-stream and no task's jobs are lost or reordered.

Two workers share six partitions (RocksDB tables, so a task whose events and table entries landed on
different partitions would miss its cached definition and state-guard entry); a third worker joins while the
workload flows, then one of the first two is stopped with SIGTERM. The publisher holds back the later parts
of the workload until the join, then the leave, have happened, so both happen mid-stream however long a
worker takes to start on a busy machine (a fixed-rate workload once ran out before the third worker had
joined, and the test saw no job between the join and the leave). The longest time without a job after each
change of the group is reported. Every expected job must reach the jobs
exchange, every run must end in its final state, and no run's messages may step back to a state it already
had (a job that an earlier pass missed may arrive after its run's later states; see streams/core/state_guard.py).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
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
from streams.shared.records import decode_job_record
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import TABLES, changelog_topic, ensure_topics

PARTITIONS = 6
EVENTS = 6000
RATE = 300.0  # events/s: the stream lasts about 20 s, long enough for a join and a leave


@pytest.fixture
async def standin() -> AsyncIterator[QueueStandIn]:
    async with QueueStandIn() as server:
        yield server


async def assignments(settings: Settings) -> dict[str, dict[str, set[int]]]:
    """Per member of the workers' consumer group, the partitions of each topic it was assigned (actives and,
    for changelogs, standbys)."""
    return await group_assignments(settings.kafka_bootstrap, settings.app_id)


async def wait_members(settings: Settings, count: int, limit: float = 90.0) -> dict[str, dict[str, set[int]]]:
    """The group's assignment once it has ``count`` members, each with task-events partitions."""
    deadline = time.monotonic() + limit
    current: dict[str, dict[str, set[int]]] = {}
    while time.monotonic() < deadline:
        try:
            current = await assignments(settings)
        except KafkaError:  # the group coordinator is not elected yet on a fresh broker
            current = {}
        if len(current) == count and all(parts.get(settings.topic("task-events")) for parts in current.values()):
            return current
        await asyncio.sleep(1.0)
    raise AssertionError(f"the group did not reach {count} members with partitions: {current}")


def assert_spread(settings: Settings, members: dict[str, dict[str, set[int]]]) -> None:
    """Each partition of task-events has exactly one owner, and each owner also holds the partitions of
    every table changelog it needs (the same numbers: tables are co-located with their events)."""
    events = settings.topic("task-events")
    owned = [parts[events] for parts in members.values()]
    assert sorted(p for parts in owned for p in parts) == list(range(PARTITIONS)), members
    for parts in members.values():
        for table in TABLES:
            assert parts[events] <= parts[changelog_topic(settings, table)], (table, members)


async def wait_ready(pipeline: LocalPipeline, *names: str, limit: float = 90.0) -> None:
    """Until each worker logged that its recovery is over and it consumes (Faust's "Worker ready")."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all("Worker ready" in pipeline.processes[name].log_path.read_text(errors="replace")
               for name in names if pipeline.processes[name].log_path.exists()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"workers {names} not ready: {pipeline.log_tail(names[-1])}")


async def jobs_topic_history(settings: Settings, runs: set[str]) -> dict[str, list[str]]:
    """For a failure's message: each run's records in the jobs topic, in order, with when Kafka took them and
    the task event each came from. A run that steps back here was emitted twice by the workers; one that steps
    back only on the exchange was published twice by the sink."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    history: dict[str, list[str]] = {run: [] for run in runs}
    try:
        topic = settings.topic("jobs")
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        unread = {tp: end for tp, end in (await consumer.end_offsets(tps)).items() if end}
        deadline = time.monotonic() + 60
        while unread and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                if records and records[-1].offset + 1 >= unread.get(tp, 0):
                    unread.pop(tp, None)
                for record in records:
                    job = decode_job_record(record.value)
                    run = f"{job.destination}/{job.job.get('taskId')}"
                    if run in history:
                        at = datetime.datetime.fromtimestamp(record.timestamp / 1000, datetime.UTC).time()
                        history[run].append(f"{job.job.get('state')} @{record.partition}:{record.offset} {at} "
                                            f"from task-events {job.source_partition}:{job.source_offset}")
    finally:
        await consumer.stop()
    return history


def rebalance_lines(pipeline: LocalPipeline) -> list[str]:
    """The workers' log lines about the group: rebalances, commits that failed, leaving."""
    marks = ("Revoking", "generation", "Heartbeat", "Commit", "left the group", "Stopping", "Seek stream")
    return [f"{name}: {line}" for name in ("worker-0", "worker-1", "worker-2")
            if pipeline.processes[name].log_path.exists()
            for line in pipeline.processes[name].log_path.read_text(errors="replace").splitlines()
            if any(mark in line for mark in marks)]


def _stall_after(observer: JobObserver, began: float, until: float | None = None) -> float:
    """The longest time without a job from ``began`` (up to ``until``, else the last new job)."""
    end = until if until is not None else observer.last_new_at or began
    times = [began, *(at for at in observer.arrivals if began < at <= end)]
    return max((later - earlier for earlier, later in itertools.pairwise(times)), default=0.0)


async def test_adding_and_removing_workers_mid_stream_loses_and_reorders_nothing(
        test_env: dict[str, str], standin: QueueStandIn, tmp_path: Path):
    env = {**test_env, "TASKCLUSTER_ROOT_URL": standin.root_url, "TC_TREEHERDER_STORE": "rocksdb://",
           "TC_TREEHERDER_PARTITIONS": str(PARTITIONS)}
    settings = load_settings(env=env)
    await ensure_topics(settings)
    workload = StagedWorkload.simulate(settings, standin.root_url, events=EVENTS, seed=31)
    wanted = workload.wanted

    pipeline = LocalPipeline(env, tmp_path / "logs", workers=3)
    observer = JobObserver(settings)
    await observer.start()
    publishing: asyncio.Future[None] | None = None
    try:
        pipeline.start("source", "worker-0", "worker-1", "sink")
        assert await wait_for_consumer(settings.pulse_url, settings.pulse_queue("task-events")), \
            pipeline.log_tail("source")
        assert_spread(settings, await wait_members(settings, 2))
        await wait_ready(pipeline, "worker-0", "worker-1")

        joined, left = asyncio.Event(), asyncio.Event()
        publishing = asyncio.ensure_future(workload.publish(settings, standin, rate=RATE, gates=[joined, left]))
        assert await observer.wait_for(wanted // 5, idle=60, limit=120), pipeline.log_tail("worker-1")
        join_began = time.monotonic()
        pipeline.start("worker-2")
        three = await wait_members(settings, 3)
        assert_spread(settings, three)
        definitions, events = changelog_topic(settings, "task-definitions"), settings.topic("task-events")
        assert any(parts[definitions] - parts[events] for parts in three.values()), \
            f"standby replicas: some worker keeps a copy of a table partition it does not own: {three}"
        joined.set()
        joined_at = observer.received

        assert await observer.wait_for(joined_at + wanted // 5, idle=60, limit=120), pipeline.log_tail("worker-2")
        leave_began = time.monotonic()
        await asyncio.to_thread(pipeline.stop, "worker-0")
        assert_spread(settings, await wait_members(settings, 2))
        left.set()
        left_at = observer.received
        await publishing

        result = await wait_settled(observer, workload.expected, idle=60, limit=300)
    finally:
        if publishing is not None:
            publishing.cancel()  # a failed step leaves it waiting for a join or leave that will not come
        await asyncio.to_thread(pipeline.stop)
        await observer.close()

    assert joined_at < left_at < wanted, "the join and the leave both happened while jobs were flowing"
    stalls = {"join": _stall_after(observer, join_began, leave_began), "leave": _stall_after(observer, leave_began)}
    print(f"longest time without a job: after the join {stalls['join']:.1f}s, after the leave {stalls['leave']:.1f}s; "
          f"{result.duplicates} duplicates, {result.late_jobs} late jobs")
    assert result.unexpected == 0
    assert pipeline.processes["worker-0"].process.returncode == 0, pipeline.log_tail("worker-0")
    assert result.lost == 0, f"{result.lost} of {result.expected_jobs} jobs lost: {result.examples}"
    assert result.wrong_final == 0, f"{result.wrong_final} runs not in their final state: {result.examples[:2]}"
    # Faust's consumer can skip a record around a rebalance and a later owner read it again; the state guard
    # then lets its job out after the run's later states (streams/core/state_guard.py) rather than lose it. Such a
    # late job is the only step back allowed: never a state the exchange had already seen.
    if result.backward_steps != result.late_jobs:
        runs = {example.split(":")[0] for example in result.examples}
        history = await jobs_topic_history(settings, runs)
        details = "\n".join(f"{run}:\n  " + "\n  ".join(lines) for run, lines in history.items())
        raise AssertionError(f"{result.backward_steps - result.late_jobs} runs went back to a state they had: "
                             f"{result.examples}\nin the jobs topic:\n{details}\nthe workers' group:\n"
                             + "\n".join(rebalance_lines(pipeline)))
