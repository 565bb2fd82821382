"""The worker's check that Faust handed it every offset of a partition (the lookups are tested on Kafka)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.shared.settings import load_settings
from streams.worker.gaps import Gap, OffsetWatch


def watch(**expected: int) -> OffsetWatch:
    tracked = OffsetWatch(load_settings(env={}), "events", "group")
    tracked.expected.update({int(partition[1:]): offset for partition, offset in expected.items()})
    return tracked


async def test_contiguous_offsets_have_no_gap_and_move_the_expectation():
    tracked = watch(p0=5, p1=0)
    assert await tracked.find_gaps([(0, 5), (1, 0), (0, 6), (1, 1)]) == []
    assert tracked.expected == {0: 7, 1: 2}


async def test_a_jump_is_a_gap_from_the_expected_offset_to_the_one_that_came():
    tracked = watch(p0=5, p1=3)
    gaps = await tracked.find_gaps([(0, 9), (0, 10), (1, 3), (1, 7)])
    assert gaps == [Gap(0, 5, 9), Gap(1, 4, 7)]
    assert tracked.expected == {0: 11, 1: 8}


async def test_going_back_is_accepted_as_a_rewind_not_a_gap():
    tracked = watch(p0=20)
    assert await tracked.find_gaps([(0, 12), (0, 13)]) == []
    assert tracked.expected == {0: 14}


async def test_a_rebalance_forgets_only_the_partitions_it_names():
    tracked = watch(p0=5, p1=3, p2=9)
    tracked.forget([1])
    assert tracked.expected == {0: 5, 2: 9}
    tracked.forget()
    assert tracked.expected == {}


async def test_kafka_away_makes_the_lookup_wait_and_try_again_not_fail(monkeypatch):
    """A broker restart: the batch waits for Kafka (the worker used to exit with status 70 here)."""
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    tracked = watch()
    answers = [KafkaConnectionError("down"), KafkaConnectionError("down"), {0: 4}]

    async def starting_offsets(self, partitions):
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(OffsetWatch, "_starting_offsets", starting_offsets)
    assert await tracked.find_gaps([(0, 6)]) == [Gap(0, 4, 6)]

    tracked.forget()
    tracked.stopping = lambda: True
    answers[:] = [KafkaConnectionError("down")]
    with pytest.raises(KafkaConnectionError):  # stopping: the worker exits without acknowledging
        await tracked.find_gaps([(0, 7)])


async def _no_sleep(seconds: float) -> None:
    pass


async def test_a_tail_the_consumer_read_past_is_a_gap_only_once_two_looks_agree():
    tracked = watch(p0=5, p1=3, p2=9)
    assert await tracked.stalled_tails({0: 8, 1: 3, 2: 9}) == [], "one look: the records may be on their way"
    assert await tracked.stalled_tails({0: 8, 1: 3, 2: 12}) == [Gap(0, 5, 8)]
    assert tracked.expected == {0: 8, 1: 3, 2: 9}
    assert await tracked.stalled_tails({0: 8, 1: 3, 2: 12}) == [Gap(2, 9, 12)]
    assert await tracked.stalled_tails({0: 8, 1: 3, 2: 12}) == [], "each tail is filled once"


async def test_events_arriving_between_two_looks_clear_the_suspicion():
    tracked = watch(p0=5)
    assert await tracked.stalled_tails({0: 8}) == []
    assert await tracked.find_gaps([(0, 5), (0, 6), (0, 7)]) == []
    assert await tracked.stalled_tails({0: 8}) == []
    assert tracked.expected == {0: 8}


async def test_a_rebalance_between_two_looks_starts_the_tail_check_afresh(monkeypatch):
    tracked = watch(p0=5)
    assert await tracked.stalled_tails({0: 8}) == []
    tracked.forget([0])

    async def starting_offsets(self, partitions):
        return {0: 5}

    monkeypatch.setattr(OffsetWatch, "_starting_offsets", starting_offsets)
    assert await tracked.stalled_tails({0: 8}) == [], "the look before the rebalance does not count"
    assert await tracked.stalled_tails({0: 8}) == [Gap(0, 5, 8)]
