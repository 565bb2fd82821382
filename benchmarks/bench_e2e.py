"""The whole bridge as users run it: Pulse publish -> source -> worker -> sink -> job on the jobs exchange.

The source, one worker and the sink are real processes (``LocalPipeline``); the Queue API stand-in is a process
of its own (``tc-treeherder queue-standin``), filled with a load's definitions before the load starts and never
asked for one before its task's first event, so every definition is fetched once, cold, as for live traffic.
The benchmark process publishes and observes through :mod:`benchmarks.lean_amqp`: every message is encoded
before the timed window, and the observer keeps the bodies of the jobs with their arrival times and reads them
afterwards. Latency per job = arrival - the time its event was written to the socket, matched by
(job taskId "<uuid>/<runId>", state).

- latency at fixed offered rates (events/s paced by the publisher): p50, p99, max, and samples over time;
- the Firefox CI profile (:data:`FIREFOX_CI`): 15 events/s, a burst at 330/s, 15/s again; p50/p99/max per phase
  and the time the burst's backlog takes to clear, from the burst's last publish to the last of its jobs;
- sustained rate: events published as fast as the publisher goes, first publish to last job;
- backlog drain: the source is stopped, 8,000 messages wait in its queue, the source starts; the time from
  its consumer appearing on the queue (and from its process start) to the last of their jobs.

Offered rates and event counts are of the messages that reach the source's queue: the simulated events no
queue binding routes (tasks without a Treeherder route) are not published.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import slugid
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.bench_data import delivered
from benchmarks.bench_stages import cpu_seconds, peak_rss_kib
from benchmarks.lean_amqp import LeanObserver, LeanPublisher, encode_publish, job_key_of
from devtools.harness import LocalPipeline, expected_job_count, terminate, wait_for_consumer, wait_for_count
from devtools.publisher import StandInRegistrar
from devtools.workload import KINDS, Envelope, TaskGroup, WorkloadOptions, iter_groups
from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.records import decode_envelope, decode_job_record
from streams.shared.settings import Settings
from streams.shared.topics import TopicNames, ensure_topics

STATE_OF_KIND = {"defined": "unscheduled", "pending": "pending", "running": "running", "completed": "completed",
                 "failed": "completed", "exception": "completed"}

# Firefox CI's shape (issue 16): 13-15 events/s on average with bursts of 330/s; (phase, seconds, events/s)
FIREFOX_CI = (("steady", 60.0, 15.0), ("burst", 60.0, 330.0), ("after", 60.0, 15.0))
FIREFOX_CI_QUICK = (("steady", 10.0, 15.0), ("burst", 10.0, 330.0), ("after", 10.0, 15.0))
SAMPLES_PER_LOAD = 600  # (publish offset, latency) pairs kept per load for the plots; the profile keeps more
SAMPLES_PER_PROFILE = 2000
HOPS = ("pulse_to_source", "source_to_worker_out", "worker_out_to_observer")


def job_key(envelope: Envelope) -> tuple[str, str]:
    """The (job taskId, state) the event's job message will carry."""
    payload = envelope["payload"]
    run_id = payload.get("runId", 0) or 0
    kind = envelope["exchange"].rpartition("task-")[2]
    return f"{slugid.decode(payload['status']['taskId'])}/{run_id}", STATE_OF_KIND[kind]


def groups_for(settings: Settings, root_url: str, *, events: int, seed: int) -> tuple[list[TaskGroup], int, int]:
    """Whole task groups until ``events`` messages reach the source's queue; with that count and jobs due."""
    options = WorkloadOptions(tasks=10**9, seed=seed, root_url=root_url, task_exchange=settings.task_exchange)
    groups, messages, expected = [], 0, []
    for group in iter_groups(options):
        groups.append(group)
        messages += sum(delivered(e, settings.route_prefixes) for e in group.events)
        expected.extend(run for task in group.tasks for run in task.expected)
        if messages >= events:
            break
    return groups, messages, expected_job_count(expected)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def latency_figures(latencies: list[float]) -> dict[str, Any]:
    """p50, p99 and max in ms of latencies in seconds."""
    return {"p50": round(percentile(latencies, 0.5) * 1000, 1), "p99": round(percentile(latencies, 0.99) * 1000, 1),
            "max": round(max(latencies, default=float("nan")) * 1000, 1), "jobs_matched": len(latencies)}


