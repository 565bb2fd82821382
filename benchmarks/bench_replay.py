"""Events per second of ``tc-treeherder replay`` on a real Kafka, end to end.

Writes N task lifecycles (pending, running, completed) to a fresh namespace's task-events topic, and their
definitions and artifact listings to the worker's changelog topics (the same raw-bytes records the worker
writes), then times the replay of the whole range: the key pass, the changelog reads, the transform and
(unless ``--dry-run``) producing every job. No Queue API is involved (``--no-queue``).

    .venv/bin/python benchmarks/bench_replay.py [--tasks 5000] [--dry-run]

Needs Kafka at TC_TREEHERDER_KAFKA_BOOTSTRAP (default: the test broker, localhost:19092).
"""

from __future__ import annotations

import argparse
import asyncio
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
from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402

from streams.replay import Replay, ReplayOptions  # noqa: E402
from streams.replay_plan import select  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402
from tc_treeherder.settings import load_settings  # noqa: E402
from tests.unit.core.factories import make_artifacts, make_envelope, make_event, make_task  # noqa: E402


async def prepare(settings, tasks: int) -> None:
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    changelogs = [f"{settings.app_id}-{t}-changelog" for t in ("task-definitions", "run-artifacts")]
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


async def measure(settings, tasks: int, *, dry_run: bool = False):
    """Write ``tasks`` lifecycles and their table records, then replay them; returns the replay's report."""
    await prepare(settings, tasks)
    options = ReplayOptions(selection=select(settings), from_offsets=dict.fromkeys(range(settings.partitions), 0),
                            use_queue=False, dry_run=dry_run)
    result = await Replay(settings, options, progress=io.StringIO()).run()
    return result.report


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    settings = load_settings(env={
        "TC_TREEHERDER_KAFKA_BOOTSTRAP": os.environ.get("TC_TREEHERDER_KAFKA_BOOTSTRAP", "localhost:19092"),
        "TC_TREEHERDER_NAMESPACE": f"bench{secrets.token_hex(3)}",
        "TC_TREEHERDER_PARTITIONS": "8",
    })
    started = time.monotonic()
    report = await measure(settings, args.tasks, dry_run=args.dry_run)
    print(f"wrote {args.tasks * 3} events and {args.tasks * 2} table records, replayed, in "
          f"{time.monotonic() - started:.1f}s")
    print("\n".join(report.lines()))


if __name__ == "__main__":
    asyncio.run(main())
