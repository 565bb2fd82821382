"""PulseSource on the real brokers: task events from the task exchanges into the task-events topic."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable

import aio_pika
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from connectors.pulse_source import ACK_EVERY, PulseSource
from streams.shared import records
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics

pytestmark = pytest.mark.integration

REVISION = "4f1a9c2e7b5d3a8f6e0c1b2d4a6f8e0c2b4d6f8a"


def task_body(task_id: str, state: str = "pending", run_id: int = 0) -> dict[str, object]:
    """A small Queue task-pending message as Taskcluster publishes it."""
    return {
        "version": 1,
        "status": {
            "taskId": task_id, "provisionerId": "proj-gecko", "workerType": "b-linux", "schedulerId": "gecko-level-1",
            "taskGroupId": "Wq6Ss-e0S3mSxWs5NPtgXg", "deadline": "2024-05-02T10:00:00.000Z",
            "expires": "2025-05-01T10:00:00.000Z", "retriesLeft": 5, "state": state,
            "runs": [{"runId": 0, "state": state, "reasonCreated": "scheduled",
                      "scheduled": "2024-05-01T10:00:00.000Z"}],
        },
        "runId": run_id,
        "task": {"tags": {"kind": "build"}},
    }


def primary_key(task_id: str) -> str:
    return f"primary.{task_id}.0._._.proj-gecko.b-linux.gecko-level-1.Wq6Ss-e0S3mSxWs5NPtgXg._"


async def publish(settings: Settings, messages: Iterable[tuple[str, str, bytes, list[str]]],
                  every: float = 0.0) -> None:
    """Publish (kind, routing key, body, CC routes) to the task exchanges, confirmed, as the Queue does;
    ``every`` seconds apart when given."""
    connection = await aio_pika.connect(settings.pulse_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        confirms = []
        for kind, routing_key, body, routes in messages:
            if kind not in exchanges:
                exchanges[kind] = await channel.declare_exchange(settings.task_exchange(kind),
                                                                 aio_pika.ExchangeType.TOPIC, durable=True)
            message = aio_pika.Message(body, content_type="application/json", headers={"CC": routes},
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            confirms.append(asyncio.create_task(exchanges[kind].publish(message, routing_key=routing_key)))
            if every:
                await asyncio.sleep(every)
            if len(confirms) >= 500:  # many in flight, in publish order
                await asyncio.gather(*confirms)
                confirms.clear()
        await asyncio.gather(*confirms)


async def queue_depth(settings: Settings) -> tuple[int, int]:
    """(messages ready or unacknowledged, consumers) of the source's queue, from a passive declare."""
    connection = await aio_pika.connect(settings.pulse_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.pulse_queue("task-events"), passive=True)
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0


async def wait_for_consumers(settings: Settings, count: int = 1, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):
                if (await queue_depth(settings))[1] >= count:
                    return
            await asyncio.sleep(0.2)


