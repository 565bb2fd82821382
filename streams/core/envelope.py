"""Turn a recorded event envelope into a ``TaskEvent``, or say precisely what is wrong with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.core.model import EventKind, Rejected, Stage, TaskEvent
from streams.core.validation import envelope_check, envelope_fast_check, event_check

_KINDS = {f"task-{kind.value}": kind for kind in EventKind}
_NO_ROOT_URL = "rootUrl: missing, and no default root URL is configured"
# The times a job of each kind is built from: the schema cannot say "the run named by runId has them".
# Keyed by exchange name, which the envelope holds anyway: EventKind.value is a Python-level property.
_RUN_TIMES = {
    "task-running": ("started",),
    "task-completed": ("started", "resolved"),
    "task-failed": ("started", "resolved"),
    "task-exception": ("resolved",),
}


def exchange_kind(exchange: str) -> EventKind | None:
    """``.../task-pending`` -> PENDING; the exchange prefix is the deployment's business, only the last word counts."""
    return _KINDS.get(exchange.rpartition("/")[2])


def parse_envelope(raw: object, default_root_url: str | None = None) -> TaskEvent | Rejected:
    """Check the envelope and the message body for its exchange; a TaskEvent or a Rejected(ENVELOPE)."""
    kind = _sound_kind(raw)
    if kind is None:  # not plainly valid: the checks one by one, in order, say what is wrong
        problem = envelope_check().errors(raw)
        if problem is not None:
            return _reject(raw, problem)
        assert isinstance(raw, Mapping)  # the envelope schema says it is an object
        kind = exchange_kind(raw["exchange"])
        if kind is None:
            expected = ", ".join(f"task-{k.value}" for k in EventKind)
            return _reject(
                raw, f"exchange: {raw['exchange']!r} is not a task exchange (its name must end with /{{{expected}}})"
            )
        if not (raw.get("rootUrl") or default_root_url):
            return _reject(raw, _NO_ROOT_URL)
        problem = event_check(kind.value).errors(raw["payload"], "payload")
        if problem is not None:
            return _reject(raw, problem)
    envelope: Mapping[str, Any] = raw  # type: ignore[assignment]  # an object: either check above says so
    exchange: str = envelope["exchange"]
    root_url = envelope.get("rootUrl") or default_root_url
    if not root_url:
        return _reject(raw, _NO_ROOT_URL)
    payload = envelope["payload"]

    runs = payload["status"]["runs"]
    run_id: int | None = payload.get("runId")
    for index, run in enumerate(runs):
        if run["runId"] != index:
            return _reject(raw, f"payload.status.runs[{index}].runId: {run['runId']} should be {index}")
    if run_id is None and kind is EventKind.EXCEPTION and runs:
        run_id = len(runs) - 1  # an exception message without runId is about the latest run
    if run_id is not None and run_id >= len(runs):
        return _reject(raw, f"payload.runId: run {run_id} is not in payload.status.runs ({len(runs)} runs)")
    if run_id is not None:
        for name in _RUN_TIMES.get(exchange.rpartition("/")[2], ()):
            if name not in runs[run_id]:
                return _reject(raw, f"payload.status.runs[{run_id}]: a task-{kind.value} message's run needs "
                                    f"{name!r}, and it is missing")

    return TaskEvent(
        exchange=exchange,
        kind=kind,
        routing_key=envelope["routingKey"],
        root_url=root_url.rstrip("/"),
        task_id=payload["status"]["taskId"],
        run_id=run_id,
        payload=payload,
    )


def _sound_kind(raw: object) -> EventKind | None:
    """The event kind when the envelope and its body pass one fast check together (the common case), else None."""
    if type(raw) is not dict:
        return None
    exchange = raw.get("exchange")
    if type(exchange) is not str:
        return None
    name = exchange.rpartition("/")[2]
    kind = _KINDS.get(name)
    if kind is None:
        return None
    try:
        return kind if envelope_fast_check(name).is_valid(raw) else None
    except ValueError:  # a value jsonschema-rs cannot read: the reference checks judge it
        return None


def _reject(raw: object, reason: str) -> Rejected:
    return Rejected(task_id=_task_id_of(raw), reason=reason, stage=Stage.ENVELOPE)


def _task_id_of(raw: object) -> str | None:
    """The taskId when the envelope is sound enough to tell it (for the rejected record), else None."""
    if not isinstance(raw, Mapping):
        return None
    payload = raw.get("payload")
    status = payload.get("status") if isinstance(payload, Mapping) else None
    task_id = status.get("taskId") if isinstance(status, Mapping) else None
    if isinstance(task_id, str) and len(task_id) <= 64:
        return task_id
    key = raw.get("routingKey")
    if isinstance(key, str) and key.startswith("primary."):
        return key.split(".")[1] or None
    return None
