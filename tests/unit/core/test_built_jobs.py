"""The fast check of a built job trusts the fields build_job guarantees; these tests hold up that guarantee.

``pulse_job.GUARANTEED`` names the fields the fast check skips. Each is either made by build_job itself or
copied from input that was already checked at least as strictly: extra.treeherder (task-treeherder-config.json)
or the message body (task-event.json). The schema tests fail if someone loosens one of those schemas or
tightens pulse-job.json; the property test holds every job the core sends out to the full pulse-job schema.
"""

from __future__ import annotations

import re

import jsonschema
from hypothesis import given
from hypothesis import strategies as st

from devtools.factories import make_config, make_event, make_task, parsed
from streams.core.model import Jobs
from streams.core.pulse_job import GUARANTEED, built_job_errors, trusting_schema
from streams.core.rules import Rules
from streams.core.schemas import load_schema
from streams.core.transform import transform
from streams.core.validation import job_errors
from tests.conftest import PROPERTY_CASES
from tests.unit.test_properties_core import bad_values, bodies, nasty_text

JOB = load_schema("pulse-job")
CONFIG = load_schema("task-treeherder-config")["properties"]
EVENT = load_schema("task-event")["definitions"]
REFERENCE = jsonschema.Draft6Validator(JOB)
MACHINE = JOB["definitions"]["machine"]["properties"]
ASCII_WORD = "^[A-Za-z0-9_-]+$"  # a subset of Python's ^[\w-]+$ (re.search, as Treeherder checks)


def test_config_fields_copied_into_the_job_are_checked_as_strictly_in_extra_treeherder():
    copied = {
        ("tier", ""): "tier",
        ("jobKind", ""): "jobKind",
        ("reason", ""): "reason",
        ("productName", ""): "productName",
        ("jobSymbol", "display"): "symbol",
        ("groupSymbol", "display"): "groupSymbol",
        ("groupName", "display"): "groupName",
    }
    for (name, parent), config_name in copied.items():
        assert name in GUARANTEED[parent]
        job_field = JOB["properties"][parent]["properties"][name] if parent else JOB["properties"][name]
        assert CONFIG[config_name] == job_field, name


def test_machine_fields_from_the_config_or_the_run_are_within_the_job_schema():
    for name in ("os", "architecture"):
        from_config = CONFIG["machine"]["properties"][name]
        assert from_config["pattern"] == ASCII_WORD and MACHINE[name]["pattern"] == r"^[\w-]+$"
        assert from_config["minLength"] >= MACHINE[name]["minLength"]
        assert from_config["maxLength"] <= MACHINE[name]["maxLength"]
    worker_id = EVENT["identifier"]  # runs[].workerId, checked by parse_envelope
    assert EVENT["run"]["properties"]["workerId"] == {"$ref": "#/definitions/identifier"}
    assert worker_id["pattern"] == "^[a-zA-Z0-9_-]+$" and MACHINE["name"]["pattern"] == r"^[\w-]+$"
    assert worker_id["minLength"] >= MACHINE["name"]["minLength"]
    assert worker_id["maxLength"] <= MACHINE["name"]["maxLength"]
    for default in ("-", "unknown"):  # what build_job writes when the config or the run has none
        assert re.search(MACHINE["os"]["pattern"], default) and re.search(MACHINE["name"]["pattern"], default)


def test_only_the_guaranteed_fields_are_left_out_of_the_fast_check():
    trusting = trusting_schema(JOB)
    assert {k for k, v in trusting["properties"].items() if v == {}} == set(GUARANTEED[""])
    assert trusting["properties"]["display"]["properties"]["jobName"] == JOB["properties"]["display"]["properties"][
        "jobName"
    ]
    assert trusting["properties"]["buildMachine"]["properties"]["platform"] == MACHINE["platform"]
    for parent in ("display", "buildMachine"):
        assert trusting["properties"][parent]["additionalProperties"] is False
    assert trusting["required"] == JOB["required"] and trusting["additionalProperties"] is False
    assert JOB["properties"]["buildMachine"] == {"$ref": "#/definitions/machine"}  # the shared one is untouched


def test_fields_not_guaranteed_are_checked_and_explained_by_the_reference():
    job = _job(make_config())
    assert built_job_errors(job) is None
    job["owner"] = "x" * 51
    assert built_job_errors(job) == f"owner: {'x' * 51!r} is too long"
    job = _job(make_config())
    job["tier"] = 7  # a job build_job did not make: only job_errors judges every field
    assert job_errors(job) == "tier: 7 is greater than the maximum of 3"


def _job(config):
    outcome = transform(parsed(make_event("completed"), kind="completed"), make_task(treeherder=config), [], Rules())
    assert isinstance(outcome, Jobs), outcome
    return outcome.messages[0].job


edge_configs = st.fixed_dictionaries(
    {"symbol": st.one_of(nasty_text, bad_values)},
    optional={
        key: st.one_of(nasty_text, st.integers(-1, 5), bad_values)
        for key in ("groupSymbol", "groupName", "tier", "jobKind", "reason", "productName")
    }
    | {"machine": st.fixed_dictionaries({"platform": st.just("linux")},
                                        optional={"os": nasty_text, "architecture": nasty_text})},
)


@given(body=bodies(), config=edge_configs)
def test_every_job_that_goes_out_passes_the_full_schema(body, config):
    PROPERTY_CASES["core: built jobs against the full schema"] += 1
    kind = "defined" if "runId" not in body else None
    outcome = transform(parsed(body, kind=kind), make_task(treeherder=config), [], Rules())
    if isinstance(outcome, Jobs):
        for message in outcome.messages:
            errors = list(REFERENCE.iter_errors(message.job))
            assert not errors, errors[0].message
