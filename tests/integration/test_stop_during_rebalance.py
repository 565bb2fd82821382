"""A worker stopped while its group rebalances finishes the batch in hand before the group moves on.

Faust waits for the events a worker holds when its partitions are revoked, except when the worker is already
stopping: it then closed its consumer at once and the group handed the partitions over while the worker still
finished its batch. Either the new owner read that batch again and sent its runs back behind their later
states, or the stopping worker hung in a commit its closed consumer could not make until it was killed.
``streams.worker.membership.WorkerApp`` makes a stopping worker wait like a running one.

The batch in hand is made slow on purpose: the Queue stand-in answers task lookups after a delay. The first
worker is stopped as the second one starts, and the second one's join reaches it while it still waits for
the Queue API to finish its last batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import slugid
from aiokafka.partitioner import DefaultPartitioner

from devtools.factories import make_envelope, make_event, make_task
from devtools.harness import LocalPipeline
from devtools.queue_standin import Fault, QueueStandIn
from streams.core.state_guard import STATE_RANK
from streams.shared.settings import load_settings
from streams.shared.topics import ensure_topics
from tests.integration.test_worker import produce, read_until

PARTITIONS = 2


def spread(per_partition: int) -> list[str]:
    """Task ids, ``per_partition`` on each task-events partition (the producer's partitioner), so that whichever
    partition changes hands holds tasks of the slow batch."""
    partitioner, parts = DefaultPartitioner(), list(range(PARTITIONS))
    chosen: dict[int, list[str]] = {part: [] for part in parts}
    while any(len(ids) < per_partition for ids in chosen.values()):
        task_id = slugid.nice()
        ids = chosen[partitioner(task_id.encode(), parts, parts)]
        if len(ids) < per_partition:
            ids.append(task_id)
    return [task_id for ids in chosen.values() for task_id in ids]


EARLY = spread(2)  # pending before the stop; running and completed in the slow batch
LATE = spread(1)  # first seen in the slow batch: their definitions take QUEUE_DELAY
# Longer than the second worker takes from its start to its join (about 2 s), shorter than the Queue client's
# timeout (10 s), after which the batch would wait for retries instead.
QUEUE_DELAY = 8.0


@pytest.fixture
async def standin() -> AsyncIterator[QueueStandIn]:
    async with QueueStandIn() as server:
        for task_id in EARLY + LATE:
            server.add_task(task_id, make_task())
        yield server


def event(kind: str, task_id: str, root_url: str) -> tuple[str, dict[str, Any]]:
    return task_id, make_envelope(make_event(kind, task_id=task_id), root_url=root_url)


def logged(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


async def wait_for_line(path: Path, text: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not logged(path, text):
        assert time.monotonic() < deadline, f"{path.name} never logged {text!r}"
        await asyncio.sleep(0.01)


async def test_a_worker_stopped_mid_rebalance_exits_cleanly_and_no_run_goes_back(
        test_env: dict[str, str], standin: QueueStandIn, tmp_path: Path) -> None:
    env = {**test_env, "TASKCLUSTER_ROOT_URL": standin.root_url, "TC_TREEHERDER_STORE": "rocksdb://",
           "TC_TREEHERDER_PARTITIONS": str(PARTITIONS)}
    settings = load_settings(env=env)
    await ensure_topics(settings)
    pipeline = LocalPipeline(env, tmp_path / "logs", workers=2)
    try:
        pipeline.start("worker-0")
        await produce(settings, [event("pending", task_id, standin.root_url) for task_id in EARLY])
        await read_until(settings, "jobs", lambda records: len(records) >= len(EARLY))

        standin.add_fault(Fault(delay=QUEUE_DELAY, endpoint="task"))
        await produce(settings, [event(kind, task_id, standin.root_url)
                                 for kind in ("running", "completed") for task_id in EARLY]
                      + [event("pending", task_id, standin.root_url) for task_id in LATE])
        await asyncio.sleep(0.5)  # worker-0 takes the batch and waits for the Queue API

        pipeline.start("worker-1")
        await wait_for_line(pipeline.processes["worker-1"].log_path, "[^Worker]: Starting")
        stopped_at = time.monotonic()
        await asyncio.to_thread(pipeline.stop, "worker-0")
        stop_took = time.monotonic() - stopped_at
        standin.clear_faults()

        def complete(records: list[dict[str, Any]]) -> bool:
            seen = {(record["key"], record["job"]["state"]) for record in records}
            return {(task_id, state) for task_id in EARLY for state in ("pending", "running", "completed")} \
                | {(task_id, "pending") for task_id in LATE} <= seen

        await read_until(settings, "jobs", complete)
        await asyncio.sleep(QUEUE_DELAY + 2)  # a worker that read the slow batch again has had time to emit it
        jobs = await read_until(settings, "jobs", complete)
    finally:
        await asyncio.to_thread(pipeline.stop)

    assert pipeline.processes["worker-0"].process.returncode == 0, \
        f"worker-0 did not stop by itself ({stop_took:.1f}s): {pipeline.log_tail('worker-0')}"
    log = pipeline.processes["worker-0"].log_path.read_text(errors="replace")
    stopping = log.index("[^Worker]: Stopping")
    assert "Revoking previously assigned partitions" in log[stopping:], "the rebalance reached worker-0 as it stopped"
    assert complete(jobs), f"jobs missing: {[(r['key'], r['job']['state']) for r in jobs]}"
    for task_id in EARLY + LATE:
        ranks = [STATE_RANK[record["job"]["state"]] for record in jobs if record["key"] == task_id]
        assert ranks == sorted(ranks), f"{task_id} went back: {ranks}"
