"""Destinations end to end: one worker, one sink, production and staging on two RabbitMQ vhosts.

The worker and the sink run as the real ``tc-treeherder worker`` and ``tc-treeherder sink`` processes; the
Queue API is the local stand-in. Each destination's broker is a vhost of the test RabbitMQ, reached by a
user of this test's own, so an outage is real: the vhost is deleted (its connections drop, its queues go)
and created again later.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
import orjson
import pytest
import slugid

from devtools.factories import REVISION, make_artifacts, make_config, make_envelope, make_event, make_task
from devtools.queue_standin import QueueStandIn
from devtools.stack.shared import Brokers
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import ensure_topics
from tests.integration.test_worker import produce, read_topic

pytestmark = pytest.mark.integration

KINDS = ("pending", "running", "completed")
REPO = Path(__file__).resolve().parents[2]


def task_ids(count: int) -> list[str]:
    """Fresh taskIds, as Taskcluster makes them."""
    return [slugid.nice() for _ in range(count)]


def route(prefix: str, project: str = "autoland", push: int = 4711) -> str:
    return f"{prefix}.v2.{project}.{REVISION}.{push}"


def add_tasks(standin: QueueStandIn, ids: list[str], prefix: str, **config: Any) -> None:
    for task_id in ids:
        standin.add_task(task_id, make_task(routes=[route(prefix)], treeherder=make_config(**config)))
        standin.add_artifacts(task_id, 0, make_artifacts("public/logs/live_backing.log", "public/a.txt"))


def lifecycles(ids: list[str], root_url: str) -> list[tuple[str, dict[str, Any]]]:
    return [(task_id, make_envelope(make_event(kind, task_id=task_id), root_url=root_url))
            for task_id in ids for kind in KINDS]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- RabbitMQ: vhosts, users, queues --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def management(brokers: Brokers) -> AsyncIterator[Callable[..., Any]]:
    token = base64.b64encode(b"guest:guest").decode()
    async with aiohttp.ClientSession(base_url=brokers.management_url,
                                     headers={"Authorization": f"Basic {token}"}) as http:
        async def call(method: str, path: str, body: object = None) -> None:
            async with http.request(method, path, json=body) as response:
                assert response.status < 300 or (method == "DELETE" and response.status == 404), (
                    f"{method} {path}: {response.status} {await response.text()}")
        yield call


async def grant(call: Callable[..., Any], vhost: str, user: str) -> None:
    await call("PUT", f"/api/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
               {"configure": ".*", "write": ".*", "read": ".*"})


async def make_vhost(call: Callable[..., Any], vhost: str) -> None:
    await call("PUT", f"/api/vhosts/{quote(vhost, safe='')}")
    await grant(call, vhost, "guest")


async def delete_vhost(call: Callable[..., Any], vhost: str) -> None:
    await call("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")


def amqp_url(brokers: Brokers, vhost: str, user: str = "guest", password: str = "guest") -> str:
    base = brokers.pulse_url.split("@", 1)[1].split("/", 1)[0]
    return f"amqp://{user}:{password}@{base}/{quote(vhost, safe='')}"


async def bind_queue(url: str, exchange: str, queue: str, binding: str = "#") -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        declared = await channel.declare_queue(queue, durable=True)
        await declared.bind(exchange, routing_key=binding)


async def drain(url: str, queue: str, count: int, within: float = 90.0, settle: float = 2.0
                ) -> list[tuple[str, dict[str, Any]]]:
    """(routing key, body) of every message of ``queue`` once ``count`` came and ``settle`` s passed quietly."""
    got: list[tuple[str, dict[str, Any]]] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        deadline = time.monotonic() + within
        quiet_since = None
        while time.monotonic() < deadline:
            incoming = await declared.get(no_ack=True, fail=False)
            if incoming is not None:
                got.append((incoming.routing_key or "", orjson.loads(incoming.body)))
                quiet_since = None
                continue
            if len(got) >= count:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    break
            await asyncio.sleep(0.1)
    return got


def job_keys(messages: list[tuple[str, dict[str, Any]]]) -> Counter[tuple[str, str]]:
    return Counter((body["taskId"], body["state"]) for _, body in messages)


def expected_keys(ids: list[str]) -> Counter[tuple[str, str]]:
    from streams.core.pulse_job import task_uuid

    return Counter((f"{task_uuid(task_id)}/0", state) for task_id in ids for state in KINDS)


# --- Processes --------------------------------------------------------------------------------------------


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``start(command, env)``: a ``tc-treeherder <command>`` process, stopped (SIGTERM) at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(command: str, env: dict[str, str], *, pythonpath: Path | None = None,
              args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{command}-{len(started)}.log", "wb")  # noqa: SIM115 - closed with the process
        if pythonpath is not None:
            env = {**env, "PYTHONPATH": os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])}
        process = subprocess.Popen([sys.executable, "-m", "tc_treeherder.cli", command, *args], env=env,
                                   cwd=pythonpath or REPO, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def cli(env: dict[str, str], *args: str, within: float = 120.0) -> tuple[int, str, str]:
    """Run ``tc-treeherder <args>`` without blocking the loop (the Queue stand-in lives in it)."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "tc_treeherder.cli", *args, env=env,
                                                   cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), within)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def standin() -> AsyncIterator[QueueStandIn]:
    async with QueueStandIn(page_size=10) as server:
        yield server


# --- Tests ------------------------------------------------------------------------------------------------


