"""Keep a run's job from going backwards, without losing a job the run never had.

Pulse delivers out of order now and then, and Treeherder's loader never moves a job back: a completed job
stays completed, running does not return to pending, pending and running do not return to unscheduled. The
worker remembers, per destination and run, the furthest state it emitted, which states it emitted, and the
furthest task-events offset it emitted a job for, and holds back (and counts) a job that would move the run
back. A message at the same state passes: it is a redelivery or a replay, and Treeherder treats it as an update
of the same job.

One exception keeps the guard from turning a re-read into a loss: a job for a lower state that was never
emitted, from an event that comes *before* the furthest one in the log, goes out. That event was not delivered
late by Pulse (it would then sit after, not before); the worker is reading the log again past a point where an
earlier pass missed it (Faust can skip records around a rebalance), and holding it back would lose that job
for good. Treeherder keeps the later state, so the late job only fills the run's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATE_RANK: Mapping[str, int] = {"unscheduled": 0, "pending": 1, "running": 2, "completed": 3}
_UNKNOWN_OFFSET = -1


@dataclass(frozen=True, slots=True)
class GuardEntry:
    """What the guard knows of one run at one destination."""

    rank: int  # the furthest state emitted
    emitted: int  # a bit per state emitted (1 << rank)
    offset: int  # the furthest task-events offset whose job was emitted (-1: unknown, entries of old workers)

    def encode(self) -> bytes:
        return f"{self.rank} {self.emitted} {self.offset}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> GuardEntry:
        """Read an entry; a bare rank (as older workers wrote) counts every state up to it as emitted."""
        fields = raw.split()
        if len(fields) == 1:
            rank = int(fields[0])
            return cls(rank, (1 << (rank + 1)) - 1, _UNKNOWN_OFFSET)
        rank, emitted, offset = (int(field) for field in fields)
        return cls(rank, emitted, offset)


def guard_key(destination: str, job: Mapping[str, Any]) -> str:
    """``<destination>/<taskId>/<runId>``: the job message's taskId already carries the run."""
    return f"{destination}/{job['taskId']}"


def rank(job: Mapping[str, Any]) -> int:
    return STATE_RANK[job["state"]]


def moves_backwards(previous_rank: int | None, job: Mapping[str, Any]) -> bool:
    """True when ``job`` would take its run back to an earlier state than one already emitted."""
    return previous_rank is not None and rank(job) < previous_rank


def admit(entry: GuardEntry | None, job: Mapping[str, Any], offset: int) -> GuardEntry | None:
    """The run's entry once ``job`` (from the event at ``offset``) is emitted, or None to hold it back."""
    state = rank(job)
    bit = 1 << state
    if entry is None:
        return GuardEntry(state, bit, offset)
    if state >= entry.rank:
        return GuardEntry(state, entry.emitted | bit, max(offset, entry.offset))
    if entry.emitted & bit or offset > entry.offset:
        return None  # already emitted, or a late delivery: it would move the run back
    return GuardEntry(entry.rank, entry.emitted | bit, entry.offset)


def recovered(entry: GuardEntry | None, admitted: GuardEntry, job: Mapping[str, Any]) -> bool:
    """True when ``job`` was admitted below the run's furthest state: a job an earlier pass missed."""
    return entry is not None and rank(job) < admitted.rank
