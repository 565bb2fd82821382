"""Builders of realistic task events, task definitions and envelopes for tests.

Everything has sensible defaults modelled on Firefox CI; pass only what a test is about::

    task = make_task(routes=["tc-treeherder.v2.autoland.<rev>.12"], treeherder={"symbol": "B"})
    event = make_event("completed", run_id=0)
    envelope = make_envelope(event)                     # the JSON the source connector records
    parsed = parse_envelope(envelope)                   # -> TaskEvent
"""

from __future__ import annotations

import copy
from typing import Any

from streams.core.envelope import parse_envelope
from streams.core.model import TaskEvent

TASK_ID = "B3EheQ-IQ5aPzw34KS_a6g"  # decodes to 07712179-0f88-4396-8fcf-0df8292fdaea
TASK_UUID = "07712179-0f88-4396-8fcf-0df8292fdaea"
TASK_GROUP_ID = "EJAo7mQyRqS-jmzebhceFA"
REVISION = "918d7c84da371bda26460fb4b50f161d32107880"
ROOT_URL = "https://tc.example.com"
EXCHANGE_PREFIX = "exchange/taskcluster-queue/v1/"
ROUTE = f"tc-treeherder.v2.autoland.{REVISION}.88554"
CREATED = "2019-06-26T18:07:13.543Z"
SCHEDULED = "2019-06-26T19:26:10.905Z"
STARTED = "2019-06-26T19:27:48.307Z"
RESOLVED = "2019-06-26T19:36:10.521Z"
TAKEN_UNTIL = "2019-06-26T19:47:48.234Z"
WORKER_GROUP = "mdc2"
WORKER_ID = "t-mojave-r7-153"

_UNSET: Any = object()


def make_config(**overrides: Any) -> dict[str, Any]:
    """An ``extra.treeherder`` section; pass ``key=_drop`` style removal with ``drop=[...]``."""
    drop = overrides.pop("drop", ())
    config = {
        "symbol": "tp6-7",
        "groupSymbol": "Rap",
        "groupName": "Raptor performance tests on Firefox",
        "collection": {"opt": True},
        "jobKind": "test",
        "machine": {"platform": "macosx1014-64-shippable"},
        "tier": 1,
    }
    config.update(overrides)
    for key in drop:
        config.pop(key, None)
    return config


def make_task(
    *,
    routes: list[str] | None = None,
    treeherder: dict[str, Any] | None = _UNSET,
    name: str = "test-macosx1014-64-shippable/opt-raptor-tp6-7-firefox-e10s",
    owner: str = "dev@example.com",
    description: str = "Raptor tp6-7 on Firefox",
    worker_type: str = "gecko-t-osx-1014",
    created: str = CREATED,
    **fields: Any,
) -> dict[str, Any]:
    """A task definition as the Queue's ``task()`` returns it. ``treeherder=None`` leaves extra.treeherder out."""
    extra: dict[str, Any] = {"index": {"rank": 0}}
    if treeherder is _UNSET:
        extra["treeherder"] = make_config()
    elif treeherder is not None:
        extra["treeherder"] = treeherder
    task = {
        "provisionerId": "releng-hardware",
        "workerType": worker_type,
        "schedulerId": "gecko-level-3",
        "taskGroupId": TASK_GROUP_ID,
        "dependencies": [],
        "requires": "all-completed",
        "routes": [ROUTE, "index.gecko.v2.autoland.latest"] if routes is None else routes,
        "priority": "low",
        "retries": 5,
        "created": created,
        "deadline": "2019-06-27T18:07:13.543Z",
        "expires": "2020-06-25T18:07:13.543Z",
        "scopes": [],
        "payload": {"maxRunTime": 1800},
        "metadata": {"name": name, "description": description, "owner": owner, "source": "https://hg.example/"},
        "tags": {"kind": "test"},
        "extra": extra,
    }
    task.update(fields)
    return task


def make_run(
    run_id: int,
    state: str,
    *,
    reason_created: str = "scheduled",
    reason_resolved: str | None = None,
    started: bool | None = None,
) -> dict[str, Any]:
    """One entry of ``status.runs``, with the fields the Queue sets at that state."""
    run: dict[str, Any] = {"runId": run_id, "state": state, "reasonCreated": reason_created, "scheduled": SCHEDULED}
    claimed = state in ("running", "completed", "failed") if started is None else started
    if claimed:
        run.update(workerGroup=WORKER_GROUP, workerId=WORKER_ID, takenUntil=TAKEN_UNTIL, started=STARTED)
    if state in ("completed", "failed", "exception"):
        run["resolved"] = RESOLVED
        run["reasonResolved"] = reason_resolved or {"completed": "completed", "failed": "failed"}.get(
            state, "worker-shutdown"
        )
    return run


