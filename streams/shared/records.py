"""The records on the project's Kafka topics, as bytes on the wire: built, encoded and parsed here only.

Every process (source, worker, sink, replay, inspect) reads and writes these three shapes, so they live in
one module and are serialized one way (orjson, UTF-8 JSON objects):

- envelope, on ``task-events`` (key: the taskId as raw UTF-8 bytes): one Pulse message as it arrived;
- job record, on ``jobs`` (key: the taskId): one job message for one destination, with the position of the
  task event it came from;
- rejected record, on ``rejected`` (key: the taskId, or empty when unknown): an input that did not become a
  job, with the stage that stopped it and why; ``kind`` says whether it was rejected (an error someone should
  look at) or ignored (not meant for Treeherder); ``destination``, when present, names the one destination
  it is about (one that took the task's route but not this job), where others may have had a job.

Parsers raise ``RecordError`` with a precise reason; callers turn that into a rejected record.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from streams.core.model import JobMessage

RejectionKind = Literal["rejected", "ignored"]
KINDS: tuple[str, ...] = ("rejected", "ignored")

# How much of an oversized body a rejected record keeps: enough to recognise it, small enough for Kafka.
OVERSIZED_BODY_EXCERPT = 4096


class RecordError(ValueError):
    """A record on a topic does not have the shape this module writes; the message says what is wrong."""


def utc_now_iso() -> str:
    """The current time as ISO 8601 in UTC with milliseconds and a ``Z``, as every record carries it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _loads_object(value: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise RecordError(f"{what} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{what} is not a JSON object but {type(data).__name__}")
    return data


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str,
           optional: bool = False) -> Any:
    if name not in data or (optional and data[name] is None):
        if optional:
            return None
        raise RecordError(f"{what} has no {name!r}")
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise RecordError(f"{what}: {name!r} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


def task_key(task_id: str | None) -> bytes:
    """The Kafka key of every record about a task: its taskId as raw UTF-8 bytes (empty when unknown).

    Raw bytes, not JSON: the worker's tables are keyed the same way, and a quoted key would hash to another
    partition.
    """
    return task_id.encode() if task_id else b""


# --- Envelope (task-events) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Pulse message from a task exchange, as the source wrote it to the task-events topic."""

    exchange: str
    routing_key: str
    cc_routes: tuple[str, ...]
    payload: Mapping[str, Any]
    root_url: str
    received_at: str
    message_id: str

    @property
    def task_id(self) -> str | None:
        return payload_task_id(self.payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "routingKey": self.routing_key,
            "ccRoutes": list(self.cc_routes),
            "payload": self.payload,
            "rootUrl": self.root_url,
            "receivedAt": self.received_at,
            "messageId": self.message_id,
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


def payload_task_id(payload: Any) -> str | None:
    """The taskId a Queue message body is about (``status.taskId``), or None when it has none."""
    if not isinstance(payload, Mapping):
        return None
    status = payload.get("status")
    task_id = status.get("taskId") if isinstance(status, Mapping) else None
    return task_id if isinstance(task_id, str) and task_id else None


def message_id_for(exchange: str, routing_key: str, body: bytes) -> str:
    """A message id for a Pulse message that carries none: the same message redelivered gets the same id.

    Taskcluster does not set the AMQP ``message-id`` property, and a redelivery after a crash must be
    recognisable downstream as the same message.
    """
    digest = hashlib.sha256()
    for part in (exchange.encode(), routing_key.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:32]


def encode_envelope(*, exchange: str, routing_key: str, cc_routes: Sequence[str], payload: Any, root_url: str,
                    received_at: str, message_id: str) -> bytes:
    """Bytes of one envelope. ``payload`` may be the parsed body or ``orjson.Fragment(body)``.

    A Fragment splices the body as it came (already checked to be a JSON object) and saves re-serializing it.
    """
    return orjson.dumps({
        "exchange": exchange,
        "routingKey": routing_key,
        "ccRoutes": list(cc_routes),
        "payload": payload,
        "rootUrl": root_url,
        "receivedAt": received_at,
        "messageId": message_id,
    })


def decode_envelope(value: bytes | str) -> Envelope:
    what = "envelope"
    data = _loads_object(value, what)
    payload = _field(data, "payload", dict, what)
    cc_routes = _field(data, "ccRoutes", list, what, optional=True) or []
    if not all(isinstance(route, str) for route in cc_routes):
        raise RecordError(f"{what}: 'ccRoutes' holds something other than strings")
    return Envelope(
        exchange=_field(data, "exchange", str, what),
        routing_key=_field(data, "routingKey", str, what),
        cc_routes=tuple(cc_routes),
        payload=payload,
        root_url=_field(data, "rootUrl", str, what, optional=True) or "",
        received_at=_field(data, "receivedAt", str, what, optional=True) or "",
        message_id=_field(data, "messageId", str, what, optional=True) or "",
    )


# --- Job record (jobs) -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job message for one destination, and where in task-events its event was."""

    destination: str
    project: str
    routing_key: str
    job: Mapping[str, Any]
    source_partition: int | None
    source_offset: int | None
    # The Taskcluster deployment the task ran in; the sink sends it as the ``taskcluster-root-url`` header so one
    # Treeherder can take jobs from several deployments. None in records written before it existed: the sink
    # then sends its own configured root URL.
    root_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        record = {
            "destination": self.destination,
            "project": self.project,
            "routingKey": self.routing_key,
            "job": self.job,
            "source": _source(None, self.source_partition, self.source_offset),
        }
        if self.root_url:
            record["rootUrl"] = self.root_url
        return record

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())

    def job_body(self) -> bytes:
        """The message body the sink publishes: the job alone, as JSON."""
        return orjson.dumps(self.job)


def _source(topic: str | None, partition: int | None, offset: int | None) -> dict[str, Any] | None:
    if partition is None or offset is None:
        return None
    source: dict[str, Any] = {"topic": topic} if topic is not None else {}
    source.update(partition=partition, offset=offset)
    return source


def encode_job_record(message: JobMessage, *, partition: int | None, offset: int | None,
                      root_url: str | None = None) -> bytes:
    """Bytes of the job record for ``message``, made from the task event at ``partition``/``offset`` of the
    Taskcluster deployment at ``root_url``."""
    record = {**message.to_record(), "source": _source(None, partition, offset)}
    if root_url:
        record["rootUrl"] = root_url
    return orjson.dumps(record)


def decode_job_record(value: bytes | str) -> JobRecord:
    what = "job record"
    data = _loads_object(value, what)
    source = _field(data, "source", dict, what, optional=True) or {}
    return JobRecord(
        destination=_field(data, "destination", str, what),
        project=_field(data, "project", str, what),
        routing_key=_field(data, "routingKey", str, what),
        job=_field(data, "job", dict, what),
        source_partition=_field(source, "partition", int, f"{what} source", optional=True),
        source_offset=_field(source, "offset", int, f"{what} source", optional=True),
        root_url=_field(data, "rootUrl", str, what, optional=True) or None,
    )


# --- Rejected record (rejected) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """An input that did not become a job: which stage stopped it, why, and the input itself."""

    stage: str
    reason: str
    task_id: str | None
    kind: RejectionKind
    envelope: Any
    source: Mapping[str, Any] | None
    at: str
    destination: str | None = None  # the one destination it is about, when others may have taken the event

    def to_json(self) -> dict[str, Any]:
        data = {
            "stage": self.stage,
            "reason": self.reason,
            "taskId": self.task_id,
            "kind": self.kind,
            "envelope": self.envelope,
            "source": self.source,
            "at": self.at,
        }
        if self.destination is not None:
            data["destination"] = self.destination
        return data

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


def encode_rejected_record(*, stage: str, reason: str, task_id: str | None, kind: RejectionKind = "rejected",
                           envelope: Any, source: Mapping[str, Any] | None = None, at: str | None = None,
                           destination: str | None = None) -> bytes:
    """Bytes of one rejected (or ignored) record.

    ``envelope`` is the original envelope (parsed, or its undecodable text), or for a Pulse message the source
    could not turn into an envelope, what ``raw_message_envelope`` made of it. ``source`` is the input's
    position ``{"topic", "partition", "offset"}``, or None when the input never was on a topic.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return RejectedRecord(stage=str(stage), reason=reason, task_id=task_id, kind=kind, envelope=envelope,
                          source=dict(source) if source is not None else None, at=at or utc_now_iso(),
                          destination=destination).encode()


def decode_rejected_record(value: bytes | str) -> RejectedRecord:
    what = "rejected record"
    data = _loads_object(value, what)
    kind = _field(data, "kind", str, what)
    if kind not in KINDS:
        raise RecordError(f"{what}: 'kind' is {kind!r}, not one of {KINDS}")
    if "envelope" not in data:
        raise RecordError(f"{what} has no 'envelope'")
    return RejectedRecord(
        stage=_field(data, "stage", str, what),
        reason=_field(data, "reason", str, what),
        task_id=_field(data, "taskId", str, what, optional=True),
        kind=kind,
        envelope=data["envelope"],
        source=_field(data, "source", dict, what, optional=True),
        at=_field(data, "at", str, what),
        destination=_field(data, "destination", str, what, optional=True),
    )


def raw_message_envelope(body: bytes, *, exchange: str, routing_key: str, cc_routes: Sequence[str],
                         root_url: str, received_at: str, message_id: str,
                         max_body_bytes: int | None = None) -> dict[str, Any]:
    """The ``envelope`` of a rejected record for a Pulse message whose body could not be used.

    The AMQP routing facts, and the body as text when it is UTF-8 (``bodyEncoding: "utf-8"``), else base64.
    A body over ``max_body_bytes`` keeps only its first ``OVERSIZED_BODY_EXCERPT`` bytes (``bodyTruncated``),
    with its size and SHA-256, so the record itself still fits in Kafka.
    """
    kept = body
    truncated = max_body_bytes is not None and len(body) > max_body_bytes
    if truncated:
        kept = body[:OVERSIZED_BODY_EXCERPT]
    text, encoding = _utf8(kept, may_be_cut=truncated), "utf-8"
    if text is None:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    envelope: dict[str, Any] = {
        "exchange": exchange,
        "routingKey": routing_key,
        "ccRoutes": list(cc_routes),
        "rootUrl": root_url,
        "receivedAt": received_at,
        "messageId": message_id,
        "body": text,
        "bodyEncoding": encoding,
        "bodySize": len(body),
    }
    if truncated:
        envelope["bodyTruncated"] = True
        envelope["bodySha256"] = hashlib.sha256(body).hexdigest()
    return envelope


def _utf8(data: bytes, *, may_be_cut: bool) -> str | None:
    """``data`` as text when it is UTF-8; a cut body may end inside a character, so up to 3 bytes may go."""
    for cut in range(4 if may_be_cut else 1):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def task_id_from_routing_key(routing_key: str) -> str | None:
    """The taskId in a Queue primary routing key (``primary.<taskId>.<runId>...``), when it has one.

    Lets a rejected record of an unreadable body still be keyed, and so partitioned, by its task.
    """
    words = routing_key.split(".")
    if len(words) > 1 and words[0] == "primary" and words[1] not in ("", "_"):
        return words[1]
    return None
