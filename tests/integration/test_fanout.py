"""Fan-out end to end: production, stage and a developer's Treeherder on three RabbitMQ vhosts, fed by one
stream, as in docs/configuration.md's example. The worker and the sink are the real processes; the Queue API
is the local stand-in."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.factories import REVISION, make_artifacts, make_config, make_task
from devtools.queue_standin import QueueStandIn
from devtools.stack.shared import Brokers
from streams.shared.settings import load_settings
from streams.shared.topics import ensure_topics
from tests.integration.test_destinations import (
    amqp_url,
    bind_queue,
    cli,
    delete_vhost,
    drain,
    expected_keys,
    job_keys,
    lifecycles,
    make_vhost,
    management,
    processes,  # noqa: F401 - a fixture
    standin,  # noqa: F401 - a fixture
    task_ids,
)
from tests.integration.test_status_page import free_port, wait_for_status
from tests.integration.test_worker import produce, read_topic

pytestmark = pytest.mark.integration

CONFIG = """
[destinations.production]
route_prefixes = ["tc-treeherder"]
[destinations.stage]
route_prefixes = ["tc-treeherder", "tc-treeherder-staging"]
profile = "legacy"
[destinations.dev]
route_prefixes = ["tc-treeherder"]
projects = ["autoland", "try"]
"""


def add(queue_api: QueueStandIn, ids: list[str], prefix: str, project: str) -> None:
    for task_id in ids:
        queue_api.add_task(task_id, make_task(routes=[f"{prefix}.v2.{project}.{REVISION}.7"],
                                              treeherder=make_config()))
        queue_api.add_artifacts(task_id, 0, make_artifacts("public/logs/live_backing.log"))


async def test_three_treeherders_each_get_what_they_take_from_one_stream(
        brokers: Brokers, namespace: str, test_env: dict[str, str], standin: QueueStandIn,  # noqa: F811
        processes: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "tc-treeherder.toml"
    config.write_text(CONFIG)
    vhosts = {name: f"{namespace}-{name}" for name in ("production", "stage", "dev")}
    port = free_port()
    env = {**test_env, "TC_TREEHERDER_CONFIG": str(config), "TC_TREEHERDER_WEB_PORT": str(port),
           **{f"TC_TREEHERDER_DESTINATION_{name.upper()}_PULSE_URL": amqp_url(brokers, vhost)
              for name, vhost in vhosts.items()}}
    settings = load_settings(env=env)
    assert [d.name for d in settings.destinations] == ["production", "stage", "dev"]
    await ensure_topics(settings)
    autoland, beta, staging = task_ids(2), task_ids(1), task_ids(1)
    add(standin, autoland, "tc-treeherder", "autoland")
    add(standin, beta, "tc-treeherder", "mozilla-beta")
    add(standin, staging, "tc-treeherder-staging", "autoland")
    queue = f"queue/guest/{namespace}/jobs"

    async with management(brokers) as call:
        try:
            for name, vhost in vhosts.items():
                await make_vhost(call, vhost)
                await bind_queue(amqp_url(brokers, vhost), settings.destination_named(name).exchange, queue)
            processes("worker", env)
            processes("sink", env)
            await produce(settings, lifecycles(autoland + beta + staging, standin.root_url))

            got = {name: await drain(amqp_url(brokers, vhost), queue, 3 * {"production": 3, "stage": 4,
                                                                           "dev": 2}[name])
                   for name, vhost in vhosts.items()}
            assert job_keys(got["production"]) == expected_keys(autoland + beta)
            assert job_keys(got["stage"]) == expected_keys(autoland + beta + staging)
            assert job_keys(got["dev"]) == expected_keys(autoland)  # mozilla-beta is not among its projects
            assert {key for key, _ in got["dev"]} == {"dev.autoland._"}
            assert {key for key, _ in got["stage"]} == {"stage.autoland._", "stage.mozilla-beta._"}
            assert all(body["origin"]["kind"] == "hg.mozilla.org" for _, body in got["stage"])  # its profile
            assert all("kind" not in body["origin"] for _, body in got["production"] + got["dev"])

            ignored = await read_topic(settings, "rejected", 3)
            assert [(r["kind"], r["destination"], r["reason"]) for r in ignored] == [
                ("ignored", "dev", "project 'mozilla-beta' is not taken by destination 'dev'")] * 3

            # the worker's status page counts the destination's reason beside the jobs of the others
            status = await wait_for_status(f"http://127.0.0.1:{port}",
                                           lambda s: s.get("counts", {}).get("events") == 12)
            assert status["counts"]["jobs"] == {"production": 9, "stage": 12, "dev": 6}
            assert status["counts"]["ignored"] == {"project 'mozilla-beta' is not taken by destination 'dev'": 3}
            assert {r["destination"] for r in status["recentRejections"]} == {"dev"}

            # replay --to honours the target's filters: production's events, as dev would take them
            code, out, err = await cli(env, "replay", "--from-offsets", "0", "--destination", "production",
                                       "--to", "dev", "--dry-run", "--no-queue")
            assert code == 0, err
            assert "dev: 6" in out and "project 'mozilla-beta' is not taken by destination 'dev'" in out
            code, out, err = await cli(env, "replay", "--from-offsets", "0", "--destination", "production",
                                       "--to", "dev", "--ignore-filters", "--dry-run", "--no-queue")
            assert code == 0, err
            assert "dev: 9" in out
        finally:
            for vhost in vhosts.values():
                await delete_vhost(call, vhost)
