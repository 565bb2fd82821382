"""The real brokers work from Python the way the bridge uses them: durable writes, confirmed publishes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aio_pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pamqp.commands import Basic

from devtools.stack import kafka, probe, rabbitmq
from devtools.stack.shared import Brokers


async def test_kafka_round_trip_with_acks_all(brokers: Brokers, namespace: str) -> None:
    topic = f"{namespace}.tc-treeherder.smoke"
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=brokers.kafka_bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            sent = [await producer.send_and_wait(topic, key=f"task-{i}".encode(), value=f"event-{i}".encode())
                    for i in range(6)]
        finally:
            await producer.stop()
        assert {record.partition for record in sent} <= {0, 1}

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=brokers.kafka_bootstrap,
                                    group_id=f"{namespace}.smoke", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            received: dict[bytes, bytes] = {}
            async with asyncio.timeout(30):
                while len(received) < 6:
                    batch = await consumer.getmany(timeout_ms=1000)
                    for records in batch.values():
                        received.update((record.key, record.value) for record in records)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert received == {f"task-{i}".encode(): f"event-{i}".encode() for i in range(6)}
    finally:
        await admin.delete_topics([topic])
        await admin.close()


async def test_rabbitmq_confirmed_publish_to_durable_topic_exchange(brokers: Brokers, namespace: str) -> None:
    exchange_name = f"exchange/{namespace}/smoke/v1/jobs"
    queue_name = f"queue/guest/{namespace}/smoke"
    connection = await aio_pika.connect(brokers.pulse_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, routing_key="tc-treeherder.#")
        try:
            body = json.dumps({"taskId": "fmKYFJ1rRWuMk5Ew1dMwVA/0"}).encode()
            confirmation = await exchange.publish(
                aio_pika.Message(body, content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="tc-treeherder.mozilla-central._",
            )
            assert isinstance(confirmation, Basic.Ack)  # the broker confirmed, not nacked or returned
            await exchange.publish(aio_pika.Message(b"{}"), routing_key="other-prefix.mozilla-central._")

            message = await _get(queue)
            assert message.body == body
            assert message.routing_key == "tc-treeherder.mozilla-central._"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            await message.ack()
            # The key outside the binding was never routed to the queue.
            assert await queue.get(fail=False) is None
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
    finally:
        await connection.close()


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    async with asyncio.timeout(10):
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.05)


def test_brokers_that_already_answer_are_reused_and_never_stopped(brokers: Brokers, tmp_path: Path) -> None:
    kafka_node = kafka.KafkaNode.for_bootstrap(brokers.kafka_bootstrap, tmp_path)
    rabbit_node = rabbitmq.RabbitNode.for_url(brokers.pulse_url, tmp_path)
    # A fresh state dir has no record of starting them: they are someone else's.
    assert kafka.start(kafka_node) == "reused"
    assert rabbitmq.start(rabbit_node) == "reused"
    assert not kafka_node.data_dir.exists()  # nothing was formatted or launched
    assert kafka.stop(kafka_node) == "not running"
    assert rabbitmq.stop(rabbit_node) == "not running"
    assert probe.kafka_answers(kafka_node.host, kafka_node.port)
    assert probe.amqp_answers(rabbit_node.host, rabbit_node.port)
