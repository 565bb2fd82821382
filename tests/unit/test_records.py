"""The wire records: what one process writes, the next one reads back unchanged."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from streams.core.model import JobMessage
from streams.shared import records

BODY = {"version": 1, "status": {"taskId": "fN1SbArUTy2W8tyAFc4KaA", "runs": []}, "runId": 0}


def _envelope(**overrides: object) -> bytes:
    fields = {
        "exchange": "exchange/taskcluster-queue/v1/task-pending",
        "routing_key": "primary.fN1SbArUTy2W8tyAFc4KaA.0._._.proj-gecko.b-linux.gecko-level-1.GROUP._",
        "cc_routes": ["route.tc-treeherder.v2.try.abcdef"],
        "payload": BODY,
        "root_url": "https://tc.example.com",
        "received_at": "2024-05-01T10:00:00.000Z",
        "message_id": "m-1",
    }
    fields.update(overrides)
    return records.encode_envelope(**fields)  # type: ignore[arg-type]


def test_envelope_round_trip_uses_the_documented_field_names() -> None:
    raw = _envelope()
    assert set(orjson.loads(raw)) == {"exchange", "routingKey", "ccRoutes", "payload", "rootUrl", "receivedAt",
                                      "messageId"}
    envelope = records.decode_envelope(raw)
    assert envelope.payload == BODY
    assert envelope.cc_routes == ("route.tc-treeherder.v2.try.abcdef",)
    assert envelope.task_id == "fN1SbArUTy2W8tyAFc4KaA"
    assert records.decode_envelope(envelope.encode()) == envelope


def test_envelope_splices_an_unparsed_body_verbatim() -> None:
    body = b'{"status": {"taskId": "abc"},  "x": [1, 2]}'
    raw = _envelope(payload=orjson.Fragment(body))
    assert body in raw
    assert records.decode_envelope(raw).payload == {"status": {"taskId": "abc"}, "x": [1, 2]}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "envelope is not JSON"),
        (b"[1]", "not a JSON object but list"),
        (orjson.dumps({"exchange": "x", "routingKey": "y"}), "has no 'payload'"),
        (orjson.dumps({"exchange": "x", "routingKey": 3, "payload": {}}), "'routingKey' is int"),
        (orjson.dumps({"exchange": "x", "routingKey": "y", "payload": {}, "ccRoutes": [1]}), "ccRoutes"),
    ],
)
def test_a_malformed_envelope_says_what_is_wrong(value: bytes, reason: str) -> None:
    with pytest.raises(records.RecordError, match=reason):
        records.decode_envelope(value)


def test_task_key_is_raw_utf8_not_json() -> None:
    assert records.task_key("fN1SbArUTy2W8tyAFc4KaA") == b"fN1SbArUTy2W8tyAFc4KaA"
    assert records.task_key(None) == b""


@pytest.mark.parametrize(
    ("payload", "expected"),
    [({"status": {"taskId": "a"}}, "a"), ({"status": {"taskId": ""}}, None), ({"status": {}}, None),
     ({"status": "x"}, None), ([1], None), ({"status": {"taskId": 5}}, None)],
)
def test_payload_task_id(payload: object, expected: str | None) -> None:
    assert records.payload_task_id(payload) == expected


def test_message_id_is_stable_for_a_redelivery_and_differs_for_another_message() -> None:
    first = records.message_id_for("ex", "rk", b"{}")
    assert first == records.message_id_for("ex", "rk", b"{}")
    assert first != records.message_id_for("ex", "rk", b"{ }")
    assert first != records.message_id_for("exr", "k", b"{}")  # fields do not run into each other


def test_job_record_round_trip() -> None:
    message = JobMessage("tc-treeherder", "try", "tc-treeherder.try._", {"state": "running"})
    raw = records.encode_job_record(message, partition=3, offset=41)
    assert orjson.loads(raw) == {"destination": "tc-treeherder", "project": "try",
                                 "routingKey": "tc-treeherder.try._", "job": {"state": "running"},
                                 "source": {"partition": 3, "offset": 41}}
    record = records.decode_job_record(raw)
    assert (record.destination, record.routing_key, record.source_partition, record.source_offset) == (
        "tc-treeherder", "tc-treeherder.try._", 3, 41)
    assert orjson.loads(record.job_body()) == {"state": "running"}
    assert records.decode_job_record(record.encode()) == record


def test_a_job_record_carries_its_root_url_and_an_older_record_reads_without_one() -> None:
    message = JobMessage("tc-treeherder", "try", "tc-treeherder.try._", {"state": "running"})
    raw = records.encode_job_record(message, partition=0, offset=1, root_url="https://tc.example.com")
    assert orjson.loads(raw)["rootUrl"] == "https://tc.example.com"
    record = records.decode_job_record(raw)
    assert record.root_url == "https://tc.example.com"
    assert records.decode_job_record(record.encode()) == record
    older = records.decode_job_record(records.encode_job_record(message, partition=0, offset=1))
    assert older.root_url is None  # written before the field existed: the sink falls back to its setting
    assert "rootUrl" not in orjson.loads(older.encode())


def test_a_job_record_without_a_job_is_refused() -> None:
    with pytest.raises(records.RecordError, match="'job'"):
        records.decode_job_record(orjson.dumps({"destination": "d", "project": "p", "routingKey": "r"}))
    with pytest.raises(records.RecordError, match="'partition' is bool"):
        records.decode_job_record(orjson.dumps({"destination": "d", "project": "p", "routingKey": "r", "job": {},
                                                "source": {"partition": True, "offset": 1}}))


def test_rejected_record_round_trip() -> None:
    raw = records.encode_rejected_record(stage="route", reason="two routes", task_id="abc", kind="rejected",
                                         envelope={"payload": {}},
                                         source={"topic": "t", "partition": 1, "offset": 2})
    data = orjson.loads(raw)
    assert set(data) == {"stage", "reason", "taskId", "kind", "envelope", "source", "at"}
    assert data["at"].endswith("Z")
    record = records.decode_rejected_record(raw)
    assert (record.stage, record.kind, record.task_id, record.source) == (
        "route", "rejected", "abc", {"topic": "t", "partition": 1, "offset": 2})
    assert records.decode_rejected_record(record.encode()) == record


def test_rejected_record_kind_is_checked_on_both_sides() -> None:
    with pytest.raises(ValueError, match="kind"):
        records.encode_rejected_record(stage="x", reason="y", task_id=None, kind="lost",  # type: ignore[arg-type]
                                       envelope=None)
    raw = orjson.dumps({"stage": "x", "reason": "y", "taskId": None, "kind": "lost", "envelope": None,
                        "source": None, "at": "now"})
    with pytest.raises(records.RecordError, match="kind"):
        records.decode_rejected_record(raw)


def _raw(body: bytes, limit: int | None = None) -> dict[str, object]:
    return records.raw_message_envelope(body, exchange="ex", routing_key="primary.T1.0", cc_routes=["route.a"],
                                        root_url="https://tc", received_at="now", message_id="m",
                                        max_body_bytes=limit)


def test_raw_envelope_keeps_a_text_body_as_text_and_binary_as_base64() -> None:
    text = _raw(b"<html>oops</html>")
    assert (text["body"], text["bodyEncoding"], text["bodySize"]) == ("<html>oops</html>", "utf-8", 17)
    assert text["routingKey"] == "primary.T1.0" and text["ccRoutes"] == ["route.a"]
    binary = _raw(b"\xff\xfe\x00")
    assert binary["bodyEncoding"] == "base64"
    assert base64.b64decode(binary["body"]) == b"\xff\xfe\x00"  # type: ignore[arg-type]


def test_raw_envelope_cuts_an_oversized_body_but_says_so() -> None:
    body = ("é" * 5000).encode()  # a cut lands inside a two-byte character
    envelope = _raw(body, limit=1000)
    assert envelope["bodyTruncated"] is True
    assert envelope["bodySize"] == len(body)
    assert envelope["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert envelope["bodyEncoding"] == "utf-8"
    assert len(envelope["body"].encode()) <= records.OVERSIZED_BODY_EXCERPT  # type: ignore[union-attr]


def test_task_id_from_routing_key() -> None:
    assert records.task_id_from_routing_key("primary.T1.0.wg.wi.prov.wt.sched.grp._") == "T1"
    assert records.task_id_from_routing_key("primary._.0") is None
    assert records.task_id_from_routing_key("route.tc-treeherder.v2.try.abc") is None
