"""Fan-out and filters: one route prefix feeds every destination that takes it, each in its own profile, and a
destination that does not take a job says why, by name."""

from __future__ import annotations

from devtools.factories import REVISION, TASK_ID, make_config, make_task
from streams.core.model import Ignored, Jobs, Rejected, Stage
from streams.core.rules import DestinationRule, Rules
from streams.core.transform import preflight
from tests.unit.core.test_transform import make_event, parsed, run_transform

PROD = DestinationRule("production", ("tc-treeherder",))
STAGE = DestinationRule("stage", ("tc-treeherder", "tc-treeherder-staging"))
DEV = DestinationRule("dev", ("tc-treeherder",), projects=frozenset({"autoland", "try"}))
THREE = Rules(destinations=(PROD, STAGE, DEV))


def task_for(project="autoland", prefix="tc-treeherder", **config):
    return make_task(routes=[f"{prefix}.v2.{project}.{REVISION}.7"], treeherder=make_config(**config))


def test_one_prefix_feeds_every_destination_that_takes_it():
    outcome = run_transform("completed", task=task_for(), rules=THREE)
    assert isinstance(outcome, Jobs)
    assert [(m.destination, m.routing_key) for m in outcome.messages] == [
        ("production", "production.autoland._"), ("stage", "stage.autoland._"), ("dev", "dev.autoland._")]
    assert outcome.declined == ()
    assert outcome.messages[0].job == outcome.messages[1].job == outcome.messages[2].job


def test_a_filtered_out_project_is_ignored_for_that_destination_only():
    outcome = run_transform("completed", task=task_for("mozilla-beta"), rules=THREE)
    assert [m.destination for m in outcome.messages] == ["production", "stage"]
    assert outcome.declined == (Ignored(TASK_ID, "project 'mozilla-beta' is not taken by destination 'dev'",
                                        Stage.ROUTE, "dev"),)


def test_the_second_prefix_reaches_only_the_destination_that_takes_it():
    outcome = run_transform("pending", task=task_for(prefix="tc-treeherder-staging"), rules=THREE)
    assert [m.destination for m in outcome.messages] == ["stage"]


def test_each_destination_gets_the_job_in_its_own_profile():
    rules = Rules(destinations=(PROD, DestinationRule("old", ("tc-treeherder",), profile="legacy")))
    outcome = run_transform("completed", task=task_for(), rules=rules)
    current, legacy = outcome.messages
    assert current.job["origin"] == {"project": "autoland", "revision": REVISION, "id": 7}
    assert legacy.job["origin"] == {"kind": "hg.mozilla.org", "project": "autoland", "revision": REVISION,
                                    "pushLogID": 7}
    assert legacy.job["logs"][0]["name"] == "builds-4h"


def test_exclude_projects():
    rules = Rules(destinations=(DestinationRule("d", ("tc-treeherder",), exclude_projects=frozenset({"try"})),))
    assert isinstance(run_transform("pending", task=task_for("autoland"), rules=rules), Jobs)
    outcome = run_transform("pending", task=task_for("try"), rules=rules)
    assert outcome == Ignored(outcome.task_id, "project 'try' is not taken by destination 'd'", Stage.ROUTE, "d")


def test_tier_range():
    rules = Rules(destinations=(DestinationRule("d", ("tc-treeherder",), min_tier=1, max_tier=2),))
    assert isinstance(run_transform("pending", task=task_for(tier=2), rules=rules), Jobs)
    outcome = run_transform("pending", task=task_for(tier=3), rules=rules)
    assert outcome.reason == "tier 3 is not taken by destination 'd' (it takes tiers 1 to 2)"
    low = Rules(destinations=(DestinationRule("d", ("tc-treeherder",), max_tier=1),))
    assert run_transform("pending", task=task_for(drop=["tier"]), rules=low).messages  # the default tier is 1
    assert run_transform("pending", task=task_for(tier=2), rules=low).reason == (
        "tier 2 is not taken by destination 'd' (it takes tier 1 and below)")


def test_when_no_destination_takes_the_job_each_says_why_and_no_listing_is_needed():
    rules = Rules(destinations=(DestinationRule("a", ("tc-treeherder",), projects=frozenset({"try"})),
                                DestinationRule("b", ("tc-treeherder",), enabled=False)))
    event = parsed(make_event("completed"), kind="completed")
    early = preflight(event, task_for("autoland"), rules)
    assert isinstance(early, Jobs) and early.messages == ()
    assert [(d.destination, d.reason) for d in early.declined] == [
        ("a", "project 'autoland' is not taken by destination 'a'"), ("b", "destination 'b' is disabled")]


def test_a_switched_off_destination_beside_a_live_one():
    rules = Rules(destinations=(PROD, DestinationRule("stage", ("tc-treeherder",), enabled=False)))
    outcome = run_transform("running", task=task_for(), rules=rules)
    assert [m.destination for m in outcome.messages] == ["production"]
    assert [(d.destination, d.reason) for d in outcome.declined] == [("stage", "destination 'stage' is disabled")]


def test_a_job_invalid_in_one_profile_is_rejected_for_that_destination_only(monkeypatch):
    from streams.core import transform as core
    from streams.core.profiles import PROFILES, Profile

    strict = Profile("strict", PROFILES["treeherder"].build, lambda job: "owner: too friendly")
    monkeypatch.setattr(core, "PROFILES", {**PROFILES, "strict": strict})
    rules = Rules(destinations=(PROD, DestinationRule("picky", ("tc-treeherder",), profile="strict")))
    outcome = run_transform("pending", task=task_for(), rules=rules)
    assert [m.destination for m in outcome.messages] == ["production"]
    (declined,) = outcome.declined
    assert declined == Rejected(declined.task_id, "job message is not valid strict format: owner: too friendly",
                                Stage.JOB, "picky")


def test_todays_configuration_gives_todays_outcomes():
    """One destination per prefix, named after it unless renamed, switched off by prefix: as before fan-out."""
    rules = Rules(destinations=(DestinationRule("production", ("tc-treeherder",)),
                         DestinationRule("tc-treeherder-staging", ("tc-treeherder-staging",), enabled=False)))
    jobs = run_transform("pending", task=task_for(), rules=rules)
    assert [(m.destination, m.routing_key) for m in jobs.messages] == [("production", "production.autoland._")]
    assert jobs.declined == ()
    off = run_transform("pending", task=task_for(prefix="tc-treeherder-staging"), rules=rules)
    assert off == Ignored(off.task_id, "destination 'tc-treeherder-staging' is disabled", Stage.ROUTE,
                          "tc-treeherder-staging")
    # switched off before anything else is looked at, as before: a broken config does not change the reason
    off = run_transform("pending", task=task_for(prefix="tc-treeherder-staging", tier=9), rules=rules)
    assert off.reason == "destination 'tc-treeherder-staging' is disabled"


def test_rules_list_an_untaken_prefix_as_its_own_destination():
    rules = Rules(route_prefixes=("tc-treeherder", "tc-treeherder-staging"), destinations=(PROD,))
    assert [d.name for d in rules.targets("tc-treeherder-staging")] == ["tc-treeherder-staging"]
    assert rules.destination("tc-treeherder") == "production"
    only = rules.only(["production"])
    assert [d.name for d in only.targets("tc-treeherder")] == ["production"]
    assert not any(d.enabled for d in only.targets("tc-treeherder-staging"))
