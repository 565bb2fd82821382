"""The idle worker's look at its partitions' ends (``Worker._stalled_tails``), against a stand-in consumer."""

from __future__ import annotations

from typing import Any

import pytest
from faust.types import TP

from streams.shared.settings import load_settings
from streams.worker.app import Worker
from streams.worker.gaps import Gap


class Consumer:
    """Faust's consumer as the look uses it: the assignment and each partition's position."""

    def __init__(self, topic: str, positions: dict[int, int], failure: Exception | None = None) -> None:
        self.topic = topic
        self.positions = positions
        self.failure = failure
        self.asked: list[int] = []

    def assignment(self) -> set[TP]:
        return {TP(self.topic, partition) for partition in self.positions} | {TP("a-changelog", 0)}

    async def position(self, tp: TP) -> int:
        self.asked.append(tp.partition)
        if self.failure is not None:
            raise self.failure
        return self.positions[tp.partition]


@pytest.fixture
def worker() -> Worker:
    idle = Worker(load_settings(env={}))
    idle.app.flow_control.resume()  # as once the app runs and no recovery is under way
    idle.watch.expected.update({0: 10, 1: 4})
    idle._processed = lambda partition: None  # type: ignore[method-assign]  # no tables outside a running app
    return idle


def with_consumer(worker: Worker, consumer: Any) -> None:
    worker.app.consumer = consumer  # type: ignore[misc]


async def test_two_looks_at_a_consumer_past_the_expected_offset_find_the_tail(worker: Worker) -> None:
    with_consumer(worker, Consumer(worker.watch.topic, {0: 13, 1: 4}))
    assert await worker._stalled_tails() == []
    assert await worker._stalled_tails() == [Gap(0, 10, 13)]


async def test_a_failing_look_finds_nothing_and_does_not_end_the_worker(worker: Worker) -> None:
    with_consumer(worker, Consumer(worker.watch.topic, {0: 13}, failure=RuntimeError("the consumer is closing")))
    assert await worker._stalled_tails() == []
    assert worker.watch.expected == {0: 10, 1: 4}


async def test_no_look_while_the_stream_is_paused_for_a_rebalance_or_recovery(worker: Worker) -> None:
    consumer = Consumer(worker.watch.topic, {0: 13})
    with_consumer(worker, consumer)
    worker.app.flow_control.suspend()
    assert await worker._stalled_tails() == []
    worker.app.flow_control.resume()
    worker.app.rebalancing = True
    assert await worker._stalled_tails() == []
    assert consumer.asked == []
