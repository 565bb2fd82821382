"""The ``treeherder`` profile: a job message in Treeherder's current pulse-job format."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from functools import cache, lru_cache
from typing import Any

from streams.core.facts import JobFacts
from streams.core.model import EventKind
from streams.core.schemas import load_schema
from streams.core.validation import SchemaCheck

JOB_NAME_LIMIT = 139
# Treeherder's loader cuts an owner longer than pulse-job's 50 characters to its first 49 before validating
# (treeherder/etl/job_loader.py, JobLoader._is_valid_job): a real bot's address has 52. Cut it the same way
# rather than lose every job of the task.
OWNER_LIMIT = 50
OWNER_CUT = 49
RESULTS = {"completed": "success", "failed": "fail"}
EXCEPTION_RESULTS = frozenset({"canceled", "superseded"})
_RESOLVED = (EventKind.COMPLETED, EventKind.FAILED, EventKind.EXCEPTION)

# The fields of pulse-job.json that build_job fills only with constants, with values it maps onto the schema's
# enums, with parts of the validated event (TaskEvent comes from parse_envelope alone), with task fields
# _task_shape has typed, or with extra.treeherder fields whose schema in task-treeherder-config.json is as strict
# as pulse-job's (tests/unit/core/test_built_jobs.py holds both schemas to that). The fast check of a built job
# skips them; every other field, and the keys allowed and required, are still checked. Property tests hold
# every job the core sends out to the full schema.
GUARANTEED: dict[str, tuple[str, ...]] = {
    "": (
        "buildSystem", "version", "isRetried", "retryId", "taskId", "state", "result", "tier", "jobKind", "reason",
        "productName", "timeScheduled", "timeStarted", "timeCompleted",
    ),
    "display": ("jobSymbol", "groupSymbol", "groupName"),
    "buildMachine": ("name", "os", "architecture"),
}


def job_state(kind: EventKind, run: Any) -> str:
    """The run's state, failed and exception reported as completed; unscheduled before any run."""
    if kind is EventKind.DEFINED or run is None:
        return "unscheduled"
    state = run["state"]
    return "completed" if state in ("failed", "exception") else state


def job_result(kind: EventKind, run: Any) -> str:
    if kind is EventKind.DEFINED or run is None:
        return "unknown"
    state = run["state"]
    if state == "exception":
        reason = run.get("reasonResolved")
        return reason if reason in EXCEPTION_RESULTS else "exception"
    return RESULTS.get(state, "unknown")


def job_labels(config: Any) -> list[str]:
    labels = config.get("labels")
    if labels:
        return list(labels)
    collection = config.get("collection")
    if collection and (type(collection) is dict or isinstance(collection, Mapping)):
        return list(collection)
    return ["opt"]


@lru_cache(maxsize=16384)
def task_uuid(task_id: str) -> str:
    """The taskId as Treeherder's job guids spell it (``slugid.decode`` as text); cached per task.

    The same bytes as slugid's decode, written out the way ``str(uuid.UUID)`` does, without building the UUID:
    a third of the cost on the first event of every task.
    """
    raw = binascii.a2b_base64(task_id.replace("-", "+").replace("_", "/") + "==")
    if len(raw) != 16:
        raise ValueError(f"taskId {task_id!r} is not a slugid (it decodes to {len(raw)} bytes, not 16)")
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def build_job(facts: JobFacts) -> dict[str, Any]:
    """The pulse-job message for ``facts`` (validated by the caller)."""
    event, task, route, _, config, run_id, run, links, _ = facts
    kind = event.kind
    metadata = task["metadata"]

    display: dict[str, Any] = {
        "jobSymbol": str(config["symbol"]),
        "groupSymbol": config.get("groupSymbol", "?"),
        "jobName": metadata["name"][:JOB_NAME_LIMIT],
    }
    if "groupName" in config:
        display["groupName"] = config["groupName"]

    machine = config.get("machine") or {}
    owner = metadata["owner"]
    job: dict[str, Any] = {
        "buildSystem": "taskcluster",
        "owner": owner if len(owner) <= OWNER_LIMIT else owner[:OWNER_CUT],
        "taskId": f"{task_uuid(event.task_id)}/{run_id}",
        "retryId": run_id,
        "isRetried": False,
        "display": display,
        "state": job_state(kind, run),
        "result": job_result(kind, run),
        "tier": config.get("tier", 1),
        "timeScheduled": task["created"],
        "jobKind": config.get("jobKind", "other"),
        "reason": config.get("reason", "scheduled"),
        "jobInfo": {"links": [], "summary": metadata["description"]},
        "origin": {"project": route.project, "revision": route.revision, "id": route.push_id},
        "labels": job_labels(config),
        "buildMachine": {
            "name": (run.get("workerId") if run is not None else None) or "unknown",
            "platform": machine.get("platform") or worker_type(task),
            "os": machine.get("os") or "-",
            "architecture": machine.get("architecture") or "-",
        },
        "version": 1,
    }
    if "productName" in config:
        job["productName"] = config["productName"]

    if kind is EventKind.RUNNING:
        job["timeStarted"] = run["started"]
    elif kind in _RESOLVED:
        if kind is EventKind.EXCEPTION:
            if "started" in run:
                job["timeStarted"] = run["started"]
            job["logs"] = []
            job["isRetried"] = facts.is_retried
        else:
            job["timeStarted"] = run["started"]
            job["logs"] = [{"name": "live_backing_log", "url": facts.log_url}]
        job["timeCompleted"] = run["resolved"]
        job["jobInfo"]["links"] = [{"label": "artifact uploaded", "linkText": text, "url": url} for text, url in links]
    return job


def worker_type(task: Any) -> str:
    """The task's workerType, or the worker type half of its taskQueueId on newer deployments."""
    value = task.get("workerType")
    if isinstance(value, str) and value:
        return value
    return str(task.get("taskQueueId", "")).partition("/")[2]


def trusting_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (pulse-job.json) with the GUARANTEED fields' subschemas replaced by ``{}`` (anything)."""
    properties = dict(schema["properties"])
    for parent, names in GUARANTEED.items():
        if parent:
            sub = properties[parent]
            if "$ref" in sub:  # buildMachine: a copy of the shared definition, so runMachine keeps the original
                sub = schema["definitions"][sub["$ref"].rpartition("/")[2]]
            properties[parent] = {**sub, "properties": {**sub["properties"], **{name: {} for name in names}}}
        else:
            properties.update({name: {} for name in names})
    return {**schema, "properties": properties}


@cache
def _built_check() -> SchemaCheck:
    schema = load_schema("pulse-job")
    return SchemaCheck(schema, fast_schema=trusting_schema(schema))


def built_job_errors(job: Any) -> str | None:
    """Why a job that build_job made is not valid pulse-job, or None; python-jsonschema writes every reason.

    Only for build_job's own output: the fast check takes the GUARANTEED fields on trust. Any other job goes
    through ``validation.job_errors``.
    """
    return _built_check().errors(job)