_DEFAULT_STATE = {
    "defined": "unscheduled",
    "pending": "pending",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "exception": "exception",
}


def make_event(
    kind: str,
    *,
    run_id: int | None = _UNSET,
    runs: list[dict[str, Any]] | None = None,
    task_id: str = TASK_ID,
    reason_resolved: str | None = None,
    reason_created: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The message body of the ``task-<kind>`` exchange (a payload, not yet an envelope).

    By default the task has one run (none for ``defined``) in the state that the exchange announces.
    """
    if run_id is _UNSET:
        run_id = None if kind == "defined" else 0
    if reason_created is None:
        reason_created = "retry" if run_id else "scheduled"
    if runs is None:
        if kind == "defined":
            runs = []
        else:
            runs = [
                make_run(i, "exception", reason_resolved="worker-shutdown", started=True) for i in range(run_id or 0)
            ]
            for earlier in runs[1:]:
                earlier["reasonCreated"] = "retry"
            runs.append(
                make_run(
                    run_id or 0, _DEFAULT_STATE[kind], reason_created=reason_created, reason_resolved=reason_resolved
                )
            )
    state = runs[-1]["state"] if runs else "unscheduled"
    body: dict[str, Any] = {
        "version": 1,
        "status": {
            "taskId": task_id,
            "provisionerId": "releng-hardware",
            "workerType": "gecko-t-osx-1014",
            "schedulerId": "gecko-level-3",
            "taskGroupId": TASK_GROUP_ID,
            "deadline": "2019-06-27T18:07:13.543Z",
            "expires": "2020-06-25T18:07:13.543Z",
            "retriesLeft": 5,
            "state": state,
            "runs": runs,
        },
    }
    if run_id is not None:
        body["runId"] = run_id
    run = runs[run_id] if run_id is not None and run_id < len(runs) else None
    if kind == "running" or (kind in ("completed", "failed") or (kind == "exception" and run and "workerId" in run)):
        body["workerGroup"] = WORKER_GROUP
        body["workerId"] = WORKER_ID
    if kind == "running":
        body["takenUntil"] = TAKEN_UNTIL
    body.update(fields)
    return body


def make_envelope(
    payload: dict[str, Any] | None = None,
    *,
    kind: str | None = None,
    root_url: str | None = ROOT_URL,
    exchange: str | None = None,
    routing_key: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The envelope the source connector records for one message.

    ``kind`` picks the exchange (default: guessed from the payload, ``pending`` if it cannot tell).
    """
    if payload is None:
        payload = make_event(kind or "pending")
    if kind is None:
        kind = _guess_kind(payload)
    status = payload.get("status", {}) if isinstance(payload, dict) else {}
    if routing_key is None:
        words = [
            "primary",
            status.get("taskId", "_"),
            str(payload.get("runId", "_")) if isinstance(payload, dict) else "_",
            payload.get("workerGroup", "_") if isinstance(payload, dict) else "_",
            payload.get("workerId", "_") if isinstance(payload, dict) else "_",
            status.get("provisionerId", "_"),
            status.get("workerType", "_"),
            status.get("schedulerId", "_"),
            status.get("taskGroupId", "_"),
            "_",
        ]
        routing_key = ".".join(words)
    envelope: dict[str, Any] = {
        "exchange": exchange if exchange is not None else f"{EXCHANGE_PREFIX}task-{kind}",
        "routingKey": routing_key,
        "payload": payload,
    }
    if root_url is not None:
        envelope["rootUrl"] = root_url
    envelope.update(extra)
    return envelope


def _guess_kind(payload: Any) -> str:
    try:
        runs = payload["status"]["runs"]
        if "runId" not in payload:
            return "defined"
        return {"unscheduled": "defined"}.get(runs[payload["runId"]]["state"], runs[payload["runId"]]["state"])
    except (KeyError, IndexError, TypeError):
        return "pending"


def make_artifacts(*names: str) -> list[dict[str, Any]]:
    """An artifact listing (all pages joined) with these names."""
    return [
        {"storageType": "s3", "name": name, "expires": "2020-06-25T18:07:13.543Z", "contentType": "text/plain"}
        for name in names
    ]


def parsed(payload: dict[str, Any] | None = None, **envelope_options: Any):
    """parse_envelope(make_envelope(...)), asserting it parses: the TaskEvent."""

    event = parse_envelope(make_envelope(payload, **envelope_options))
    assert isinstance(event, TaskEvent), event
    return event


def deep(value: Any) -> Any:
    return copy.deepcopy(value)
