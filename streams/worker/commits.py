"""Faust's commits keep up with what the worker acknowledged, whatever Faust's consumer skipped on the way.

Everything here works on Faust 0.15's private commit bookkeeping (``Consumer._new_offset``, ``_acked``,
``_acked_index``, ``_committed_offset``, ``_gap``), so it sits in one place; tests/unit/test_commits.py and
tests/integration/test_worker_commits.py fail if a later Faust changes it.

Faust commits a partition up to the first offset missing from its list of acknowledged offsets. Offsets that
will never reach the stream (the holes compaction leaves, records Faust fetched past) sit in a second list,
the partition's "gaps", which it merges into the first before each commit. Two flaws of that merge (Faust
0.15, ``Consumer._new_offset``) stall a partition's commits after Faust skips records:

- a gap can cover offsets that reach the stream later after all (Faust seeks back after its skip), and the
  merge then puts them in the list twice; Faust finds consecutive runs by position, so each duplicate ends a
  run, and the commits crawl forward one run per commit;
- the merge keeps the gap's last offset in the gap, and adds it again at the next commit: one more duplicate.

The worker found a partition committed at 114 of 747 a minute after it had processed everything
(tests/integration/test_worker_commits.py). ``merge_gaps`` does the merge first, without duplicates and
without leftovers, so that Faust's own merge finds nothing left to do. It is installed on the consumer's
``_new_offset``, a private method: tests/unit/test_commits.py fails if a later Faust renames the parts it
relies on.

Records the gap watcher read around Faust (streams/worker/gaps.py) never pass through the stream, so the
worker acknowledges them itself once their output is in Kafka (``acknowledge_filled``); without that,
commits stayed at the gap for as long as the worker ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faust
from faust.types import TP
from intervaltree import IntervalTree

from streams.worker.gaps import Gap


def merge_gaps(acked: list[int], gaps: IntervalTree) -> None:
    """Move every gap that reaches the acknowledged offsets (or a gap so moved) into ``acked``, once each, and
    leave ``acked`` sorted and without duplicates."""
    if not acked:
        return
    frontier = max(acked) + 1
    while hits := gaps.overlap(0, frontier):
        for interval in hits:
            gaps.remove(interval)
            acked.extend(range(interval.begin, interval.end))
            frontier = max(frontier, interval.end)
    acked[:] = sorted(set(acked))


async def merge_gaps_before_commits(app: faust.App, *args: Any, **kwargs: Any) -> None:
    """For ``app.on_partitions_assigned``: put ``merge_gaps`` ahead of Faust's own, once per consumer."""
    consumer = app.consumer
    if getattr(consumer, "_merges_gaps_first", False):
        return
    faust_new_offset = consumer._new_offset

    def new_offset(tp: Any) -> int | None:
        merge_gaps(consumer._acked[tp], consumer._gap[tp])
        return faust_new_offset(tp)

    consumer._new_offset = new_offset
    consumer._merges_gaps_first = True


def acknowledge_filled(consumer: Any, topic: str, gaps: Sequence[Gap]) -> None:
    """Count the records of ``gaps`` (read around Faust and processed) as acknowledged by Faust's ``consumer``,
    as its own ``ack`` counts an event: offsets from its committed one on, each once.

    Registered as one of its gaps instead (``_add_gap``), a partition's last records, with nothing acknowledged
    after them, stayed uncommitted: Faust merges gaps only into acknowledged offsets, and a commit empties those.
    """
    for gap in gaps:
        tp = TP(topic, gap.partition)
        committed = consumer._committed_offset[tp]
        seen = consumer._acked_index[tp]
        fresh = [offset for offset in range(gap.start, gap.end)
                 if (committed is None or offset >= committed) and offset not in seen]
        seen.update(fresh)
        consumer._acked[tp].extend(fresh)
