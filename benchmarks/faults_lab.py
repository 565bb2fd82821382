"""The fault lab: run a simulated workload through the real pipeline, break something mid-stream, count.

One *scenario* is a fresh namespace on the given brokers: the Queue API stand-in, the source, the workers
and the sink as real processes (``LocalPipeline``), a ``JobObserver`` on a durable queue (it survives broker
restarts), the simulator's workload published to the task exchanges, and a list of faults, each injected
once the observer has seen a given share of the expected jobs. When everything has settled the observer is
held against the simulator's oracle (``harness.verdict``): jobs lost, duplicates, runs not in their final
state, runs whose messages stepped backwards.

Used by ``benchmarks/faults.py`` (the full matrix, one scenario per fault) and by
``tests/integration/test_faults.py`` (one short scenario with several faults).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from devtools.harness import (
    InProcessRegistrar,
    JobObserver,
    LocalPipeline,
    Verdict,
    expected_job_count,
    reap,
    wait_for_consumer,
    wait_settled,
)
from devtools.publisher import PulsePublisher, publish_workload
from devtools.queue_standin import Fault as QueueFault
from devtools.queue_standin import QueueStandIn
from devtools.stack import kafka, rabbitmq
from devtools.workload import WorkloadOptions, iter_groups
from streams.shared.records import decode_rejected_record
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import ensure_topics

MANAGEMENT_URL = "http://localhost:15672"
# The management API of the local broker: guest/guest, as an Authorization header.
MANAGEMENT_HEADERS = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
SINK_PASSWORD = "faults"  # the per-scenario RabbitMQ user the sink publishes as (loopback test broker only)


@dataclass(slots=True)
class Lab:
    """The brokers a scenario runs on, and what the faults may do to them."""

    kafka_bootstrap: str
    pulse_url: str
    work_dir: Path
    kafka_node: kafka.KafkaNode | None = None  # set only for a broker the lab owns: it may be restarted
    management_url: str = MANAGEMENT_URL


@dataclass(slots=True)
class Scenario:
    """One run in progress: what an injector may touch."""

    lab: Lab
    settings: Settings
    pipeline: LocalPipeline
    observer: JobObserver
    standin: QueueStandIn
    expected: list[Any]
    sink_user: str
    publishing: asyncio.Future[Any]
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(f"{time.strftime('%H:%M:%S')} {text}")


Injector = Callable[[Scenario], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FaultSpec:
    name: str
    what: str  # what is done, honestly: the table prints it
    inject: Injector
    bound: str  # why duplicates stay bounded, and by what
    needs_owned_kafka: bool = False
    after_publishing: bool = False  # inject only once every event is in RabbitMQ (the publisher is not robust)
    spare_workers: int = 0  # workers the scenario defines but does not start (the fault starts them)
    stops_for_good: tuple[str, ...] = ()  # processes the fault ends without starting them again


@dataclass(slots=True)
class ScenarioResult:
    faults: list[str]
    events: int
    tasks: int
    verdict: Verdict
    seconds: float
    exited: dict[str, int]
    notes: list[str]
    fault_seconds: float = 0.0  # time spent inside the injectors (outage lengths)
    # The longest time without a job message while jobs were still to come (Verdict.stall), and when it
    # began, in seconds after the first fault was injected (negative: before it).
    stall: float = 0.0
    stall_after_fault: float | None = None

    @property
    def exited_unexpectedly(self) -> bool:
        """A process ended on its own (not by a fault) before the scenario ended."""
        return bool(self.exited)

    def to_json(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "faults": self.faults, "events": self.events, "tasks": self.tasks,
            "expected_jobs": v.expected_jobs, "received": v.received, "lost": v.lost,
            "duplicates": v.duplicates, "wrong_final": v.wrong_final, "backward_steps": v.backward_steps,
            "unexpected": v.unexpected, "seconds": round(self.seconds, 1),
            "fault_seconds": round(self.fault_seconds, 1), "stall_seconds": round(self.stall, 1),
            "stall_after_fault": None if self.stall_after_fault is None else round(self.stall_after_fault, 1),
            "exited": self.exited, "notes": self.notes,
            "examples": list(v.examples),
        }


# Process faults

def kill9(process: str, pause: float = 2.0) -> Injector:
    return _stop_and_restart(process, pause, "SIGKILL", lambda pipeline: pipeline.kill)


def sigterm(process: str, pause: float = 2.0) -> Injector:
    return _stop_and_restart(process, pause, "SIGTERM", lambda pipeline: pipeline.stop)


def _stop_and_restart(process: str, pause: float, signal_name: str,
                      how: Callable[[LocalPipeline], Callable[..., None]]) -> Injector:
    """Stop ``process`` (the first worker for "worker") one way, wait ``pause`` seconds, start it again."""
    async def inject(scenario: Scenario) -> None:
        targets = _targets(scenario, process)
        began = time.monotonic()
        await asyncio.to_thread(how(scenario.pipeline), *targets)
        scenario.note(f"{signal_name} {', '.join(targets)}: exited after {time.monotonic() - began:.1f}s")
        await asyncio.sleep(pause)
        scenario.pipeline.start(*targets)
        scenario.note(f"restarted {', '.join(targets)}")
    return inject


def _targets(scenario: Scenario, process: str) -> list[str]:
    return scenario.pipeline.workers[:1] if process == "worker" else [process]


def gone(process: str, signal_name: str) -> Injector:
    """Stop ``process`` (the first worker for "worker") with SIGTERM or SIGKILL and do not start it again:
    the others must take its partitions over."""
    async def inject(scenario: Scenario) -> None:
        targets = _targets(scenario, process)
        how = scenario.pipeline.kill if signal_name == "SIGKILL" else scenario.pipeline.stop
        began = time.monotonic()
        await asyncio.to_thread(how, *targets)
        scenario.note(f"{signal_name} {', '.join(targets)} (not restarted): exited after "
                      f"{time.monotonic() - began:.1f}s")
    return inject


async def add_worker(scenario: Scenario) -> None:
    """Start a worker the scenario kept spare: the group rebalances and it takes a share of the partitions."""
    spare = [name for name in scenario.pipeline.workers if scenario.pipeline.processes[name].starts == 0]
    scenario.pipeline.start(spare[0])
    scenario.note(f"started {spare[0]}")


def data_dir_read_only(seconds: float = 15.0) -> Injector:
    """SIGTERM worker-0, bind-mount its data folder read-only, start it again: it must refuse to start with a
    message naming the folder while the other worker carries its partitions. ``seconds`` later the folder is
    writable again and worker-0 is started once more. Needs root (mount); a bind mount over the folder, so
    nothing else on the machine is touched."""
    async def inject(scenario: Scenario) -> None:
        pipeline = scenario.pipeline
        name = pipeline.workers[0]
        data_dir = Path(pipeline.processes[name].env["TC_TREEHERDER_DATA_DIR"])
        await asyncio.to_thread(pipeline.stop, name)
        _mount(["--bind", str(data_dir), str(data_dir)])
        try:
            _mount(["-o", "remount,bind,ro", str(data_dir)])
            scenario.note(f"stopped {name}; its data folder is read-only")
            pipeline.start(name)
            managed = pipeline.processes[name]
            code = await asyncio.to_thread(reap, managed.process, 60.0) if managed.process is not None else None
            last = pipeline.log_tail(name, lines=1)
            scenario.note(f"{name} on a read-only folder exited with {code}: {last[-200:]}")
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(_umount, data_dir)
        pipeline.start(name)
        scenario.note(f"data folder writable again; restarted {name}")
    return inject


def _mount(arguments: list[str]) -> None:
    subprocess.run(["mount", *arguments], check=True, capture_output=True, timeout=30)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, capture_output=True, timeout=30)


# Broker faults

async def restart_kafka(scenario: Scenario, down_for: float = 5.0) -> None:
    node = scenario.lab.kafka_node
    assert node is not None, "only a Kafka the lab started may be restarted"
    outcome = await asyncio.to_thread(kafka.stop, node)
    await asyncio.to_thread(kafka.wait_gone, node, 30.0)
    scenario.note(f"Kafka {node.bootstrap} {outcome}")
    await asyncio.sleep(down_for)
    outcome = await asyncio.to_thread(kafka.start, node)
    scenario.note(f"Kafka {node.bootstrap} {outcome}")


def frozen(broker: str, seconds: float = 30.0) -> Injector:
    """SIGSTOP the broker's process for ``seconds``, then SIGCONT: it keeps its sockets open but answers
    nothing, as a broker in a long GC pause or on a stalled host does. ``broker`` is "kafka" (the lab's own)
    or "rabbitmq" (the machine's node: disturbs every user of it, so the harness runs it only on request)."""
    async def inject(scenario: Scenario) -> None:
        if broker == "kafka":
            node = scenario.lab.kafka_node
            assert node is not None, "only a Kafka the lab started may be frozen"
            pid = kafka.running_pid(node)
        else:
            pid = rabbitmq.node_pid()
        assert pid is not None, f"no {broker} process to freeze"
        os.kill(pid, signal.SIGSTOP)
        scenario.note(f"SIGSTOP {broker} (pid {pid})")
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        scenario.note(f"SIGCONT {broker} after {seconds:.0f}s")
    return inject


async def close_pipeline_connections(scenario: Scenario) -> None:
    """RabbitMQ closes the source's and the sink's connections (management API), as a broker restart would."""
    names = await _connections(scenario, lambda c: _connection_name(c).startswith(scenario.settings.app_id))
    for name in names:
        await _management(scenario.lab, "DELETE", f"connections/{quote(name, safe='')}", missing_ok=True)
    scenario.note(f"closed {len(names)} connections ({', '.join(sorted(names))})")


async def restart_rabbitmq(scenario: Scenario) -> None:
    """``rabbitmqctl stop_app`` then ``start_app``: every connection drops, durable queues and persistent
    messages survive. Disturbs every user of the machine's RabbitMQ: the harness runs it only on request."""
    for action in ("stop_app", "start_app"):
        await asyncio.to_thread(subprocess.run, ["rabbitmqctl", "-q", action], check=True,
                                capture_output=True, timeout=120)
        scenario.note(f"rabbitmqctl {action}")
    await asyncio.to_thread(subprocess.run, ["rabbitmqctl", "-q", "await_startup"], check=True,
                            capture_output=True, timeout=120)


def destination_refused(seconds: float = 30.0) -> Injector:
    """The destination broker refuses the sink for ``seconds``: its login is deleted (RabbitMQ closes its
    connections with it) and re-created afterwards. The exchange and the consumers' queues stay."""
    async def inject(scenario: Scenario) -> None:
        await _management(scenario.lab, "DELETE", f"users/{scenario.sink_user}")
        scenario.note(f"deleted the sink's user {scenario.sink_user}")
        await asyncio.sleep(seconds)
        await _create_user(scenario.lab, scenario.sink_user)
        scenario.note(f"re-created the sink's user after {seconds:.0f}s")
    return inject


# Bad input

BAD_BODIES = (b"\xff\xfe{not UTF-8", b"[1, 2, 3]", b"{not JSON", b"")  # each a reason of its own at the source


def bad_burst(count: int = 10_000) -> Injector:
    """Publish ``count`` bad messages to the task exchanges among the workload's good ones (cycling through
    ``BAD_BODIES``, routed like real task events), then wait until the rejected topic has a record with a
    reason for each; the note gives the reasons and how long the rejections took."""
    async def inject(scenario: Scenario) -> None:
        began = time.monotonic()
        connection = await aio_pika.connect(scenario.settings.pulse_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(scenario.settings.task_exchange("pending"),
                                                      aio_pika.ExchangeType.TOPIC, durable=True)
            confirms: list[Any] = []
            for index in range(count):
                message = aio_pika.Message(BAD_BODIES[index % len(BAD_BODIES)], content_type="application/json",
                                           headers={"CC": ["route.tc-treeherder.bad"]},
                                           delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                confirms.append(exchange.publish(message, routing_key=f"primary.bad{index:06d}.0._._.p.w.s.g._"))
                if len(confirms) >= 500:
                    await asyncio.gather(*confirms)
                    confirms.clear()
            await asyncio.gather(*confirms)
        scenario.note(f"published {count} bad messages in {time.monotonic() - began:.1f}s")
        reasons = await _source_rejections(scenario, count, limit=180.0)
        scenario.note(f"{sum(reasons.values())} of {count} rejected by the source after "
                      f"{time.monotonic() - began:.1f}s: {dict(reasons)}")
    return inject


async def _source_rejections(scenario: Scenario, count: int, limit: float) -> Counter[str]:
    """The source's rejected records in the scenario's rejected topic, by reason, once there are ``count``
    (or ``limit`` seconds have passed)."""
    topic = scenario.settings.topic("rejected")
    reasons: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=scenario.lab.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(scenario.settings.partitions)]
        consumer.assign(partitions)
        deadline = time.monotonic() + limit
        while sum(reasons.values()) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    rejected = decode_rejected_record(record.value or b"")
                    if rejected.stage == "source":
                        reasons[rejected.reason.split(":", 1)[0]] += 1
    finally:
        await consumer.stop()
    return reasons


# Queue API faults

def queue_api(seconds: float, *, status: int | None = None, delay: float = 0.0) -> Injector:
    """Every Queue API request answers ``status`` (after ``delay`` s) for ``seconds``, then normally again."""
    async def inject(scenario: Scenario) -> None:
        before = scenario.standin.stats["faults_served"]
        scenario.standin.add_fault(QueueFault(status=status, delay=delay))
        await asyncio.sleep(seconds)
        scenario.standin.clear_faults()
        served = scenario.standin.stats["faults_served"] - before
        scenario.note(f"Queue API fault (status={status}, delay={delay}s) for {seconds:.0f}s: "
                      f"{served} requests hit")
    return inject


# The catalogue

def catalogue(settings: Settings) -> dict[str, FaultSpec]:
    prefetch, window = settings.source_prefetch, settings.sink_max_in_flight
    queue_delay = settings.queue_timeout + 2.0
    specs = [
        FaultSpec("source-kill9", "SIGKILL the source, restart it 2 s later", kill9("source"),
                  f"events written to Kafka but not yet acked are redelivered: <= prefetch ({prefetch}) events"),
        FaultSpec("source-sigterm", "SIGTERM the source, restart it 2 s later", sigterm("source"),
                  "a clean stop acks everything it wrote: 0"),
        FaultSpec("worker-kill9", "SIGKILL worker-0, restart it 2 s later", kill9("worker"),
                  "events processed since the last offset commit are processed again: <= one commit interval "
                  "(Faust commits every 2.8 s) plus the batches in hand (at most 4 x 500 events)"),
        FaultSpec("worker-sigterm", "SIGTERM worker-0, restart it 2 s later", sigterm("worker"),
                  "Faust commits acknowledged batches at shutdown: 0 unless a batch was cut short"),
        FaultSpec("worker-added", "start one more worker mid-stream", add_worker,
                  "the workers that give partitions up settle their batches in hand first: 0", spare_workers=1),
        FaultSpec("worker-removed", "SIGTERM worker-0 and do not restart it", gone("worker", "SIGTERM"),
                  "acknowledged batches are committed at shutdown: 0 unless a batch was cut short",
                  stops_for_good=("worker-0",)),
        FaultSpec("worker-lost", "SIGKILL worker-0 and do not restart it", gone("worker", "SIGKILL"),
                  "events processed since the last offset commit plus the batches in hand, as worker-kill9",
                  stops_for_good=("worker-0",)),
        FaultSpec("worker-data-read-only", "restart worker-0 on a read-only data folder (a bind mount), make it "
                  "writable 15 s later and start worker-0 again", data_dir_read_only(15.0),
                  "the refused start processes nothing; the other worker carries on: 0"),
        FaultSpec("sink-kill9", "SIGKILL the sink, restart it 2 s later", kill9("sink"),
                  f"jobs confirmed after the last commit (every 0.5 s) plus the in-flight window ({window}) "
                  "per destination are published again"),
        FaultSpec("sink-sigterm", "SIGTERM the sink, restart it 2 s later", sigterm("sink"),
                  "a clean stop waits for confirms and commits them: 0"),
        FaultSpec("kafka-restart", "stop the (harness-owned) Kafka broker cleanly, start it again 5 s later",
                  restart_kafka, f"source: <= prefetch ({prefetch}) redelivered; worker: <= one commit interval; "
                  f"sink: <= in-flight window ({window})", needs_owned_kafka=True),
        FaultSpec("kafka-frozen-30s", "SIGSTOP the (harness-owned) Kafka broker's JVM, SIGCONT 30 s later",
                  frozen("kafka"), "clients time out and retry against the same broker: as kafka-restart",
                  needs_owned_kafka=True),
        FaultSpec("rabbitmq-frozen-30s", "SIGSTOP the machine's RabbitMQ node, SIGCONT 30 s later (every "
                  "connection stalls; none is closed by the broker)", frozen("rabbitmq"),
                  f"source: <= prefetch ({prefetch}); sink: <= in-flight window ({window}), once heartbeats "
                  "time a connection out", after_publishing=True),
        FaultSpec("rabbitmq-connections-closed", "RabbitMQ closes the source's and the sink's connections "
                  "(management API)", close_pipeline_connections,
                  f"source: <= prefetch ({prefetch}) redelivered; sink: <= in-flight window ({window}) "
                  "republished"),
        FaultSpec("rabbitmq-restart", "rabbitmqctl stop_app + start_app (every connection drops; durable "
                  "queues and persistent messages survive)", restart_rabbitmq,
                  f"source: <= prefetch ({prefetch}); sink: <= in-flight window ({window})",
                  after_publishing=True),
        FaultSpec("bad-burst-10k", "publish 10,000 bad messages (not UTF-8, not an object, not JSON, empty) "
                  "among the workload's good ones; every one must become a rejected record with its reason",
                  bad_burst(10_000), "0: a bad message is rejected, never retried"),
        FaultSpec("queue-api-500", "every Queue API request answers 500 for 20 s", queue_api(20, status=500),
                  "the worker retries in place, nothing is re-read: 0"),
        FaultSpec("queue-api-timeout", f"every Queue API request hangs {queue_delay:.0f} s (past the client's "
                  f"{settings.queue_timeout:.0f} s timeout) for 20 s", queue_api(20, delay=queue_delay),
                  "the worker retries in place: 0"),
        FaultSpec("queue-api-slow", "every Queue API answer takes 1 s for 20 s", queue_api(20, delay=1.0),
                  "slow is not failed: 0"),
        FaultSpec("destination-refused-30s", "the destination broker refuses the sink for 30 s (its user is "
                  "deleted, then re-created)", destination_refused(30.0),
                  f"<= in-flight window ({window}) per destination republished after the reconnect"),
    ]
    return {spec.name: spec for spec in specs}


# Running a scenario

def scenario_env(lab: Lab, namespace: str, *, root_url: str, sink_user: str, store: str, partitions: int,
                 extra: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """The pipeline's environment and the observer's (the observer reads the jobs exchanges as guest)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("TC_TREEHERDER_")}
    settings_env = {
        "TC_TREEHERDER_KAFKA_BOOTSTRAP": lab.kafka_bootstrap,
        "TC_TREEHERDER_PULSE_URL": lab.pulse_url,
        "TC_TREEHERDER_NAMESPACE": namespace,
        "TC_TREEHERDER_TASK_EXCHANGE_PREFIX": f"exchange/{namespace}/taskcluster-queue/v1/",
        "TASKCLUSTER_ROOT_URL": root_url,
        "TC_TREEHERDER_STORE": store,
        "TC_TREEHERDER_STATE_DIR": str(lab.work_dir / namespace),
        "TC_TREEHERDER_WEB_PORT": "0",
        "TC_TREEHERDER_PARTITIONS": str(partitions),
        **(extra or {}),
    }
    # Both sides name the jobs exchanges: by default each is under its destination's Pulse user, and the sink
    # (its own user, which a fault may delete) and the observer (guest) must meet on the same exchanges.
    exchanges = {f"TC_TREEHERDER_DESTINATION_{key}_EXCHANGE": f"exchange/{sink_user}/{namespace}/{name}/v1/jobs"
                 for key, name in (("TC_TREEHERDER", "tc-treeherder"),
                                   ("TC_TREEHERDER_STAGING", "tc-treeherder-staging"))}
    observer_env = {**base, **settings_env, **exchanges}
    host = lab.pulse_url.split("@", 1)[-1]
    sink_url = f"amqp://{sink_user}:{SINK_PASSWORD}@{host}"
    pipeline = {**observer_env, "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PULSE_URL": sink_url,
                "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PULSE_URL": sink_url}
    return pipeline, observer_env


async def run_scenario(lab: Lab, faults: list[FaultSpec], *, events: int, seed: int = 7, workers: int = 1,
                       store: str = "rocksdb://", partitions: int = 4, start_at: float = 0.25,
                       spacing: float = 0.2, idle: float = 120.0, limit: float = 1800.0,
                       env: dict[str, str] | None = None,
                       log: Callable[[str], None] = lambda _: None) -> ScenarioResult:
    """Run one workload of about ``events`` task events with ``faults`` injected one after another, the first
    once ``start_at`` of the expected jobs arrived, each next one ``spacing`` later. ``env`` adds settings
    variables (e.g. a smaller ``TC_TREEHERDER_SOURCE_PREFETCH``) for every process of the pipeline."""
    namespace = f"f{secrets.token_hex(4)}"
    sink_user = f"{namespace}-sink"
    began = time.monotonic()
    standin = QueueStandIn()
    root_url = await standin.start()
    await _create_user(lab, sink_user)
    env, observer_env = scenario_env(lab, namespace, root_url=root_url, sink_user=sink_user, store=store,
                                     partitions=partitions, extra=env)
    settings = load_settings(env=observer_env)
    groups, expected = _workload(settings, root_url, events, seed)
    event_count = sum(len(group.events) for group in groups)
    task_count = sum(len(group.tasks) for group in groups)
    wanted = expected_job_count(expected)
    log(f"[{namespace}] {event_count} events, {task_count} tasks, {wanted} jobs expected; "
        f"faults: {', '.join(f.name for f in faults) or 'none'}")
    spare = sum(fault.spare_workers for fault in faults)
    pipeline = LocalPipeline(env, lab.work_dir / namespace / "logs", workers=workers + spare)
    observer = JobObserver(settings, durable_queue=f"queue/guest/{namespace}/faults-observer")
    fault_seconds = 0.0
    first_fault: float | None = None
    scenario: Scenario | None = None
    try:
        await ensure_topics(settings)
        await observer.start()
        pipeline.start(*(name for name in pipeline.processes if name not in pipeline.workers[workers:]))
        if not await wait_for_consumer(settings.pulse_url, settings.pulse_queue("task-events"), patience=90):
            raise RuntimeError(f"the source did not start:\n{pipeline.log_tail('source')}")
        publishing = asyncio.ensure_future(_publish(settings, standin, groups))
        scenario = Scenario(lab, settings, pipeline, observer, standin, expected, sink_user, publishing)
        for index, fault in enumerate(faults):
            share = start_at + index * spacing
            await observer.wait_for(int(wanted * share), idle=idle, limit=limit)
            if fault.after_publishing:
                await publishing
            log(f"[{namespace}] {observer.received}/{wanted} jobs: injecting {fault.name}")
            injected = time.monotonic()
            first_fault = first_fault or injected
            scenario.note(f"injecting {fault.name}")
            await fault.inject(scenario)
            fault_seconds += time.monotonic() - injected
        await publishing
        result = await wait_settled(observer, expected, idle=idle, limit=limit)
        stall_after = (None if result.stall_began is None or first_fault is None
                       else result.stall_began - first_fault)
        return ScenarioResult([f.name for f in faults], event_count, task_count, result,
                              time.monotonic() - began, _exited(pipeline, faults), scenario.notes, fault_seconds,
                              result.stall, stall_after)
    finally:
        await asyncio.to_thread(pipeline.stop)
        await observer.close()
        await standin.stop()
        await _clean_up(lab, settings, sink_user)


def _exited(pipeline: LocalPipeline, faults: list[FaultSpec]) -> dict[str, int]:
    """Processes that ended on their own, not those a fault stopped for good."""
    stopped = {name for fault in faults for name in fault.stops_for_good}
    return {name: code for name, code in pipeline.exited().items() if name not in stopped}


def _workload(settings: Settings, root_url: str, events: int, seed: int) -> tuple[list[Any], list[Any]]:
    options = WorkloadOptions(tasks=10**9, events=events, seed=seed, root_url=root_url,
                              task_exchange=settings.task_exchange)
    groups = list(iter_groups(options))
    return groups, [run for group in groups for task in group.tasks for run in task.expected]


async def _publish(settings: Settings, standin: QueueStandIn, groups: list[Any]) -> Any:
    async with PulsePublisher(settings.pulse_url, settings.task_exchange) as publisher:
        return await publish_workload(groups, publisher, InProcessRegistrar(standin))  # type: ignore[arg-type]


# RabbitMQ management API

async def _management(lab: Lab, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
    """One call to the management API; its JSON answer (None when empty)."""
    async with aiohttp.ClientSession(headers=MANAGEMENT_HEADERS, timeout=aiohttp.ClientTimeout(total=30)) as session, \
            session.request(method, f"{lab.management_url.rstrip('/')}/api/{path}", json=body,
                            headers={"X-Reason": "fault injection"}) as answer:
        if answer.status == 404 and missing_ok:
            return None
        answer.raise_for_status()
        return await answer.json() if answer.content_length else None


async def _create_user(lab: Lab, user: str) -> None:
    await _management(lab, "PUT", f"users/{user}", {"password": SINK_PASSWORD, "tags": ""})
    await _management(lab, "PUT", f"permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})


async def _connections(scenario: Scenario, keep: Callable[[dict[str, Any]], bool]) -> list[str]:
    return [c["name"] for c in await _management(scenario.lab, "GET", "connections") or [] if keep(c)]


def _connection_name(connection: dict[str, Any]) -> str:
    return str((connection.get("client_properties") or {}).get("connection_name", ""))


async def _clean_up(lab: Lab, settings: Settings, sink_user: str) -> None:
    """Remove the scenario's queues, exchanges, sink user and topics: repeated runs leave nothing behind."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        await _management(lab, "DELETE", f"users/{sink_user}", missing_ok=True)
    with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
        connection = await aio_pika.connect(settings.pulse_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(settings.pulse_queue("task-events"))
            for destination in settings.destinations:
                await channel.queue_delete(f"queue/guest/{settings.namespace}/faults-observer.{destination.name}")
                if settings.namespace in destination.exchange:  # never the shared default exchange
                    await channel.exchange_delete(destination.exchange)
            for kind in ("defined", "pending", "running", "completed", "failed", "exception"):
                await channel.exchange_delete(settings.task_exchange(kind))

    admin = AIOKafkaAdminClient(bootstrap_servers=lab.kafka_bootstrap)
    with contextlib.suppress(KafkaError, OSError):
        await admin.start()
        names = [name for name in await admin.list_topics() if name.startswith(f"{settings.namespace}.")]
        if names:
            await admin.delete_topics(names)
    with contextlib.suppress(KafkaError, OSError):
        await admin.close()