async def read_topic(settings: Settings, topic: str, count: int, within: float = 60.0,
                     settle: float = 1.0) -> list[tuple[bytes, dict[str, object]]]:
    """Every record of ``topic`` once at least ``count`` arrived and ``settle`` seconds passed with no more."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[tuple[bytes, dict[str, object]]] = []
    try:
        async with asyncio.timeout(within):
            quiet_since = None
            loop = asyncio.get_running_loop()
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    found.extend((m.key, orjson.loads(m.value)) for m in messages)
                if batch:
                    quiet_since = None
                elif len(found) >= count:
                    quiet_since = quiet_since or loop.time()
                    if loop.time() - quiet_since >= settle:
                        return found
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running_source(settings: Settings) -> AsyncIterator[PulseSource]:
    source = PulseSource(settings)
    task = asyncio.create_task(source.serve(handle_signals=False))
    try:
        await wait_for_consumers(settings)
        yield source
    finally:
        source.request_stop()
        await asyncio.wait_for(task, 30)


async def test_events_land_keyed_by_task_id_and_bad_bodies_are_rejected(settings: Settings) -> None:
    await ensure_topics(settings)
    route = [f"route.tc-treeherder.v2.try.{REVISION}"]
    tasks = [f"T{i:03d}aaaaaaaaaaaaaaaaaaa"[:22] for i in range(20)]
    messages = [("pending", primary_key(t), orjson.dumps(task_body(t)), route) for t in tasks]
    messages.append(("completed", primary_key("BADBODYaaaaaaaaaaaaaaa"), b"<html>502 Bad Gateway</html>", route))
    messages.append(("running", primary_key("NOTASKIDaaaaaaaaaaaaaa"), b'{"status": {}}', route))
    # Not for Treeherder: its only route has another prefix, so the queue never receives it.
    other = "OTHERaaaaaaaaaaaaaaaaa"
    messages.append(("pending", primary_key(other), orjson.dumps(task_body(other)), ["route.index.gecko.v2.try.x"]))

    async with running_source(settings) as source:
        await publish(settings, messages)
        events = await read_topic(settings, settings.topic("task-events"), count=len(tasks))
        rejected = await read_topic(settings, settings.topic("rejected"), count=2)
        assert (await queue_depth(settings))[0] == 0  # everything acknowledged once in Kafka

    assert sorted(key for key, _ in events) == sorted(t.encode() for t in tasks)  # OTHER... never came
    for key, envelope in events:
        assert envelope["exchange"] == settings.task_exchange("pending")
        assert envelope["routingKey"] == primary_key(key.decode())
        assert envelope["ccRoutes"] == route
        assert envelope["payload"] == task_body(key.decode())
        assert envelope["rootUrl"] == settings.taskcluster_root_url
        assert str(envelope["receivedAt"]).endswith("Z") and envelope["messageId"]
        records.decode_envelope(orjson.dumps(envelope))  # what the worker parses

    by_task = {record["taskId"]: (key, record) for key, record in rejected}
    key, not_json = by_task["BADBODYaaaaaaaaaaaaaaa"]
    assert key == b"BADBODYaaaaaaaaaaaaaaa"  # keyed by the taskId of the routing key
    assert (not_json["stage"], not_json["kind"], not_json["source"]) == ("source", "rejected", None)
    assert str(not_json["reason"]).startswith("message body is not JSON")
    assert not_json["envelope"]["body"] == "<html>502 Bad Gateway</html>"  # type: ignore[index]
    assert not_json["envelope"]["exchange"] == settings.task_exchange("completed")  # type: ignore[index]
    assert by_task["NOTASKIDaaaaaaaaaaaaaa"][1]["reason"] == "message body has no status.taskId"
    assert source.counts.produced == len(tasks) and sum(source.counts.rejected.values()) == 2


async def test_an_oversized_body_is_rejected_with_an_excerpt(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(TC_TREEHERDER_MAX_BODY_BYTES="2000")
    await ensure_topics(settings)
    big = task_body("BIGaaaaaaaaaaaaaaaaaaa")
    big["padding"] = "x" * 5000
    async with running_source(settings):
        await publish(settings, [("pending", primary_key("BIGaaaaaaaaaaaaaaaaaaa"), orjson.dumps(big),
                                  ["route.tc-treeherder.v2.try.abc"])])
        [(key, record)] = await read_topic(settings, settings.topic("rejected"), count=1)
    assert key == b"BIGaaaaaaaaaaaaaaaaaaa"
    assert "over the limit of 2000" in str(record["reason"])
    assert record["envelope"]["bodyTruncated"] is True  # type: ignore[index]
    assert record["envelope"]["bodySize"] == len(orjson.dumps(big))  # type: ignore[index]


async def test_killed_source_loses_nothing_and_duplicates_stay_within_the_prefetch_window(
        settings: Settings, test_env: dict[str, str]) -> None:
    """SIGKILL the source while it is producing: what it took but had not acknowledged is delivered again."""
    await ensure_topics(settings)
    connection = await aio_pika.connect(settings.pulse_url)
    async with connection:
        await PulseSource(settings).declare(connection)  # the queue and bindings, so a backlog can build up
    prefetch = 200
    env = {**test_env, "TC_TREEHERDER_SOURCE_PREFETCH": str(prefetch)}
    command = [sys.executable, "-m", "tc_treeherder.cli", "source", "--loglevel", "warning"]
    tasks = [f"K{i:05d}aaaaaaaaaaaaaaaa"[:22] for i in range(10_000)]
    await publish(settings, [("running", primary_key(t), orjson.dumps(task_body(t, "running")),
                              ["route.tc-treeherder.v2.try.abc"]) for t in tasks])
    assert (await queue_depth(settings))[0] == len(tasks)

    events_topic = settings.topic("task-events")
    observer = AIOKafkaConsumer(events_topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await observer.start()
    first = await asyncio.create_subprocess_exec(*command, env=env, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
    try:
        seen_before_kill = 0
        async with asyncio.timeout(60):
            while seen_before_kill < 300:  # mid-stream: Kafka has some events, the queue still holds most
                batch = await observer.getmany(timeout_ms=50)
                seen_before_kill += sum(len(messages) for messages in batch.values())
        first.send_signal(signal.SIGKILL)
        await first.wait()
    finally:
        await observer.stop()
        if first.returncode is None:
            first.kill()
            await first.wait()
    await asyncio.sleep(0.5)  # let RabbitMQ notice the dropped connection and requeue
    waiting, consumers = await queue_depth(settings)
    assert consumers == 0 and waiting > 0  # the kill left work behind in the durable queue

    second = await asyncio.create_subprocess_exec(*command, env=env, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE)
    try:
        events = await read_topic(settings, events_topic, count=len(tasks), within=120, settle=2)
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 0, stderr.decode()
    seen = Counter(key.decode() for key, _ in events)
    assert set(seen) == set(tasks)  # nothing lost
    duplicates = sum(seen.values()) - len(tasks)
    assert duplicates <= prefetch
    assert (await queue_depth(settings))[0] == 0
    ids_per_task: dict[str, set[object]] = {}
    for key, envelope in events:
        ids_per_task.setdefault(key.decode(), set()).add(envelope["messageId"])
    assert all(len(ids) == 1 for ids in ids_per_task.values())  # a redelivery carries the same messageId


async def test_source_refuses_topics_with_another_partition_count(
        make_settings, test_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    await ensure_topics(make_settings(TC_TREEHERDER_PARTITIONS="3"))
    again = await ensure_topics(make_settings(TC_TREEHERDER_PARTITIONS="3"))  # idempotent
    assert again.task_events.endswith(".tc-treeherder.task-events")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tc_treeherder.cli", "source", env={**test_env, "TC_TREEHERDER_PARTITIONS": "2"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert "has 3 partitions but TC_TREEHERDER_PARTITIONS is 2" in stderr.decode()


async def test_a_prefix_taken_out_of_the_configuration_is_unbound_and_stops_arriving(
        make_settings, brokers) -> None:  # type: ignore[no-untyped-def]
    """As Treeherder's consumers prune theirs: the durable queue keeps its bindings across restarts, so a
    source that no longer takes a prefix removes that prefix's bindings, logging each."""
    both = make_settings(TC_TREEHERDER_ROUTE_PREFIXES="tc-treeherder,tc-treeherder-staging",
                         TC_TREEHERDER_PULSE_BINDINGS_API=brokers.management_url)
    await ensure_topics(both)
    staging_route, production_route = ["route.tc-treeherder-staging.v2.try.abc"], ["route.tc-treeherder.v2.try.abc"]
    before, after, kept = "STAGEBEFOREaaaaaaaaaaa", "STAGEAFTERaaaaaaaaaaaa", "PRODUCTIONaaaaaaaaaaaa"
    async with running_source(both) as source:
        assert source.counts.unbound == 0
        await publish(both, [("pending", primary_key(before), orjson.dumps(task_body(before)), staging_route)])
        assert [key for key, _ in await read_topic(both, both.topic("task-events"), count=1)] == [before.encode()]

    production_only = make_settings(TC_TREEHERDER_ROUTE_PREFIXES="tc-treeherder",
                                    TC_TREEHERDER_PULSE_BINDINGS_API=brokers.management_url)
    async with running_source(production_only) as source:
        assert source.counts.unbound == 6  # route.tc-treeherder-staging.# on the six task exchanges
        await publish(production_only, [
            ("pending", primary_key(after), orjson.dumps(task_body(after)), staging_route),
            ("pending", primary_key(kept), orjson.dumps(task_body(kept)), production_route)])
        events = await read_topic(production_only, production_only.topic("task-events"), count=2)
    assert [key for key, _ in events] == [before.encode(), kept.encode()]  # the staging task never arrived


