"""The whole bridge on the real brokers: Pulse task exchanges in, Treeherder jobs exchange out.

Source, worker and sink run as the real ``tc-treeherder`` processes; the simulator publishes realistic task
lifecycles (retries, cancellations, bad configs, staging and GitHub routes) and its expected outcomes are
the oracle: they are computed without the transform code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import slugid

from devtools.harness import (
    InProcessRegistrar,
    JobObserver,
    LocalPipeline,
    expected_job_count,
    wait_for_consumer,
)
from devtools.publisher import PulsePublisher, publish_workload
from devtools.queue_standin import QueueStandIn
from devtools.workload import WorkloadOptions, iter_groups
from streams.core.state_guard import STATE_RANK
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import ensure_topics


@pytest.fixture
async def standin() -> AsyncIterator[QueueStandIn]:
    async with QueueStandIn() as server:
        yield server


@pytest.fixture
async def bridge(test_env: dict[str, str], standin: QueueStandIn, tmp_path: Path) -> AsyncIterator[Any]:
    env = {**test_env, "TASKCLUSTER_ROOT_URL": standin.root_url}
    settings = load_settings(env=env)
    await ensure_topics(settings)
    observer = JobObserver(settings)
    await observer.start()
    pipeline = LocalPipeline(env, tmp_path / "logs")
    pipeline.start()
    assert await wait_for_consumer(settings.pulse_url, settings.pulse_queue("task-events")), pipeline.log_tail("source")
    yield settings, pipeline, observer
    pipeline.stop()
    await observer.close()


def workload(settings: Settings, root_url: str, tasks: int, seed: int) -> tuple[list[Any], list[Any]]:
    options = WorkloadOptions(tasks=tasks, seed=seed, root_url=root_url, task_exchange=settings.task_exchange)
    groups = list(iter_groups(options))
    return groups, [run for group in groups for task in group.tasks for run in task.expected]


async def publish(settings: Settings, standin: QueueStandIn, groups: list[Any]) -> None:
    async with PulsePublisher(settings.pulse_url, settings.task_exchange) as publisher:
        await publish_workload(groups, publisher, InProcessRegistrar(standin))  # type: ignore[arg-type]


def assert_final_states(observer: JobObserver, expected: list[Any]) -> None:
    """Every run that should become jobs ends in the expected state and result, and never went backwards."""
    for run in expected:
        if not (run.delivered and run.outcome == "jobs"):
            continue
        key = f"{run.destination}/{slugid.decode(run.task_id)}/{run.run_id}"
        assert observer.last_state.get(key) == (run.state, run.result), f"{key}: {observer.history.get(key)}"
        ranks = [STATE_RANK[state] for state in observer.history[key]]
        assert ranks == sorted(ranks), f"{key} went backwards: {observer.history[key]}"


async def test_every_kind_of_event_becomes_the_right_job_in_order(bridge, standin):
    settings, pipeline, observer = bridge
    groups, expected = workload(settings, standin.root_url, tasks=150, seed=4)
    lifecycles = {task.lifecycle for group in groups for task in group.tasks}
    assert len(lifecycles) >= 6, f"the workload should mix lifecycles, got {lifecycles}"
    destinations = {run.destination for run in expected if run.outcome == "jobs"}
    assert destinations == {"tc-treeherder", "tc-treeherder-staging"}, "seed 4 feeds both destinations"

    await publish(settings, standin, groups)
    wanted = expected_job_count(expected)
    arrived = await observer.wait_for(wanted, idle=60, limit=300)

    assert arrived, f"{observer.received}/{wanted} jobs; worker log:\n{pipeline.log_tail('worker-0')}"
    assert_final_states(observer, expected)
    assert set(observer.by_destination) == destinations
    assert observer.duplicates == 0, "no process restarted: every job message arrives once"
    assert not pipeline.exited()


async def test_restarting_each_process_mid_stream_loses_no_job(bridge, standin):
    settings, pipeline, observer = bridge
    groups, expected = workload(settings, standin.root_url, tasks=300, seed=12)
    wanted = expected_job_count(expected)
    publishing = asyncio.ensure_future(publish(settings, standin, groups))

    for name in ("worker-0", "sink", "source"):
        await observer.wait_for(min(wanted, observer.received + wanted // 6), idle=30, limit=60)
        await asyncio.to_thread(pipeline.restart, name)
    await publishing

    arrived = await observer.wait_for(wanted, idle=60, limit=300)
    assert arrived, f"{observer.received}/{wanted} jobs after restarts"
    assert_final_states(observer, expected)
    assert all(starts == 2 for starts in (pipeline.processes[n].starts for n in ("worker-0", "sink", "source")))
