"""The jobs ingester against its floor: jobs stored per second through the ingester beside
``JobLoader().process_job`` called directly on the same kind of jobs in a loop (the ratio; target 0.8).

    python -m benchmarks.bench_treeherder [--jobs 1500] [--concurrency 4]

Two job sets of the same shape (simulated hg pushes, every state of every run, as the worker would emit them;
different seeds, so neither pass finds the other's jobs already stored) go into a fresh database of a local
Treeherder (API on 18100, database tc_treeherder_bench): one through ``store_direct.py`` (a loop in
Treeherder's Python), the other prefilled into the ingester's queue and drained by the ingester (timed from
"consuming" to the last store, polled every 50 ms). Prints a table and writes bench-results/treeherder.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika

from devtools.stack import local as stack
from devtools.stack.process import stop_pid
from devtools.treeherder import local as th
from devtools.workload import WorkloadOptions, iter_groups
from streams.core.envelope import parse_envelope
from streams.core.model import Jobs, TaskEvent
from streams.core.rules import Rules
from streams.core.transform import artifacts_run, transform
from streams.shared.settings import load_settings

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
        time.sleep(0.05)
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
    (out / "treeherder.json").write_text(json.dumps({
        "jobs": args.jobs, "direct_jobs_per_s": direct_rate, "ingester_jobs_per_s": rate, "ratio": ratio,
        "concurrency": args.concurrency, "ingester_status": counts}, indent=2))
    return 0 if status.get("stored", 0) == len(ingest_set) else 1


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
