"""Faust's commit bookkeeping after a skip: its own merge stalls, ``merge_gaps`` keeps the commits moving."""

from __future__ import annotations

import faust
from faust.types import TP
from intervaltree import Interval, IntervalTree

from streams.worker.commits import acknowledge_filled, merge_gaps, merge_gaps_before_commits
from streams.worker.gaps import Gap

TOPIC_PARTITION = TP("task-events", 3)


def stalled_consumer() -> faust.types.ConsumerT:
    """Faust's consumer as the worker found it: offsets 1-3 acknowledged, and a gap over 2-471 (records it
    fetched past, then delivered after all), committed up to 1."""
    consumer = faust.App("commits-test", broker="kafka://localhost:1").consumer
    consumer._acked[TOPIC_PARTITION] = [1, 2, 3]
    consumer._acked_index[TOPIC_PARTITION] = {1, 2, 3}
    consumer._gap[TOPIC_PARTITION] = IntervalTree([Interval(2, 472)])
    consumer._committed_offset[TOPIC_PARTITION] = 1
    return consumer


def test_a_gap_over_acknowledged_offsets_is_merged_once() -> None:
    acked, gaps = [1, 2, 3], IntervalTree([Interval(2, 472)])
    merge_gaps(acked, gaps)
    assert acked == list(range(1, 472))
    assert not gaps


def test_gaps_reached_through_other_gaps_are_merged_and_others_stay() -> None:
    acked, gaps = [5, 6], IntervalTree([Interval(4, 9), Interval(8, 12), Interval(20, 30)])
    merge_gaps(acked, gaps)
    assert acked == list(range(4, 12))
    assert sorted(gaps) == [Interval(20, 30)]


def test_nothing_acknowledged_leaves_the_gaps_alone() -> None:
    acked, gaps = [], IntervalTree([Interval(2, 5)])
    merge_gaps(acked, gaps)
    assert acked == [] and sorted(gaps) == [Interval(2, 5)]


async def test_faust_alone_commits_a_stalled_partition_one_run_at_a_time() -> None:
    """The flaw itself: if a later Faust commits the whole run at once, ``merge_gaps`` can go."""
    assert stalled_consumer()._new_offset(TOPIC_PARTITION) < 472


async def test_with_merge_gaps_first_the_consumer_commits_the_whole_run() -> None:
    consumer = stalled_consumer()
    app = consumer.app
    await merge_gaps_before_commits(app)
    await merge_gaps_before_commits(app)  # a second assignment installs nothing more
    assert consumer._new_offset(TOPIC_PARTITION) == 472


def test_records_read_back_at_the_end_of_a_partition_are_committed_with_nothing_acknowledged_after_them() -> None:
    """A partition committed at 188 (everything before was acknowledged and committed), whose records 188-299
    Faust skipped, and which the worker read back and processed: the next commit is 300."""
    consumer = faust.App("commits-test", broker="kafka://localhost:1").consumer
    consumer._committed_offset[TOPIC_PARTITION] = 188
    acknowledge_filled(consumer, TOPIC_PARTITION.topic, [Gap(TOPIC_PARTITION.partition, 188, 300)])
    assert consumer._new_offset(TOPIC_PARTITION) == 300


def test_records_read_back_are_acknowledged_once_and_never_below_the_commit() -> None:
    consumer = stalled_consumer()
    acknowledge_filled(consumer, TOPIC_PARTITION.topic, [Gap(TOPIC_PARTITION.partition, 0, 6)])
    assert sorted(consumer._acked[TOPIC_PARTITION]) == [1, 2, 3, 4, 5]
