"""Each connector and the worker against the raw clients doing the same hop, on the same messages.

- source: Pulse -> Kafka. ``PulseSource`` against an aio-pika consumer that hands every body to an aiokafka
  producer (acks=all, the same prefetch and linger) and acknowledges each batch once Kafka confirmed it.
  Both read their own queue bound exactly alike, so one publish fills both.
- worker: Kafka -> Kafka with definitions cached. ``tc-treeherder worker`` (a real process) with its tables
  filled through their changelogs before it starts, against an aiokafka consume -> produce -> commit loop.
- sink: Kafka -> Pulse. ``PulseSink`` for one destination against aio-pika publishing with confirms, the same
  number of publishes in flight, committing what is confirmed.

A rate is measured from the first record out to the last, so process start, connection set-up and table
recovery are left out; every figure is the rate of a stage that is already running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.bench_data import StageData, partition_of
from benchmarks.faust_floor import OUTPUT as FLOOR_OUTPUT
from connectors.pulse_sink import PulseSink
from connectors.pulse_source import PulseSource
from devtools.harness import end_offsets, terminate
from devtools.publisher import PulsePublisher
from streams.shared.settings import Settings
from streams.shared.topics import changelog_topic, ensure_topics

POLL = 0.002  # seconds between looks at a connector's counters


@dataclass(slots=True)
class Rate:
    items: int  # records counted in the rate (after the first output)
    seconds: float
    cpu_seconds: float | None = None  # CPU the measured process spent over the same span, when known

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


async def create_topics(settings: Settings, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, settings.partitions, settings.replication_factor) for name in names
               if name not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def produce_all(settings: Settings, topic: str, items: list[tuple[bytes, bytes]], *,
                      partitions: bool = False) -> None:
    """Write ``items`` (key, value) to ``topic``; with ``partitions``, on the source's partition of each key."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=10,
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for key, value in items:
            partition = partition_of(key, settings.partitions) if partitions else None
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def until(condition: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the stage did not finish in time")
        await asyncio.sleep(POLL)


# Source ----------------------------------------------------------------------------------------------


async def _declare_queues(settings: Settings, raw_queue: str) -> None:
    """The source's queue and bindings (as the source declares them), and a twin bound alike for the raw loop."""
    connection = await aio_pika.connect(settings.pulse_url)
    async with connection:
        await PulseSource(settings).declare(connection)
        channel = await connection.channel()
        queue = await channel.declare_queue(raw_queue, durable=True)
        for kind in ("defined", "pending", "running", "completed", "failed", "exception"):
            for prefix in settings.route_prefixes:
                await queue.bind(settings.task_exchange(kind), routing_key=f"route.{prefix}.#")


async def _publish(settings: Settings, data: StageData) -> None:
    async with PulsePublisher(settings.pulse_url, settings.task_exchange) as publisher:
        for message in data.messages:
            await publisher.publish(message)
        await publisher.flush()


async def raw_source(settings: Settings, queue_name: str, topic: str, expected: int) -> Rate:
    """aio-pika consume -> aiokafka produce -> ack (multiple) once the batch is confirmed."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=1, max_batch_size=512 * 1024)  # the source's settings
    await producer.start()
    connection = await aio_pika.connect(settings.pulse_url)
    inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        inbox.put_nowait(message)

    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.source_prefetch)
        queue = await channel.get_queue(queue_name)
        await queue.consume(deliver)
        acked = 0
        first = await inbox.get()
        started = time.monotonic()
        batch = [first]
        while True:
            while not inbox.empty():
                batch.append(inbox.get_nowait())
            futures = [await producer.send(topic, message.body) for message in batch]
            await asyncio.gather(*futures)
            await batch[-1].ack(multiple=True)
            acked += len(batch)
            if acked >= expected:
                return Rate(acked, time.monotonic() - started)
            batch = [await inbox.get()]
    finally:
        await connection.close()
        await producer.stop()


async def connector_source(settings: Settings, expected: int) -> Rate:
    source = PulseSource(settings)
    serving = asyncio.create_task(source.serve(handle_signals=False))
    try:
        await until(lambda: source.counts.received > 0 or serving.done(), 60)
        started = time.monotonic()
        await until(lambda: source.counts.acked >= expected or serving.done(), 120)
        if serving.done():
            serving.result()
        return Rate(source.counts.acked, time.monotonic() - started)
    finally:
        source.request_stop()
        await serving


async def bench_source(settings: Settings, data: StageData, repeats: int) -> dict[str, Any]:
    raw_queue = settings.pulse_queue("bench-raw-source")
    raw_topic = settings.topic("bench-raw-events")
    await ensure_topics(settings)
    await create_topics(settings, raw_topic)
    await _declare_queues(settings, raw_queue)
    raw, connector = [], []
    for _ in range(repeats):
        await _publish(settings, data)
        raw.append(await raw_source(settings, raw_queue, raw_topic, len(data.messages)))
        connector.append(await connector_source(settings, len(data.messages)))
    return summarize("source", raw, connector, len(data.messages), queues=[raw_queue])


# Worker ----------------------------------------------------------------------------------------------


async def prewarm_tables(settings: Settings, data: StageData) -> None:
    """Definitions and listings written to the worker's changelogs, on each task's partition."""
    definitions = [(task_id.encode(), orjson.dumps(task.definition)) for task_id, task in data.tasks.items()]
    listings = []
    for task_id, task in data.tasks.items():
        for run_id, artifacts in task.artifacts.items():
            listings.append((task_id.encode(), f"{task_id}/{run_id}".encode(), orjson.dumps(artifacts)))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=10)
    await producer.start()
    try:
        futures = [await producer.send(changelog_topic(settings, "task-definitions"), value, key=key,
                                       partition=partition_of(key, settings.partitions))
                   for key, value in definitions]
        futures += [await producer.send(changelog_topic(settings, "run-artifacts"), value, key=key,
                                        partition=partition_of(task_key, settings.partitions))
                    for task_key, key, value in listings]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_worker(settings: Settings, source_topic: str, target_topic: str, expected: int) -> Rate:
    """aiokafka consume -> produce each record -> wait for confirms -> commit, in batches of 500."""
    consumer = AIOKafkaConsumer(source_topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=settings.topic("bench-raw-worker"), enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024)
    await consumer.start()
    await producer.start()
    try:
        done, first_out, counted, cpu_at_first = 0, None, 0, 0.0
        while done < expected:
            batch = await consumer.getmany(timeout_ms=100, max_records=500)
            futures = [await producer.send(target_topic, message.value, key=message.key)
                       for messages in batch.values() for message in messages]
            if not futures:
                continue
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
            if first_out is None:
                first_out, cpu_at_first = time.monotonic(), time.process_time()
            else:
                counted += len(futures)
        assert first_out is not None
        return Rate(counted, time.monotonic() - first_out, time.process_time() - cpu_at_first)
    finally:
        await producer.stop()
        await consumer.stop()


class OutputWatch:
    """Reads the worker's jobs and rejected topics and follows which source offsets they cover."""

    def __init__(self, settings: Settings, topics: list[str] | None = None) -> None:
        self.settings = settings
        self.topics = topics or [settings.topic("jobs"), settings.topic("rejected")]
        self.covered: dict[int, int] = {}  # task-events partition -> highest offset seen + 1
        self.consumer: AIOKafkaConsumer | None = None
        self.base: dict[int, int] = {}  # offsets before the events being measured

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        partitions = [TopicPartition(t, p) for t in self.topics for p in range(self.settings.partitions)]
        self.consumer.assign(partitions)
        ends = await self.consumer.end_offsets(partitions)
        for tp, end in ends.items():
            self.consumer.seek(tp, end)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def follow(self, target: dict[int, int], limit: float, idle: float = 5.0,
                     cpu: Callable[[], float | None] = lambda: None) -> Rate:
        """Until the output covers ``target`` (partition -> end offset), or nothing new came for ``idle`` s
        (an event whose job the state guard held back leaves no output). Measured first output to last;
        ``cpu()``, the producing process's CPU seconds so far, is read at both ends."""
        assert self.consumer is not None
        first_out, last_out, counted_from, cpu_first, cpu_last = None, None, 0, None, None
        deadline = time.monotonic() + limit
        while any(self.covered.get(p, 0) < end for p, end in target.items()):
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"worker output covers {self.covered}, wanted {target}")
            if last_out is not None and now - last_out > idle:
                break
            batch = await self.consumer.getmany(timeout_ms=100)
            for messages in batch.values():
                for message in messages:
                    source = orjson.loads(message.value).get("source") or {}
                    partition, offset = source.get("partition"), source.get("offset")
                    if partition is not None and offset + 1 > self.covered.get(partition, 0):
                        self.covered[partition] = offset + 1
            if batch:
                last_out, cpu_last = time.monotonic(), cpu()
                if first_out is None:
                    first_out, counted_from, cpu_first = last_out, self.done(target), cpu_last
        assert first_out is not None and last_out is not None
        spent = cpu_last - cpu_first if cpu_first is not None and cpu_last is not None else None
        return Rate(self.done(target) - counted_from, last_out - first_out, spent)

    def done(self, target: dict[int, int]) -> int:
        return sum(min(self.covered.get(p, 0), end) - self.base.get(p, 0) for p, end in target.items())


