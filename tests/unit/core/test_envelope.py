"""parse_envelope: each exchange parses; every malformed envelope is rejected naming the bad field."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.factories import ROOT_URL, TASK_ID, make_envelope, make_event
from streams.core import envelope as envelope_module
from streams.core.envelope import parse_envelope
from streams.core.model import EventKind, Rejected, Stage, TaskEvent
from streams.core.validation import envelope_check, event_check
from tests.conftest import PROPERTY_CASES
from tests.unit.test_properties_core import KINDS, bad_values, bodies, broken


@pytest.mark.parametrize("kind", [k.value for k in EventKind])
def test_each_exchange_parses_into_a_task_event(kind):
    envelope = make_envelope(make_event(kind), kind=kind, ccRoutes=["route.x"], receivedAt="2024-01-01T00:00:00Z")
    event = parse_envelope(envelope)
    assert isinstance(event, TaskEvent)
    assert event.kind is EventKind(kind)
    assert event.task_id == TASK_ID
    assert event.root_url == ROOT_URL
    assert event.run_id == (None if kind == "defined" else 0)
    assert event.exchange.endswith(f"/task-{kind}")


def test_exchange_prefix_is_not_fixed():
    envelope = make_envelope(make_event("pending"), exchange="exchange/my-queue/v2/task-pending")
    assert parse_envelope(envelope).kind is EventKind.PENDING


def test_root_url_falls_back_to_the_default_and_loses_a_trailing_slash():
    envelope = make_envelope(make_event("pending"), root_url=None)
    assert parse_envelope(envelope, default_root_url="https://tc.other.example/").root_url == "https://tc.other.example"
    rejected = parse_envelope(envelope)
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("rootUrl:")


def test_exception_without_run_id_is_about_the_latest_run():
    body = make_event("exception", run_id=1)
    del body["runId"]
    assert parse_envelope(make_envelope(body, kind="exception")).run_id == 1


def test_unknown_exchange_is_rejected_at_the_envelope_stage():
    rejected = parse_envelope(make_envelope(make_event("pending"), exchange="exchange/taskcluster-queue/v1/task-bogus"))
    assert isinstance(rejected, Rejected)
    assert rejected.stage is Stage.ENVELOPE
    assert rejected.task_id == TASK_ID
    assert rejected.reason.startswith("exchange: 'exchange/taskcluster-queue/v1/task-bogus' is not a task exchange")


def _bad_state(envelope):
    envelope["payload"]["status"]["runs"][0]["state"] = "bogus"


def _drop(*path):
    def edit(envelope):
        node = envelope
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def _set(value, *path):
    def edit(envelope):
        node = envelope
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("kind", "edit", "reason"),
    [
        ("completed", _bad_state, "payload.status.runs[0].state: 'bogus' is not one of ['pending', 'running',"),
        ("pending", _drop("payload", "runId"), "payload: 'runId' is a required property"),
        ("running", _drop("payload", "takenUntil"), "payload: 'takenUntil' is a required property"),
        ("completed", _drop("payload", "workerId"), "payload: 'workerId' is a required property"),
        ("pending", _set("x", "payload", "runId"), "payload.runId: 'x' is not of type 'integer'"),
        ("pending", _set(2, "payload", "version"), "payload.version: 1 was expected"),
        ("pending", _set("nope", "payload", "status", "taskId"), "payload.status.taskId: 'nope' does not match"),
        ("pending", _drop("payload", "status"), "payload: 'status' is a required property"),
        (
            "failed",
            _set("yesterday", "payload", "status", "runs", 0, "resolved"),
            "payload.status.runs[0].resolved: 'yesterday' does not match",
        ),
        (
            "exception",
            _set("oops", "payload", "status", "runs", 0, "reasonResolved"),
            "payload.status.runs[0].reasonResolved: 'oops' is not one of",
        ),
        ("pending", _set(3, "payload", "runId"), "payload.runId: run 3 is not in payload.status.runs (1 runs)"),
        ("pending", _set(5, "payload", "status", "runs", 0, "runId"), "payload.status.runs[0].runId: 5 should be 0"),
        ("pending", _set([], "payload"), "payload: [] is not of type 'object'"),
        ("pending", _drop("exchange"), "(top level): 'exchange' is a required property"),
        ("pending", _set(42, "routingKey"), "routingKey: 42 is not of type 'string'"),
        ("pending", _set("ftp://tc.example.com", "rootUrl"), "rootUrl: 'ftp://tc.example.com' does not match"),
    ],
)
def test_malformed_envelopes_are_rejected_naming_the_field(kind, edit, reason):
    envelope = make_envelope(make_event(kind), kind=kind)
    edit(envelope)
    rejected = parse_envelope(envelope)
    assert isinstance(rejected, Rejected), rejected
    assert rejected.stage is Stage.ENVELOPE
    assert rejected.reason.startswith(reason), rejected.reason


@pytest.mark.parametrize("raw", [None, "text", 42, ["exchange"]])
def test_an_envelope_that_is_not_an_object_is_rejected(raw):
    rejected = parse_envelope(raw)
    assert isinstance(rejected, Rejected)
    assert rejected.task_id is None
    assert rejected.reason.startswith("(top level): ") and "is not of type 'object'" in rejected.reason


def test_rejected_envelope_names_the_task_from_the_routing_key_when_the_body_does_not():
    envelope = make_envelope(make_event("pending"))
    envelope["payload"]["status"] = "broken"
    rejected = parse_envelope(envelope)
    assert rejected.task_id == TASK_ID
    assert rejected.reason.startswith("payload.status: 'broken' is not of type 'object'")


def test_a_huge_value_is_cut_in_the_reason():
    envelope = make_envelope(make_event("pending"))
    envelope["payload"]["status"]["taskId"] = "x" * 10_000
    rejected = parse_envelope(envelope)
    assert len(rejected.reason) < 400
    assert rejected.task_id is None or len(rejected.task_id) <= 64



_envelopes = st.one_of(
    bodies().flatmap(lambda body: broken(make_envelope(body))),
    st.builds(lambda body, kind: make_envelope(body, kind=kind), bodies(), st.sampled_from(KINDS)),  # mismatched
    bad_values,
)


@given(envelope=_envelopes, default_root_url=st.sampled_from([None, ROOT_URL]))
def test_the_one_call_check_passes_only_what_both_step_by_step_checks_pass(envelope, default_root_url):
    """The combined fast check is a shortcut: whatever it lets through, the envelope and body checks pass too,
    and parse_envelope gives the same outcome with the shortcut switched off."""
    PROPERTY_CASES["core: envelope shortcut"] += 1
    kind = envelope_module._sound_kind(envelope)
    if kind is not None:
        assert envelope_check().reference_errors(envelope) is None
        assert event_check(kind.value).reference_errors(envelope["payload"]) is None
    with patch.object(envelope_module, "_sound_kind", return_value=None):
        step_by_step = parse_envelope(envelope, default_root_url)
    assert parse_envelope(envelope, default_root_url) == step_by_step