def schedule(phases: Sequence[tuple[str, float, float]], count: int) -> tuple[list[float], list[int]]:
    """Each message's due offset (s from the start) and phase index: every phase at its rate for its length,
    the last one taking whatever messages are left (whole task groups make a few more than planned)."""
    due: list[float] = []
    phase_of: list[int] = []
    start = 0.0
    for index, (_, seconds, rate) in enumerate(phases):
        last = index == len(phases) - 1
        planned = count - len(due) if last else min(count - len(due), round(seconds * rate))
        due.extend(start + k / rate for k in range(planned))
        phase_of.extend([index] * planned)
        start += seconds
    return due, phase_of


def downsample(samples: list[tuple[float, float]], limit: int) -> list[list[float]]:
    """At most ``limit`` (publish offset s, latency ms) pairs, every n-th in publish order: the distribution and
    its course over time stay, bench.json stays small."""
    step = max(1, math.ceil(len(samples) / limit))
    return [[round(offset, 3), round(latency * 1000, 1)] for offset, latency in sorted(samples)[::step]]


@dataclass(slots=True)
class Load:
    """A load ready to publish: its messages encoded, the job key each should give, when each is due."""

    frames: list[bytes]
    keys: list[tuple[str, str] | None]  # None: an event that makes no job matched on its own
    due: list[float] | None
    phase_of: list[int] | None
    events: int
    jobs: int
    phases: Sequence[tuple[str, float, float]] = ()


@dataclass(slots=True)
class Outcome:
    """What a published load gave: when each message went out and when each job first arrived."""

    written: list[float]
    arrivals: dict[tuple[str, str], float]
    received: int
    complete: bool
    cpu_us_per_event: dict[str, int]
    last_at: float

    def latencies(self, load: Load, phase: int | None = None) -> tuple[list[float], list[tuple[float, float]]]:
        """Latency per matched job (first publish of its key to its first arrival), and (offset, latency) pairs."""
        start = self.written[0] if self.written else 0.0
        seen: set[tuple[str, str]] = set()
        latencies, samples = [], []
        for index, key in enumerate(load.keys):
            if key is None or key in seen or (phase is not None and load.phase_of and load.phase_of[index] != phase):
                continue
            seen.add(key)
            arrived = self.arrivals.get(key)
            if arrived is not None:
                latencies.append(arrived - self.written[index])
                samples.append((self.written[index] - start, arrived - self.written[index]))
        return latencies, samples