def start_process(command: str, env: dict[str, str], log_path: Path,
                  module: str = "tc_treeherder.cli") -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([sys.executable, "-m", module, *([command] if command else [])], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU of a process so far, from /proc/<pid>/stat."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM: the process's peak resident set, read while it is still alive."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


async def _worker_pass(watch: OutputWatch, target: dict[int, int], env: dict[str, str], log_dir: Path,
                       limit: float, floor: bool = False) -> tuple[Rate, int | None]:
    """Start a worker (or the Faust floor app) on the backlog, follow its output until it covers ``target``,
    stop it."""
    if floor:
        process = start_process("", env, log_dir / "bench-floor.log", module="benchmarks.faust_floor")
    else:
        process = start_process("worker", env, log_dir / "bench-worker.log")
    try:
        rate = await watch.follow(target, limit=limit, cpu=lambda: cpu_seconds(process.pid))
        return rate, peak_rss_kib(process.pid)
    finally:
        terminate(process)


async def bench_worker(settings: Settings, env: dict[str, str], data: StageData, repeats: int,
                       log_dir: Path) -> dict[str, Any]:
    events_topic = settings.topic("task-events")
    raw_target = settings.topic("bench-raw-jobs")
    await ensure_topics(settings)
    await create_topics(settings, raw_target)
    await prewarm_tables(settings, data)
    raw: list[Rate] = []
    # The raw loop reads a backlog; each repetition writes the same events again and reads only those.
    for _ in range(repeats):
        await produce_all(settings, events_topic, data.events)
        raw.append(await raw_worker(settings, events_topic, raw_target, len(data.events)))
    # The worker reads the same kind of backlog: the events are written while it is stopped, and each pass
    # is timed from its first output to its last, which leaves its start-up and table recovery out. Then the
    # same for the Faust floor (benchmarks/faust_floor.py): a Faust agent that only passes records on.
    worker, worker_rss = await _passes(settings, data, env, log_dir, repeats, OutputWatch(settings), floor=False)
    floor_topic = settings.topic(FLOOR_OUTPUT)
    await create_topics(settings, floor_topic)
    floor, _ = await _passes(settings, data, env, log_dir, repeats, OutputWatch(settings, [floor_topic]), floor=True)
    result = summarize("worker", raw, worker, len(data.events))
    result["worker_peak_rss_kib"] = worker_rss
    result["faust_floor"] = summarize("faust floor", raw, floor, len(data.events))
    return result


async def _passes(settings: Settings, data: StageData, env: dict[str, str], log_dir: Path, repeats: int,
                  watch: OutputWatch, *, floor: bool) -> tuple[list[Rate], int | None]:
    """A warm-up pass over everything written so far, then ``repeats`` passes over the events written anew."""
    events_topic = settings.topic("task-events")
    rates: list[Rate] = []
    rss: int | None = None
    await watch.start()
    try:
        target = await end_offsets(settings, events_topic)
        watch.base = {}
        await _worker_pass(watch, target, env, log_dir, limit=300, floor=floor)
        for _ in range(repeats):
            watch.base = dict(target)
            await produce_all(settings, events_topic, data.events)
            target = await end_offsets(settings, events_topic)
            rate, peak = await _worker_pass(watch, target, env, log_dir, limit=120, floor=floor)
            rates.append(rate)
            rss = max(rss or 0, peak or 0) or None
    finally:
        await watch.stop()
    return rates, rss


# Sink ------------------------------------------------------------------------------------------------


async def raw_sink(settings: Settings, topic: str, exchange_name: str, expected: int, window: int) -> Rate:
    """aiokafka consume -> aio-pika publish with confirms (``window`` in flight) -> commit what is confirmed."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=settings.topic("bench-raw-sink"), enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    connection = await aio_pika.connect(settings.pulse_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        slots = asyncio.Semaphore(window)
        confirmed, first_out, counted_from = 0, None, 0
        tasks: set[asyncio.Task[None]] = set()

        async def publish(body: bytes, routing_key: str) -> None:
            nonlocal confirmed
            try:
                await exchange.publish(aio_pika.Message(body, content_type="application/json",
                                                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                       routing_key=routing_key)
                confirmed += 1
            finally:
                slots.release()

        fetched = 0
        while fetched < expected:
            batch = await consumer.getmany(timeout_ms=100, max_records=window)
            for messages in batch.values():
                for message in messages:
                    await slots.acquire()
                    task = asyncio.create_task(publish(message.value, "bench._"))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    fetched += 1
                    if first_out is None and confirmed:
                        first_out, counted_from = time.monotonic(), confirmed
        await asyncio.gather(*tasks)
        await consumer.commit()
        if first_out is None:
            first_out, counted_from = time.monotonic(), 0
        return Rate(confirmed - counted_from, time.monotonic() - first_out)
    finally:
        await connection.close()
        await consumer.stop()


async def connector_sink(settings: Settings, destination: Any, expected: int) -> Rate:
    sink = PulseSink(settings, destinations=[destination])
    serving = asyncio.create_task(sink.serve(handle_signals=False))

    def published() -> int:
        counts = sink.counts.per_destination.get(destination.name)
        return counts.published if counts else 0

    try:
        await until(lambda: published() > 0 or serving.done(), 60)
        started, counted_from = time.monotonic(), published()
        await until(lambda: published() >= expected or serving.done(), 120)
        if serving.done():
            serving.result()
        return Rate(published() - counted_from, time.monotonic() - started)
    finally:
        sink.request_stop()
        await serving


async def bench_sink(settings: Settings, data: StageData, repeats: int) -> dict[str, Any]:
    destination = settings.destinations[0]
    jobs = [(key, value) for key, value, name in data.jobs if name == destination.name]
    jobs_topic = settings.topic("jobs")
    raw_exchange = f"exchange/{settings.namespace}/bench-raw-jobs"
    queue_names = [settings.pulse_queue("bench-jobs"), settings.pulse_queue("bench-raw-jobs")]
    await ensure_topics(settings)
    connection = await aio_pika.connect(settings.pulse_url)
    async with connection:  # a queue behind each exchange: messages are routed and stored, as in production
        channel = await connection.channel()
        for exchange_name, queue_name in zip((destination.exchange, raw_exchange), queue_names, strict=True):
            exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(queue_name, durable=True)
            await queue.bind(exchange, routing_key="#")
    raw, connector = [], []
    for _ in range(repeats):
        await produce_all(settings, jobs_topic, jobs)
        raw.append(await raw_sink(settings, jobs_topic, raw_exchange, len(jobs), settings.sink_max_in_flight))
        connector.append(await connector_sink(settings, destination, len(jobs)))
        await _purge(settings, queue_names)
    result = summarize("sink", raw, connector, len(jobs), queues=queue_names, exchanges=[raw_exchange])
    return result


async def _purge(settings: Settings, queues: list[str]) -> None:
    connection = await aio_pika.connect(settings.pulse_url)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await (await channel.get_queue(name)).purge()


# Shared ----------------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarize(stage: str, raw: list[Rate], connector: list[Rate], items: int, **cleanup: Any) -> dict[str, Any]:
    raw_rate = median([r.per_second for r in raw])
    stage_rate = median([r.per_second for r in connector])
    cpu = {}
    if all(r.cpu_seconds is not None and r.items for r in raw + connector):
        # CPU per item is steadier than a rate on a shared machine: another process's load stretches the wall
        # clock but not the CPU a stage spends on its own work.
        raw_us = median([r.cpu_seconds / r.items * 1e6 for r in raw])  # type: ignore[operator]
        stage_us = median([r.cpu_seconds / r.items * 1e6 for r in connector])  # type: ignore[operator]
        cpu = {"raw_cpu_us_per_item": round(raw_us, 1), "stage_cpu_us_per_item": round(stage_us, 1),
               "cpu_ratio": round(raw_us / stage_us, 3) if stage_us else None,
               "stage_cpu_us_per_item_each": [round(r.cpu_seconds / r.items * 1e6)  # type: ignore[operator]
                                              for r in connector]}
    return {
        "stage": stage,
        "items_per_run": items,
        "runs": len(connector),
        "raw_per_second": [round(r.per_second) for r in raw],
        "stage_per_second": [round(r.per_second) for r in connector],
        "raw_median": round(raw_rate),
        "stage_median": round(stage_rate),
        "ratio": round(stage_rate / raw_rate, 3) if raw_rate else None,
        **cpu,
        "cleanup": cleanup,
    }


async def timed(coroutine: Awaitable[Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = await coroutine
    return result, time.monotonic() - started


def child_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TC_TREEHERDER_")}
    env.update(settings_env)
    return env
