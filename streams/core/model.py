"""The values the transform core takes and gives: parsed once at the edge, immutable after.

Every caller (the Faust agent, ``tc-treeherder transform``, replays, benchmarks) speaks these types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streams.core.fast import slots_init


class EventKind(StrEnum):
    """The Queue's task exchanges, by the word after ``task-``."""

    DEFINED = "defined"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXCEPTION = "exception"


class Stage(StrEnum):
    """Where an event stopped short of becoming a job; carried by rejected and ignored records."""

    ENVELOPE = "envelope"  # the envelope or the message body is malformed
    TASK = "task"  # the task definition could not be had or is malformed
    ROUTE = "route"  # route selection and parsing
    CONFIG = "config"  # extra.treeherder
    JOB = "job"  # building or validating the job message
    SOURCE = "source"  # the source connector could not make an envelope (e.g. a body that is not JSON)


@slots_init
@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One Queue task event, validated: the envelope's routing facts plus its message body."""

    exchange: str
    kind: EventKind
    routing_key: str
    root_url: str
    task_id: str
    run_id: int | None
    payload: Mapping[str, Any]

    @property
    def status(self) -> Mapping[str, Any]:
        return self.payload["status"]

    @property
    def run(self) -> Mapping[str, Any] | None:
        """The run this event is about (run 0 for task-defined, None when the status lists no such run)."""
        runs = self.payload["status"].get("runs") or []
        index = 0 if self.run_id is None else self.run_id
        return runs[index] if index < len(runs) else None


@dataclass(frozen=True, slots=True)
class ListingFailed:
    """The artifact listing of a run could not be fetched; the job still goes out, with no artifact links."""

    reason: str


@slots_init
@dataclass(frozen=True, slots=True)
class JobMessage:
    """One job message for one destination, with the routing key it is published under."""

    destination: str
    project: str
    routing_key: str
    job: Mapping[str, Any]

    def to_record(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "project": self.project,
            "routingKey": self.routing_key,
            "job": self.job,
        }


@slots_init
@dataclass(frozen=True, slots=True)
class Jobs:
    """The event became these job messages, one per destination that takes it (usually one).

    ``declined``: the destinations that take the task's route but not this job, each an Ignored or Rejected
    naming it (switched off, filtered out by project or tier, not valid in its profile). ``messages`` may be
    empty when several destinations declined.
    """

    messages: tuple[JobMessage, ...]
    declined: tuple[Ignored | Rejected, ...] = ()


@slots_init
@dataclass(frozen=True, slots=True)
class Ignored:
    """The event is not for Treeherder (no matching route, no extra.treeherder, ...). Counted, not an error."""

    task_id: str | None
    reason: str
    stage: Stage
    destination: str | None = None  # the one destination this is about, when the others may take the task


@slots_init
@dataclass(frozen=True, slots=True)
class Rejected:
    """The event was meant for Treeherder but cannot become a valid job; the reason says precisely why."""

    task_id: str | None
    reason: str
    stage: Stage
    destination: str | None = None  # the one destination this is about, when the others may take the task


Outcome = Jobs | Ignored | Rejected


def reason_class(reason: str) -> str:
    """A reason's group for counting: the text before the first colon ("task not found", ...), at most 80
    characters. Metrics, reports and the status page all count reasons by this."""
    return reason.split(":", 1)[0][:80]