class StandInProcess:
    """``tc-treeherder queue-standin`` in a process of its own, so that its CPU (the Queue API's, Taskcluster's in
    production) is counted apart from the bridge's and the benchmark's."""

    def __init__(self, log_dir: Path) -> None:
        self.log_path = log_dir / "queue-standin.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.root_url = ""
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; its first line is awaited in a thread
            [sys.executable, "-m", "tc_treeherder.cli", "queue-standin", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        found = re.search(rb"at (http://\S+)", line)
        if found is None:
            terminate(self.process)
            raise RuntimeError(f"the Queue API stand-in did not start: {line.decode(errors='replace')}")
        self.root_url = found[1].decode()
        self._session = aiohttp.ClientSession()
        return self.root_url

    async def register(self, groups: Sequence[TaskGroup]) -> None:
        assert self._session is not None
        registrar = StandInRegistrar(self.root_url, self._session)
        for start in range(0, len(groups), 20):
            await asyncio.gather(*(registrar.register(group.tasks) for group in groups[start:start + 20]))

    async def requests(self) -> dict[str, int]:
        assert self._session is not None
        async with self._session.get(f"{self.root_url}/__standin/stats") as response:
            return dict((await response.json())["requests"])

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None:
            terminate(self.process)


class EndToEnd:
    def __init__(self, settings: Settings, env: dict[str, str], log_dir: Path) -> None:
        self.settings = settings
        self.env = env
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.standin = StandInProcess(log_dir)
        self.pipeline: LocalPipeline | None = None
        self.publisher = LeanPublisher()
        self.observer = LeanObserver()
        self.seed = 1000
        self.idle = 5.0  # seconds without a job after which a load is taken as finished (complete: false)

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.env["TASKCLUSTER_ROOT_URL"] = await self.standin.start()
        await self.publisher.open(self.settings.pulse_url)
        await self.publisher.declare_topic_exchanges([self.settings.task_exchange(kind) for kind in KINDS])
        await self.observer.open(self.settings.pulse_url)
        for destination in self.settings.destinations:
            if destination.enabled:
                await self.observer.watch(destination.exchange, f"{destination.name}.#")
        self.pipeline = LocalPipeline(self.env, self.log_dir, workers=1)
        self.pipeline.start()
        if not await wait_for_consumer(self.settings.pulse_url, self.settings.pulse_queue("task-events")):
            raise RuntimeError(f"the source did not start:\n{self.pipeline.log_tail('source')}")

    async def stop(self) -> dict[str, int | None]:
        rss: dict[str, int | None] = {}
        if self.pipeline is not None:
            rss = {name: peak_rss_kib(managed.process.pid) for name, managed in self.pipeline.processes.items()
                   if managed.process is not None and managed.running}
            self.pipeline.stop()
        for connection in (self.publisher, self.observer):
            with contextlib.suppress(ConnectionError, OSError):
                await connection.close()
        await self.standin.stop()
        return rss

    async def prepare(self, *, events: int, rate: float = 0.0,
                      phases: Sequence[tuple[str, float, float]] | None = None) -> Load:
        """A new load of about ``events`` events (new tasks: cold definitions), its definitions on the stand-in,
        its messages encoded; paced at ``rate`` (0: unpaced) or by ``phases``."""
        self.seed += 1
        groups, _, wanted = groups_for(self.settings, self.standin.root_url, events=events, seed=self.seed)
        await self.standin.register(groups)
        prefixes, frame_max = self.settings.route_prefixes, self.publisher.frame_max
        frames, keys = [], []
        for group in groups:
            for envelope in group.events:
                if delivered(envelope, prefixes):
                    frames.append(encode_publish(envelope["exchange"], envelope["routingKey"],
                                                 orjson.dumps(envelope["payload"]), {"CC": envelope["ccRoutes"]},
                                                 frame_max))
                    keys.append(job_key(envelope))
        due, phase_of = None, None
        if phases:
            due, phase_of = schedule(phases, len(frames))
        elif rate > 0:
            due = [index / rate for index in range(len(frames))]
        return Load(frames, keys, due, phase_of, len(frames), wanted, phases or ())

    def cpu_seconds(self) -> dict[str, float]:
        """CPU used so far by each process on the path: the pipeline's, the brokers', the Queue API stand-in's and
        this benchmark's own (which publishes and observes the jobs exchanges)."""
        pids = {}
        if self.pipeline is not None:
            pids = {name: managed.process.pid for name, managed in self.pipeline.processes.items()
                    if managed.process is not None and managed.running}
        pids.update(broker_pids())
        if self.standin.process is not None:
            pids["queue-standin"] = self.standin.process.pid
        pids["benchmark"] = os.getpid()
        return {name: spent for name, pid in pids.items() if (spent := cpu_seconds(pid)) is not None}

    async def publish(self, load: Load, *, limit: float = 300, idle: float | None = None) -> Outcome:
        """Publish ``load`` on its schedule and wait for its jobs; the CPU is read around exactly that."""
        before = self.observer.received
        cpu_before = self.cpu_seconds()
        written = await self.publisher.publish(load.frames, load.due)
        complete = await wait_for_count(lambda: self.observer.received, before + load.jobs,
                                        idle=idle or self.idle, limit=limit, poll=0.05)
        cpu_after = self.cpu_seconds()
        arrivals: dict[tuple[str, str], float] = {}
        for at, body in self.observer.arrived[before:]:
            arrivals.setdefault(job_key_of(body), at)
        cpu = {name: round((cpu_after[name] - spent) / load.events * 1e6)
               for name, spent in cpu_before.items() if name in cpu_after and load.events}
        return Outcome(written, arrivals, self.observer.received - before, complete, cpu, self.observer.last_at)

    async def run_load(self, *, events: int, rate: float, limit: float = 300,
                       idle: float | None = None) -> dict[str, Any]:
        """Publish about ``events`` events at ``rate`` (0: unpaced) and time every job, and account for the
        CPU each process spent on it."""
        load = await self.prepare(events=events, rate=rate)
        outcome = await self.publish(load, limit=limit, idle=idle)
        latencies, samples = outcome.latencies(load)
        seconds = outcome.last_at - outcome.written[0]
        publish_seconds = outcome.written[-1] - outcome.written[0]
        print(f" [{rate or 'unpaced'}/s: {outcome.received}/{load.jobs} jobs]", end="", flush=True)
        return {
            "cpu_us_per_event": outcome.cpu_us_per_event,
            "offered_rate": rate or None,
            "events": load.events,
            "jobs_expected": load.jobs,
            "jobs_received": outcome.received,
            "complete": outcome.complete,
            "publish_rate": round(load.events / publish_seconds) if publish_seconds > 0 else None,
            "events_per_second": round(load.events / seconds) if seconds > 0 else None,
            "latency_ms": latency_figures(latencies),
            "samples": downsample(samples, SAMPLES_PER_LOAD),
        }

    async def run_profile(self, phases: Sequence[tuple[str, float, float]], *, limit: float = 600) -> dict[str, Any]:
        """The load shaped by ``phases`` (name, seconds, events/s): latency per phase, and how long the jobs of
        the busiest phase keep arriving after its last event was published."""
        events = sum(round(seconds * rate) for _, seconds, rate in phases)
        load = await self.prepare(events=events, phases=phases)
        outcome = await self.publish(load, limit=limit)
        assert load.phase_of is not None
        start = outcome.written[0]
        report: dict[str, Any] = {"phases": [], "events": load.events, "jobs_expected": load.jobs,
                                  "jobs_received": outcome.received, "complete": outcome.complete,
                                  "cpu_us_per_event": outcome.cpu_us_per_event}
        for index, (name, seconds, rate) in enumerate(phases):
            positions = [i for i, phase in enumerate(load.phase_of) if phase == index]
            latencies, _ = outcome.latencies(load, index)
            report["phases"].append({"name": name, "rate": rate, "seconds": seconds, "events": len(positions),
                                     "from_s": round(outcome.written[positions[0]] - start, 3),
                                     "to_s": round(outcome.written[positions[-1]] - start, 3),
                                     "latency_ms": latency_figures(latencies)})
        busiest = max(range(len(phases)), key=lambda index: phases[index][2])
        positions = [i for i, phase in enumerate(load.phase_of) if phase == busiest]
        burst_keys = {load.keys[i] for i in positions if load.keys[i] is not None}
        last_job = max((at for key, at in outcome.arrivals.items() if key in burst_keys), default=float("nan"))
        report["burst"] = phases[busiest][0]
        report["burst_clear_s"] = round(last_job - outcome.written[positions[-1]], 3)
        report["samples"] = downsample(outcome.latencies(load)[1], SAMPLES_PER_PROFILE)
        report["hops_ms"] = await self.hops(load, outcome)
        print(f" [profile: {outcome.received}/{load.jobs} jobs]", end="", flush=True)
        return report

    async def hops(self, load: Load, outcome: Outcome) -> list[dict[str, Any]]:
        """Where each phase's latency goes (:meth:`hop_samples`): p50/p99 per hop and phase, in ms."""
        samples = await self.hop_samples(load, outcome)
        report = []
        for index, (name, _, _) in enumerate(_phases_of(load)):
            chosen = [sample for sample in samples if load.phase_of is None or load.phase_of[sample[0]] == index]
            report.append({"phase": name, **{hop: {"p50": round(percentile(values, 0.5) * 1000, 1),
                                                   "p99": round(percentile(values, 0.99) * 1000, 1)}
                                             for hop, values in zip(HOPS, _columns(chosen), strict=True)}})
        return report

    async def hop_samples(self, load: Load, outcome: Outcome) -> list[tuple[int, float, float, float]]:
        """Per matched job (position in the load, and in seconds): Pulse to the source, source to the worker's
        output, the worker's output to the observer; from the Kafka timestamps of the records, set when the
        source and the worker hand them to their producers (Kafka's clock is in ms)."""
        topics = TopicNames.from_settings(self.settings)
        offset = time.time() - time.monotonic()  # monotonic -> wall clock, as Kafka's timestamps are
        produced: dict[str, dict[tuple[str, str], float]] = {topics.task_events: {}, topics.jobs: {}}
        consumer = AIOKafkaConsumer(**kafka_client_kwargs(self.settings), enable_auto_commit=False)
        await consumer.start()
        try:
            for topic, seen in produced.items():
                partitions = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                ends = await consumer.end_offsets(partitions)
                while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                    for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                        for record in records:
                            key = _event_key(record.value) if topic == topics.task_events else _job_key(record.value)
                            if key is not None:
                                seen.setdefault(key, record.timestamp / 1000)
        finally:
            await consumer.stop()
        events, jobs = produced[topics.task_events], produced[topics.jobs]
        samples = []
        for position, key in enumerate(load.keys):
            if key is None:
                continue
            arrived, read, made = outcome.arrivals.get(key), events.get(key), jobs.get(key)
            if arrived is not None and read is not None and made is not None:
                samples.append((position, read - (outcome.written[position] + offset), made - read,
                                arrived + offset - made))
        return samples

    async def backlog(self, *, messages: int) -> dict[str, Any]:
        """Stop the source, leave ``messages`` waiting in its queue, start it, time until every job arrived."""
        assert self.pipeline is not None
        self.pipeline.stop("source")
        load = await self.prepare(events=messages)
        before = self.observer.received
        await self.publisher.publish(load.frames)
        queue_name = self.settings.pulse_queue("task-events")
        connection = await aio_pika.connect(self.settings.pulse_url)
        async with connection:
            channel = await connection.channel()
            depth = (await channel.declare_queue(queue_name, passive=True)).declaration_result.message_count
            process_started = time.monotonic()
            self.pipeline.start("source")
            consuming = None
            while consuming is None and time.monotonic() - process_started < 60:
                result = (await channel.declare_queue(queue_name, passive=True)).declaration_result
                if result.consumer_count > 0:
                    consuming = time.monotonic()
                else:
                    await asyncio.sleep(0.005)
        complete = await wait_for_count(lambda: self.observer.received, before + load.jobs, idle=self.idle,
                                        limit=300, poll=0.05)
        finished = self.observer.last_at
        return {
            "messages_waiting": depth,
            "jobs_expected": load.jobs,
            "jobs_received": self.observer.received - before,
            "complete": complete,
            "seconds_from_consumer": round(finished - consuming, 3) if consuming else None,
            "seconds_from_process_start": round(finished - process_started, 3),
            "events_per_second": round(load.events / (finished - consuming)) if consuming else None,
        }

    async def queue_api_requests(self) -> dict[str, int]:
        return await self.standin.requests()


def _columns(samples: list[tuple[int, float, float, float]]) -> list[list[float]]:
    """The three hops of ``samples`` as three lists."""
    return [[sample[hop] for sample in samples] for hop in (1, 2, 3)]


def _phases_of(load: Load) -> list[tuple[str, float, float]]:
    return [(name, seconds, rate) for name, seconds, rate in load.phases] if load.phases else [("all", 0.0, 0.0)]


def _event_key(value: bytes) -> tuple[str, str] | None:
    """(job taskId, state) the task-events record's job will carry."""
    with contextlib.suppress(ValueError, KeyError):
        envelope = decode_envelope(value)
        return job_key({"exchange": envelope.exchange, "payload": envelope.payload})  # type: ignore[typeddict-item]
    return None


def _job_key(value: bytes) -> tuple[str, str] | None:
    with contextlib.suppress(ValueError, KeyError):
        job = decode_job_record(value).job
        return job["taskId"], job["state"]
    return None


def broker_pids() -> dict[str, int]:
    """The local Kafka and RabbitMQ processes, found by their command lines."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes()
            if b"kafka.Kafka" in command and b"/faults/" not in command:  # not the fault lab's own Kafka
                found.setdefault("kafka", int(entry.name))
            elif b"beam.smp" in command and b"rabbit" in command:
                found.setdefault("rabbitmq", int(entry.name))
    return found


async def warm_up(e2e: EndToEnd) -> None:
    """A first small load: connections made, Faust's first batches and the Python code paths warmed.

    Its jobs wait for the worker to join its group and recover its tables, which takes seconds on a busy
    machine: the load waits for all of them, so none spills into the first measured load.
    """
    with contextlib.suppress(TimeoutError):
        await e2e.run_load(events=300, rate=0, limit=60, idle=60)
