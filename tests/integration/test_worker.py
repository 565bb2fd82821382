"""The Faust worker on the real Kafka: task events in, job and rejected records out, tables across restarts.

The worker runs as the real ``tc-treeherder worker`` process; the Queue API is the local stand-in, whose
request counts show what the worker fetched.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devtools.factories import make_artifacts, make_envelope, make_event, make_task
from devtools.harness import terminate
from devtools.queue_standin import QueueStandIn
from streams.core.state_guard import STATE_RANK
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics

TASKS = ["JXCKWMboSA67pGalSfg3og", "ZShxu3oeTb6vA3genPZZ3g", "B3EheQ-IQ5aPzw34KS_a6g"]
MISSING = "fQ3mh2ctQmeq2nOXDB2Hfw"


async def produce(settings: Settings, envelopes: list[tuple[str, dict[str, Any] | bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for task_id, envelope in envelopes:
            value = envelope if isinstance(envelope, bytes) else orjson.dumps(envelope)
            await producer.send_and_wait(settings.topic("task-events"), value, key=task_id.encode())
    finally:
        await producer.stop()


async def read_topic(settings: Settings, base: str, count: int, wait: float = 60.0) -> list[dict[str, Any]]:
    """The first ``count`` records of a topic (all partitions), waiting up to ``wait`` seconds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic(base), p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait
        while len(found) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                found.extend({"key": m.key.decode(), **orjson.loads(m.value)} for m in messages)
        return found
    finally:
        await consumer.stop()


async def read_until(settings: Settings, base: str, done: Any, wait: float = 60.0) -> list[dict[str, Any]]:
    """The whole topic once ``done(records)`` holds (or after ``wait`` seconds): duplicates are allowed."""
    deadline = time.monotonic() + wait
    while True:
        records = await read_topic(settings, base, 10**6, wait=1.0)
        if done(records) or time.monotonic() > deadline:
            return records


def states_by_task(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for record in records:
        states.setdefault(record["key"], []).append(record["job"]["state"])
    return states


@pytest.fixture
async def standin() -> Any:
    async with QueueStandIn(page_size=2) as server:
        for task_id in TASKS:
            server.add_task(task_id, make_task())
            server.add_artifacts(task_id, 0, make_artifacts("public/logs/live_backing.log", "public/x.txt",
                                                            "public/y.txt"))
        yield server


def lifecycle(task_id: str, root_url: str) -> list[tuple[str, dict[str, Any]]]:
    return [(task_id, make_envelope(make_event(kind, task_id=task_id), root_url=root_url))
            for kind in ("pending", "running", "completed")]


async def test_worker_turns_events_into_jobs_in_order_and_rejects_the_rest(settings, standin, worker_process):
    await ensure_topics(settings)
    events = [pair for task_id in TASKS for pair in lifecycle(task_id, standin.root_url)]
    events.append((MISSING, make_envelope(make_event("pending", task_id=MISSING), root_url=standin.root_url)))
    events.append((TASKS[0], b"\xff not json"))
    await produce(settings, events)

    worker_process()
    jobs = await read_topic(settings, "jobs", 9)
    rejected = await read_topic(settings, "rejected", 2)

    assert len(jobs) == 9
    for task_id in TASKS:
        states = [record["job"]["state"] for record in jobs if record["key"] == task_id]
        assert states == ["pending", "running", "completed"], f"jobs of {task_id} out of order"
    completed = next(r for r in jobs if r["job"]["state"] == "completed")
    assert completed["routingKey"] == "tc-treeherder.autoland._"
    assert len(completed["job"]["jobInfo"]["links"]) == 3
    assert {r["stage"] for r in rejected} == {"task", "envelope"}
    assert any(r["reason"].startswith(f"task not found: {MISSING}") for r in rejected)
    assert standin.stats["requests"]["task"] == len(TASKS) + 1


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_restarted_worker_serves_definitions_from_its_table(settings, standin, worker_process, store):
    await ensure_topics(settings)
    await produce(settings, [(task_id, make_envelope(make_event("pending", task_id=task_id),
                                                     root_url=standin.root_url)) for task_id in TASKS])
    first = worker_process(TC_TREEHERDER_STORE=store)
    assert len(await read_topic(settings, "jobs", 3)) == 3
    assert terminate(first) == 0, "the worker stops cleanly on SIGTERM"
    fetched = standin.stats["requests"]["task"]
    assert fetched == len(TASKS)

    await produce(settings, [(task_id, make_envelope(make_event("running", task_id=task_id),
                                                     root_url=standin.root_url)) for task_id in TASKS])
    worker_process(TC_TREEHERDER_STORE=store)
    jobs = await read_until(settings, "jobs", lambda records: all(
        "running" in states for states in states_by_task(records).values()) and len(records) >= 6)

    # At least once: a batch the first worker had not committed yet may come out again.
    assert {task: set(states) for task, states in states_by_task(jobs).items()} == {
        task_id: {"pending", "running"} for task_id in TASKS}
    assert standin.stats["requests"]["task"] == fetched, "definitions came from the table's changelog"

    # The state guard survived the restart too: a late pending after running is held back.
    late = TASKS[0]
    await produce(settings, [(late, make_envelope(make_event("pending", task_id=late), root_url=standin.root_url)),
                             (late, make_envelope(make_event("completed", task_id=late), root_url=standin.root_url))])
    jobs = await read_until(settings, "jobs", lambda records: "completed" in states_by_task(records).get(late, []))
    states = states_by_task(jobs)[late]
    assert states[-1] == "completed", states
    assert states == sorted(states, key=STATE_RANK.__getitem__), f"went backwards: {states}"

