"""``tc-treeherder demo``: the whole bridge on this machine, fed by the simulator, watched live.

Brings the local brokers up, serves the simulated tasks from an in-process Queue API stand-in, starts the
source, worker and sink as real processes, publishes a realistic workload to the task exchanges and shows
the job messages arriving on the jobs exchanges. Ends with a summary; Ctrl-C stops everything it started.
Each run uses a fresh namespace (topics, queues, exchanges) and removes it afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from devtools.harness import (
    InProcessRegistrar,
    JobObserver,
    LocalPipeline,
    delete_namespace,
    expected_job_count,
    wait_for_consumer,
)
from devtools.publisher import PulsePublisher, publish_workload
from devtools.queue_standin import QueueStandIn
from devtools.stack import StackError, local
from devtools.treeherder import TreeherderError
from devtools.treeherder.demo import TreeherderDemo
from devtools.workload import WorkloadOptions, iter_groups
from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.settings import Settings, load_settings

EPILOG = """examples:
  tc-treeherder demo                       # 300 tasks, as fast as the machine goes
  tc-treeherder demo --tasks 2000 --rate 500 --workers 2
  tc-treeherder demo --keep                # keep the demo's topics and queues to look at afterwards
  tc-treeherder demo --treeherder          # deliver into a real local Treeherder and show what its API lists

The brokers are started when they are not running (see `tc-treeherder up`). Exit status: 0 when every
expected job arrived, 1 when some did not (the summary says which processes to look at), 130 on Ctrl-C.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=300, metavar="N", help="tasks to simulate (default: 300)")
    parser.add_argument("--rate", type=float, default=0.0, metavar="EVENTS_PER_S",
                        help="events per second to publish (default: 0, as fast as possible)")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default: 1)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default: 1)")
    parser.add_argument("--keep", action="store_true", help="keep the demo's topics, queues and exchanges")
    parser.add_argument("--treeherder", action="store_true",
                        help="deliver into a real local Treeherder (see `tc-treeherder treeherder up`) and end with "
                             "what its API reports")
    parser.add_argument("--treeherder-port", type=int, metavar="PORT",
                        help="the local Treeherder's API port (default 8000)")
    parser.add_argument("--idle-timeout", type=float, default=60.0, metavar="S",
                        help="give up waiting for jobs after this long without one (default: 60)")


def run(args: argparse.Namespace, settings: Settings) -> int:

    print("Starting the local brokers (reused when already running)...", flush=True)
    try:
        for step in local.up(settings, log=lambda line: None):
            print(f"  {step.broker:<9} {step.address:<40} {step.outcome} ({step.seconds:.1f}s)")
    except StackError as error:
        print(f"tc-treeherder demo: the local stack did not start: {error}", file=sys.stderr)
        return 1
    treeherder = None
    if args.treeherder:
        print("Starting the local Treeherder (reused when already running)...", flush=True)
        treeherder = TreeherderDemo(settings, args.treeherder_port)
        try:
            for what, outcome, seconds in treeherder.start_treeherder():
                print(f"  {what:<34} {outcome} ({seconds:.1f}s)")
        except TreeherderError as error:
            print(f"tc-treeherder demo: the local Treeherder did not start: {error}", file=sys.stderr)
            return 1
    try:
        return asyncio.run(_demo(args, settings, treeherder))
    except KeyboardInterrupt:
        print("\nStopped.")
        return 130


async def _demo(args: argparse.Namespace, settings: Settings, treeherder: TreeherderDemo | None = None) -> int:

    namespace = settings.namespace or f"demo{time.strftime('%Y%m%d%H%M%S')}"
    own_namespace = not settings.namespace  # only a namespace the demo made up is removed afterwards
    standin = QueueStandIn()
    root_url = await standin.start()
    run_dir = settings.state_dir / "demo" / namespace
    env = _settings_env(settings, namespace=namespace, root_url=root_url, state_dir=run_dir)
    demo_settings = load_settings(env=env)
    print(f"Namespace {namespace}; Queue API stand-in at {root_url}; process logs in {run_dir}")

    pipeline = LocalPipeline(env, run_dir / "logs", workers=args.workers)
    observer = JobObserver(demo_settings)
    try:
        from streams.shared.topics import ensure_topics

        await ensure_topics(demo_settings)
        await observer.start()
        pipeline.start()
        if not await wait_for_consumer(demo_settings.pulse_url, demo_settings.pulse_queue("task-events")):
            print(f"tc-treeherder demo: the source did not start; its log:\n{pipeline.log_tail('source')}",
                  file=sys.stderr)
            return 1
        before = None
        if treeherder is not None:
            spec = await asyncio.to_thread(treeherder.start_ingester, demo_settings)
            print(f"Started the jobs ingester for {spec.exchange}; registering the pushes in Treeherder")

            async def before(groups: list[Any]) -> None:
                await asyncio.to_thread(treeherder.register, groups)

        print(f"Started source, {args.workers} worker(s) and sink. Publishing {args.tasks} tasks...\n")
        report, expected, published_at = await _publish(args, demo_settings, standin, before)
        wanted = expected_job_count(expected)
        view = LiveView(observer, wanted)
        waiting = asyncio.ensure_future(observer.wait_for(wanted, idle=args.idle_timeout, limit=3600))
        while not waiting.done():
            view.draw()
            if pipeline.exited():
                break
            await asyncio.sleep(0.5)
        complete = waiting.done() and waiting.result()
        waiting.cancel()
        view.draw(final=True)
        rejected = await _rejected_summary(demo_settings)
        _summary(report, observer, wanted, rejected, published_at, standin)
        if treeherder is not None:
            print("\nWaiting for Treeherder to store the jobs...", flush=True)
            treeherder.report(await treeherder.wait_settled())
        for name, code in pipeline.exited().items():
            print(f"  ! {name} exited with status {code}; its log: {pipeline.processes[name].log_path}")
        return 0 if complete else 1
    finally:
        pipeline.stop()
        ingester_queues = await asyncio.to_thread(treeherder.stop) if treeherder is not None else []
        await observer.close()
        await standin.stop()
        if own_namespace and not args.keep:
            await delete_namespace(demo_settings, queues=ingester_queues)


