"""Two Taskcluster deployments read by one tc-treeherder: two simulated workloads on two Pulses (two vhosts of
the test RabbitMQ), two Queue APIs (two stand-ins), one source process each, one worker, all through the one
task-events topic."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from devtools.harness import expected_job_count
from devtools.publisher import PulsePublisher, StandInRegistrar, publish_workload
from devtools.queue_standin import QueueStandIn
from devtools.stack.shared import Brokers
from devtools.workload import WorkloadOptions, generate
from streams.shared.settings import load_settings
from streams.shared.topics import ensure_topics
from tests.integration.test_destinations import (
    amqp_url,
    cli,
    delete_vhost,
    make_vhost,
    management,
    processes,  # noqa: F401 - a fixture
)
from tests.integration.test_source import wait_for_consumers
from tests.integration.test_worker import read_topic

pytestmark = pytest.mark.integration


async def test_two_deployments_each_event_asks_its_own_queue_api(
        brokers: Brokers, namespace: str, test_env: dict[str, str],
        processes: Callable[..., subprocess.Popen[bytes]]) -> None:  # noqa: F811
    vhosts = {"firefox-ci": f"{namespace}-fxci", "community": f"{namespace}-community"}
    async with QueueStandIn() as fxci, QueueStandIn() as community, management(brokers) as call, \
            aiohttp.ClientSession() as http:
        queues = {"firefox-ci": fxci, "community": community}
        env = {**test_env, "TC_TREEHERDER_DEPLOYMENTS": "firefox-ci,community",
               "TC_TREEHERDER_PULSE_BINDINGS_API": brokers.management_url}
        for name, vhost in vhosts.items():
            key = name.upper().replace("-", "_")
            env[f"TC_TREEHERDER_DEPLOYMENT_{key}_PULSE_URL"] = amqp_url(brokers, vhost)
            env[f"TC_TREEHERDER_DEPLOYMENT_{key}_ROOT_URL"] = queues[name].root_url
        env["TC_TREEHERDER_DEPLOYMENT_COMMUNITY_ROUTE_PREFIXES"] = "tc-treeherder"  # community has no staging
        settings = load_settings(env=env)
        assert settings.root_urls == (fxci.root_url, community.root_url)
        await ensure_topics(settings)
        workloads = {
            "firefox-ci": generate(WorkloadOptions(tasks=60, seed=11, root_url=fxci.root_url,
                                                   task_exchange=settings.for_deployment("firefox-ci").task_exchange)),
            "community": generate(WorkloadOptions(tasks=40, seed=12, root_url=community.root_url, staging_fraction=0.0,
                                                  task_exchange=settings.for_deployment("community").task_exchange)),
        }
        expected = {name: expected_job_count(workload.expected) for name, workload in workloads.items()}
        assert all(expected.values())
        try:
            for name, vhost in vhosts.items():
                await make_vhost(call, vhost)
                processes("source", env, args=["--deployment", name])
            for name in vhosts:
                own = settings.for_deployment(name)
                assert own.pulse_queue("task-events").endswith(f"/tc-treeherder/{name}/task-events")
                await wait_for_consumers(own)
            for name, workload in workloads.items():
                own = settings.for_deployment(name)
                async with PulsePublisher(own.pulse_url, own.task_exchange) as publisher:
                    await publish_workload(workload.groups, publisher, StandInRegistrar(queues[name].root_url, http))
            events = sum(run.events for workload in workloads.values() for run in workload.expected if run.delivered)
            assert len(await read_topic(settings, "task-events", events)) == events

            # before any worker ran, a replay has no tables: each event's task comes from its own Queue API
            code, out, err = await cli(env, "replay", "--from-offsets", "0", "--dry-run")
            assert code == 0, err
            assert f"jobs would emit: {sum(expected.values())}" in out and "task not found" not in out, out
            by_replay = {name: standin.stats["requests"]["task"] for name, standin in queues.items()}
            assert all(by_replay.values()), by_replay

            processes("worker", env)

            jobs = await read_topic(settings, "jobs", sum(expected.values()), wait=120)
            by_root = Counter(record["rootUrl"] for record in jobs)
            assert by_root == {fxci.root_url: expected["firefox-ci"], community.root_url: expected["community"]}
            for record in jobs:  # every URL of a job is at its own deployment's Queue API
                job = record["job"]
                urls = [log["url"] for log in job.get("logs", [])] + [link["url"] for link in job["jobInfo"]["links"]]
                assert all(url.startswith(record["rootUrl"] + "/") for url in urls), (record["rootUrl"], urls)
            for name, standin in queues.items():  # each Queue API was asked only about its own tasks
                own_tasks = {task.task_id for task in workloads[name].tasks}
                assert 0 < standin.stats["requests"]["task"] - by_replay[name] <= len(own_tasks), name
            rejected = await read_topic(settings, "rejected", 1, wait=5)
            assert not [r for r in rejected if str(r.get("reason", "")).startswith("task not found")]

            # explain finds a community task at the community Queue API, without being told where
            task_id = next(run.task_id for run in workloads["community"].expected
                           if run.delivered and run.outcome == "jobs")
            code, out, err = await cli(env, "explain", task_id, "--json")
            assert code == 0, err
            assert orjson.loads(out)["reachesTreeherder"] is True
            code, out, err = await cli(env, "source")
            assert code == 2 and "--deployment firefox-ci or community" in err
        finally:
            for vhost in vhosts.values():
                await delete_vhost(call, vhost)
