"""Events per second of ``tc-treeherder replay`` on a real Kafka, end to end.

Writes N task lifecycles (pending, running, completed) to a fresh namespace's task-events topic, and their
definitions and artifact listings to the worker's changelog topics (the same raw-bytes records the worker
writes), then times the replay of the whole range: the key pass, the changelog reads, the transform and
(unless ``--dry-run``) producing every job. No Queue API is involved (``--no-queue``).

    .venv/bin/python -m benchmarks.bench_replay [--tasks 5000] [--repeats 3] [--dry-run] [--profile FILE]

The range is written once and replayed ``--repeats`` times (the machine is shared: compare medians); the
namespace is deleted afterwards. ``--profile`` writes a cProfile of the replays (read it with ``pstats``).

Beside each replay, a raw aiokafka consumer reads what the replay reads (the task-events range and the two
changelogs) and nothing more: the replay's rate as a ratio of that read travels between machines.

Needs Kafka at TC_TREEHERDER_KAFKA_BOOTSTRAP (default: the test broker, localhost:19092).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import slugid  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402

from devtools.factories import make_artifacts, make_envelope, make_event, make_task  # noqa: E402
from devtools.harness import delete_namespace  # noqa: E402
from streams.replay.plan import select  # noqa: E402
from streams.replay.runner import Replay, ReplayOptions  # noqa: E402
from streams.shared.kafka_config import kafka_client_kwargs  # noqa: E402
from streams.shared.settings import load_settings  # noqa: E402
from streams.shared.topics import changelog_topic, ensure_topics  # noqa: E402


async def prepare(settings, tasks: int) -> None:
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    changelogs = [changelog_topic(settings, table) for table in ("task-definitions", "run-artifacts")]
    await admin.create_topics([NewTopic(name, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"})
                               for name in changelogs])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    listing = orjson.dumps(make_artifacts("public/logs/live_backing.log", *[f"public/f{i}.txt" for i in range(8)]))
    futures = []
    for _ in range(tasks):
        task_id = slugid.nice()
        key = task_id.encode()
        for kind in ("pending", "running", "completed"):
            envelope = make_envelope(make_event(kind, task_id=task_id))
            futures.append(await producer.send(settings.topic("task-events"), orjson.dumps(envelope), key=key))
        partition = (murmur2(key) & 0x7FFFFFFF) % settings.partitions  # the producer's default partitioner
        futures.append(await producer.send(changelogs[0], orjson.dumps(make_task()), key=key, partition=partition))
        futures.append(await producer.send(changelogs[1], listing, key=f"{task_id}/0".encode(), partition=partition))
    await asyncio.gather(*futures)
    await producer.stop()


async def replay_once(settings, *, dry_run: bool = False):
    """One replay of the whole prepared range; returns its report."""
    options = ReplayOptions(selection=select(settings), from_offsets=dict.fromkeys(range(settings.partitions), 0),
                            use_queue=False, dry_run=dry_run)
    result = await Replay(settings, options, progress=io.StringIO()).run()
    return result.report


async def raw_read(settings) -> tuple[int, float]:
    """Read every record of task-events and of the two changelogs with a bare consumer: (events, seconds)."""
    topics = [settings.topic("task-events"), *(changelog_topic(settings, table)
                                               for table in ("task-definitions", "run-artifacts"))]
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        started = time.monotonic()
        partitions = [TopicPartition(topic, p) for topic in topics for p in range(settings.partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        events = 0
        while remaining:
            for tp, batch in (await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)).items():
                if tp.topic == topics[0]:
                    events += len(batch)
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return events, time.monotonic() - started
    finally:
        await consumer.stop()


async def measure(settings, tasks: int, *, dry_run: bool = False):
    """Write ``tasks`` lifecycles and their table records, then replay them; returns the replay's report and
    the raw read's rate of the same range (events/s)."""
    await prepare(settings, tasks)
    events, seconds = await raw_read(settings)
    return await replay_once(settings, dry_run=dry_run), events / seconds


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1, help="replays of the same range (median shown)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the replays to FILE")
    args = parser.parse_args()
    settings = load_settings(env={
        "TC_TREEHERDER_KAFKA_BOOTSTRAP": os.environ.get("TC_TREEHERDER_KAFKA_BOOTSTRAP", "localhost:19092"),
        "TC_TREEHERDER_NAMESPACE": f"bench{secrets.token_hex(3)}",
        "TC_TREEHERDER_PARTITIONS": "8",
    })
    try:
        started = time.monotonic()
        await prepare(settings, args.tasks)
        print(f"wrote {args.tasks * 3} events and {args.tasks * 2} table records in "
              f"{time.monotonic() - started:.1f}s")
        profiler = cProfile.Profile() if args.profile else None
        reports = []
        for _ in range(max(1, args.repeats)):
            if profiler is not None:
                profiler.enable()
            reports.append(await replay_once(settings, dry_run=args.dry_run))
            if profiler is not None:
                profiler.disable()
            events, seconds = await raw_read(settings)
            print(f"  replay {len(reports)}: {reports[-1].rate:,.0f} events/s; raw read {events / seconds:,.0f}/s;"
                  f" ratio {reports[-1].rate * seconds / events:.2f}")
        if profiler is not None:
            profiler.dump_stats(args.profile)
        median = sorted(reports, key=lambda report: report.rate)[len(reports) // 2]
        print(f"median of {len(reports)}: {median.rate:,.0f} events/s")
        print("\n".join(median.lines()))
    finally:
        await delete_namespace(settings)


if __name__ == "__main__":
    asyncio.run(main())