async def test_two_destinations_on_two_vhosts_each_in_its_profile_and_one_outage_delays_only_itself(
        brokers: Brokers, namespace: str, test_env: dict[str, str], standin: QueueStandIn,
        processes: Callable[..., subprocess.Popen[bytes]]) -> None:
    production_vhost, staging_vhost = f"{namespace}-production", f"{namespace}-staging"
    sink_user, password = f"{namespace}-sink", secrets.token_hex(8)
    env = {
        **test_env,
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PULSE_URL": amqp_url(brokers, production_vhost, sink_user,
                                                                      password),
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PULSE_URL": amqp_url(brokers, staging_vhost, sink_user,
                                                                              password),
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PROFILE": "legacy",
    }
    settings = load_settings(env=env)
    production, staging = settings.destination_for("tc-treeherder"), settings.destination_for(
        "tc-treeherder-staging")
    queue = f"queue/guest/{namespace}/jobs"
    await ensure_topics(settings)
    first_production, first_staging, later_production, later_staging = (task_ids(2) for _ in range(4))
    add_tasks(standin, first_production + later_production, "tc-treeherder")
    add_tasks(standin, first_staging + later_staging, "tc-treeherder-staging")

    async with management(brokers) as call:
        await call("PUT", f"/api/users/{quote(sink_user, safe='')}", {"password": password, "tags": ""})
        try:
            for vhost in (production_vhost, staging_vhost):
                await make_vhost(call, vhost)
                await grant(call, vhost, sink_user)
            await bind_queue(amqp_url(brokers, production_vhost), production.exchange, queue)
            await bind_queue(amqp_url(brokers, staging_vhost), staging.exchange, queue)

            processes("worker", env)
            processes("sink", env)
            await produce(settings, lifecycles(first_production + first_staging, standin.root_url))
            to_production = await drain(amqp_url(brokers, production_vhost), queue, 6)
            to_staging = await drain(amqp_url(brokers, staging_vhost), queue, 6)

            assert job_keys(to_production) == expected_keys(first_production)
            assert job_keys(to_staging) == expected_keys(first_staging)
            assert {key for key, _ in to_production} == {"tc-treeherder.autoland._"}
            assert {key for key, _ in to_staging} == {"tc-treeherder-staging.autoland._"}
            assert all("kind" not in body["origin"] for _, body in to_production)  # treeherder profile
            assert all(body["origin"] == {"kind": "hg.mozilla.org", "project": "autoland", "revision": REVISION,
                                          "pushLogID": 4711} for _, body in to_staging)  # legacy profile
            assert {log["name"] for _, body in to_staging for log in body.get("logs", [])} == {"builds-4h"}

            # Staging's broker goes away: production goes on delivering meanwhile.
            await delete_vhost(call, staging_vhost)
            await produce(settings, lifecycles(later_production + later_staging, standin.root_url))
            during_outage = await drain(amqp_url(brokers, production_vhost), queue, 6)
            assert job_keys(during_outage) == expected_keys(later_production)

            # Staging returns (its queue first, then the sink's access): it catches up and loses nothing.
            await make_vhost(call, staging_vhost)
            await bind_queue(amqp_url(brokers, staging_vhost), staging.exchange, queue)
            await grant(call, staging_vhost, sink_user)
            after_outage = await drain(amqp_url(brokers, staging_vhost), queue, 6, within=120)
            assert set(job_keys(after_outage)) == set(expected_keys(later_staging))
        finally:
            for vhost in (production_vhost, staging_vhost):
                await delete_vhost(call, vhost)
            await call("DELETE", f"/api/users/{quote(sink_user, safe='')}")


async def test_a_disabled_destination_gets_nothing_and_its_events_are_ignored_with_the_reason(
        namespace: str, test_env: dict[str, str], standin: QueueStandIn,
        processes: Callable[..., subprocess.Popen[bytes]]) -> None:
    """Disabled means: the worker still claims the prefix's tasks, emits no job for them, and records each
    event as ignored with the reason, so enabling it later and replaying those records sends them."""
    env = {**test_env, "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_ENABLED": "false"}
    settings: Settings = load_settings(env=env)
    await ensure_topics(settings)
    production_ids, staging_ids = task_ids(1), task_ids(1)
    add_tasks(standin, production_ids, "tc-treeherder")
    add_tasks(standin, staging_ids, "tc-treeherder-staging")
    processes("worker", env)
    await produce(settings, lifecycles(production_ids + staging_ids, standin.root_url))

    jobs = await read_topic(settings, "jobs", 3)
    ignored = await read_topic(settings, "rejected", 3)
    assert {record["destination"] for record in jobs} == {"tc-treeherder"}
    assert [(r["kind"], r["stage"], r["reason"]) for r in ignored] == [
        ("ignored", "route", "destination 'tc-treeherder-staging' is disabled")] * 3

    enabled = {**test_env, "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_ENABLED": "true"}
    code, out, err = await cli(enabled, "replay", "--from-offsets", "0", "--rejected-only", "--include-ignored",
                               "--no-queue")
    assert code == 0, err
    assert "tc-treeherder-staging: 3" in out
    replayed = [r for r in await read_topic(settings, "jobs", 6) if "replay" in r]
    assert sorted(r["job"]["state"] for r in replayed) == ["completed", "pending", "running"]
    assert {r["destination"] for r in replayed} == {"tc-treeherder-staging"}
