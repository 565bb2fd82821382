"""Treeherder parity: what Treeherder's own code does to a message before validating or storing it, rule by rule.

Read from the reference backend (treeherder/etl/job_loader.py and treeherder/etl/taskcluster_pulse/handler.py).
Where Treeherder would keep a job, the core must not lose it; where Treeherder drops a task quietly, the
core ignores it (counted, not an error). Each test names the place in Treeherder's code it mirrors.
"""

from __future__ import annotations

import pytest

from devtools.factories import REVISION, make_artifacts, make_config, make_run, make_task
from streams.core.model import Ignored, Jobs, Rejected, Stage
from streams.core.pulse_job import OWNER_CUT, OWNER_LIMIT
from streams.core.rules import DestinationRule, Rules
from tests.unit.core.test_transform import job_of, run_transform

BOT = "mozilla-l10n-automation-bot@users.noreply.github.com"  # a real task owner, 52 characters


# job_loader.JobLoader._is_valid_job: "if len(pulse_job['owner']) > 50: pulse_job['owner'] = pulse_job['owner'][0:49]"


def test_an_owner_over_50_characters_is_cut_to_49_as_treeherder_does():
    assert len(BOT) == 52
    job = job_of(run_transform("pending", task=make_task(owner=BOT)))
    assert job["owner"] == BOT[:49]
    assert (OWNER_LIMIT, OWNER_CUT) == (50, 49)


@pytest.mark.parametrize("length", [49, 50])
def test_an_owner_of_up_to_50_characters_is_kept_whole(length):
    owner = "o" * length
    assert job_of(run_transform("completed", task=make_task(owner=owner)))["owner"] == owner


def test_the_owner_is_cut_in_every_profile():
    rules = Rules(destinations=(DestinationRule("legacy-dest", ("tc-treeherder",), profile="legacy"),))
    outcome = run_transform("running", task=make_task(owner=BOT), rules=rules)
    assert isinstance(outcome, Jobs)
    assert outcome.messages[0].job["owner"] == BOT[:49]


def test_an_empty_owner_is_still_rejected_as_treeherder_rejects_it():
    outcome = run_transform("pending", task=make_task(owner=""))
    assert isinstance(outcome, Rejected)
    assert outcome.reason.startswith("job message is not valid treeherder format: owner")


# handler.validate_task: "if not treeherder_metadata: ... return False" (a debug line, no error)


@pytest.mark.parametrize("section", [{}, [], "", 0, False])
def test_an_empty_extra_treeherder_section_is_ignored_like_a_missing_one(section):
    outcome = run_transform("pending", task=make_task(treeherder=section))
    assert isinstance(outcome, Ignored)
    assert outcome.stage is Stage.CONFIG
    assert outcome.reason.startswith("task's extra.treeherder is empty")


def test_a_missing_extra_treeherder_section_keeps_its_reason():
    outcome = run_transform("pending", task=make_task(treeherder=None))
    assert outcome == Ignored(outcome.task_id, "task has no extra.treeherder section", Stage.CONFIG)


def test_a_present_but_invalid_section_is_still_rejected():
    outcome = run_transform("pending", task=make_task(treeherder={"tier": 2}))
    assert isinstance(outcome, Rejected)
    assert outcome.stage is Stage.CONFIG


# handler.ignore_task: PROJECTS_TO_INGEST ("Ignoring tasks not matching PROJECTS_TO_INGEST"): a destination's
# ``projects`` (tests/unit/core/test_fanout.py has the filters themselves).


def test_projects_to_ingest_is_a_destinations_projects_filter():
    rules = Rules(destinations=(DestinationRule("dev", ("tc-treeherder",), projects=frozenset({"try"})),))
    outcome = run_transform("pending", rules=rules)
    assert isinstance(outcome, Ignored)
    assert outcome.reason == "project 'autoland' is not taken by destination 'dev'"


# handler.ignore_task, mobile repositories: "Ignore tasks that are associated to a pull request", and those not on
# master/main, as the task's MOBILE_* environment says.

VPN = "https://github.com/mozilla-mobile/mozilla-vpn-client"


def mobile(project="mozilla-vpn-client", **env):
    return make_task(routes=[f"tc-treeherder.v2.mozilla-mobile/{project}.{REVISION}"], payload={"env": env})


@pytest.mark.parametrize(("env", "reason"), [
    ({"MOBILE_BASE_REPOSITORY": VPN, "MOBILE_HEAD_REPOSITORY": "https://github.com/someone/mozilla-vpn-client",
      "MOBILE_HEAD_REF": "main"}, "is for a pull request or a fork"),
    ({"MOBILE_BASE_REPOSITORY": VPN, "MOBILE_HEAD_REPOSITORY": VPN, "MOBILE_HEAD_REF": "refs/heads/feature"},
     "is for the branch 'refs/heads/feature', not master or main"),
])
def test_a_mobile_task_off_the_main_branch_is_ignored_as_treeherder_does(env, reason):
    outcome = run_transform("pending", task=mobile(**env))
    assert isinstance(outcome, Ignored) and outcome.stage is Stage.ROUTE
    assert reason in outcome.reason and "Treeherder ignores it" in outcome.reason


