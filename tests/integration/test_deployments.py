"""Two Taskcluster deployments read by one tc-treeherder: two Pulses (two vhosts of the test RabbitMQ), two
Queue APIs (two stand-ins), one source process each, one worker, all through the one task-events topic."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable

import orjson
import pytest
import slugid

from devtools.factories import REVISION, make_artifacts, make_config, make_event, make_task
from devtools.queue_standin import QueueStandIn
from devtools.stack.shared import Brokers
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
from tests.integration.test_source import primary_key, publish, wait_for_consumers
from tests.integration.test_worker import read_topic

pytestmark = pytest.mark.integration

ROUTE = f"tc-treeherder.v2.autoland.{REVISION}.7"


async def test_two_deployments_each_event_asks_its_own_queue_api(
        brokers: Brokers, namespace: str, test_env: dict[str, str],
        processes: Callable[..., subprocess.Popen[bytes]]) -> None:  # noqa: F811
    vhosts = {"firefox-ci": f"{namespace}-fxci", "community": f"{namespace}-community"}
    async with QueueStandIn() as fxci, QueueStandIn() as community, management(brokers) as call:
        queues = {"firefox-ci": fxci, "community": community}
        env = {**test_env, "TC_TREEHERDER_DEPLOYMENTS": "firefox-ci,community",
               "TC_TREEHERDER_PULSE_BINDINGS_API": brokers.management_url}
        for name, vhost in vhosts.items():
            key = name.upper().replace("-", "_")
            env[f"TC_TREEHERDER_DEPLOYMENT_{key}_PULSE_URL"] = amqp_url(brokers, vhost)
            env[f"TC_TREEHERDER_DEPLOYMENT_{key}_ROOT_URL"] = queues[name].root_url
        env["TC_TREEHERDER_DEPLOYMENT_COMMUNITY_ROUTE_PREFIXES"] = "tc-treeherder"
        settings = load_settings(env=env)
        assert settings.root_urls == (fxci.root_url, community.root_url)
        await ensure_topics(settings)
        ids = {name: [slugid.nice() for _ in range(2)] for name in vhosts}
        for name, standin in queues.items():  # each Queue API knows only its own deployment's tasks
            for task_id in ids[name]:
                standin.add_task(task_id, make_task(routes=[ROUTE], treeherder=make_config()))
                standin.add_artifacts(task_id, 0, make_artifacts("public/logs/live_backing.log"))
        try:
            for name, vhost in vhosts.items():
                await make_vhost(call, vhost)
                processes("source", env, args=["--deployment", name])
            for name in vhosts:
                await wait_for_consumers(settings.for_deployment(name))
            processes("worker", env)
            for name in vhosts:
                own = settings.for_deployment(name)
                assert own.pulse_queue("task-events").endswith(f"/tc-treeherder/{name}/task-events")
                await publish(own, [(kind, primary_key(task_id), orjson.dumps(make_event(kind, task_id=task_id)),
                                     [f"route.{ROUTE}"]) for task_id in ids[name] for kind in ("pending", "completed")])

            envelopes = await read_topic(settings, "task-events", 8)
            root_of = {task_id: queues[name].root_url for name in vhosts for task_id in ids[name]}
            assert {(e["payload"]["status"]["taskId"], e["rootUrl"]) for e in envelopes} == set(root_of.items())
            jobs = await read_topic(settings, "jobs", 8)
            assert len(jobs) == 8
            for record in jobs:
                task_id = slugid.encode(uuid.UUID(record["job"]["taskId"].split("/")[0]))
                for log in record["job"].get("logs", []):  # built at the task's own Queue API
                    assert log["url"].startswith(root_of[task_id]), (log, root_of[task_id])
            for name, standin in queues.items():
                assert standin.stats["requests"]["task"] == 2, name  # its own two tasks, nothing else

            # explain finds a community task at the community Queue API, without being told where
            code, out, err = await cli(env, "explain", ids["community"][0], "--json")
            assert code == 0, err
            assert orjson.loads(out)["reachesTreeherder"] is True
            code, out, err = await cli(env, "source")
            assert code == 2 and "--deployment firefox-ci or community" in err
        finally:
            for vhost in vhosts.values():
                await delete_vhost(call, vhost)
