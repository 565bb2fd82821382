"""PulseSink on the real brokers: job records from the jobs topic to each destination's jobs exchange."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from urllib.parse import quote

import aio_pika
import aiohttp
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from connectors.pulse_sink import PulseSink
from devtools.stack.shared import Brokers
from streams.core.model import JobMessage
from streams.shared import records
from streams.shared.settings import Destination, Settings
from streams.shared.topics import ensure_topics, sink_group

pytestmark = pytest.mark.integration


def job(task: int, state: str = "completed") -> dict[str, object]:
    return {"taskId": f"5e1c2a0e-0000-4000-8000-{task:012d}/0", "state": state, "result": "success",
            "buildSystem": "taskcluster", "display": {"jobSymbol": "B", "groupSymbol": "?"}}


def message(destination: str, project: str, task: int) -> JobMessage:
    return JobMessage(destination, project, f"{destination}.{project}._", job(task))


async def produce_jobs(settings: Settings, messages: Sequence[JobMessage], root_url: str | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(settings.topic("jobs"),
                                       records.encode_job_record(m, partition=0, offset=i, root_url=root_url),
                                       key=f"task-{m.job['taskId']}".encode())
                   for i, m in enumerate(messages)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bind(url: str, exchange: str, binding: str, queue_name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, routing_key=binding)


async def collect(url: str, queue_name: str, count: int, within: float = 60.0,
                  settle: float = 1.0) -> list[AbstractIncomingMessage]:
    """The messages of a queue once ``count`` arrived and ``settle`` seconds passed without another."""
    connection = await aio_pika.connect(url)
    got: list[AbstractIncomingMessage] = []
    async with connection:
        channel = await connection.channel()
        queue: AbstractQueue = await channel.declare_queue(queue_name, durable=True)
        async with asyncio.timeout(within):
            while True:
                incoming = await queue.get(no_ack=True, fail=False, timeout=5)
                if incoming is not None:
                    got.append(incoming)
                    continue
                if len(got) >= count:
                    await asyncio.sleep(settle)
                    if (await channel.declare_queue(queue_name, passive=True)).declaration_result.message_count:
                        continue
                    return got
                await asyncio.sleep(0.1)


async def committed_total(settings: Settings, destination: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(sink_group(settings, destination))
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset >= 0)


@contextlib.asynccontextmanager
async def running_sink(settings: Settings, destinations: Sequence[Destination]) -> AsyncIterator[PulseSink]:
    sink = PulseSink(settings, destinations)
    task = asyncio.create_task(sink.serve(handle_signals=False))
    try:
        yield sink
    finally:
        sink.request_stop()
        await asyncio.wait_for(task, 60)


@contextlib.asynccontextmanager
async def management(brokers: Brokers) -> AsyncIterator[Callable[..., object]]:
    token = base64.b64encode(b"guest:guest").decode()
    async with aiohttp.ClientSession(base_url=brokers.management_url,
                                     headers={"Authorization": f"Basic {token}"}) as http:
        async def call(method: str, path: str, body: object = None) -> object:
            async with http.request(method, path, json=body) as response:
                assert response.status < 300 or (method == "DELETE" and response.status == 404), (
                    f"{method} {path}: {response.status} {await response.text()}")
                return await response.json() if response.content_type == "application/json" else None
        yield call


async def make_vhost(call: Callable[..., object], name: str, write: str = ".*") -> None:
    """A vhost where guest may do everything, or (``write="^queue/"``) everything but publish to exchanges."""
    await call("PUT", f"/api/vhosts/{quote(name, safe='')}")  # type: ignore[misc]
    await call("PUT", f"/api/permissions/{quote(name, safe='')}/guest",  # type: ignore[misc]
               {"configure": ".*", "write": write, "read": ".*"})


def vhost_url(brokers: Brokers, vhost: str) -> str:
    return brokers.pulse_url.rstrip("/") + "/" + quote(vhost, safe="")


async def test_jobs_reach_the_exchange_persistent_json_and_offsets_follow_confirms(settings: Settings) -> None:
    await ensure_topics(settings)
    production = settings.destination_for("tc-treeherder")
    queue_name = f"queue/guest/{settings.namespace}/jobs"
    await bind(production.pulse_url, production.exchange, "tc-treeherder.try.#", queue_name)
    jobs = [message("tc-treeherder", "try", i) for i in range(60)]
    await produce_jobs(settings, jobs[:30], root_url="https://tc.example.com")
    await produce_jobs(settings, jobs[30:])  # records of an older worker: no root URL

    async with running_sink(settings, [production]) as sink:
        delivered = await collect(production.pulse_url, queue_name, count=len(jobs))
    assert sink.counts.per_destination["tc-treeherder"].published == len(jobs)

    assert sorted(orjson.loads(m.body)["taskId"] for m in delivered) == sorted(m.job["taskId"] for m in jobs)
    for incoming in delivered:
        assert incoming.routing_key == "tc-treeherder.try._"
        assert incoming.exchange == production.exchange
        assert incoming.content_type == "application/json"
        assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    root_urls = Counter(incoming.headers["taskcluster-root-url"] for incoming in delivered)
    assert root_urls == {"https://tc.example.com": 30, settings.taskcluster_root_url: 30}  # else the sink's own
    assert await committed_total(settings, "tc-treeherder") == len(jobs)  # = confirmed messages


async def test_destinations_on_two_vhosts_are_delivered_independently(
        brokers: Brokers, namespace: str, make_settings: Callable[..., Settings]) -> None:
    production_vhost, staging_vhost = f"{namespace}-production", f"{namespace}-staging"
    settings = make_settings(
        TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PULSE_URL=vhost_url(brokers, production_vhost),
        TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PULSE_URL=vhost_url(brokers, staging_vhost),
    )
    production = settings.destination_for("tc-treeherder")
    staging = settings.destination_for("tc-treeherder-staging")
    await ensure_topics(settings)
    jobs = [message("tc-treeherder", "autoland", i) for i in range(40)]
    jobs += [message("tc-treeherder-staging", "try", i) for i in range(25)]
    jobs += [message("tc-treeherder", "try", i) for i in range(40, 50)]
    await produce_jobs(settings, jobs)
    queue_name = f"queue/guest/{namespace}/jobs"

    async with management(brokers) as call:
        try:
            # Staging's vhost does not exist yet: its destination cannot even connect.
            await make_vhost(call, production_vhost)
            await bind(production.pulse_url, production.exchange, "tc-treeherder.#", queue_name)
            async with running_sink(settings, settings.destinations) as sink:
                to_production = await collect(production.pulse_url, queue_name, count=50)
                assert sink.counts.per_destination["tc-treeherder-staging"].published == 0

                # Staging comes back and catches up. Publishing stays refused until the test's queue is bound,
                # or the sink could publish into an exchange nobody listens to yet (RabbitMQ drops those).
                await make_vhost(call, staging_vhost, write="^queue/")
                await bind(staging.pulse_url, staging.exchange, "tc-treeherder-staging.try.#", queue_name)
                await make_vhost(call, staging_vhost)
                to_staging = await collect(staging.pulse_url, queue_name, count=25, within=90)
        finally:
            for vhost in (production_vhost, staging_vhost):
                await call("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")  # type: ignore[misc]

    assert Counter(m.routing_key for m in to_production) == {"tc-treeherder.autoland._": 40, "tc-treeherder.try._": 10}
    assert Counter(m.routing_key for m in to_staging) == {"tc-treeherder-staging.try._": 25}
    # Each consumer group passed over the other's records and committed everything it settled.
    assert await committed_total(settings, "tc-treeherder") == len(jobs)
    assert await committed_total(settings, "tc-treeherder-staging") == len(jobs)


async def test_a_dropped_connection_loses_no_job(brokers: Brokers, settings: Settings) -> None:
    """The broker closes the sink's connection mid-stream: the sink reconnects and republishes what was
    unconfirmed, so every job arrives, at most the in-flight window twice."""
    settings = replace(settings, sink_max_in_flight=100)
    await ensure_topics(settings)
    production = settings.destination_for("tc-treeherder")
    queue_name = f"queue/guest/{settings.namespace}/jobs"
    await bind(production.pulse_url, production.exchange, "#", queue_name)
    jobs = [message("tc-treeherder", "try", i) for i in range(5000)]

    async with management(brokers) as call, running_sink(settings, [production]) as sink:
        mine: list[str] = []
        async with asyncio.timeout(30):  # the management API lists connections a few seconds late
            while not mine:
                connections = await call("GET", "/api/connections")  # type: ignore[misc]
                mine = [c["name"] for c in connections  # type: ignore[union-attr]
                        if f"{settings.app_id}-sink[tc-treeherder]" in str(c.get("client_properties", {}))]
                await asyncio.sleep(0.5)
        await produce_jobs(settings, jobs)
        counts = sink.counts.per_destination
        async with asyncio.timeout(60):
            while counts["tc-treeherder"].published < 500:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert counts["tc-treeherder"].published < len(jobs)  # mid-stream
        for name in mine:
            await call("DELETE", f"/api/connections/{quote(name, safe='')}")  # type: ignore[misc]
        delivered = await collect(production.pulse_url, queue_name, count=len(jobs), within=120, settle=2)
        assert counts["tc-treeherder"].reconnects >= 1

    seen = Counter(orjson.loads(m.body)["taskId"] for m in delivered)
    assert set(seen) == {m.job["taskId"] for m in jobs}
    assert sum(seen.values()) - len(jobs) <= settings.sink_max_in_flight
    assert await committed_total(settings, "tc-treeherder") == len(jobs)


async def test_a_record_that_is_not_a_job_record_goes_to_rejected(settings: Settings) -> None:
    await ensure_topics(settings)
    production = settings.destination_for("tc-treeherder")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("jobs"), b'{"destination": "tc-treeherder"}', key=b"T1")
    finally:
        await producer.stop()
    async with running_sink(settings, [production]) as sink:
        async with asyncio.timeout(30):
            while (sink.counts.per_destination.get("tc-treeherder") is None  # noqa: ASYNC110
                   or sink.counts.per_destination["tc-treeherder"].rejected < 1):
                await asyncio.sleep(0.05)
    assert await committed_total(settings, "tc-treeherder") == 1  # settled by its rejected record