async def test_a_steady_trickle_is_acknowledged_in_gathered_frames_and_all_of_it(settings: Settings) -> None:
    """At moderate rates each Kafka batch holds a message or two, and acknowledging each batch cost RabbitMQ
    an ack frame per message or two. Acknowledgements now gather for ``ACK_EVERY`` while the window has room."""
    await ensure_topics(settings)
    route = [f"route.tc-treeherder.v2.try.{REVISION}"]
    tasks = [f"S{i:03d}aaaaaaaaaaaaaaaaaaa"[:22] for i in range(300)]
    async with running_source(settings) as source:
        started = asyncio.get_running_loop().time()
        await publish(settings, [("pending", primary_key(t), orjson.dumps(task_body(t)), route) for t in tasks],
                      every=0.002)
        spread = asyncio.get_running_loop().time() - started
        await read_topic(settings, settings.topic("task-events"), count=len(tasks))
        for _ in range(100):
            if source.counts.acked == len(tasks):
                break
            await asyncio.sleep(0.1)
        assert (await queue_depth(settings))[0] == 0

    assert source.counts.acked == len(tasks)
    # At most one acknowledgement per ACK_EVERY while they came, and a last one.
    assert source.counts.ack_frames <= spread / ACK_EVERY + 2, (source.counts.ack_frames, spread)