def _settings_env(settings: Settings, *, namespace: str, root_url: str, state_dir: Path) -> dict[str, str]:

    env = dict(os.environ)
    env.update({
        "TC_TREEHERDER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TC_TREEHERDER_PULSE_URL": settings.pulse_url,
        "TC_TREEHERDER_NAMESPACE": namespace,
        # A namespaced copy of the Queue's exchanges: queues left by earlier demos never fill up.
        "TC_TREEHERDER_TASK_EXCHANGE_PREFIX": f"exchange/{namespace}/taskcluster-queue/v1/",
        "TASKCLUSTER_ROOT_URL": root_url,
        "TC_TREEHERDER_STATE_DIR": str(state_dir),
        "TC_TREEHERDER_STORE": settings.store,
        "TC_TREEHERDER_PARTITIONS": str(settings.partitions),
        "TC_TREEHERDER_WEB_PORT": "0",
    })
    return env


async def _publish(args: argparse.Namespace, settings: Settings, standin: Any,
                   before: Callable[[list[Any]], Awaitable[None]] | None = None) -> tuple[Any, list[Any], float]:

    options = WorkloadOptions(tasks=args.tasks, seed=args.seed, root_url=standin.root_url,
                              task_exchange=settings.task_exchange)
    expected: list[Any] = []
    groups = []
    for group in iter_groups(options):
        groups.append(group)
        expected.extend(run for task in group.tasks for run in task.expected)
    if before is not None:
        await before(groups)
    started = time.monotonic()
    async with PulsePublisher(settings.pulse_url, settings.task_exchange) as publisher:
        report = await publish_workload(groups, publisher, InProcessRegistrar(standin), rate=args.rate)  # type: ignore[arg-type]
    return report, expected, started


class LiveView:
    """A compact, redrawn view of the jobs arriving (one line a second when not on a terminal)."""

    def __init__(self, observer: Any, wanted: int) -> None:
        self.observer = observer
        self.wanted = wanted
        self.tty = sys.stdout.isatty()
        self._lines = 0
        self._last_plain = 0.0

    def draw(self, final: bool = False) -> None:
        lines = self._render()
        if self.tty:
            if self._lines:
                sys.stdout.write(f"\x1b[{self._lines}F\x1b[J")
            sys.stdout.write("\n".join(lines) + "\n")
            self._lines = len(lines)
        elif final or time.monotonic() - self._last_plain >= 2.0:
            self._last_plain = time.monotonic()
            sys.stdout.write(lines[0] + "\n")
        sys.stdout.flush()

    def _render(self) -> list[str]:
        observer = self.observer
        lines = [f"jobs received {observer.received}/{self.wanted}   "
                 + "   ".join(f"{name}: {count}" for name, count in sorted(observer.by_destination.items()))]
        states = Counter({key: value for key, value in observer.by_state.items()})
        lines.append("  " + "  ".join(f"{key} {value}" for key, value in states.most_common(8)))
        lines.append("  latest:")
        for job in list(observer.latest)[-6:]:
            lines.append(f"    {job.routing_key:<36} {job.symbol:<8} {job.state:<10} {job.result:<10} "
                         f"{job.name[:60]}")
        return lines


async def _rejected_summary(settings: Settings) -> Counter[str]:
    """Every record of the demo's rejected topic, counted by kind and reason."""


    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    counts: Counter[str] = Counter()
    try:
        partitions = [TopicPartition(settings.topic("rejected"), p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for message in messages:
                    record = orjson.loads(message.value)
                    counts[f"{record['kind']}: {record['reason'].split(':', 1)[0][:70]}"] += 1
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return counts


def _summary(report: Any, observer: Any, wanted: int, rejected: Counter[str], published_at: float,
             standin: Any) -> None:
    events = report.total
    finished = observer.last_at or time.monotonic()
    seconds = max(finished - published_at, 1e-9)
    print("\nSummary")
    print(f"  events published   {events} ({', '.join(f'{k} {v}' for k, v in sorted(report.events.items()))})")
    print(f"  jobs expected      {wanted}")
    print(f"  jobs received      {observer.received}"
          + "".join(f"\n    {name:<24} {count}" for name, count in sorted(observer.by_destination.items())))
    duplicates = observer.duplicates
    print(f"  not-for-treeherder and rejected events: {sum(rejected.values())}")
    for reason, count in rejected.most_common():
        print(f"    {count:>6}  {reason}")
    stats = standin.stats["requests"]
    print(f"  Queue API requests {stats['task']} definitions, {stats['artifacts']} listing pages")
    print(f"  end to end         {events / seconds:,.0f} events/s over {seconds:.1f}s "
          "(first publish to last job confirmed)")
    if duplicates:
        print(f"  duplicates         {duplicates} messages for jobs already received")
