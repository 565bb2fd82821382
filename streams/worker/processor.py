"""Turn a batch of task-event records into job and rejected records.

This is the worker's logic without Faust: the agent hands in a batch read from the task-events topic and a
``WorkerState`` per event (the tables as seen from that event's partition), and gets back the records to
produce, in order per task. Tasks of one batch are handled concurrently, so a Queue API round trip for one
task never waits on another; events of one task stay in order. Nothing here raises on a bad event: every
event ends as job records or exactly one rejected/ignored record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from streams.core import state_guard
from streams.core.model import Ignored, Jobs, Rejected, Stage, reason_class
from streams.core.rules import Rules
from streams.shared import records
from streams.taskcluster.lookup import process
from streams.taskcluster.queue_client import QueueClient, QueueUnavailable

log = logging.getLogger(__name__)


class WorkerState(Protocol):
    """The worker's tables, read and written on behalf of one event (and so one partition)."""

    def definition(self, task_id: str) -> Mapping[str, Any] | None: ...
    def store_definition(self, task_id: str, definition: Mapping[str, Any]) -> None: ...
    def artifacts(self, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]] | None: ...
    def store_artifacts(self, task_id: str, run_id: int, artifacts: Sequence[Mapping[str, Any]]) -> None: ...
    def emitted(self, key: str) -> state_guard.GuardEntry | None: ...
    def store_emitted(self, key: str, entry: state_guard.GuardEntry) -> None: ...


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One record of the task-events topic, with what the agent needs to act on its behalf."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    state: WorkerState


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str  # "jobs" or "rejected": the processor does not know the namespaced names
    key: bytes
    value: bytes


@dataclass(slots=True)
class Counts:
    """What the worker did, for the status page, metrics and the closing summary."""

    events: int = 0
    jobs: Counter[str] = field(default_factory=Counter)  # per destination
    states: Counter[str] = field(default_factory=Counter)  # "<state>/<result>"
    ignored: Counter[str] = field(default_factory=Counter)  # per reason
    rejected: Counter[str] = field(default_factory=Counter)  # per reason
    suppressed: int = 0  # job messages held back by the state guard
    recovered: int = 0  # jobs for a state below the run's furthest, which an earlier pass missed (state_guard)
    rejected_by_stage: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason class)
    ignored_by_stage: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason class)
    queue_fetches: int = 0  # definitions and listings fetched (cache misses)
    read_back: int = 0  # records Faust's consumer skipped, read from Kafka directly (streams/worker/gaps.py)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a task waits for the Queue API before its event is rejected (and can be replayed)."""

    give_up_after: float = 300.0
    first_delay: float = 0.5
    max_delay: float = 15.0


class WorkerStopping(Exception):
    """The worker is shutting down in the middle of an event: the event must be left for the next owner.

    Deliberately not turned into a rejected record: the batch is not acknowledged, so whichever worker takes
    the partition over processes the event again once the Queue API answers.
    """


