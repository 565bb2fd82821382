"""Say whether a task reaches Treeherder, and why: the jobs its events give, or the precise reason they do not.

No transform logic of its own: every event goes through ``streams.pipeline.process`` with the configured
``Rules``, exactly as in the worker. What this module adds is where the events come from (synthesized from a
task definition, read from a file, or read back from the task-events topic) and a hint for each reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.core.model import Ignored, Jobs, Outcome, Rejected, Stage
from streams.core.rules import Rules
from streams.shared.records import payload_task_id
from streams.taskcluster.lookup import TaskLookup, process
from streams.taskcluster.queue_client import QueueError, QueueRefused, QueueUnavailable, TaskNotFound

# Taskcluster's taskId pattern (a v4 slugid), as the Queue API checks it.
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$")
WORKER_GROUP = "explain"
WORKER_ID = "explain-worker"


@dataclass(frozen=True, slots=True)
class EventVerdict:
    """What one event becomes."""

    label: str  # "task-pending run 0", "line 3", "task-events 2@1041"
    outcome: str  # "jobs", "ignored" or "rejected"
    stage: str | None = None
    reason: str | None = None
    jobs: tuple[Mapping[str, Any], ...] = ()  # {"destination", "project", "routingKey", "job"}
    note: str | None = None  # e.g. why a job has no artifact links
    # destinations that take the route but not this job: {"destination", "outcome", "stage", "reason"}
    declined: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"event": self.label, "outcome": self.outcome, "stage": self.stage, "reason": self.reason,
                "jobs": list(self.jobs), "note": self.note, "declined": list(self.declined)}


@dataclass(frozen=True, slots=True)
class Explanation:
    """The verdicts for one task's events, and what to do about the first thing that stops them."""

    task_id: str | None
    origin: str  # "queue", "file", "log"
    verdicts: tuple[EventVerdict, ...]
    routes: tuple[str, ...] | None = None
    hint: str | None = None
    problems: tuple[str, ...] = field(default=())  # why events could not even be read or made

    @property
    def reaches_treeherder(self) -> bool:
        return any(v.outcome == "jobs" for v in self.verdicts)

    @property
    def summary(self) -> str:
        if self.reaches_treeherder:
            jobs = sum(len(v.jobs) for v in self.verdicts)
            destinations = sorted({j["destination"] for v in self.verdicts for j in v.jobs})
            return f"reaches Treeherder: {jobs} job message(s) for {', '.join(destinations)}"
        if self.problems and not self.verdicts:
            return "cannot tell: " + "; ".join(self.problems)
        first = next((v for v in self.verdicts if v.outcome != "jobs"), None)
        if first is None:
            return "does not reach Treeherder: no events"
        return f"does not reach Treeherder: {first.outcome} at stage {first.stage}: {first.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "origin": self.origin, "reachesTreeherder": self.reaches_treeherder,
                "summary": self.summary, "routes": list(self.routes) if self.routes is not None else None,
                "hint": self.hint, "problems": list(self.problems), "events": [v.to_json() for v in self.verdicts]}


def hint_for(stage: str | None, reason: str | None, rules: Rules) -> str | None:
    """What an operator or a task author can do about a reason, in one sentence."""
    reason = reason or ""
    prefixes = ", ".join(rules.route_prefixes)
    if stage == Stage.ROUTE:
        if reason.startswith("no route starts with"):
            return (f"add exactly one route <prefix>.v2.<project>.<revision>[.<pushId>] to the task, with a "
                    f"prefix among the configured ones ({prefixes}); the source's queue only receives such tasks")
        if "routes select a Treeherder destination" in reason:
            return "keep exactly one Treeherder route on the task: each destination is chosen by one route"
        if "is disabled" in reason:
            return "the destination is switched off in the settings (TC_TREEHERDER_DESTINATION_<NAME>_ENABLED)"
        if " is not taken by destination " in reason:
            return ("the destination takes only some projects or tiers (TC_TREEHERDER_DESTINATION_<NAME>_PROJECTS, "
                    "_EXCLUDE_PROJECTS, _MIN_TIER, _MAX_TIER): expected when the task is not for it")
        return "the Treeherder route must have the form <prefix>.v2.<project>.<revision>[.<pushId>]"
    if stage == Stage.CONFIG:
        if "no extra.treeherder" in reason:
            return "add an extra.treeherder section (at least a symbol) to the task definition"
        return "fix the field named in the reason, in the task's extra.treeherder (schema: task-treeherder-config)"
    if stage == Stage.TASK:
        if reason.startswith("task not found"):
            return "check the taskId and the root URL (--root-url, TASKCLUSTER_ROOT_URL)"
        if "unavailable" in reason:
            return "the Queue API did not answer: the worker waits for it; see docs/operations.md"
        return "the task definition itself is malformed for the field named in the reason"
    if stage == Stage.ENVELOPE:
        return "the event itself is malformed (as recorded from Pulse): the reason names the field"
    if stage == Stage.JOB and "created as an exception" in reason:
        return "expected: a run that never started (e.g. deadline exceeded) gives no job"
    if stage == Stage.JOB:
        return "the job message built from this task is not valid pulse-job: the reason names the field"
    return None


