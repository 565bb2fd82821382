"""Run the whole pipeline on this machine and watch what reaches the jobs exchanges.

``LocalPipeline`` starts the real ``tc-treeherder`` processes (source, workers, sink) as subprocesses with
one environment, and can stop, kill and restart any of them: the demo, the end-to-end tests, the fault
harness and the benchmarks all drive the pipeline through it. ``JobObserver`` consumes every enabled
destination's jobs exchange and keeps what a user would look at: counts by state and result, the latest
jobs, and each run's last state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aio_pika
import orjson
import slugid
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from devtools.publisher import PulsePublisher, publish_workload
from devtools.workload import WorkloadOptions, iter_groups
from streams.core.state_guard import STATE_RANK
from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.settings import Settings

COMMANDS = ("source", "worker", "sink")


async def wait_for_count(current: Callable[[], int], count: int, *, idle: float, limit: float,
                         poll: float = 0.1) -> bool:
    """Wait until ``current()`` reaches ``count``; False after ``idle`` s without it growing, or ``limit`` s."""
    started = time.monotonic()
    last_count, last_change = current(), started
    while current() < count:
        await asyncio.sleep(poll)
        now = time.monotonic()
        if current() != last_count:
            last_count, last_change = current(), now
        if now - last_change > idle or now - started > limit:
            return False
    return True


def reap(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for ``process`` to end, killing it after ``timeout`` seconds; its exit code."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.returncode


def terminate(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``: a clean shutdown where the process allows one; its exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    return reap(process, timeout)


@dataclass(slots=True)
class ManagedProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalPipeline:
    """The source, ``workers`` workers and ``sinks`` sinks as real processes sharing one set of settings."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, *, workers: int = 1, sinks: int = 1,
                 extra_args: Mapping[str, list[str]] | None = None) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        base = dict(env)
        state_dir = Path(base.get("TC_TREEHERDER_STATE_DIR") or log_dir)
        self.processes: dict[str, ManagedProcess] = {}
        extra_args = extra_args or {}
        self._add("source", base, extra_args.get("source", []))
        for index in range(workers):
            worker_env = {**base, "TC_TREEHERDER_DATA_DIR": str(state_dir / f"worker-{index}"),
                          "TC_TREEHERDER_WORKER_ID": f"worker-{index}"}
            if base.get("TC_TREEHERDER_WEB_PORT", "0") != "0":
                worker_env["TC_TREEHERDER_WEB_PORT"] = str(int(base["TC_TREEHERDER_WEB_PORT"]) + index)
            self._add(f"worker-{index}", worker_env, extra_args.get("worker", []), command="worker")
        self._add("sink", base, extra_args.get("sink", []))
        for index in range(1, sinks):  # more sinks share each destination's consumer group
            self._add(f"sink-{index}", base, extra_args.get("sink", []), command="sink")

    def _add(self, name: str, env: dict[str, str], extra: list[str], command: str | None = None) -> None:
        argv = [sys.executable, "-m", "tc_treeherder.cli", command or name, *extra]
        self.processes[name] = ManagedProcess(name, argv, env, self.log_dir / f"{name}.log")

    @property
    def workers(self) -> list[str]:
        return [name for name in self.processes if name.startswith("worker-")]

    def start(self, *names: str) -> None:
        for name in names or tuple(self.processes):
            managed = self.processes[name]
            if managed.running:
                continue
            managed.log_file = open(managed.log_path, "ab")  # noqa: SIM115 - closed when the process ends
            managed.process = subprocess.Popen(managed.argv, env=managed.env, stdout=managed.log_file,
                                               stderr=subprocess.STDOUT, start_new_session=True)
            managed.starts += 1

    def stop(self, *names: str, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: a clean shutdown where the process allows one."""
        for name in names or tuple(reversed(self.processes)):
            self._signal(name, signal.SIGTERM)
        for name in names or tuple(reversed(self.processes)):
            self._reap(name, timeout)

    def kill(self, *names: str) -> None:
        """SIGKILL: the process gets no chance to commit, ack or flush anything."""
        for name in names:
            self._signal(name, signal.SIGKILL)
            self._reap(name, 10.0)

    def restart(self, *names: str) -> None:
        self.stop(*names)
        self.start(*names)

    def exited(self) -> dict[str, int]:
        """Processes that ended on their own, with their exit codes."""
        return {name: managed.process.returncode for name, managed in self.processes.items()
                if managed.process is not None and managed.process.poll() is not None}

    def log_tail(self, name: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.processes[name].log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _signal(self, name: str, sig: signal.Signals) -> None:
        managed = self.processes[name]
        if managed.running and managed.process is not None:
            with contextlib.suppress(ProcessLookupError):
                managed.process.send_signal(sig)

    def _reap(self, name: str, timeout: float) -> None:
        managed = self.processes[name]
        if managed.process is None:
            return
        reap(managed.process, timeout)
        if managed.log_file is not None:
            managed.log_file.close()
            managed.log_file = None

    def __enter__(self) -> LocalPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(slots=True)
class ObservedJob:
    destination: str
    routing_key: str
    task_id: str
    state: str
    result: str
    symbol: str
    name: str
    at: float


@dataclass(slots=True)
class JobObserver:
    """Counts what arrives on the destinations' jobs exchanges, from a queue of its own on each."""

    settings: Settings
    durable_queue: str | None = None  # a named durable queue survives broker restarts (fault harness)
    received: int = 0
    by_destination: Counter[str] = field(default_factory=Counter)
    by_state: Counter[str] = field(default_factory=Counter)  # "state/result"
    last_state: dict[str, tuple[str, str]] = field(default_factory=dict)  # "<destination>/<uuid>/<run>" -> last
    history: dict[str, list[str]] = field(default_factory=dict)  # the same key -> every state received, in order
    per_message: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (job, state, result) seen
    latest: deque[ObservedJob] = field(default_factory=lambda: deque(maxlen=8))
    first_at: float | None = None
    last_at: float | None = None
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of every message, in order
    last_new_at: float | None = None  # when a (job, state, result) not seen before last arrived
    _connections: list[aio_pika.abc.AbstractRobustConnection] = field(default_factory=list)

    async def start(self) -> None:
        for destination in self.settings.destinations:
            if not destination.enabled:
                continue
            connection = await aio_pika.connect_robust(destination.pulse_url)
            self._connections.append(connection)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1000)
            exchange = await channel.declare_exchange(destination.exchange, aio_pika.ExchangeType.TOPIC,
                                                      durable=True)
            if self.durable_queue:
                queue = await channel.declare_queue(f"{self.durable_queue}.{destination.name}", durable=True)
            else:
                queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key=f"{destination.name}.#")
            await queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        job = orjson.loads(message.body)
        now = time.monotonic()
        self.first_at = self.first_at or now
        self.last_at = now
        self.arrivals.append(now)
        destination = (message.routing_key or "").split(".", 1)[0]
        state, result = job.get("state", "?"), job.get("result", "unknown")
        self.received += 1
        self.by_destination[destination] += 1
        self.by_state[f"{state}/{result}"] += 1
        job_id = f"{destination}/{job.get('taskId')}"
        self.per_message[(job_id, state, result)] += 1
        if self.per_message[(job_id, state, result)] == 1:
            self.last_new_at = now
        self.last_state[job_id] = (state, result)
        self.history.setdefault(job_id, []).append(state)
        display = job.get("display", {})
        self.latest.append(ObservedJob(destination, message.routing_key or "", job.get("taskId", "?"), state,
                                       result, display.get("jobSymbol", "?"), display.get("jobName", "?"), now))
        await message.ack()

    def longest_stall(self, until: float | None = None) -> tuple[float, float | None]:
        """The longest time between two messages (seconds, and when it began), among those that arrived by
        ``until``: while jobs were still to come, the longest time none was delivered."""
        times = [at for at in self.arrivals if until is None or at <= until]
        gaps = [(later - earlier, earlier) for earlier, later in itertools.pairwise(times)]
        if not gaps:
            return 0.0, None
        gap, began = max(gaps)
        return gap, began

    @property
    def duplicates(self) -> int:
        """Messages that repeat a job's state and result already received (at-least-once redeliveries)."""
        return sum(count - 1 for count in self.per_message.values())

    async def wait_for(self, count: int, *, idle: float, limit: float) -> bool:
        """Wait until ``count`` messages arrived; give up after ``idle`` s without one, or ``limit`` s."""
        return await wait_for_count(lambda: self.received, count, idle=idle, limit=limit)

    async def close(self) -> None:
        for connection in self._connections:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
                await connection.close()
        self._connections.clear()


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's end offset (the offset the next record will get) of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def group_assignments(bootstrap: str, group: str) -> dict[str, dict[str, set[int]]]:
    """Per member of a consumer group, the partitions of each topic it was assigned, as Kafka's group
    coordinator hands them out. KafkaError while the group has no coordinator yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        members = response.groups[0][5]  # (error, group, state, protocol type, protocol, members)
        result = {}
        for member_id, *_, assignment in members:
            decoded = ConsumerProtocolMemberAssignment.decode(assignment) if assignment else None
            result[member_id] = {topic: set(parts) for topic, parts in (decoded.assignment if decoded else [])}
        return result
    finally:
        await admin.close()


@dataclass(frozen=True)
class StagedWorkload:
    """A simulated workload for tests that change the running processes while jobs flow (a worker or a sink
    joins, then leaves): its task groups, the oracle's expected runs and the number of job messages expected.

    ``publish`` sends half of it at once and the other half in equal parts, each once its gate is set, so each
    change happens while jobs flow however long a process takes to start on a busy machine.
    """

    groups: list[Any]
    expected: list[Any]
    wanted: int

    @classmethod
    def simulate(cls, settings: Settings, root_url: str, *, events: int, seed: int) -> StagedWorkload:
        options = WorkloadOptions(tasks=10**9, events=events, seed=seed, root_url=root_url,
                                  task_exchange=settings.task_exchange)
        groups = list(iter_groups(options))
        expected = [run for group in groups for task in group.tasks for run in task.expected]
        return cls(groups, expected, expected_job_count(expected))

    async def publish(self, settings: Settings, standin: Any, *, rate: float, gates: list[asyncio.Event]) -> None:
        half = len(self.groups) // 2
        rest = len(self.groups) - half
        bounds = [0, half, *(half + rest * (index + 1) // len(gates) for index in range(len(gates)))]
        async with PulsePublisher(settings.pulse_url, settings.task_exchange) as publisher:
            for index, gate in enumerate((None, *gates)):
                if gate is not None:
                    await gate.wait()
                await publish_workload(self.groups[bounds[index]:bounds[index + 1]], publisher,
                                       InProcessRegistrar(standin), rate=rate)  # type: ignore[arg-type]


class InProcessRegistrar:
    """Hands simulated definitions and listings straight to a stand-in running in this process.

    The simulator's ``publish_workload`` registers each task group before publishing its events; this does it
    without the stand-in's HTTP admin API.
    """

    def __init__(self, standin: Any) -> None:
        self.standin = standin

    async def register(self, tasks: Iterable[Any]) -> None:
        for task in tasks:
            self.standin.add_task(task.task_id, task.definition)
            for run_id, artifacts in task.artifacts.items():
                self.standin.add_artifacts(task.task_id, run_id, artifacts)


async def wait_for_consumer(pulse_url: str, queue: str, patience: float = 60.0) -> bool:
    """Wait until ``queue`` exists and has a consumer: events published before that would find no queue."""
    connection = await aio_pika.connect(pulse_url)
    deadline = time.monotonic() + patience
    try:
        while time.monotonic() < deadline:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                if declared.declaration_result.consumer_count > 0:
                    return True
            except aio_pika.exceptions.ChannelClosed:
                pass  # not declared yet: a passive declare of a missing queue closes the channel
            await asyncio.sleep(0.2)
        return False
    finally:
        await connection.close()


async def delete_namespace(settings: Settings, *, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
    """Remove a run's topics (everything named ``<namespace>.``), its source queue and its exchanges.

    For the demo, the tests' and benchmarks' throwaway namespaces: never call it on a namespace in use.
    """


    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    with contextlib.suppress(KafkaError, OSError):
        await admin.start()
        names = [name for name in await admin.list_topics() if name.startswith(f"{settings.namespace}.")]
        if names:
            await admin.delete_topics(names)
    await admin.close()
    with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
        connection = await aio_pika.connect(settings.pulse_url)
        async with connection:
            channel = await connection.channel()
            for queue in (settings.pulse_queue("task-events"), *queues):
                await channel.queue_delete(queue)
            exchange_names = [settings.task_exchange(kind) for kind in
                              ("defined", "pending", "running", "completed", "failed", "exception")]
            exchange_names += [destination.exchange for destination in settings.destinations] + list(exchanges)
            for name in exchange_names:
                await channel.exchange_delete(name)


def expected_job_count(expected: Iterable[Any]) -> int:
    """Job messages the simulated workload should produce: the simulator's independent oracle."""
    return sum(run.jobs for run in expected if run.delivered and run.outcome == "jobs")