class CachedLookup:
    """Definitions and listings from the tables; the Queue API only on a miss, stored for the next time.

    A Queue API outage is retried in place for up to ``RetryPolicy.give_up_after`` seconds: the partition
    waits rather than rejecting events that will succeed a minute later.
    """

    def __init__(self, state: WorkerState, client: QueueClient, policy: RetryPolicy, counts: Counts,
                 stopping: Callable[[], bool]) -> None:
        self._state = state
        self._client = client
        self._policy = policy
        self._counts = counts
        self._stopping = stopping

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        cached = self._state.definition(task_id)
        if cached is not None:
            return cached
        definition = await self._patiently(lambda: self._client.task(root_url, task_id))
        self._state.store_definition(task_id, definition)
        return definition

    async def artifacts(self, root_url: str, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]]:
        cached = self._state.artifacts(task_id, run_id)
        if cached is not None:
            return cached
        listing = await self._patiently(lambda: self._client.list_artifacts(root_url, task_id, run_id))
        self._state.store_artifacts(task_id, run_id, listing)
        return listing

    async def _patiently(self, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        delay = self._policy.first_delay
        while True:
            self._counts.queue_fetches += 1
            try:
                return await call()
            except QueueUnavailable as error:
                if self._stopping():
                    raise WorkerStopping("stopping while the Queue API is unavailable") from error
                if time.monotonic() - started + delay > self._policy.give_up_after:
                    raise
                log.warning("Queue API unavailable (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._policy.max_delay)


class EventProcessor:
    """Runs the transform pipeline over batches, with the state guard applied to what comes out."""

    def __init__(self, rules: Rules, client: QueueClient, *, default_root_url: str,
                 policy: RetryPolicy | None = None, stopping: Callable[[], bool] = lambda: False) -> None:
        self.rules = rules
        self.client = client
        self.default_root_url = default_root_url
        self.policy = policy or RetryPolicy()
        self.counts = Counts()
        self._stopping = stopping

    async def process_batch(self, events: Sequence[SourceEvent]) -> list[OutputRecord]:
        """Records to produce for ``events``: per task in input order; tasks run concurrently."""
        by_task: dict[bytes | None, list[SourceEvent]] = {}
        for event in events:
            by_task.setdefault(event.key, []).append(event)
        per_task = await asyncio.gather(*(self._process_task(group) for group in by_task.values()))
        return [record for task_records in per_task for record in task_records]

    async def _process_task(self, events: list[SourceEvent]) -> list[OutputRecord]:
        output: list[OutputRecord] = []
        for event in events:
            output.extend(await self.process_event(event))
        return output

    async def process_event(self, event: SourceEvent) -> list[OutputRecord]:
        self.counts.events += 1
        source = {"topic": event.topic, "partition": event.partition, "offset": event.offset}
        try:
            raw = orjson.loads(event.value)
        except orjson.JSONDecodeError as error:
            return [self._rejected(Rejected(None, f"task-events record is not JSON: {error}", Stage.ENVELOPE),
                                   event, source, raw_envelope=None)]
        lookup = CachedLookup(event.state, self.client, self.policy, self.counts, self._stopping)
        try:
            outcome = await process(raw, lookup, self.rules, default_root_url=self.default_root_url)
        except QueueUnavailable as error:
            outcome = Rejected(_task_id(event), f"Queue API unavailable: {error}", Stage.TASK)
        if isinstance(outcome, Jobs):
            output = self._jobs(outcome, event, source, self._root_url(raw))
            output += [self._rejected(declined, event, source, raw_envelope=raw) for declined in outcome.declined]
            return output
        return [self._rejected(outcome, event, source, raw_envelope=raw)]

    def _root_url(self, raw: Any) -> str:
        """The event's Taskcluster root URL as the transform read it (the envelope's, else the default)."""
        given = raw.get("rootUrl") if isinstance(raw, dict) else None
        return (given if isinstance(given, str) and given else self.default_root_url).rstrip("/")

    def _jobs(self, outcome: Jobs, event: SourceEvent, source: dict[str, Any], root_url: str) -> list[OutputRecord]:
        output = []
        for message in outcome.messages:
            key = state_guard.guard_key(message.destination, message.job)
            previous = event.state.emitted(key)
            admitted = state_guard.admit(previous, message.job, event.offset)
            if admitted is None:
                self.counts.suppressed += 1
                continue
            if state_guard.recovered(previous, admitted, message.job):
                self.counts.recovered += 1
                log.warning("%s: emitting %s after %s was emitted: offset %d of partition %d was missed by an "
                            "earlier pass", key, message.job["state"], _STATES[admitted.rank], event.offset,
                            event.partition)
            if admitted != previous:
                event.state.store_emitted(key, admitted)
            self.counts.jobs[message.destination] += 1
            self.counts.states[f"{message.job['state']}/{message.job.get('result', 'unknown')}"] += 1
            value = records.encode_job_record(message, partition=event.partition, offset=event.offset,
                                              root_url=root_url)
            output.append(OutputRecord("jobs", event.key or b"", value))
        return output

    def _rejected(self, outcome: Ignored | Rejected, event: SourceEvent, source: dict[str, Any],
                  raw_envelope: Any) -> OutputRecord:
        kind = "ignored" if isinstance(outcome, Ignored) else "rejected"
        (self.counts.ignored if kind == "ignored" else self.counts.rejected)[reason_class(outcome.reason)] += 1
        by_stage = self.counts.ignored_by_stage if kind == "ignored" else self.counts.rejected_by_stage
        by_stage[(str(outcome.stage), reason_class(outcome.reason))] += 1
        fields = {"stage": str(outcome.stage), "reason": outcome.reason, "task_id": outcome.task_id or _task_id(event),
                  "kind": kind, "source": source, "destination": outcome.destination}
        try:
            value = records.encode_rejected_record(
                **fields, envelope=raw_envelope if raw_envelope is not None else event.value.decode("utf-8", "replace"))
        except TypeError:  # an envelope nested deeper than orjson writes (it reads deeper): keep it as text
            value = records.encode_rejected_record(**fields, envelope=event.value.decode("utf-8", "replace"))
        return OutputRecord("rejected", event.key or b"", value)


_STATES = {rank: state for state, rank in state_guard.STATE_RANK.items()}


def _task_id(event: SourceEvent) -> str | None:
    return event.key.decode("utf-8", "replace") if event.key else None