@pytest.mark.parametrize("task", [
    mobile(MOBILE_BASE_REPOSITORY=VPN, MOBILE_HEAD_REPOSITORY=VPN, MOBILE_HEAD_REF=ref)
    for ref in ("refs/heads/master", "master", "refs/heads/main", "main")
] + [
    mobile(MOBILE_BASE_REPOSITORY=VPN, MOBILE_HEAD_REF="feature"),  # no head repository: KeyError, kept
    mobile(MOBILE_BASE_REPOSITORY="https://github.com/x/other-repo", MOBILE_HEAD_REPOSITORY="y"),  # not mobile
    mobile("fenix", MOBILE_BASE_REPOSITORY=VPN, MOBILE_HEAD_REPOSITORY="elsewhere"),  # not one of the three
    mobile(),  # no MOBILE_* environment: Treeherder asks the decision task (not matched)
], ids=["master-ref", "master", "main-ref", "main", "no-head-repo", "other-base", "other-project", "no-env"])
def test_other_mobile_tasks_go_through(task):
    assert isinstance(run_transform("pending", task=task), Jobs)


# handler.ignore_task, mobile repositories without MOBILE_BASE_REPOSITORY: the decision task (taskGroupId) decides.


def test_a_mobile_task_without_its_environment_is_judged_by_its_decision_task():
    from devtools.factories import TASK_GROUP_ID
    from streams.core.transform import decision_task

    task = mobile()
    assert decision_task(task, Rules()) == TASK_GROUP_ID
    nightly = {"routes": ["index.mobile.v2.mozilla-vpn-client.branch.main.latest.taskgraph.decision-nightly"]}
    assert isinstance(run_transform("pending", task=task, decision=nightly), Jobs)
    pull_request = {"routes": ["index.mobile.v2.mozilla-vpn-client.pr.123"], "metadata": {
        "source": "assume:repo:github.com/mozilla-mobile/mozilla-vpn-client:branch:main"}}  # read per character
    outcome = run_transform("pending", task=task, decision=pull_request)
    assert isinstance(outcome, Ignored)
    assert "decision task with no master or main route" in outcome.reason
    assert isinstance(run_transform("pending", task=task), Jobs)  # no decision given: the rule is left out
    assert decision_task(make_task(), Rules()) is None  # autoland: no decision task needed
    assert decision_task(mobile(MOBILE_BASE_REPOSITORY=VPN, MOBILE_HEAD_REPOSITORY=VPN), Rules()) is None


# handler.parse_route_info: routes whose first word is the prefix, exactly one of them; parse_route: the project
# is the part after the slash of <owner>/<project>, the id 0 without a fifth word.


def test_a_route_whose_first_word_only_starts_like_the_prefix_is_not_taken():
    outcome = run_transform("pending", task=make_task(routes=[f"tc-treeherder-other.v2.try.{REVISION}"]),
                            rules=Rules(route_prefixes=("tc-treeherder",)))
    assert isinstance(outcome, Ignored)


def test_a_github_route_reports_the_project_after_the_slash_and_push_id_0():
    job = job_of(run_transform("pending", task=make_task(routes=[f"tc-treeherder.v2.mozilla-mobile/fenix.{REVISION}"])))
    assert job["origin"] == {"project": "fenix", "revision": REVISION, "id": 0}


# handler.build_message: labels from "collection" when "labels" is empty; groupSymbol "?"; jobName cut to 139;
# the worker type as platform when machine has none; groupName and productName only when set.


def test_build_message_defaults_match_treeherder():
    config = make_config(labels=[], collection={"debug": True, "asan": True}, drop=["groupSymbol", "groupName",
                                                                                   "machine"])
    job = job_of(run_transform("pending", task=make_task(treeherder=config, name="n" * 200,
                                                         worker_type="b-linux")))
    assert job["labels"] == ["debug", "asan"]
    assert job["display"]["groupSymbol"] == "?"
    assert "groupName" not in job["display"] and "productName" not in job
    assert job["display"]["jobName"] == "n" * 139
    assert job["buildMachine"] == {"name": "unknown", "platform": "b-linux", "os": "-", "architecture": "-"}


# handler.handle_task_exception: no job for a run created as an exception; isRetried when the next run was
# created by retry or task-retry; timeStarted only when the run started.


def test_exception_rules_match_treeherder():
    runs = [make_run(0, "exception", reason_resolved="claim-expired", started=None),
            make_run(1, "pending", reason_created="task-retry")]
    job = job_of(run_transform("exception", runs=runs, run_id=0))
    assert job["isRetried"] is True and "timeStarted" not in job and job["logs"] == []


# handler.add_artifact_uploaded_links: basename as link text, " (n)" for the n-th repeat, directories skipped.


def test_artifact_links_match_treeherder():
    listing = make_artifacts("public/logs/", "public/a/log.txt", "private/b/log.txt", "public/c/log.txt")
    job = job_of(run_transform("completed", artifacts=listing))
    assert [link["linkText"] for link in job["jobInfo"]["links"]] == ["log.txt", "log.txt (1)", "log.txt (2)"]
