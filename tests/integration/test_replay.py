"""``tc-treeherder replay`` on the real brokers, beside a live worker (``tc-treeherder worker``) and sink.

The worker and the replay run as real processes; the sink runs in this process (``PulseSink``), delivering
production and staging to two exchanges; the Queue API is the local stand-in, whose request counts show that
a replay of tasks the worker saw needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.pulse_sink import PulseSink
from devtools.queue_standin import QueueStandIn
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import ensure_topics
from tests.integration.test_destinations import (
    REPO,
    add_tasks,
    bind_queue,
    cli,
    drain,
    expected_keys,
    job_keys,
    lifecycles,
    now_iso,
    processes,  # noqa: F401 - fixture
    standin,  # noqa: F401 - fixture
    task_ids,
)
from tests.integration.test_worker import produce, read_topic

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running_sink(settings: Settings) -> AsyncIterator[PulseSink]:
    sink = PulseSink(settings)
    task = asyncio.create_task(sink.serve(handle_signals=False))
    try:
        yield sink
    finally:
        sink.request_stop()
        await asyncio.wait_for(task, 60)


async def topic_size(settings: Settings, base: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(base), p) for p in range(settings.partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def delete_queues(url: str, *names: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


def events_per_second(report: str) -> float:
    found = re.search(r"\(([\d,]+) events/s\)", report)
    assert found, report
    return float(found.group(1).replace(",", ""))


@pytest.fixture
def two_exchanges(test_env: dict[str, str], namespace: str) -> dict[str, str]:
    """Production and staging on their own exchanges; staging speaks the legacy profile."""
    return {
        **test_env,
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_EXCHANGE":
            f"exchange/taskcluster-treeherder/{namespace}-staging/v1/jobs",
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PROFILE": "legacy",
    }


async def test_time_range_replay_to_staging_dry_run_and_diff(
        two_exchanges: dict[str, str], namespace: str, standin: QueueStandIn,  # noqa: F811
        processes: Callable[..., subprocess.Popen[bytes]]) -> None:  # noqa: F811
    env = two_exchanges
    settings = load_settings(env=env)
    production, staging = settings.destination_for("tc-treeherder"), settings.destination_for(
        "tc-treeherder-staging")
    await ensure_topics(settings)
    in_range, staging_own, after_range = task_ids(3), task_ids(1), task_ids(2)
    add_tasks(standin, in_range + after_range, "tc-treeherder")
    add_tasks(standin, staging_own, "tc-treeherder-staging")
    queues = {production.name: f"queue/guest/{namespace}/production", staging.name: f"queue/guest/{namespace}/staging"}
    await bind_queue(production.pulse_url, production.exchange, queues[production.name])
    await bind_queue(staging.pulse_url, staging.exchange, queues[staging.name])

    try:
        processes("worker", env)
        since = now_iso()
        await produce(settings, lifecycles(in_range + staging_own, standin.root_url))
        await asyncio.sleep(0.2)
        until = now_iso()
        await asyncio.sleep(0.2)
        await produce(settings, lifecycles(after_range, standin.root_url))
        await read_topic(settings, "jobs", 18)
        fetched = dict(standin.stats["requests"])

        async with running_sink(settings):
            live_production = await drain(production.pulse_url, queues[production.name], 15)
            live_staging = await drain(staging.pulse_url, queues[staging.name], 3)
            assert job_keys(live_production) == expected_keys(in_range + after_range)
            assert job_keys(live_staging) == expected_keys(staging_own)

            # A dry run with --diff: nothing is written; jobs rebuilt as they were are unchanged.
            jobs_before = await topic_size(settings, "jobs")
            code, out, err = await cli(env, "replay", "--since", since, "--dry-run", "--diff")
            assert code == 0, err
            assert "jobs would emit: 18" in out
            assert "18 unchanged, 0 changed, 0 new" in out
            # Re-targeted to staging (legacy profile), the same jobs differ where the profiles differ.
            code, out, err = await cli(env, "replay", "--since", since, "--until", until, "--destination",
                                       "tc-treeherder", "--to", "tc-treeherder-staging", "--dry-run", "--diff")
            assert code == 0, err
            assert "0 unchanged, 9 changed" in out
            assert "origin.kind: (absent) -> 'hg.mozilla.org'" in out
            assert "logs[0].name: 'live_backing_log' -> 'builds-4h'" in out
            assert await topic_size(settings, "jobs") == jobs_before, "a dry run wrote to the jobs topic"

            # The real thing: production's jobs of the range, and only those, go to staging.
            code, out, err = await cli(env, "replay", "--since", since, "--until", until, "--destination",
                                       "tc-treeherder", "--to", "tc-treeherder-staging", "--no-queue")
            assert code == 0, err
            assert "events read: 12" in out and "tc-treeherder-staging: 9" in out
            assert "not selected: 3 events of other destinations" in out  # staging's own task
            resent = await drain(staging.pulse_url, queues[staging.name], 9)
            assert job_keys(resent) == expected_keys(in_range)
            assert {key for key, _ in resent} == {"tc-treeherder-staging.autoland._"}
            assert all(body["origin"]["kind"] == "hg.mozilla.org" for _, body in resent)
            assert await drain(production.pulse_url, queues[production.name], 0, settle=3) == []
        assert dict(standin.stats["requests"]) == fetched, "the replay asked the Queue API"
        print(f"replay rate: {events_per_second(out):.0f} events/s")
    finally:
        await delete_queues(production.pulse_url, *queues.values())


def release_with_wrong_config_schema(root: Path) -> Path:
    """A copy of this release whose extra.treeherder schema wrongly allows only tier 1.

    It stands for a deployed version with a schema bug: the worker runs from the copy, the fix is the
    checkout's own (correct) schema, which the replay uses.
    """
    release = root / "release"
    for package in ("streams", "tc_treeherder", "connectors", "schemas"):
        shutil.copytree(REPO / package, release / package, ignore=shutil.ignore_patterns("__pycache__"))
    path = release / "schemas" / "task-treeherder-config.json"
    schema = json.loads(path.read_text())
    schema["properties"]["tier"]["maximum"] = 1
    path.write_text(json.dumps(schema))
    return release


async def test_after_a_schema_fix_rejected_only_replay_delivers_the_rejected_jobs_exactly_once_more(
        test_env: dict[str, str], namespace: str, tmp_path: Path, standin: QueueStandIn,  # noqa: F811
        processes: Callable[..., subprocess.Popen[bytes]]) -> None:  # noqa: F811
    settings = load_settings(env=test_env)
    production = settings.destination_for("tc-treeherder")
    await ensure_topics(settings)
    tier_1, tier_2 = task_ids(2), task_ids(2)
    add_tasks(standin, tier_1, "tc-treeherder", tier=1)
    add_tasks(standin, tier_2, "tc-treeherder", tier=2)
    queue = f"queue/guest/{namespace}/production"
    await bind_queue(production.pulse_url, production.exchange, queue)

    try:
        processes("worker", test_env, pythonpath=release_with_wrong_config_schema(tmp_path))
        since = now_iso()
        await produce(settings, lifecycles(tier_1 + tier_2, standin.root_url))
        rejected = await read_topic(settings, "rejected", 6)
        assert {r["reason"] for r in rejected} == {"extra.treeherder.tier: 2 is greater than the maximum of 1"}

        async with running_sink(settings):
            delivered = await drain(production.pulse_url, queue, 6)
            assert job_keys(delivered) == expected_keys(tier_1)

            code, out, err = await cli(test_env, "replay", "--since", since, "--rejected-only", "--no-queue")
            assert code == 0, err
            assert "events read: 6" in out and "tc-treeherder: 6" in out
            delivered += await drain(production.pulse_url, queue, 6, settle=3)

        assert job_keys(delivered) == expected_keys(tier_1 + tier_2)
        assert max(Counter(job_keys(delivered)).values()) == 1, "a job was delivered twice"
        assert {body["tier"] for _, body in delivered if (body["taskId"], body["state"]) in
                expected_keys(tier_2)} == {2}
    finally:
        await delete_queues(production.pulse_url, queue)
