"""The worker's memory over many distinct tasks, and how long its tables take to come back after a restart.

    .venv/bin/python benchmarks/memory.py --tasks 1000000          # the full figure (long on 2 cores)
    .venv/bin/python benchmarks/memory.py --tasks 100000           # a quicker run

Runs the real ``tc-treeherder worker`` (a subprocess, ``TC_TREEHERDER_STORE=rocksdb://``) over one task-pending
event per distinct task, produced straight to the task-events topic in large batches. Definitions come from
the Queue API stand-in in a process of its own (it keeps every definition in memory: that is its memory, not
the worker's, and is not measured). Definitions are small but complete enough to become jobs.

Prints, as the run goes, the worker's resident set (``VmRSS``) against tasks done, then its peak (``VmHWM``),
the throughput, and after a SIGTERM and a restart on the same data dir, the time to Faust's "[^Worker]: Ready"
and to the first job of new events. Uses its own namespace and deletes its topics at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson
import slugid
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from streams.shared.settings import Settings, load_settings
from streams.shared.topics import changelog_topic, ensure_topics

REVISION = "4f1a9c2e7b5d3a8f6e0c1b2d4a6f8e0c2b4d6f8a"
EXE = str(Path(sys.executable).with_name("tc-treeherder"))


def definition(n: int) -> dict[str, object]:
    return {"routes": [f"tc-treeherder.v2.try.{REVISION}.{n % 1000}"], "created": "2024-05-01T10:00:00.000Z",
            "workerType": "b-linux", "provisionerId": "proj", "extra": {"treeherder": {"symbol": f"B{n % 97}"}},
            "metadata": {"name": f"build-{n}", "description": "memory benchmark", "owner": "bench@example.com"}}


def envelope(task_id: str) -> bytes:
    body = {"version": 1, "runId": 0, "status": {
        "taskId": task_id, "provisionerId": "proj", "workerType": "b-linux", "schedulerId": "s",
        "taskGroupId": "Wq6Ss-e0S3mSxWs5NPtgXg", "deadline": "2024-05-02T10:00:00.000Z",
        "expires": "2025-05-01T10:00:00.000Z", "retriesLeft": 5, "state": "pending",
        "runs": [{"runId": 0, "state": "pending", "reasonCreated": "scheduled",
                  "scheduled": "2024-05-01T10:00:00.000Z"}]}}
    return orjson.dumps({"exchange": "exchange/taskcluster-queue/v1/task-pending",
                         "routingKey": f"primary.{task_id}.0._._.proj.b-linux.s.Wq6Ss-e0S3mSxWs5NPtgXg._",
                         "payload": body})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def serve_definitions(root_url: str, ids: list[str], first: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):  # the stand-in process needs a moment to listen
            try:
                async with session.get(f"{root_url}/__standin/stats"):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        for start in range(0, len(ids), 20_000):
            chunk = {task_id: definition(first + start + i) for i, task_id in enumerate(ids[start:start + 20_000])}
            async with session.post(f"{root_url}/__standin/tasks", data=orjson.dumps(chunk)) as answer:
                answer.raise_for_status()


async def prewarm_definitions(settings: Settings, ids: list[str]) -> None:
    """Each definition on its task's partition of the definitions changelog, as the worker would write it."""
    topic = changelog_topic(settings, "task-definitions")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        for start in range(0, len(ids), 20_000):
            futures = []
            for n, task_id in enumerate(ids[start:start + 20_000], start):
                key = task_id.encode()
                partition = (murmur2(key) & 0x7FFFFFFF) % settings.partitions
                futures.append(await producer.send(topic, orjson.dumps(definition(n)), key=key, partition=partition))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce(settings: Settings, ids: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=50,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        topic = settings.topic("task-events")
        for start in range(0, len(ids), 50_000):
            futures = [await producer.send(topic, envelope(task_id), key=task_id.encode())
                       for task_id in ids[start:start + 50_000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def output_count(consumer: AIOKafkaConsumer, settings: Settings) -> int:
    parts = [TopicPartition(settings.topic(name), p)
             for name in ("jobs", "rejected") for p in range(settings.partitions)]
    return sum((await consumer.end_offsets(parts)).values())


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([EXE, "worker"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_for_log(log: Path, text: str, offset: int, limit: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if text in log.read_bytes()[offset:].decode("utf-8", "replace"):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the topics and data dir")
    parser.add_argument("--prewarm", action="store_true",
                        help="write the definitions to the worker's definitions changelog instead of serving them "
                             "from the stand-in: the worker recovers them at start (timed) and fetches nothing, "
                             "so a million tasks take minutes rather than hours")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tc-treeherder-memory-"))
    namespace = f"mem{secrets.token_hex(3)}"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TC_TREEHERDER_")}
    env.update({"TC_TREEHERDER_NAMESPACE": namespace, "TC_TREEHERDER_STORE": "rocksdb://",
                "TC_TREEHERDER_STATE_DIR": str(work / "state"), "TC_TREEHERDER_WEB_PORT": "0",
                "TASKCLUSTER_ROOT_URL": f"http://127.0.0.1:{port}",
                "TC_TREEHERDER_KAFKA_BOOTSTRAP": os.environ.get("TC_TREEHERDER_KAFKA_BOOTSTRAP", "localhost:9092")})
    settings = load_settings(env=env)
    standin = subprocess.Popen([EXE, "queue-standin", "--port", str(port)], env=env,  # noqa: ASYNC220
                               stdout=(work / "standin.log").open("wb"), stderr=subprocess.STDOUT)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    worker: subprocess.Popen[bytes] | None = None
    log = work / "worker.log"
    try:
        await ensure_topics(settings)
        await consumer.start()
        ids = [slugid.nice() for _ in range(args.tasks)]
        began = time.monotonic()
        if args.prewarm:
            await prewarm_definitions(settings, ids)
        else:
            await serve_definitions(settings.taskcluster_root_url, ids, 0)
        await produce(settings, ids)
        print(f"{args.tasks} definitions served and events produced in {time.monotonic() - began:.1f}s", flush=True)

        worker = start_worker(env, log)
        if args.prewarm:
            recovered = wait_for_log(log, "[^Worker]: Ready", 0, 1800)
            print(f"worker ready after recovering {args.tasks} definitions: {recovered}s", flush=True)
        began, first_out, peak_rss, done, last_print = time.monotonic(), None, 0, 0, 0.0
        while done < args.tasks:
            await asyncio.sleep(1.0)
            if worker.poll() is not None:
                print(f"worker exited with {worker.returncode}; see {log}")
                return 1
            rss = status_kib(worker.pid, "VmRSS")
            peak_rss = max(peak_rss, rss)
            done = await output_count(consumer, settings)
            if done and first_out is None:
                first_out = (time.monotonic(), done)
            if time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                print(f"  {time.monotonic() - began:7.0f}s  {done:9d} tasks done  VmRSS {rss / 1024:7.1f} MiB",
                      flush=True)
        hwm = status_kib(worker.pid, "VmHWM")
        assert first_out is not None
        rate = (done - first_out[1]) / max(time.monotonic() - first_out[0], 1e-9)
        print(f"worker: {done} tasks, {rate:.0f} events/s after the first output; "
              f"peak RSS {hwm / 1024:.1f} MiB (VmHWM; sampled max VmRSS {peak_rss / 1024:.1f} MiB)")
        rocks = disk_bytes(Path(settings.data_dir))
        print(f"table data on disk: {rocks / 2**20:.1f} MiB under {settings.data_dir}")

        worker.send_signal(signal.SIGTERM)
        worker.wait(120)
        offset = log.stat().st_size
        restart = time.monotonic()
        worker = start_worker(env, log)
        ready = wait_for_log(log, "[^Worker]: Ready", offset, 600)
        extra = ids[:1000]  # known tasks: served from the recovered tables, no Queue call
        before = await output_count(consumer, settings)
        await produce(settings, extra)
        while await output_count(consumer, settings) < before + len(extra):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        first_job = time.monotonic() - restart
        print(f"restart on the same data dir: ready after {ready if ready is None else round(ready, 1)}s, "
              f"1000 more events of known tasks all out {first_job:.1f}s after the start")
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(120)
        standin.send_signal(signal.SIGTERM)
        standin.wait(30)
        await consumer.stop()
        if not args.keep:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await admin.start()
            try:
                names = [name for name in await admin.list_topics() if name.startswith(f"{namespace}.")]
                await admin.delete_topics(names)
            finally:
                await admin.close()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