def pipeline_env(settings_env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """The environment for the pipeline's processes: the caller's, with the given settings variables."""
    env = {**os.environ, **settings_env}
    env.update(overrides)
    return env


@dataclass(frozen=True, slots=True)
class Verdict:
    """What reached the jobs exchanges, held against the simulator's oracle (one ``ExpectedRun`` per run).

    A run's job messages carry distinct (state, result) pairs, so the distinct pairs seen per run count the
    jobs that arrived; everything received beyond those is a duplicate.
    """

    expected_jobs: int
    received: int
    distinct: int  # distinct (run, state, result) messages for runs the oracle expects jobs from
    lost: int  # expected job messages never seen
    duplicates: int  # messages repeating a (run, state, result) already received
    wrong_final: int  # runs whose last message is not the oracle's final state and result
    backward_steps: int  # runs whose messages, in arrival order, show a state below one already received
    unexpected: int  # messages for runs the oracle expects no job from
    # Of the backward runs, those where every step back brought a state for the first time: a job an earlier
    # pass missed, let out by the state guard when the log was read again (streams/core/state_guard.py).
    late_jobs: int = 0
    examples: tuple[str, ...] = ()  # a few runs that were lost or ended wrong, for the log
    # The longest time without a job message between the first one and the last one the verdict needed
    # (later messages are duplicates arriving after everything was there), and when it began (monotonic).
    stall: float = 0.0
    stall_began: float | None = None

    @property
    def settled(self) -> bool:
        return self.lost == 0 and self.wrong_final == 0


def run_key(run: Any) -> str:
    """The observer's key for an ``ExpectedRun``: ``<destination>/<task uuid>/<runId>``."""

    return f"{run.destination}/{slugid.decode(run.task_id)}/{run.run_id}"


def verdict(observer: JobObserver, expected: Iterable[Any]) -> Verdict:
    """Count lost, duplicated, wrongly final and backward-stepping jobs against the oracle."""
    seen: dict[str, int] = Counter(job_id for job_id, _, _ in observer.per_message)
    wanted = lost = wrong = backward = late = distinct = 0
    keys: set[str] = set()
    examples: list[str] = []
    for run in expected:
        if not (run.delivered and run.outcome == "jobs"):
            continue
        key = run_key(run)
        keys.add(key)
        wanted += run.jobs
        distinct += seen.get(key, 0)
        missing = max(0, run.jobs - seen.get(key, 0))
        lost += missing
        if observer.last_state.get(key) != (run.state, run.result):
            wrong += 1
        ranks = [STATE_RANK.get(state, -1) for state in observer.history.get(key, [])]
        steps_back = [index for index in range(1, len(ranks)) if ranks[index] < max(ranks[:index])]
        if steps_back:
            backward += 1
            if all(ranks[index] not in ranks[:index] for index in steps_back):
                late += 1
        if (missing or steps_back or observer.last_state.get(key) != (run.state, run.result)) and len(examples) < 5:
            examples.append(f"{key}: expected {run.jobs} jobs ending {run.state}/{run.result}, "
                            f"got {observer.history.get(key, [])}")
    unexpected = sum(count for (job_id, _, _), count in observer.per_message.items() if job_id not in keys)
    stall, stall_began = observer.longest_stall(observer.last_new_at)
    return Verdict(expected_jobs=wanted, received=observer.received, distinct=distinct, lost=lost,
                   duplicates=observer.received - distinct - unexpected, wrong_final=wrong,
                   backward_steps=backward, late_jobs=late, unexpected=unexpected, examples=tuple(examples),
                   stall=stall, stall_began=stall_began)


async def wait_settled(observer: JobObserver, expected: list[Any], *, idle: float, limit: float,
                       quiet: float = 3.0) -> Verdict:
    """Wait until every expected job arrived and every run is in its final state, then ``quiet`` s more
    (late duplicates still in flight arrive); give up after ``idle`` s without a message, or ``limit`` s."""
    started = time.monotonic()
    last_count, last_change = observer.received, started
    settled_at: float | None = None
    while True:
        await asyncio.sleep(0.5)
        now = time.monotonic()
        if observer.received != last_count:
            last_count, last_change = observer.received, now
        current = verdict(observer, expected)
        if current.settled:
            settled_at = settled_at or now
            if now - max(settled_at, last_change) >= quiet:
                return current
        else:
            settled_at = None
        if now - last_change > idle or now - started > limit:
            return current
