"""The rules that turn one task event into job messages, or into a precise reason why not.

Pure: the caller brings the event, the task definition (Queue ``task()``) and, for resolved runs, the run's
full artifact listing (every page) or ``ListingFailed``. Every caller (stream worker, ``transform`` command,
replays, benchmarks) goes through ``transform``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from streams.core.facts import BadListing, JobFacts, artifact_links
from streams.core.fast import new_tuple
from streams.core.model import EventKind, Ignored, JobMessage, Jobs, ListingFailed, Outcome, Rejected, Stage, TaskEvent
from streams.core.parity import MOBILE_REPOS, decision_refusal, mobile_branch_refusal, needs_decision_task
from streams.core.profiles import PROFILES
from streams.core.routes import RouteProblem, TreeherderRoute, select_route
from streams.core.rules import DestinationRule, Rules
from streams.core.validation import config_errors, text_errors

_RESOLVED = (EventKind.COMPLETED, EventKind.FAILED, EventKind.EXCEPTION)
_RESOLVED_STATES = frozenset({"completed", "failed", "exception"})
# A NamedTuple's own __new__ is a Python function; building one per event from a tuple skips that call.


class Cleared(NamedTuple):
    """The checks passed: the parsed route, the validated config and the event's run (None for task-defined).

    ``check`` gives it; ``build`` takes it, so a caller that fetches artifacts between the two (the lookup step)
    runs the checks once per event, not twice."""

    route: TreeherderRoute
    config: Mapping[str, Any]
    run: Mapping[str, Any] | None


def preflight(event: TaskEvent, task: Mapping[str, Any], rules: Rules,
              decision: Mapping[str, Any] | None = None) -> Outcome | None:
    """Whether this event can become a job at all; None means go on (then fetch artifacts, then transform)."""
    checked = check(event, task, rules, decision)
    return None if type(checked) is Cleared else checked


def decision_task(task: Mapping[str, Any], rules: Rules) -> str | None:
    """The decision task the caller must fetch and pass as ``decision`` (Treeherder's rule for the tasks of a
    few mobile repositories, ``streams.core.parity``), or None. Without it the rule is left out."""
    routes = task.get("routes") if _is_mapping(task) else None
    if type(routes) is not list:
        return None
    try:
        route = select_route(routes, rules)
    except RouteProblem:
        return None
    return needs_decision_task(task, route.project) if route.project in MOBILE_REPOS else None


def artifacts_run(event: TaskEvent) -> int | None:
    """The run whose artifact listing the job needs: a resolved run of a completed/failed/exception event."""
    kind = event.kind
    if kind not in _RESOLVED or event.run_id is None:
        return None
    run = event.run
    if run is None or run["state"] not in _RESOLVED_STATES:
        return None
    if kind is EventKind.EXCEPTION and run["reasonCreated"] == "exception":  # no job for such a run
        return None
    return event.run_id


def transform(
    event: TaskEvent,
    task: Mapping[str, Any],
    artifacts: Sequence[Mapping[str, Any]] | ListingFailed | None,
    rules: Rules,
    decision: Mapping[str, Any] | None = None,
) -> Outcome:
    """Job messages for this event, one per destination that takes its route and its project and tier, each in
    that destination's profile; or Ignored/Rejected with the reason.

    A destination that takes the route but not the job (switched off, filtered out, or the job is not valid in
    its profile) gives an Ignored or Rejected naming it: beside the jobs in ``Jobs.declined``, or alone when it
    is the only destination of the route.
    """
    checked = check(event, task, rules, decision)
    if type(checked) is not Cleared:
        return checked
    return build(event, artifacts, rules, task, checked)


def build(event: TaskEvent, artifacts: Sequence[Mapping[str, Any]] | ListingFailed | None, rules: Rules,
          task: Mapping[str, Any], checked: Cleared) -> Outcome:
    """``transform`` after its checks: the jobs of an event that ``check`` cleared."""
    route, config, run = checked
    task_id = event.task_id
    run_id = event.run_id or 0
    # artifacts_run(event) is not None, with what the checks established: the run exists, not created as exception
    if event.kind in _RESOLVED and event.run_id is not None and run["state"] in _RESOLVED_STATES:  # type: ignore[index]
        listing = artifacts
    else:
        listing = None
    try:
        links = artifact_links(event.root_url, task_id, run_id, listing)
    except BadListing as problem:
        return Rejected(task_id, f"artifact listing of run {run_id}: {problem}", Stage.JOB)
    failure = listing.reason if listing is not None and isinstance(listing, ListingFailed) else None
    project = route.project
    targets = rules.targets(route.prefix)
    if len(targets) == 1 and not rules.filtering:  # the common case, one destination taking everything: no loop
        name = targets[0].name  # (switched off: _check has said so already)
        job = _build(targets[0].profile, name, event, task, route, config, run_id, run, links, failure)
        if type(job) is Rejected:
            return job
        return Jobs((JobMessage(name, project, f"{name}.{project}._", job),))  # type: ignore[arg-type]
    messages: list[JobMessage] = []
    declined: list[Ignored | Rejected] = []
    built: dict[str, dict[str, Any] | Rejected] = {}  # per profile: a job does not depend on the destination's name
    for target, refusal in _takers(event, route, config, rules):
        name = target.name
        if refusal is not None:
            declined.append(refusal)
            continue
        job = built.get(target.profile)
        if job is None:
            job = built[target.profile] = _build(target.profile, name, event, task, route, config, run_id, run,
                                                 links, failure)
        if type(job) is Rejected:
            declined.append(Rejected(task_id, job.reason, job.stage, name))
            continue
        messages.append(JobMessage(name, project, f"{name}.{project}._", job))  # type: ignore[arg-type]
    if messages:
        return Jobs(tuple(messages), tuple(declined))
    return _declined_outcome(declined)


def _takers(event: TaskEvent, route: TreeherderRoute, config: Mapping[str, Any] | None,
            rules: Rules) -> list[tuple[DestinationRule, Ignored | None]]:
    """Each destination of the route, with why it does not take this job (None: it does). Without ``config``
    (before it is read) only the switches are looked at."""
    out = []
    task_id = event.task_id
    for target in rules.targets(route.prefix):
        if not target.enabled:
            out.append((target, Ignored(task_id, f"destination {target.name!r} is disabled", Stage.ROUTE,
                                        target.name)))
        elif config is not None and target.filters:
            refusal = target.refusal(route.project, config.get("tier", 1))
            out.append((target, None if refusal is None else Ignored(task_id, refusal, Stage.ROUTE, target.name)))
        else:
            out.append((target, None))
    return out


def _declined_outcome(declined: Sequence[Ignored | Rejected]) -> Outcome:
    """No destination takes the job: the one reason as it is, or each destination's beside no jobs."""
    return declined[0] if len(declined) == 1 else Jobs((), tuple(declined))


