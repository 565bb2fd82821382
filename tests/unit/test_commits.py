"""Faust's commit bookkeeping after a skip: its own merge stalls, ``merge_gaps`` keeps the commits moving."""

from __future__ import annotations

import faust
from faust.types import TP
from intervaltree import Interval, IntervalTree

from streams.worker.commits import merge_gaps, merge_gaps_before_commits

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
