"""The whole chain into a real Treeherder: task events in, jobs in Treeherder's database and REST API out.

Source, worker and sink run as the real ``tc-treeherder`` processes, the jobs ingester
(integrations/treeherder/) as a process of Treeherder's own Python, and Treeherder's API (``runserver``) over
a Postgres database made fresh for the session. What Treeherder lists is checked against the simulator's
oracle and the task definitions (state, result, platform, symbol, tier), and the reference corpus against the
jobs Treeherder itself stored for it (``taskcluster_transformed_jobs.json``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import slugid

from devtools.harness import InProcessRegistrar, LocalPipeline, wait_for_consumer
from devtools.publisher import PulsePublisher, publish_workload
from devtools.queue_standin import QueueStandIn
from devtools.stack.process import file_lock, is_alive, stop_pid
from devtools.stack.shared import Brokers, other_live_leases, take_lease
from devtools.treeherder import TreeherderError
from devtools.treeherder import local as th
from devtools.workload import WorkloadOptions, iter_groups
from streams.shared.settings import Settings, load_settings
from streams.shared.topics import ensure_topics

pytestmark = pytest.mark.integration

API_PORT = 18000  # not 8000: a local Treeherder of `tc-treeherder treeherder up` keeps running beside the tests
CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "treeherder-corpus"
BUILD_RESULTS = {"success": "success", "fail": "busted", "exception": "exception", "canceled": "usercancel",
                 "superseded": "superseded", "unknown": "unknown"}
TEST_RESULTS = {**BUILD_RESULTS, "fail": "testfailed"}


# The local Treeherder, once per session.


@pytest.fixture(scope="session")
def treeherder(brokers: Brokers) -> Iterator[tuple[th.Instance, th.Ready]]:
    """Treeherder's API on 127.0.0.1:18000 over a fresh database; shared with concurrent test sessions.

    The first session to come makes the database fresh and starts the API; the last to leave stops the API.
    A Treeherder that cannot start fails the tests that need it, with the reason (never a silent skip).
    """
    del brokers  # started first: a session that cannot have brokers does not start Treeherder either
    instance = th.Instance(state=load_settings(env={}).state_dir / "test-treeherder", database="tc_treeherder_test",
                           api_port=API_PORT, redis_db=1)
    leases = instance.state / "leases"
    try:
        with file_lock(instance.state / "leases.lock"):
            lease = take_lease(leases, os.getpid())
            first = not other_live_leases(leases, lease)
            if first:
                th.stop_api(instance)
            ready = th.prepare(instance, fresh=first)
            if first:
                th.clear_cache(instance)
            th.start_api(ready, instance)
    except TreeherderError as error:
        pytest.fail(f"the local Treeherder could not be started: {error}", pytrace=False)
    try:
        yield instance, ready
    finally:
        with file_lock(instance.state / "leases.lock"):
            lease.unlink(missing_ok=True)
            if not other_live_leases(leases, lease):
                th.stop_api(instance)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Chain:
    """One test's bridge (source, worker, sink), its ingester(s), the Queue stand-in, and Treeherder."""

    def __init__(self, settings: Settings, standin: QueueStandIn, pipeline: LocalPipeline, instance: th.Instance,
                 ready: th.Ready) -> None:
        self.settings = settings
        self.standin = standin
        self.pipeline = pipeline
        self.instance = instance
        self.ready = ready
        self.ingesters: dict[int, th.IngesterSpec] = {}

    def start_ingester(self, **options: Any) -> tuple[int, th.IngesterSpec]:
        destination = self.settings.destination_for("tc-treeherder")
        spec = th.IngesterSpec.for_destination(self.settings, destination, free_port(), **options)
        pid, _ = th.start_ingester(self.ready, self.instance, spec)
        self.ingesters[pid] = spec
        return pid, spec

    def status(self, spec: th.IngesterSpec) -> dict[str, Any]:
        status = th.ingester_status(spec)
        assert status is not None, f"the ingester stopped answering:\n{self.ingester_log(spec)}"
        return status

    def ingester_log(self, spec: th.IngesterSpec, lines: int = 40) -> str:
        path = self.instance.ingester_pid_file(spec.name).with_suffix(".log")
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def register(self, pushes: list[tuple[str, str]]) -> dict[tuple[str, str], int | None]:
        return {(p["project"], p["revision"]): p["push_id"] for p in th.register_pushes(self.ready, pushes)}

    async def publish(self, groups: list[Any]) -> None:
        async with PulsePublisher(self.settings.pulse_url, self.settings.task_exchange) as publisher:
            await publish_workload(groups, publisher, InProcessRegistrar(self.standin))  # type: ignore[arg-type]

    async def wait_for(self, check: Callable[[], bool], what: str, limit: float) -> None:
        deadline = time.monotonic() + limit
        while not await asyncio.to_thread(check):
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {limit:.0f}s for {what}; pipeline exits {self.pipeline.exited()}, "
                                     f"ingester log:\n{self.ingester_log(next(iter(self.ingesters.values())))}")
            await asyncio.sleep(0.3)

    def ingester_command(self, spec: th.IngesterSpec, action: str) -> list[str]:
        """``python -m tc_jobs_ingester parked|redrive`` for ``spec``'s queues, as an operator runs it."""
        return th.ingester_command(self.ready, spec, action)

    def stop(self) -> None:
        for pid, spec in self.ingesters.items():
            if is_alive(pid):
                stop_pid(pid, 30)
            pid_file = self.instance.ingester_pid_file(spec.name)
            pid_file.unlink(missing_ok=True)
            pid_file.with_suffix(".log").unlink(missing_ok=True)