def _build(profile_name: str, destination: str, event: TaskEvent, task: Mapping[str, Any], route: TreeherderRoute,
           config: Mapping[str, Any], run_id: int, run: Mapping[str, Any] | None, links: Any,
           failure: str | None) -> dict[str, Any] | Rejected:
    """The job in one profile, validated; Rejected with the reason when it is not valid in that profile."""
    facts = new_tuple(JobFacts, (event, task, route, destination, config, run_id, run, links, failure))
    profile = PROFILES[profile_name]
    job = profile.build(facts)
    problem = profile.errors(job) or text_errors(job)
    if problem is not None:
        return Rejected(event.task_id, f"job message is not valid {profile.name} format: {problem}", Stage.JOB)
    return job


def _is_mapping(value: object) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def check(event: TaskEvent, task: Mapping[str, Any], rules: Rules,
           decision: Mapping[str, Any] | None = None) -> Cleared | Outcome:
    """design.md's "Which tasks become jobs", in its order; ``Cleared`` when the event may become a job."""
    task_id = event.task_id
    if not _is_mapping(task):
        return Rejected(task_id, f"task: expected an object, got {type(task).__name__}", Stage.TASK)
    routes = task.get("routes", ())
    if type(routes) is not list:
        return Rejected(task_id, "task.routes: expected a list of strings", Stage.TASK)
    try:
        route = select_route(routes, rules)
    except RouteProblem as problem:
        if problem.ignore:
            return Ignored(task_id, problem.reason, Stage.ROUTE)
        return Rejected(task_id, problem.reason, problem.stage)
    if route.prefix in rules.switched_off:  # claimed, but every destination of the prefix is off: no job
        return _declined_outcome([refusal for _, refusal in _takers(event, route, None, rules)])  # type: ignore[misc]
    if route.project in MOBILE_REPOS:  # Treeherder's ignore_task, before it reads the config
        refusal = mobile_branch_refusal(task, route.project)
        if refusal is None and decision is not None and needs_decision_task(task, route.project):
            refusal = decision_refusal(route.project, decision)
        if refusal is not None:
            return Ignored(task_id, refusal, Stage.ROUTE)

    problem = _task_shape(task)
    if problem is not None:
        return Rejected(task_id, problem, Stage.TASK)

    config = task.get("extra", _NO_EXTRA).get("treeherder")
    if not config:  # Treeherder's handler takes an empty section ({}, "", ...) as none (validate_task)
        if config is None:
            return Ignored(task_id, "task has no extra.treeherder section", Stage.CONFIG)
        return Ignored(task_id, f"task's extra.treeherder is empty ({config!r}), which Treeherder takes as no "
                                "section", Stage.CONFIG)
    problem = config_errors(config)
    if problem is not None:
        return Rejected(task_id, problem, Stage.CONFIG)

    kind = event.kind
    run = None  # a task-defined job is built without a run
    if kind is not EventKind.DEFINED:
        run = event.run
        if run is None:
            return Ignored(task_id, f"task-{kind.value} names no run of the task: nothing to report", Stage.JOB)
        if kind is EventKind.EXCEPTION and run["reasonCreated"] == "exception":
            return Ignored(
                task_id,
                f"run {event.run_id} was created as an exception (e.g. deadline exceeded before it ran): no job",
                Stage.JOB,
            )
    if rules.filtering:  # no destination takes this project or tier: say so before the listing is fetched
        refusals = _takers(event, route, config, rules)
        if all(refusal is not None for _, refusal in refusals):
            return _declined_outcome([refusal for _, refusal in refusals])  # type: ignore[misc]
    return new_tuple(Cleared, (route, config, run))


_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


def _task_shape(task: Mapping[str, Any]) -> str | None:
    """The fields the job is built from, checked where a wrong type would otherwise surface as a crash."""
    metadata = task.get("metadata")
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        return "task.metadata: expected an object"
    if (
        type(metadata.get("name")) is not str
        or type(metadata.get("description")) is not str
        or type(metadata.get("owner")) is not str
    ):  # the common case is one test; the loop names the first bad field
        for key in ("name", "description", "owner"):
            if type(metadata.get(key)) is not str:
                return f"task.metadata.{key}: expected a string, got {type(metadata.get(key)).__name__}"
    if type(task.get("created")) is not str:
        return f"task.created: expected a string, got {type(task.get('created')).__name__}"
    extra = task.get("extra", _NO_EXTRA)
    if type(extra) is not dict and not isinstance(extra, Mapping):
        return "task.extra: expected an object"
    if type(task.get("workerType")) is not str and type(task.get("taskQueueId")) is not str:
        return "task.workerType: expected a string (or task.taskQueueId)"
    return None
