"""Bad input, property-based, at the pure core: ``parse_envelope`` + ``transform``.

Whatever the envelope, message body, task definition or ``extra.treeherder`` section, the core returns (never
raises) either job messages that python-jsonschema (Treeherder's own validator) accepts against
``schemas/pulse-job.json`` and that encode as UTF-8 JSON, or an ignored/rejected outcome with a non-empty reason
that itself encodes into a rejected record. Inputs start from realistic factories and are then broken at a
random place: a field dropped, given the wrong type, a huge or non-Unicode string, deep nesting.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import orjson
from hypothesis import given
from hypothesis import strategies as st

from devtools.factories import ROOT_URL, make_artifacts, make_config, make_envelope, make_event, make_task
from streams.core.envelope import parse_envelope
from streams.core.model import Ignored, Jobs, Rejected, TaskEvent
from streams.core.rules import Rules
from streams.core.schemas import load_schema
from streams.core.transform import transform
from streams.shared import records
from tests.conftest import PROPERTY_CASES

KINDS = ("defined", "pending", "running", "completed", "failed", "exception")
REFERENCE = jsonschema.Draft7Validator(load_schema("pulse-job"))
RULES = Rules()

# --- Strategies (also used by the processor and source property tests) ---------------------------------------

LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(st.one_of(st.characters(), LONE_SURROGATES), min_size=1, max_size=20),  # lone surrogates mixed in
    st.sampled_from(["", " ", "\n", "\x00", "../..", "%s%n", "\u202e", "🦊" * 3, "a" * 139, "a" * 140]),
    st.integers(10_000, 1_100_000).map(lambda n: "x" * n),  # huge strings, up to over a megabyte
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), nasty_text)


def _nested(depth: int, leaf: Any, as_object: bool) -> Any:
    for _ in range(depth):
        leaf = {"a": leaf} if as_object else [leaf]
    return leaf


deep_values = st.builds(_nested, st.sampled_from([50, 300, 1_100, 5_000]), scalars, st.booleans())
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)), max_leaves=12)
bad_values = st.one_of(scalars, json_values, deep_values)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` that a mutation can hit (the root excluded; not inside what a mutation nested)."""
    found: list[tuple[Any, ...]] = []
    if len(prefix) > 8:
        return found
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return found
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def broken(draw: st.DrawFn, value: Any, max_mutations: int = 3) -> Any:
    """``value`` with one to ``max_mutations`` fields dropped or replaced by a bad value (deep-copied)."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(value)
        if not paths:
            return draw(bad_values)
        path = draw(st.sampled_from(paths))
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(bad_values)
    return value


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A sound message body of any of the six task exchanges, for any run."""
    kind = draw(st.sampled_from(KINDS))
    run_id = None if kind == "defined" else draw(st.integers(0, 2))
    return make_event(kind, run_id=run_id)


configs = st.one_of(
    st.builds(make_config),
    broken(make_config(), max_mutations=4),
    st.dictionaries(st.sampled_from(["symbol", "groupSymbol", "groupName", "tier", "jobKind", "machine",
                                     "collection", "labels", "productName", "reason"]), bad_values, max_size=6),
    bad_values,
)
tasks = st.one_of(
    st.builds(lambda config: make_task(treeherder=config), configs),
    broken(make_task(), max_mutations=3),
    bad_values,
)
listings = st.one_of(st.none(), st.just(make_artifacts("public/logs/live_backing.log", "public/a/b.txt")),
                     broken(make_artifacts("public/a.txt", "public/b/"), max_mutations=2))


# --- The property -------------------------------------------------------------------------------------------

def assert_sound(outcome: Any) -> None:
    """Jobs valid for Treeherder and encodable, or a reason a rejected record can carry."""
    if isinstance(outcome, Jobs):
        assert outcome.messages
        for message in outcome.messages:
            errors = sorted(REFERENCE.iter_errors(message.job), key=str)
            assert not errors, f"invalid job went out: {errors[0].message}"
            records.encode_job_record(message, partition=0, offset=0)  # raises if it cannot be written
    else:
        assert isinstance(outcome, Ignored | Rejected), outcome
        assert isinstance(outcome.reason, str) and outcome.reason.strip()
        records.encode_rejected_record(stage=str(outcome.stage), reason=outcome.reason, task_id=outcome.task_id,
                                       envelope=None)


def run_core(envelope: Any, task: Any, listing: Any) -> Any:
    event = parse_envelope(envelope, ROOT_URL)
    if isinstance(event, Rejected):
        return event
    assert isinstance(event, TaskEvent)
    return transform(event, task, listing, RULES)


@given(envelope=st.one_of(bodies().flatmap(lambda body: broken(make_envelope(body))), bad_values),
       listing=listings)
def test_broken_envelopes_and_bodies_become_jobs_or_reasons(envelope, listing):
    PROPERTY_CASES["core: envelopes and message bodies"] += 1
    assert_sound(run_core(envelope, make_task(), listing))


@given(body=bodies(), task=tasks, listing=listings)
def test_broken_task_definitions_and_configs_become_jobs_or_reasons(body, task, listing):
    PROPERTY_CASES["core: task definitions and extra.treeherder"] += 1
    assert_sound(run_core(make_envelope(body), task, listing))


@given(body=bodies(), config=configs)
def test_a_treeherder_section_is_either_used_or_named_in_the_reason(body, config):
    PROPERTY_CASES["core: extra.treeherder alone"] += 1
    outcome = run_core(make_envelope(body), make_task(treeherder=config), None)
    assert_sound(outcome)
    if isinstance(outcome, Rejected) and outcome.stage == "config":
        assert outcome.reason.startswith("extra.treeherder"), outcome.reason


def test_a_lone_surrogate_is_rejected_by_the_core_not_at_encoding_time():
    """Both validators accept "\\ud800"; a job carrying it could never be written, so the core rejects it."""
    event = parse_envelope(make_envelope(make_event("pending")), ROOT_URL)
    outcome = transform(event, make_task(name="build \ud800 linux"), None, RULES)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == ("job message is not valid treeherder format: display.jobName: "
                              "'build \\ud800 linux' is not valid Unicode text (a lone surrogate)")
    orjson.dumps(outcome.reason)


def test_a_value_nested_thousands_deep_is_rejected_with_its_depth():
    event = parse_envelope(make_envelope(make_event("pending")), ROOT_URL)
    outcome = transform(event, make_task(treeherder=make_config(symbol=_nested(5_000, "B", False))), None, RULES)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "extra.treeherder: nested 5001 levels deep, too deep to check"