def _status(task_id: str, definition: Mapping[str, Any], runs: list[dict[str, Any]], state: str) -> dict[str, Any]:
    provisioner = definition.get("provisionerId")
    worker_type = definition.get("workerType")
    queue_id = definition.get("taskQueueId")
    if (not provisioner or not worker_type) and isinstance(queue_id, str) and "/" in queue_id:
        provisioner, _, worker_type = queue_id.partition("/")
    status: dict[str, Any] = {
        "taskId": task_id,
        "provisionerId": provisioner or "unknown",
        "workerType": worker_type or "unknown",
        "schedulerId": definition.get("schedulerId", "-"),
        "taskGroupId": definition.get("taskGroupId", task_id),
        "deadline": definition.get("deadline", definition.get("created")),
        "expires": definition.get("expires", definition.get("created")),
        "retriesLeft": definition.get("retries", 5) if isinstance(definition.get("retries"), int) else 5,
        "state": state,
        "runs": runs,
    }
    if isinstance(queue_id, str):
        status["taskQueueId"] = queue_id
    return status


def lifecycle_envelopes(task_id: str, definition: Mapping[str, Any], root_url: str,
                        exchange_prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, envelope) for run 0 going pending -> running -> completed, timed at the task's creation.

    These are the events a task that runs and succeeds produces; whether any becomes a job depends only on
    the definition, which is the point of explaining.
    """
    at = definition.get("created") if isinstance(definition.get("created"), str) else "2000-01-01T00:00:00.000Z"
    pending = {"runId": 0, "state": "pending", "reasonCreated": "scheduled", "scheduled": at}
    running = {**pending, "state": "running", "workerGroup": WORKER_GROUP, "workerId": WORKER_ID,
               "takenUntil": at, "started": at}
    completed = {**running, "state": "completed", "reasonResolved": "completed", "resolved": at}
    envelopes = []
    for kind, run in (("pending", pending), ("running", running), ("completed", completed)):
        status = _status(task_id, definition, [run], run["state"])
        payload: dict[str, Any] = {"version": 1, "status": status, "runId": 0}
        if kind != "pending":
            payload.update(workerGroup=WORKER_GROUP, workerId=WORKER_ID)
        if kind == "running":
            payload["takenUntil"] = at
        words = ["primary", task_id, "0", payload.get("workerGroup", "_"), payload.get("workerId", "_"),
                 status["provisionerId"], status["workerType"], status["schedulerId"], status["taskGroupId"], "_"]
        envelope = {"exchange": f"{exchange_prefix}task-{kind}", "routingKey": ".".join(words), "payload": payload,
                    "rootUrl": root_url}
        envelopes.append((f"task-{kind} run 0", envelope))
    return envelopes


class DefinitionLookup:
    """A ``TaskLookup`` with known definitions; listings from ``fallback`` (the Queue API) or empty.

    A listing that cannot be had is no reason to stop an explanation: the pipeline turns it into a job
    without links, and the verdict notes it.
    """

    def __init__(self, definitions: Mapping[str, Mapping[str, Any]], fallback: TaskLookup | None = None) -> None:
        self.definitions = dict(definitions)
        self.fallback = fallback
        self.listing_failures: dict[tuple[str, int], str] = {}

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        if task_id in self.definitions:
            return self.definitions[task_id]
        if self.fallback is None:

            raise TaskNotFound(f"task({task_id}): not in the given definitions", call="task", task_id=task_id,
                               root_url=root_url)
        definition = await self.fallback.task(root_url, task_id)
        self.definitions[task_id] = definition
        return definition

    async def artifacts(self, root_url: str, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]]:
        if self.fallback is None:
            return []
        try:
            return await self.fallback.artifacts(root_url, task_id, run_id)
        except QueueError as error:
            self.listing_failures[(task_id, run_id)] = str(error)
            raise


@dataclass(frozen=True, slots=True)
class NotJson:
    """An input line that is not JSON: rejected at the envelope stage, like ``transform`` does."""

    error: str


async def verdict(label: str, raw: Any, lookup: TaskLookup, rules: Rules, root_url: str) -> EventVerdict:
    """Run one raw envelope through the pipeline and say what it became."""
    if isinstance(raw, NotJson):
        return EventVerdict(label, "rejected", str(Stage.ENVELOPE), f"line is not JSON: {raw.error}")
    try:
        outcome: Outcome = await process(raw, lookup, rules, default_root_url=root_url)
    except QueueUnavailable as error:
        outcome = Rejected(getattr(error, "task_id", None), f"Queue API unavailable: {error}", Stage.TASK)
    if isinstance(outcome, Jobs):
        note = None
        failures = getattr(lookup, "listing_failures", {})
        if failures:
            note = "artifact listing unavailable, so the job has no artifact links: " + "; ".join(failures.values())
            failures.clear()
        declined = tuple({"destination": d.destination, "outcome": _kind(d), "stage": str(d.stage),
                          "reason": d.reason} for d in outcome.declined)
        if not outcome.messages:  # every destination of the route declined: the first reason stands for all
            first = outcome.declined[0]
            return EventVerdict(label, _kind(first), stage=str(first.stage), reason=first.reason, declined=declined)
        return EventVerdict(label, "jobs", jobs=tuple(m.to_record() for m in outcome.messages), note=note,
                            declined=declined)
    return EventVerdict(label, _kind(outcome), stage=str(outcome.stage), reason=outcome.reason)


def _kind(outcome: Ignored | Rejected) -> str:
    return "ignored" if isinstance(outcome, Ignored) else "rejected"


def _routes(definition: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    if not isinstance(definition, Mapping) or not isinstance(definition.get("routes"), list):
        return None
    return tuple(str(route) for route in definition["routes"])


def explanation(task_id: str | None, origin: str, verdicts: Iterable[EventVerdict], rules: Rules,
                definition: Mapping[str, Any] | None = None, problems: Iterable[str] = ()) -> Explanation:
    verdicts = tuple(verdicts)
    first = next((v for v in verdicts if v.outcome != "jobs"), None)
    reaches = any(v.outcome == "jobs" for v in verdicts)
    hint = None
    if first is not None and not (reaches and first.outcome == "ignored"):
        hint = hint_for(first.stage, first.reason, rules)
    return Explanation(task_id, origin, verdicts, _routes(definition), hint, tuple(problems))


async def explain_definition(task_id: str, definition: Mapping[str, Any], rules: Rules, root_url: str,
                             exchange_prefix: str, listings: TaskLookup | None = None,
                             origin: str = "queue") -> Explanation:
    """The lifecycle of run 0 of a task whose definition is known."""
    lookup = DefinitionLookup({task_id: definition}, listings)
    verdicts = [await verdict(label, envelope, lookup, rules, root_url)
                for label, envelope in lifecycle_envelopes(task_id, definition, root_url, exchange_prefix)]
    return explanation(task_id, origin, verdicts, rules, definition)


async def explain_task_id(task_id: str, lookup: TaskLookup, rules: Rules, root_url: str,
                          exchange_prefix: str) -> Explanation:
    """Fetch the definition from the Queue API, then explain its lifecycle."""

    try:
        definition = await lookup.task(root_url, task_id)
    except TaskNotFound:
        reason = f"task not found: {task_id} at {root_url}"
        return explanation(task_id, "queue", [EventVerdict("task()", "rejected", str(Stage.TASK), reason)], rules)
    except QueueRefused as error:
        reason = f"the Queue API refused the task lookup: {error}"
        return explanation(task_id, "queue", [EventVerdict("task()", "rejected", str(Stage.TASK), reason)], rules)
    except QueueUnavailable as error:
        reason = f"Queue API unavailable: {error}"
        return explanation(task_id, "queue", [EventVerdict("task()", "rejected", str(Stage.TASK), reason)], rules)
    return await explain_definition(task_id, definition, rules, root_url, exchange_prefix, listings=lookup)


async def explain_task_id_at(task_id: str, lookup: TaskLookup, rules: Rules, root_urls: Sequence[str],
                             exchange_prefix: str) -> tuple[Explanation, str]:
    """``explain_task_id`` at each Taskcluster deployment in turn until one knows the task: a taskId alone does
    not say which deployment it belongs to. Returns the explanation and the root URL it came from."""
    result, used = None, root_urls[0]
    for used in root_urls:
        result = await explain_task_id(task_id, lookup, rules, used, exchange_prefix)
        first = result.verdicts[0] if result.verdicts else None
        if first is None or first.label != "task()" or not (first.reason or "").startswith("task not found"):
            break
    assert result is not None
    return result, used


async def explain_envelopes(labelled: Iterable[tuple[str, Any]], lookup: TaskLookup, rules: Rules, root_url: str,
                            origin: str) -> list[Explanation]:
    """Recorded envelopes (a file, the log), grouped by task in order of first appearance."""

    by_task: dict[str | None, list[EventVerdict]] = {}
    for label, raw in labelled:
        task_id = payload_task_id(raw.get("payload")) if isinstance(raw, Mapping) else None
        result = await verdict(label, raw, lookup, rules, root_url)
        by_task.setdefault(task_id, []).append(result)
    definitions = getattr(lookup, "definitions", {})
    return [explanation(task_id, origin, verdicts, rules, definitions.get(task_id) if task_id else None)
            for task_id, verdicts in by_task.items()]


def looks_like_definition(document: Any) -> bool:
    """A task definition (what ``task()`` returns) rather than an event envelope."""
    return isinstance(document, Mapping) and "payload" in document and "metadata" in document \
        and "exchange" not in document


def looks_like_envelope(document: Any) -> bool:
    return isinstance(document, Mapping) and "exchange" in document and "payload" in document
