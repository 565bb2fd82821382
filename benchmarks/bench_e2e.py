"""The whole bridge as users run it: Pulse publish -> source -> worker -> sink -> job on the jobs exchange.

The source, one worker and the sink are real processes (``LocalPipeline``); the Queue API is the in-process
stand-in, filled with the simulated definitions just before their events are published, so every task's
definition is fetched once, as for live traffic. A lean consumer on each destination's jobs exchange notes
when each job arrives. Latency per job = arrival - publish time of the event that made it, matched by
(job taskId "<uuid>/<runId>", state).

- latency at fixed offered rates (events/s paced by the publisher): p50, p99, max;
- sustained rate: events published as fast as the publisher goes, first publish to last job;
- backlog drain: the source is stopped, 8,000 messages wait in its queue, the source starts; the time from
  its consumer appearing on the queue (and from its process start) to the last of their jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import slugid

from benchmarks.bench_data import delivered
from benchmarks.bench_stages import cpu_seconds, peak_rss_kib
from devtools.harness import (
    InProcessRegistrar,
    LocalPipeline,
    expected_job_count,
    wait_for_consumer,
    wait_for_count,
)
from devtools.publisher import PulsePublisher, publish_workload
from devtools.workload import Envelope, TaskGroup, WorkloadOptions, iter_groups
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics

STATE_OF_KIND = {"defined": "unscheduled", "pending": "pending", "running": "running", "completed": "completed",
                 "failed": "completed", "exception": "completed"}


def job_key(envelope: Envelope) -> tuple[str, str]:
    """The (job taskId, state) the event's job message will carry."""
    payload = envelope["payload"]
    run_id = payload.get("runId", 0) or 0
    kind = envelope["exchange"].rpartition("task-")[2]
    return f"{slugid.decode(payload['status']['taskId'])}/{run_id}", STATE_OF_KIND[kind]


class Arrivals:
    """When each job first arrived on a jobs exchange, from an exclusive queue per destination."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.first: dict[tuple[str, str], float] = {}
        self.received = 0
        self.last_at = 0.0
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self.settings.pulse_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=2000)
        for destination in self.settings.destinations:
            if not destination.enabled:
                continue
            exchange = await channel.declare_exchange(destination.exchange, aio_pika.ExchangeType.TOPIC,
                                                      durable=True)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key=f"{destination.name}.#")
            await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.monotonic()
        job = orjson.loads(message.body)
        self.received += 1
        self.last_at = now
        self.first.setdefault((job.get("taskId", ""), job.get("state", "")), now)

    async def wait_for(self, count: int, *, idle: float, limit: float) -> bool:
        return await wait_for_count(lambda: self.received, count, idle=idle, limit=limit, poll=0.05)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


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


class EndToEnd:
    def __init__(self, settings: Settings, env: dict[str, str], standin: Any, log_dir: Path) -> None:
        self.settings = settings
        self.standin = standin
        self.pipeline = LocalPipeline(env, log_dir, workers=1)
        self.arrivals = Arrivals(settings)
        self.seed = 1000
        self.idle = 5.0  # seconds without a job after which a load is taken as finished (complete: false)

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await self.arrivals.start()
        self.pipeline.start()
        if not await wait_for_consumer(self.settings.pulse_url, self.settings.pulse_queue("task-events")):
            raise RuntimeError(f"the source did not start:\n{self.pipeline.log_tail('source')}")

    async def stop(self) -> dict[str, int | None]:
        rss = {name: peak_rss_kib(managed.process.pid) for name, managed in self.pipeline.processes.items()
               if managed.process is not None and managed.running}
        self.pipeline.stop()
        await self.arrivals.close()
        return rss

    async def _publish(self, groups: list[TaskGroup], rate: float) -> dict[tuple[str, str], float]:
        published: dict[tuple[str, str], float] = {}
        prefixes = self.settings.route_prefixes

        def note(envelope: Envelope) -> None:
            if delivered(envelope, prefixes):
                published.setdefault(job_key(envelope), time.monotonic())

        async with PulsePublisher(self.settings.pulse_url, self.settings.task_exchange) as publisher:
            await publish_workload(groups, publisher, InProcessRegistrar(self.standin), rate=rate, on_event=note)
        return published

    def cpu_seconds(self) -> dict[str, float]:
        """CPU used so far by each process on the path: the pipeline's, the brokers' and this benchmark's own
        (which publishes, answers the Queue API and observes the jobs exchange)."""
        pids = {name: managed.process.pid for name, managed in self.pipeline.processes.items()
                if managed.process is not None and managed.running}
        pids.update(broker_pids())
        pids["benchmark"] = os.getpid()
        return {name: spent for name, pid in pids.items() if (spent := cpu_seconds(pid)) is not None}

    async def run_load(self, *, events: int, rate: float, limit: float = 300,
                       idle: float | None = None) -> dict[str, Any]:
        """Publish about ``events`` events at ``rate`` (0: unpaced) and time every job, and account for the
        CPU each process spent on it."""
        cpu_before = self.cpu_seconds()
        self.seed += 1
        groups, messages, wanted = groups_for(self.settings, self.standin.root_url, events=events, seed=self.seed)
        before = self.arrivals.received
        started = time.monotonic()
        published = await self._publish(groups, rate)
        publish_seconds = time.monotonic() - started
        complete = await self.arrivals.wait_for(before + wanted, idle=idle or self.idle, limit=limit)
        latencies = [self.arrivals.first[key] - at for key, at in published.items() if key in self.arrivals.first]
        seconds = self.arrivals.last_at - started
        cpu_after = self.cpu_seconds()
        print(f" [{rate or 'unpaced'}/s: {self.arrivals.received - before}/{wanted} jobs]", end="", flush=True)
        return {
            "cpu_us_per_event": {name: round((cpu_after[name] - spent) / messages * 1e6)
                                 for name, spent in cpu_before.items() if name in cpu_after and messages},
            "offered_rate": rate or None,
            "events": messages,
            "jobs_expected": wanted,
            "jobs_received": self.arrivals.received - before,
            "complete": complete,
            "publish_rate": round(messages / publish_seconds),
            "events_per_second": round(messages / seconds) if seconds > 0 else None,
            "latency_ms": {"p50": round(percentile(latencies, 0.5) * 1000, 1),
                           "p99": round(percentile(latencies, 0.99) * 1000, 1),
                           "max": round(max(latencies, default=float("nan")) * 1000, 1),
                           "jobs_matched": len(latencies)},
        }

    async def backlog(self, *, messages: int) -> dict[str, Any]:
        """Stop the source, leave ``messages`` waiting in its queue, start it, time until every job arrived."""
        self.pipeline.stop("source")
        self.seed += 1
        groups, count, wanted = groups_for(self.settings, self.standin.root_url, events=messages, seed=self.seed)
        before = self.arrivals.received
        await self._publish(groups, 0)
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
        complete = await self.arrivals.wait_for(before + wanted, idle=self.idle, limit=300)
        finished = self.arrivals.last_at
        return {
            "messages_waiting": depth,
            "jobs_expected": wanted,
            "jobs_received": self.arrivals.received - before,
            "complete": complete,
            "seconds_from_consumer": round(finished - consuming, 3) if consuming else None,
            "seconds_from_process_start": round(finished - process_started, 3),
            "events_per_second": round(count / (finished - consuming)) if consuming else None,
        }


def broker_pids() -> dict[str, int]:
    """The local Kafka and RabbitMQ processes, found by their command lines."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes()
            if b"kafka.Kafka" in command:
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
