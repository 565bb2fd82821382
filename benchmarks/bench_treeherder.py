"""The jobs ingester against its floor: jobs stored per second through the ingester beside
``JobLoader().process_job`` called directly on the same kind of jobs in a loop (the ratio; target 0.8); and the
latency from a task event published to its job visible in Treeherder's API, at a given rate.

    python -m benchmarks.bench_treeherder [--jobs 1500] [--concurrency 4] [--rate 100] [--events 1000]

Two job sets of the same shape (simulated hg pushes, every state of every run, as the worker would emit them;
different seeds, so neither pass finds the other's jobs already stored) go into a fresh database of a local
Treeherder (API on 18100, database tc_treeherder_bench): one through ``store_direct.py`` (a loop in
Treeherder's Python), the other prefilled into the ingester's queue and drained by the ingester (timed from
"consuming" to the last store, polled every 250 ms). Prints a table and writes bench-results/treeherder.json.

Latency: source, worker, sink and an ingester run as processes under a namespace of their own; simulated hg
pushes (registered first) are published to the task exchanges at ``--rate`` events/s; Treeherder's API is
polled every 250 ms per project for jobs modified since the last poll, and each (job, state) is timed from the
publish of the event that made it to the poll that first listed it (so figures carry up to a poll interval
plus an API request). Events whose state was overtaken before a poll saw it are left out (counted).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
import slugid

from devtools.harness import InProcessRegistrar, LocalPipeline, delete_namespace, wait_for_consumer
from devtools.publisher import PulsePublisher, publish_workload
from devtools.queue_standin import QueueStandIn
from devtools.stack import local as stack
from devtools.stack.process import stop_pid
from devtools.treeherder import local as th
from devtools.workload import WorkloadOptions, iter_groups
from streams.core.envelope import parse_envelope
from streams.core.model import Jobs, TaskEvent
from streams.core.rules import Rules
from streams.core.transform import artifacts_run, transform
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
ROOT_URL = "https://firefox-ci-tc.services.mozilla.com"


def job_messages(seed: int, count: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(project, revision, routing key, job) for the production destination, ``count`` of them."""
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    rules = Rules()
    options = WorkloadOptions(tasks=count, seed=seed, github_fraction=0.0, staging_fraction=0.0, root_url=ROOT_URL,
                              max_group_size=40)
    for group in iter_groups(options):
        tasks = {task.task_id: task for task in group.tasks}
        for envelope in group.events:
            event = parse_envelope(envelope, default_root_url=ROOT_URL)
            if not isinstance(event, TaskEvent) or event.task_id not in tasks:
                continue
            task = tasks[event.task_id]
            run = artifacts_run(event)
            outcome = transform(event, task.definition, task.artifacts.get(run, []) if run is not None else None, rules)
            if isinstance(outcome, Jobs):
                for message in outcome.messages:
                    if message.destination == "tc-treeherder":
                        out.append((group.project, group.revision, message.routing_key, dict(message.job)))
        if len(out) >= count:
            return out[:count]
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def publish(url: str, exchange: str, jobs: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        persistent = aio_pika.DeliveryMode.PERSISTENT
        await asyncio.gather(*(target.publish(
            aio_pika.Message(json.dumps(job).encode(), content_type="application/json",
                             headers={"taskcluster-root-url": ROOT_URL}, delivery_mode=persistent),
            routing_key=key) for _, _, key, job in jobs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1500, help="job messages per pass (default 1500)")
    parser.add_argument("--concurrency", type=int, default=4, help="ingester lanes (default 4)")
    parser.add_argument("--rate", type=float, default=100.0, help="events/s offered in the latency part (100)")
    parser.add_argument("--events", type=int, default=1000, help="events in the latency part (default 1000; 0: skip)")
    args = parser.parse_args()
    settings = load_settings()
    stack.up(settings, lambda line: None)
    instance = th.Instance(state=settings.state_dir / "bench-treeherder", database="tc_treeherder_bench",
                           api_port=18100, redis_db=2)
    ready = th.prepare(instance, fresh=True)
    direct_set, ingest_set = job_messages(101, args.jobs), job_messages(202, args.jobs)
    th.register_pushes(ready, sorted({(p, r) for p, r, _, _ in direct_set + ingest_set}))
    print(f"{len(direct_set)} + {len(ingest_set)} job messages over "
          f"{len({(p, r) for p, r, _, _ in direct_set + ingest_set})} pushes", flush=True)

    work = instance.state / "direct.jsonl"
    work.write_text("".join(json.dumps({"job": job, "rootUrl": ROOT_URL}) + "\n" for _, _, _, job in direct_set))
    result = subprocess.run(ready.python(str(th.SCRIPTS / "store_direct.py"), str(work)), env=ready.env,
                            cwd=ready.installation.source, capture_output=True, text=True, check=True)
    direct = json.loads(result.stdout.strip().splitlines()[-1])
    direct_rate = direct["jobs"] / direct["seconds"]
    print(f"process_job loop   {direct['jobs']} jobs in {direct['seconds']:.1f}s: {direct_rate:.0f} jobs/s", flush=True)

    exchange = f"exchange/bench{int(time.time())}/jobs"
    spec = th.IngesterSpec(pulse_url=settings.pulse_url, exchange=exchange, name=f"bench{int(time.time())}",
                           bindings=("#",), metrics_port=free_port(), concurrency=args.concurrency,
                           prefetch=max(64, 16 * args.concurrency))
    pid, _ = th.start_ingester(ready, instance, spec)  # declares and binds its queue
    stop_pid(pid, 30)
    asyncio.run(publish(settings.pulse_url, exchange, ingest_set))
    pid, _ = th.start_ingester(ready, instance, spec)
    began = time.perf_counter()
    status: dict[str, Any] = {}
    while time.perf_counter() - began < 600:
        status = th.ingester_status(spec) or {}
        if status.get("stored", 0) + status.get("refused", 0) + status.get("parked", 0) >= len(ingest_set):
            break
        time.sleep(0.25)  # each poll costs the ingester a request thread: poll gently
    seconds = time.perf_counter() - began
    stop_pid(pid, 30)
    asyncio.run(_delete(settings.pulse_url, spec, exchange))
    rate = status.get("stored", 0) / seconds
    ratio = rate / direct_rate
    print(f"ingester           {status.get('stored', 0)} jobs in {seconds:.1f}s: {rate:.0f} jobs/s "
          f"({args.concurrency} lanes; refused {status.get('refused', 0)}, parked {status.get('parked', 0)})")
    print(f"ratio              {ratio:.2f} (target 0.8)")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    counts = {key: value for key, value in status.items() if not key.startswith("recent")}
    results: dict[str, Any] = {
        "jobs": args.jobs, "direct_jobs_per_s": direct_rate, "ingester_jobs_per_s": rate, "ratio": ratio,
        "concurrency": args.concurrency, "ingester_status": counts}
    if args.events:
        try:
            results["latency"] = asyncio.run(latency(settings, instance, ready, args))
        finally:
            th.stop_api(instance)
    (out / "treeherder.json").write_text(json.dumps(results, indent=2))
    return 0 if status.get("stored", 0) == len(ingest_set) else 1


STATE_OF_KIND = {"defined": "unscheduled", "pending": "pending", "running": "running", "completed": "completed",
                 "failed": "completed", "exception": "completed"}


async def latency(base: Settings, instance: th.Instance, ready: th.Ready, args: argparse.Namespace,
                  ) -> dict[str, Any]:
    """Event published -> job visible in Treeherder's API, through the whole chain, at ``args.rate``."""
    th.start_api(ready, instance)
    namespace = f"benchth{int(time.time())}"
    async with QueueStandIn() as standin:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TC_TREEHERDER_")}
        env.update({"TC_TREEHERDER_KAFKA_BOOTSTRAP": base.kafka_bootstrap, "TC_TREEHERDER_PULSE_URL": base.pulse_url,
                    "TC_TREEHERDER_NAMESPACE": namespace, "TASKCLUSTER_ROOT_URL": standin.root_url,
                    "TC_TREEHERDER_TASK_EXCHANGE_PREFIX": f"exchange/{namespace}/taskcluster-queue/v1/",
                    "TC_TREEHERDER_STATE_DIR": str(instance.state / namespace), "TC_TREEHERDER_STORE": "memory://",
                    "TC_TREEHERDER_WEB_PORT": "0"})
        settings = load_settings(env=env)
        await ensure_topics(settings)
        pipeline = LocalPipeline(env, instance.state / namespace / "logs")
        pipeline.start()
        spec = th.IngesterSpec.for_destination(settings, settings.destination_for("tc-treeherder"), free_port(),
                                               concurrency=args.concurrency, delays="0.5,1,2")
        pid = None
        try:
            if not await wait_for_consumer(settings.pulse_url, settings.pulse_queue("task-events")):
                raise SystemExit(f"the source did not start:\n{pipeline.log_tail('source')}")
            pid, _ = th.start_ingester(ready, instance, spec)
            groups = list(iter_groups(WorkloadOptions(
                events=args.events, seed=303, root_url=standin.root_url, task_exchange=settings.task_exchange,
                github_fraction=0.0, staging_fraction=0.0)))
            th.register_pushes(ready, sorted({(g.project, g.revision) for g in groups}))
            wanted = {f"{slugid.decode(run.task_id)}/{run.run_id}" for g in groups for t in g.tasks
                      for run in t.expected if run.outcome == "jobs" and run.delivered}
            published: dict[tuple[str, str], float] = {}

            def on_event(envelope: dict[str, Any]) -> None:
                status = envelope["payload"]["status"]
                run_id = envelope["payload"].get("runId", 0)
                key = (f"{slugid.decode(status['taskId'])}/{run_id}",
                       STATE_OF_KIND[envelope["exchange"].rpartition("task-")[2]])
                if key[0] in wanted:
                    published.setdefault(key, time.monotonic())

            seen: dict[tuple[str, str], float] = {}
            done = asyncio.Event()
            poller = asyncio.ensure_future(_poll(instance, sorted({g.project for g in groups}), seen, done))
            began = time.monotonic()
            async with PulsePublisher(settings.pulse_url, settings.task_exchange) as publisher:
                report = await publish_workload(groups, publisher, InProcessRegistrar(standin),  # type: ignore[arg-type]
                                                rate=args.rate, on_event=on_event)
            publish_seconds = time.monotonic() - began
            last_new, count = time.monotonic(), 0
            while time.monotonic() - last_new < 20 and not all(key in seen for key in published):
                await asyncio.sleep(0.5)
                if len(seen) != count:
                    last_new, count = time.monotonic(), len(seen)
            done.set()
            await poller
        finally:
            if pid is not None:
                stop_pid(pid, 30)
            pipeline.stop()
            await _delete_namespace(settings, spec)
    latencies = sorted(seen[key] - published[key] for key in published if key in seen and seen[key] >= published[key])
    result = {"rate_offered": args.rate, "events": report.total, "publish_seconds": publish_seconds,
              "job_states_published": len(published), "job_states_seen": len(latencies)}
    if latencies:
        result.update(p50=statistics.median(latencies), p99=latencies[min(len(latencies) - 1,
                                                                         int(0.99 * len(latencies)))],
                      max=latencies[-1])
        print(f"latency            {report.total} events at {report.total / publish_seconds:.0f}/s offered "
              f"{args.rate:.0f}/s: event -> job visible in the API p50 {result['p50']:.2f}s, p99 {result['p99']:.2f}s "
              f"(max {result['max']:.1f}s; {len(latencies)}/{len(published)} job states seen by a poll)")
    return result


async def _poll(instance: th.Instance, projects: list[str], seen: dict[tuple[str, str], float],
                done: asyncio.Event) -> None:
    since = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)).replace(tzinfo=None)
    while not done.is_set():
        polled_at = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        for project in projects:
            jobs = await asyncio.to_thread(th.jobs, instance, project,
                                           last_modified__gt=(since - datetime.timedelta(seconds=2)).isoformat())
            now = time.monotonic()
            for job in jobs:
                seen.setdefault((job["job_guid"], job["state"]), now)
        since = polled_at
        await asyncio.sleep(0.25)


async def _delete_namespace(settings: Settings, spec: th.IngesterSpec) -> None:
    await delete_namespace(settings, queues=spec.queues(), exchanges=[spec.retry_exchange])


async def _delete(url: str, spec: th.IngesterSpec, exchange: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in spec.queues():
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(spec.retry_exchange)


if __name__ == "__main__":
    sys.exit(main())
