"""The hot-path validator gives python-jsonschema's verdict (Treeherder's validator) on jobs and configs."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.factories import make_artifacts, make_config, make_event, make_task, parsed
from streams.core.model import Jobs
from streams.core.rules import Rules
from streams.core.transform import transform
from streams.core.validation import config_check, config_errors, job_check, job_errors


def _jobs():
    jobs = []
    for kind in ("defined", "pending", "running", "completed", "failed", "exception"):
        event = parsed(make_event(kind), kind=kind)
        outcome = transform(event, make_task(), make_artifacts("public/a.log", "public/b/a.log"), Rules())
        assert isinstance(outcome, Jobs)
        jobs.append(outcome.messages[0].job)
    return jobs


VALID_JOBS = _jobs()
COMPLETED = VALID_JOBS[3]


def _edit(path, value):
    job = copy.deepcopy(COMPLETED)
    node = job
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return job


INVALID_JOBS = {
    "owner too long": _edit(["owner"], "o" * 51),
    "state not in enum": _edit(["state"], "done"),
    "no display": _edit(["display"], KeyError),
    "no jobName": _edit(["display", "jobName"], KeyError),
    "unknown top-level key": _edit(["colour"], "red"),
    "tier 4": _edit(["tier"], 4),
    "tier is a boolean": _edit(["tier"], True),
    "version 2": _edit(["version"], 2),
    "version True": _edit(["version"], True),
    "retryId -1": _edit(["retryId"], -1),
    "label with a space": _edit(["labels"], ["o pt"]),
    "platform with a dot": _edit(["buildMachine", "platform"], "linux64.qr"),
    "revision not hex": _edit(["origin", "revision"], "g" * 40),
    "revision too short": _edit(["origin", "revision"], "a" * 39),
    "push id is a string": _edit(["origin", "id"], "12"),
    "link without label": _edit(["jobInfo", "links", 0, "label"], KeyError),
    "link text too long": _edit(["jobInfo", "links", 0, "linkText"], "x" * 126),
    "url too long for a log": _edit(["logs", 0, "url"], "https://x/" + "a" * 250),
    "taskId with a space": _edit(["taskId"], "a b/0"),
    "job symbol too long": _edit(["display", "jobSymbol"], "s" * 26),
    "empty group symbol": _edit(["display", "groupSymbol"], ""),
}

# Where jsonschema-rs (ECMA-262 regexes) is stricter than Treeherder's python-jsonschema: Treeherder accepts these.
STRICTER_FAST = {
    "unicode word character in the project": _edit(["origin", "project"], "projé"),
    "unicode digit in a label": _edit(["labels"], ["opt\u0663"]),
    "trailing newline in the platform ($ matches before it in Python)": _edit(["buildMachine", "platform"], "linux\n"),
}

# Formats are annotations for Treeherder (no format checker): not asserted here either.
FORMAT_ONLY = {
    "timeScheduled not a date": _edit(["timeScheduled"], "yesterday"),
    "log url not a uri": _edit(["logs", 0, "url"], "not a uri"),
    "link url with a space": _edit(["jobInfo", "links", 0, "url"], "https://x/a b"),
}

SAME_VALID = {
    "tier as 1.0": _edit(["tier"], 1.0),
    "empty job symbol": _edit(["display", "jobSymbol"], ""),
    "139-character name": _edit(["display", "jobName"], "n" * 140),
}


@pytest.mark.parametrize("job", VALID_JOBS + list(SAME_VALID.values()), ids=lambda j: str(j.get("state")))
def test_valid_jobs_agree(job):
    assert job_check().fast_is_valid(job)
    assert job_check().reference_errors(job) is None
    assert job_errors(job) is None


@pytest.mark.parametrize("name", sorted(INVALID_JOBS))
def test_invalid_jobs_agree_and_the_reason_names_the_field(name):
    job = INVALID_JOBS[name]
    try:
        fast = job_check().fast_is_valid(job)
    except ValueError:
        fast = False  # jsonschema-rs cannot read the value; the reference decides
    reference = job_check().reference_errors(job)
    assert fast is False
    assert reference is not None
    reason = job_errors(job)
    expected_path = ".".join(str(p) for p in reference.absolute_path).replace(".0", "[0]")
    assert reason is not None and reason.startswith(expected_path or "(top level)")


@pytest.mark.parametrize("name", sorted(STRICTER_FAST))
def test_where_the_fast_validator_is_stricter_treeherders_verdict_wins(name):
    job = STRICTER_FAST[name]
    assert not job_check().fast_is_valid(job)
    assert job_check().reference_errors(job) is None
    assert job_errors(job) is None


@pytest.mark.parametrize("name", sorted(FORMAT_ONLY))
def test_formats_are_not_asserted_by_either(name):
    job = FORMAT_ONLY[name]
    assert job_check().fast_is_valid(job)
    assert job_check().reference_errors(job) is None


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_fast_valid_implies_reference_valid_on_pattern_fields(text):
    for path in (["origin", "project"], ["buildMachine", "name"], ["buildMachine", "platform"], ["taskId"]):
        job = _edit(path, text)
        try:
            fast = job_check().fast_is_valid(job)
        except ValueError:
            continue
        reference = job_check().reference_errors(job) is None
        if fast:
            assert reference
        assert (job_errors(job) is None) is reference


@pytest.mark.parametrize(
    ("config", "valid"),
    [
        (make_config(), True),
        ({"symbol": ""}, True),
        (make_config(tier=0), False),
        (make_config(machine={"os": "linux"}), False),
        (make_config(machine={"platform": "linux64", "cpu": "x"}), False),
        (make_config(labels=["a" * 51]), False),
        (make_config(jobKind="lint"), False),
        (make_config(groupSymbol="G" * 26), False),
        (make_config(anything={"extra": "allowed"}), True),
        (make_config(machine={"platform": "linux64\n"}), True),  # Python's $ accepts a final newline
        (make_config(machine={"platform": "linuxé"}), False),  # [A-Za-z0-9_-] is ASCII in both
    ],
)
def test_configs_agree(config, valid):
    assert (config_check().reference_errors(config) is None) is valid
    assert (config_errors(config) is None) is valid
