"""What the sink publishes again after a failed Pulse session: never a record that is there, never a step back."""

from __future__ import annotations

import asyncio

import aio_pika
from aiokafka import TopicPartition

from connectors.pulse_sink import DestinationLoop, PulseSink, Resend
from streams.shared.records import JobRecord
from streams.shared.settings import load_settings

TP = TopicPartition("jobs", 0)


def test_a_confirmed_record_read_again_is_not_published_again() -> None:
    resend = Resend()
    resend.confirmed(TP, 11)
    resend.failed()
    assert not resend.vouched(TP, 10)  # unconfirmed: published again
    assert resend.vouched(TP, 11)
    assert not resend.vouched(TP, 12)  # past the failed session's window: forgotten
    assert not resend.vouched(TP, 11)


def test_confirms_below_a_commit_are_forgotten_and_a_second_failure_keeps_the_first() -> None:
    resend = Resend()
    resend.confirmed(TP, 5)
    resend.confirmed(TP, 9)
    resend.committed({TP: 6})
    resend.failed()
    resend.confirmed(TP, 7)
    resend.failed()  # failed again while reading again
    assert not resend.vouched(TP, 5)
    assert resend.vouched(TP, 7)
    assert not resend.vouched(TP, 8)
    assert resend.vouched(TP, 9)


def test_a_partition_that_comes_back_after_a_rebalance_is_not_published_again() -> None:
    other = TopicPartition("jobs", 1)
    resend = Resend()
    resend.confirmed(TP, 4)
    resend.confirmed(other, 8)
    resend.set_aside([TP, other])  # both revoked; only TP comes back to this sink
    resend.keep_only([TP])
    assert resend.vouched(TP, 4)
    assert not resend.vouched(other, 8)  # read by another sink now, and from its own commit


class Exchange:
    """Publishes only when the test says: each publish waits for its own future."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.confirms: list[asyncio.Future[None]] = []

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        self.published.append(message.body.decode())
        confirm = asyncio.get_running_loop().create_future()
        self.confirms.append(confirm)
        await confirm


def job_value(run: str, state: str) -> bytes:
    record = JobRecord(destination="tc-treeherder", project="try", routing_key="tc-treeherder.try._",
                       job={"taskId": run, "state": state}, source_partition=0, source_offset=0)
    return record.encode()


async def turns(count: int = 10) -> None:
    """Let the publish tasks run as far as they can (no timers involved)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_run_has_one_unconfirmed_message_at_a_time() -> None:
    settings = load_settings(env={})
    loop = DestinationLoop(PulseSink(settings), settings.destinations[0])
    exchange = Exchange()
    for offset, (run, state) in enumerate([("a/0", "pending"), ("b/0", "pending"), ("a/0", "running")]):
        await loop._slots.acquire()
        loop._dispatch(exchange, TP, offset, job_value(run, state))  # type: ignore[arg-type]
    await turns()
    assert [body.count("running") for body in exchange.published] == [0, 0]  # a's running waits for pending
    exchange.confirms[0].set_result(None)
    await turns()
    assert '"running"' in exchange.published[-1]

    # The connection fails with a's next state unconfirmed: the one after it is not published at all.
    await loop._slots.acquire()
    loop._dispatch(exchange, TP, 3, job_value("a/0", "completed"))  # type: ignore[arg-type]
    exchange.confirms[2].set_exception(aio_pika.exceptions.AMQPConnectionError("gone"))
    exchange.confirms[1].set_result(None)
    await asyncio.gather(*loop._tasks, return_exceptions=True)
    assert len(exchange.published) == 3
    assert loop.resend._confirmed == {TP: {0, 1}}