@pytest.fixture
async def chain(test_env: dict[str, str], tmp_path: Path, treeherder: tuple[th.Instance, th.Ready],
                ) -> AsyncIterator[Chain]:
    instance, ready = treeherder
    async with QueueStandIn() as standin:
        env = {**test_env, "TASKCLUSTER_ROOT_URL": standin.root_url}
        settings = load_settings(env=env)
        await ensure_topics(settings)
        pipeline = LocalPipeline(env, tmp_path / "logs")
        pipeline.start()
        chain = Chain(settings, standin, pipeline, instance, ready)
        try:
            assert await wait_for_consumer(settings.pulse_url, settings.pulse_queue("task-events")), \
                pipeline.log_tail("source")
            yield chain
        finally:
            chain.stop()
            pipeline.stop()
            await delete_queues(settings.pulse_url, [q for spec in chain.ingesters.values() for q in spec.queues()])


async def delete_queues(url: str, queues: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        for name in set(queues):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(name)


# The oracle: what Treeherder should list for each run, from the simulator and the task definitions alone.


def active_repositories(instance: th.Instance) -> set[str]:
    return {repo["name"] for repo in th.api_get(instance, "/api/repository/") if repo["active_status"] == "active"}


def expected_jobs(groups: list[Any], active: set[str]) -> dict[str, dict[str, Any]]:
    """job_guid -> the fields Treeherder lists, for every run the production destination stores."""
    wanted = {}
    for group in groups:
        for task in group.tasks:
            config = task.definition.get("extra", {}).get("treeherder", {})
            for run in task.expected:
                if not (run.delivered and run.outcome == "jobs" and run.destination == "tc-treeherder"
                        and run.project in active):
                    continue
                results = TEST_RESULTS if config.get("jobKind") == "test" else BUILD_RESULTS
                result = "retry" if run.is_retried and run.state == "completed" else results[run.result or "unknown"]
                machine = config.get("machine", {})
                wanted[f"{slugid.decode(run.task_id)}/{run.run_id}"] = {
                    "project": run.project, "state": run.state, "result": result,
                    "platform": machine.get("platform") or task.definition["workerType"],
                    "job_type_symbol": str(config["symbol"]), "tier": config.get("tier", 1)}
    return wanted


def listed(instance: th.Instance, push_ids: dict[tuple[str, str], int | None]) -> dict[str, dict[str, Any]]:
    found = {}
    for (project, _), push_id in push_ids.items():
        if push_id is not None:
            for job in th.jobs(instance, project, push_id=push_id):
                found[job["job_guid"]] = {**job, "project": project}
    return found


FIELDS = ("project", "state", "result", "platform", "job_type_symbol", "tier")


def differences(wanted: dict[str, dict[str, Any]], found: dict[str, dict[str, Any]]) -> list[str]:
    problems = [f"{guid}: not listed (want {want})" for guid, want in wanted.items() if guid not in found]
    for guid, want in wanted.items():
        if guid in found:
            got = {key: found[guid].get(key) for key in FIELDS}
            if got != want:
                problems.append(f"{guid}: listed {got}, want {want}")
    problems += [f"{guid}: listed but not expected" for guid in found if guid not in wanted]
    return problems


async def wait_listed(chain: Chain, wanted: dict[str, dict[str, Any]], push_ids: dict[tuple[str, str], int | None],
                      limit: float, idle: float = 30.0) -> list[str]:
    """Poll Treeherder's API until it lists exactly ``wanted``; the differences left when time runs out."""
    deadline = time.monotonic() + limit
    last_change, last = time.monotonic(), None
    while True:
        found = await asyncio.to_thread(listed, chain.instance, push_ids)
        problems = differences(wanted, found)
        if not problems or time.monotonic() > deadline or time.monotonic() - last_change > idle:
            return problems
        if problems != last:
            last_change, last = time.monotonic(), problems
        await asyncio.sleep(0.5)


def workload(settings: Settings, root_url: str, **options: Any) -> list[Any]:
    return list(iter_groups(WorkloadOptions(root_url=root_url, task_exchange=settings.task_exchange, **options)))


# The tests.


async def test_simulated_tasks_are_stored_and_listed_by_treeherder(chain: Chain) -> None:
    """Every job with the right fields; retries their own jobs; a late push still gets its jobs; an inactive
    repository's jobs are refused with the reason, not retried."""
    _, spec = chain.start_ingester(delays="0.5,1,2", park_after=120)
    groups = workload(chain.settings, chain.standin.root_url, tasks=36, seed=15, max_group_size=10)
    active = active_repositories(chain.instance)
    wanted = expected_jobs(groups, active)
    runs = [run for g in groups for t in g.tasks for run in t.expected if run.destination == "tc-treeherder"]
    inactive = [run for run in runs if run.outcome == "jobs" and run.delivered and run.project not in active]
    retried = [guid for guid in wanted if not guid.endswith("/0")]
    assert inactive and retried and len({w["project"] for w in wanted.values()}) >= 3, "seed 15 mixes all cases"

    pushes = sorted({(g.project.rpartition("/")[2], g.revision) for g in groups})
    late = next(push for push in pushes if any(w["project"] == push[0] for w in wanted.values()))
    push_ids = chain.register([push for push in pushes if push != late])
    await chain.publish(groups)
    await chain.wait_for(lambda: chain.status(spec)["retried"] > 0, "a job waiting for the late push", 60)
    push_ids |= chain.register([late])

    problems = await wait_listed(chain, wanted, push_ids, limit=120)
    assert not problems, "\n".join(problems[:20]) + f"\ningester log:\n{chain.ingester_log(spec)}"
    status = chain.status(spec)
    refused = sum(run.jobs for run in inactive)
    assert status["refused_by_reason"] == {"inactive repository": refused}, status["refused_by_reason"]
    assert all("is not active" in r["reason"] for r in status["recent_refusals"])
    assert status["parked"] == 0 and status["failed"] == 0, status["recent_parked"]
    assert status["in_flight"] == 0
    # The root URL travelled from the worker's record through the sink's header: every stored job names it.
    assert status["stored_by_root_url"] == {chain.standin.root_url: status["stored"]}


async def test_a_crashed_ingester_loses_no_job(chain: Chain) -> None:
    pid, spec = chain.start_ingester(delays="0.5,1", park_after=120)
    groups = workload(chain.settings, chain.standin.root_url, tasks=25, seed=8, max_group_size=12)
    wanted = expected_jobs(groups, active_repositories(chain.instance))
    push_ids = chain.register(sorted({(g.project.rpartition("/")[2], g.revision) for g in groups}))
    await chain.publish(groups)
    def mid_stream() -> bool:
        status = chain.status(spec)
        return status["stored"] >= 10 and status["in_flight"] > 0

    await chain.wait_for(mid_stream, "jobs stored and others in flight", 60)
    os.kill(pid, signal.SIGKILL)
    assert await asyncio.to_thread(lambda: stop_pid(pid, 5) or True)
    _, spec = chain.start_ingester(delays="0.5,1", park_after=120)

    problems = await wait_listed(chain, wanted, push_ids, limit=120)
    assert not problems, "\n".join(problems[:20]) + f"\ningester log:\n{chain.ingester_log(spec)}"
    assert chain.status(spec)["redelivered"] > 0, "the killed ingester's unacknowledged messages came back"


async def test_a_job_whose_push_does_not_come_is_parked_then_redriven(chain: Chain) -> None:
    _, spec = chain.start_ingester(delays="0.5,1", park_after=3)
    groups = workload(chain.settings, chain.standin.root_url, tasks=6, seed=3, max_group_size=6,
                      staging_fraction=0.0, github_fraction=0.0)
    wanted = expected_jobs(groups, active_repositories(chain.instance))
    assert wanted
    messages = sum(run.jobs for g in groups for t in g.tasks for run in t.expected
                   if f"{slugid.decode(run.task_id)}/{run.run_id}" in wanted)
    await chain.publish(groups)
    await chain.wait_for(lambda: chain.status(spec)["parked"] >= messages, "every message parked", 60)
    status = chain.status(spec)
    assert status["stored"] == 0 and status["retried"] >= messages
    assert all("no push for revision" in p["reason"] for p in status["recent_parked"])

    parked = chain.ingester_command(spec, "parked")
    assert len(parked) == messages and all(json.loads(line)["reason"].startswith("no push") for line in parked)
    push_ids = chain.register(sorted({(g.project.rpartition("/")[2], g.revision) for g in groups}))
    assert chain.ingester_command(spec, "redrive") == [f"re-drove {messages} parked message(s)"]
    problems = await wait_listed(chain, wanted, push_ids, limit=60)
    assert not problems, "\n".join(problems[:20]) + f"\ningester log:\n{chain.ingester_log(spec)}"


async def test_messages_treeherder_refuses_are_counted_with_their_reason_and_never_block(
        brokers: Brokers, namespace: str, treeherder: tuple[th.Instance, th.Ready]) -> None:
    """Straight onto a jobs exchange: not JSON, invalid, an unknown repository; then a valid job behind them."""
    instance, ready = treeherder
    exchange = f"exchange/guest/{namespace}/v1/jobs"
    spec = th.IngesterSpec(pulse_url=brokers.pulse_url, exchange=exchange, name=f"{namespace}/refusals",
                           bindings=("#",), metrics_port=free_port(), default_root_url="https://tc.example.com")
    pid, _ = th.start_ingester(ready, instance, spec)
    try:
        valid = {"taskId": "5e1c2a0e-0000-4000-8000-000000000001/0", "retryId": 0, "isRetried": False,
                 "buildSystem": "taskcluster", "owner": "dev@example.com", "state": "pending", "result": "unknown",
                 "tier": 1, "jobKind": "build", "reason": "scheduled", "timeScheduled": "2026-11-29T06:00:00Z",
                 "display": {"jobSymbol": "B", "groupSymbol": "?", "jobName": "build-linux64/opt"},
                 "origin": {"project": "try", "revision": "f" * 40},
                 "buildMachine": {"name": "unknown", "platform": "linux64", "os": "-", "architecture": "-"},
                 "labels": ["opt"], "jobInfo": {"links": [], "summary": ""}, "version": 1}
        (push,) = th.register_pushes(ready, [("try", "f" * 40)])
        bodies = [b"{not json", json.dumps({**valid, "state": "sleeping"}).encode(),
                  json.dumps({**valid, "origin": {**valid["origin"], "project": "no-such-project"}}).encode(),
                  json.dumps(valid).encode()]
        connection = await aio_pika.connect(brokers.pulse_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            for body in bodies:  # no taskcluster-root-url header: the default root URL is used
                await target.publish(aio_pika.Message(body, content_type="application/json"), routing_key="x.try._")

        def settled() -> bool:
            status = th.ingester_status(spec) or {}
            return status.get("stored", 0) + status.get("refused", 0) >= len(bodies)

        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(settled):
            assert time.monotonic() < deadline, th.ingester_status(spec)
            await asyncio.sleep(0.2)
        status = th.ingester_status(spec) or {}
        assert status["refused_by_reason"] == {"not JSON": 1, "invalid against pulse-job": 1, "unknown repository": 1}
        reasons = sorted(r["reason"] for r in status["recent_refusals"])
        assert any("state" in reason for reason in reasons if reason.startswith("invalid")), reasons
        assert status["stored"] == 1 and status["parked"] == 0 and status["retried"] == 0
        jobs = th.jobs(instance, "try", push_id=push["push_id"])
        assert [job["job_guid"] for job in jobs] == [valid["taskId"]]
        metrics = await asyncio.to_thread(read_text, f"http://127.0.0.1:{spec.metrics_port}/metrics")
        assert 'tc_ingest_refused_total{reason="not JSON"} 1' in metrics
        assert "tc_ingest_stored_total 1" in metrics
        assert 'tc_ingest_stored_by_deployment_total{root_url="https://tc.example.com"} 1' in metrics
    finally:
        stop_pid(pid, 30)
        instance.ingester_pid_file(spec.name).unlink(missing_ok=True)
        instance.ingester_pid_file(spec.name).with_suffix(".log").unlink(missing_ok=True)
        await delete_queues(brokers.pulse_url, spec.queues())


async def test_a_lost_connection_is_reestablished_and_loses_nothing(
        brokers: Brokers, namespace: str, treeherder: tuple[th.Instance, th.Ready]) -> None:
    """RabbitMQ closes the ingester's connection mid-stream (as a broker restart or a network cut would)."""
    instance, ready = treeherder
    exchange = f"exchange/guest/{namespace}/v1/jobs"
    spec = th.IngesterSpec(pulse_url=brokers.pulse_url, exchange=exchange, name=f"{namespace}/reconnect",
                           bindings=("#",), metrics_port=free_port(), concurrency=2)
    pid, _ = th.start_ingester(ready, instance, spec)
    try:
        revision = f"{secrets.token_hex(20)}"
        (push,) = th.register_pushes(ready, [("try", revision)])
        jobs = [minimal_job(f"{uuid.uuid4()}/0", revision) for _ in range(30)]
        await publish_jobs(brokers.pulse_url, exchange, jobs[:15])
        await wait_status(spec, lambda status: status.get("stored", 0) >= 5, "some jobs stored", 60)
        deadline = time.monotonic() + 30  # the management API lists a new connection within its stats interval
        while not await asyncio.to_thread(close_connections, brokers.management_url, f"tc_jobs_ingester {spec.name}"):
            assert time.monotonic() < deadline, "the ingester's connection never showed in RabbitMQ's list"
            await asyncio.sleep(0.5)
        await publish_jobs(brokers.pulse_url, exchange, jobs[15:])
        await wait_status(spec, lambda status: status.get("stored", 0) >= len(jobs), "every job stored", 90)
        listed = {job["job_guid"] for job in th.jobs(instance, "try", push_id=push["push_id"])}
        assert listed == {job["taskId"] for job in jobs}
        log = instance.ingester_pid_file(spec.name).with_suffix(".log").read_text()
        assert "connection lost" in log and log.count("consuming queue/") == 2, log[-3000:]
    finally:
        stop_pid(pid, 30)
        instance.ingester_pid_file(spec.name).unlink(missing_ok=True)
        instance.ingester_pid_file(spec.name).with_suffix(".log").unlink(missing_ok=True)
        await delete_queues(brokers.pulse_url, spec.queues())


def minimal_job(task_id: str, revision: str) -> dict[str, Any]:
    """A job message valid against Treeherder's pulse-job schema, for the project try."""
    return {"taskId": task_id, "retryId": 0, "isRetried": False, "buildSystem": "taskcluster",
            "owner": "dev@example.com", "state": "completed", "result": "success", "tier": 1, "jobKind": "build",
            "reason": "scheduled", "timeScheduled": "2026-11-29T06:00:00Z", "timeStarted": "2026-11-29T06:01:00Z",
            "timeCompleted": "2026-11-29T06:09:00Z",
            "display": {"jobSymbol": "B", "groupSymbol": "?", "jobName": "build-linux64/opt"},
            "origin": {"project": "try", "revision": revision},
            "buildMachine": {"name": "i-0123", "platform": "linux64", "os": "linux", "architecture": "x86_64"},
            "labels": ["opt"], "jobInfo": {"links": [], "summary": ""}, "logs": [], "version": 1}


async def publish_jobs(url: str, exchange: str, jobs: list[dict[str, Any]]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for job in jobs:
            await target.publish(aio_pika.Message(json.dumps(job).encode(), content_type="application/json",
                                                  headers={"taskcluster-root-url": "https://tc.example.com"}),
                                 routing_key="tc-treeherder.try._")


async def wait_status(spec: th.IngesterSpec, check: Callable[[dict[str, Any]], bool], what: str,
                      limit: float) -> None:
    deadline = time.monotonic() + limit
    while not check(await asyncio.to_thread(th.ingester_status, spec) or {}):
        assert time.monotonic() < deadline, f"waited {limit:.0f}s for {what}: {th.ingester_status(spec)}"
        await asyncio.sleep(0.2)


def close_connections(management_url: str, name: str) -> int:
    """Close, through RabbitMQ's management API, every connection named ``name``; how many there were."""
    token = base64.b64encode(b"guest:guest").decode()

    def call(method: str, path: str) -> Any:
        request = urllib.request.Request(management_url.rstrip("/") + path, method=method,
                                         headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return json.loads(body) if body else None

    named = [connection for connection in call("GET", "/api/connections")
             if connection.get("client_properties", {}).get("connection_name") == name]
    for connection in named:
        call("DELETE", f"/api/connections/{urllib.parse.quote(connection['name'], safe='')}")
    return len(named)


def read_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _load_corpus(name: str) -> dict[str, Any]:
    return json.loads((CORPUS / name).read_text())


async def test_the_reference_corpus_is_stored_as_treeherder_stored_it(chain: Chain) -> None:
    if not (CORPUS / "taskcluster_transformed_jobs.json").is_file():
        pytest.skip(f"reference corpus not found at {CORPUS.resolve()}: skipped")
    messages = _load_corpus("taskcluster_pulse_messages.json")
    tasks = _load_corpus("taskcluster_tasks.json")
    stored = _load_corpus("taskcluster_transformed_jobs.json")
    _, spec = chain.start_ingester(delays="0.5,1", park_after=120)
    for task_id, task in tasks.items():
        chain.standin.add_task(task_id, task)
    projects = {task_id: project_of(tasks[task_id]) for task_id in tasks}
    push_ids = chain.register(sorted({(projects[task_id], job["revision"]) for task_id, job in stored.items()}))
    async with PulsePublisher(chain.settings.pulse_url, chain.settings.task_exchange) as publisher:
        for task_id in sorted(messages):
            message = messages[task_id]
            kind = message["exchange"].rpartition("task-")[2]
            await publisher.publish({"exchange": chain.settings.task_exchange(kind), "routingKey": message["routes"],
                                     "payload": message["payload"],
                                     "ccRoutes": [f"route.{route}" for route in tasks[task_id]["routes"]]})
        await publisher.flush()

    active = active_repositories(chain.instance)
    wanted = {job["job"]["job_guid"]: corpus_view(job) for task_id, job in stored.items()
              if projects[task_id] in active}
    assert len(wanted) == 90, "the corpus: 91 jobs, one of mozilla-inbound (on hold)"

    await chain.wait_for(lambda: chain.status(spec)["stored"] >= len(wanted), "every corpus job stored", 120)
    th.clear_cache(chain.instance)  # the option collections of jobs stored after an earlier API call
    found = {guid: api_view(job) for guid, job in listed(chain.instance, push_ids).items()}
    problems = [f"{guid}: listed {found.get(guid)}, stored by Treeherder {want}"
                for guid, want in wanted.items() if found.get(guid) != want]
    assert not problems, "\n".join(problems[:10]) + f"\ningester log:\n{chain.ingester_log(spec)}"
    assert set(found) == set(wanted)
    assert chain.status(spec)["refused_by_reason"] == {"inactive repository": 1}


def project_of(task: dict[str, Any]) -> str:
    route = next(r for r in task["routes"] if r.startswith("tc-treeherder.v2."))
    return route.split(".")[2]


def corpus_view(stored: dict[str, Any]) -> dict[str, Any]:
    """A job of taskcluster_transformed_jobs.json in the terms of Treeherder's jobs API."""
    job = stored["job"]
    return {
        "job_guid": job["job_guid"], "task_id": job["taskcluster_task_id"], "retry_id": job["taskcluster_retry_id"],
        "state": job["state"], "result": job["result"], "tier": job["tier"], "who": job["who"],
        "reason": job["reason"], "job_type_name": job["name"], "job_type_symbol": job["job_symbol"],
        "job_group_symbol": job["group_symbol"], "job_group_name": job["group_name"],
        "build_platform": job["build_platform"]["platform"], "build_os": job["build_platform"]["os_name"],
        "build_architecture": job["build_platform"]["architecture"],
        "platform": job["machine_platform"]["platform"], "machine_platform_os": job["machine_platform"]["os_name"],
        "machine_name": job["machine"], "platform_option": " ".join(sorted(job["option_collection"])),
        "submit_timestamp": job["submit_timestamp"], "start_timestamp": job.get("start_timestamp", 0),
        "end_timestamp": job.get("end_timestamp", 0),
    }


def api_view(job: dict[str, Any]) -> dict[str, Any]:
    keys = ("job_guid", "task_id", "retry_id", "state", "result", "tier", "who", "reason", "job_type_name",
            "job_type_symbol", "job_group_symbol", "job_group_name", "build_platform", "build_os",
            "build_architecture", "platform", "machine_platform_os", "machine_name", "platform_option",
            "submit_timestamp", "start_timestamp", "end_timestamp")
    return {key: job.get(key) for key in keys}
