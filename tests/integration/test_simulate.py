"""The simulator against the real RabbitMQ and the in-process Queue API stand-in.

A queue bound like the source's (``route.tc-treeherder.#`` on the six task exchanges) must receive exactly the
events of tasks that carry such a route, each as Taskcluster publishes it, in order per task; every definition
and listing must be on the stand-in before the first event that needs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from devtools.publisher import (
    BrokerUnavailable,
    Pacer,
    PulsePublisher,
    StandInRegistrar,
    StandInUnavailable,
    publish_workload,
)
from devtools.queue_standin import QueueStandIn
from devtools.workload import KINDS, WorkloadOptions, event_kind, generate, iter_groups

BINDING = "route.tc-treeherder.#"


class RecordingStandIn(QueueStandIn):
    """The stand-in, noting what was registered so a test can check it came before the events."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: set[str] = set()
        self.listings: set[tuple[str, int]] = set()

    def add_task(self, task_id: str, definition: Any) -> None:
        super().add_task(task_id, definition)
        self.registered.add(task_id)

    def add_artifacts(self, task_id: str, run_id: int, artifacts: Any) -> None:
        super().add_artifacts(task_id, run_id, artifacts)
        self.listings.add((task_id, int(run_id)))


async def bound_queue(settings: Any, namespace: str) -> tuple[aio_pika.abc.AbstractConnection, Any]:
    """A queue bound as the source binds its own; the exchanges are declared the way the publisher does."""
    connection = await aio_pika.connect(settings.pulse_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"queue/guest/{namespace}/simulate-test", exclusive=True)
    for kind in KINDS:
        exchange = await channel.declare_exchange(settings.task_exchange(kind), aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        await queue.bind(exchange, BINDING)
    return connection, queue


async def drain(queue: Any, expected: int, patience: float = 20.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message up to ``expected``, then a short quiet period to catch any that should not be there."""
    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = time.monotonic() + patience
    async with queue.iterator() as messages:
        while time.monotonic() < deadline:
            wait = 0.5 if len(received) >= expected else deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(anext(messages), timeout=wait)
            except TimeoutError:
                break
            await message.ack()
            received.append(message)
    return received


@pytest.mark.integration
async def test_published_events_reach_a_route_bound_queue_as_taskcluster_sends_them(settings, namespace):
    standin = RecordingStandIn()
    root_url = await standin.start()
    options = WorkloadOptions(tasks=80, seed=7, root_url=root_url, task_exchange=settings.task_exchange,
                              no_route_fraction=0.15, bad_config_fraction=0.05, retry_fraction=0.15)
    workload = generate(options)
    definitions = {task.task_id: task.definition for task in workload.tasks}
    wanted = [event for event in workload.events
              if any(route.startswith("route.tc-treeherder.") for route in event["ccRoutes"])]
    assert 0 < len(wanted) < len(workload.events), "the workload should have tasks with and without the route"

    unregistered: list[str] = []

    def check_registered(envelope: dict[str, Any]) -> None:
        task_id = envelope["payload"]["status"]["taskId"]
        if task_id not in standin.registered:
            unregistered.append(task_id)
        if event_kind(envelope) in ("completed", "failed", "exception") and envelope["payload"]["status"]["runs"][
                envelope["payload"]["runId"]].get("started") and (
                task_id, envelope["payload"]["runId"]) not in standin.listings:
            unregistered.append(f"{task_id} artifacts")

    connection, queue = await bound_queue(settings, namespace)
    try:
        async with aiohttp.ClientSession() as session, \
                PulsePublisher(settings.pulse_url, settings.task_exchange, max_in_flight=50) as publisher:
            registrar = StandInRegistrar(root_url, session)
            await registrar.check()
            report = await publish_workload(iter_groups(options), publisher, registrar, on_event=check_registered)
        received = await drain(queue, len(wanted))
    finally:
        await connection.close()
        await standin.stop()

    assert report.total == len(workload.events) and publisher.confirmed == len(workload.events)
    assert unregistered == []
    assert len(received) == len(wanted)
    by_task: dict[str, list[bytes]] = defaultdict(list)
    for message in received:
        body = orjson.loads(message.body)
        task_id = body["status"]["taskId"]
        routes = definitions[task_id]["routes"]
        assert any(route.startswith("tc-treeherder.") for route in routes)
        assert message.headers["CC"] == [f"route.{route}" for route in routes]
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.routing_key.startswith(f"primary.{task_id}.")
        assert message.exchange in {settings.task_exchange(kind) for kind in KINDS}
        by_task[task_id].append(message.body)
    for task_id, bodies in by_task.items():
        sent = [orjson.dumps(event["payload"]) for event in wanted if event["payload"]["status"]["taskId"] == task_id]
        assert bodies == sent, f"{task_id}: events out of order or changed"


@pytest.mark.integration
async def test_the_command_publishes_writes_its_files_and_summarises(test_env, settings, namespace, tmp_path):
    standin = QueueStandIn()
    root_url = await standin.start()
    connection, queue = await bound_queue(settings, namespace)
    expected_file, events_file = tmp_path / "expected.jsonl", tmp_path / "events.jsonl"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tc_treeherder.cli", "simulate", "--tasks", "40", "--seed", "3",
            "--root-url", root_url, "--rate", "2000", "--expected", str(expected_file),
            "--events-out", str(events_file), env=test_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        events = [json.loads(line) for line in events_file.read_text().splitlines()]
        wanted = sum(1 for event in events if any(r.startswith("route.tc-treeherder.") for r in event["ccRoutes"]))
        received = await drain(queue, wanted)
    finally:
        await connection.close()
        await standin.stop()

    assert len(received) == wanted
    assert standin.stats["tasks_loaded"] == 40
    assert all(event["rootUrl"] == root_url for event in events)
    expected = [json.loads(line) for line in expected_file.read_text().splitlines()]
    assert sum(run["events"] for run in expected) == len(events)
    summary = out.decode()
    assert f"{len(events):,} events of 40 tasks" in summary and "published and confirmed" in summary
    for kind in ("defined", "pending", "running", "completed"):
        assert f"{kind} " in summary


@pytest.mark.integration
async def test_unreachable_broker_or_stand_in_exit_1_with_a_clear_message(test_env, tmp_path):
    async def simulate(*extra: str, env: dict[str, str]) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tc_treeherder.cli", "simulate", "--tasks", "5", *extra, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
        return process.returncode, err.decode()

    closed = "http://127.0.0.1:9"  # discard port: nothing listens there
    code, err = await simulate("--root-url", closed, env=test_env)
    assert code == 1 and "cannot reach the Queue API stand-in at http://127.0.0.1:9" in err

    standin = QueueStandIn()
    root_url = await standin.start()
    try:
        broken = {**test_env, "TC_TREEHERDER_PULSE_URL": "amqp://guest:secret@127.0.0.1:9/"}
        code, err = await simulate("--root-url", root_url, env=broken)
    finally:
        await standin.stop()
    assert code == 1 and "cannot publish to Pulse at amqp://guest@127.0.0.1:9/" in err
    assert "secret" not in err


async def test_registrar_and_publisher_raise_their_own_errors():
    async with aiohttp.ClientSession() as session:
        with pytest.raises(StandInUnavailable):
            await StandInRegistrar("http://127.0.0.1:9", session).check()
    with pytest.raises(BrokerUnavailable):
        await PulsePublisher("amqp://guest:guest@127.0.0.1:9/", lambda kind: f"x/task-{kind}").open()


async def test_pacing_never_runs_ahead_of_the_rate():
    pacer = Pacer(rate=400)
    started = time.monotonic()
    for _ in range(101):
        await pacer.wait()
    assert time.monotonic() - started >= 100 / 400


def test_events_out_feeds_transform_offline(tmp_path):
    """No broker, no stand-in: the files the command writes are what transform and the stand-in read."""
    import subprocess

    events, tasks, artifacts = tmp_path / "events.jsonl", tmp_path / "tasks.json", tmp_path / "artifacts.json"
    result = subprocess.run(
        [sys.executable, "-m", "tc_treeherder.cli", "simulate", "--tasks", "30", "--no-publish", "--no-register",
         "--root-url", "http://127.0.0.1:8011", "--events-out", str(events), "--tasks-out", str(tasks),
         "--artifacts-out", str(artifacts)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TC_TREEHERDER_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    standin = QueueStandIn()
    assert standin.load_tasks(tasks) == 30
    assert standin.load_artifacts(artifacts) > 0
    lines = events.read_text().splitlines()
    workload = generate(WorkloadOptions(tasks=30, seed=0, root_url="http://127.0.0.1:8011"))
    assert [orjson.loads(line)["payload"] for line in lines] == [event["payload"] for event in workload.events]
    assert Path(tasks).read_text().startswith("{")
