"""Keep a run's job from going backwards.

Pulse delivers out of order now and then, and Treeherder's loader never moves a job back: a completed job
stays completed, running does not return to pending, pending and running do not return to unscheduled. The
worker remembers the furthest state it emitted per destination and run, and suppresses (and counts) a job
message that would move it back. A message at the same state passes: it is a redelivery or a replay, and
Treeherder treats it as an update of the same job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATE_RANK: Mapping[str, int] = {"unscheduled": 0, "pending": 1, "running": 2, "completed": 3}


def guard_key(destination: str, job: Mapping[str, Any]) -> str:
    """``<destination>/<taskId>/<runId>``: the job message's taskId already carries the run."""
    return f"{destination}/{job['taskId']}"


def rank(job: Mapping[str, Any]) -> int:
    return STATE_RANK[job["state"]]


def moves_backwards(previous_rank: int | None, job: Mapping[str, Any]) -> bool:
    """True when ``job`` would take its run back to an earlier state than one already emitted."""
    return previous_rank is not None and rank(job) < previous_rank
