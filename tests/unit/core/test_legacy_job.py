"""The ``legacy`` profile: the original taskcluster-treeherder message, chosen per destination."""

from __future__ import annotations

import pytest

from devtools.factories import REVISION, TASK_UUID, make_artifacts, make_task, parsed
from streams.core.legacy_job import legacy_job_errors
from streams.core.model import Jobs, Rejected, Stage
from streams.core.rules import DestinationRule, Rules
from streams.core.transform import transform

LEGACY = Rules(destinations=(DestinationRule("tc-treeherder", ("tc-treeherder",), profile="legacy"),))
LOG = "public/logs/live_backing.log"


def legacy_job(kind="completed", *, route=f"tc-treeherder.v2.autoland.{REVISION}.88554", rules=LEGACY, **task):
    outcome = transform(parsed(kind=kind), make_task(routes=[route], **task),
                        make_artifacts(LOG, "public/build/target.zip"), rules)
    assert isinstance(outcome, Jobs), outcome
    (message,) = outcome.messages
    return message


def test_hg_push_has_kind_and_push_log_id():
    job = legacy_job().job
    assert job["origin"] == {"kind": "hg.mozilla.org", "project": "autoland", "revision": REVISION,
                             "pushLogID": 88554}
    assert "id" not in job["origin"]


def test_github_route_has_owner_and_pull_request_id():
    job = legacy_job(route=f"tc-treeherder.v2.mozilla-mobile/fenix.{REVISION}.1234").job
    assert job["origin"] == {"kind": "github.com", "owner": "mozilla-mobile", "project": "fenix",
                             "revision": REVISION, "pullRequestID": 1234}


def test_a_route_without_push_id_sends_none():
    assert "pushLogID" not in legacy_job(route=f"tc-treeherder.v2.autoland.{REVISION}").job["origin"]
    github = legacy_job(route=f"tc-treeherder.v2.owner/proj.{REVISION}").job["origin"]
    assert github == {"kind": "github.com", "owner": "owner", "project": "proj", "revision": REVISION}


def test_log_is_named_builds_4h_and_the_rest_is_the_current_format():
    message = legacy_job()
    job = message.job
    assert [log["name"] for log in job["logs"]] == ["builds-4h"]
    assert job["logs"][0]["url"].endswith(f"/runs/0/artifacts/{LOG}")
    assert job["taskId"] == f"{TASK_UUID}/0"
    assert [link["linkText"] for link in job["jobInfo"]["links"]] == ["live_backing.log", "target.zip"]
    assert message.routing_key == "tc-treeherder.autoland._"


def test_job_names_are_cut_to_100_characters_where_the_current_format_keeps_139():
    name = "n" * 150
    assert legacy_job(name=name).job["display"]["jobName"] == "n" * 100
    current = legacy_job(name=name, rules=Rules())
    assert len(current.job["display"]["jobName"]) == 139


def test_exception_has_no_log():
    assert legacy_job("exception").job["logs"] == []


def test_profile_is_per_destination():
    staging_legacy = DestinationRule("tc-treeherder-staging", ("tc-treeherder-staging",), profile="legacy")
    rules = Rules(destinations=(staging_legacy,))
    production = legacy_job(rules=rules)
    staging = legacy_job(route=f"tc-treeherder-staging.v2.try.{REVISION}.7", rules=rules)
    assert "kind" not in production.job["origin"]
    assert staging.job["origin"]["kind"] == "hg.mozilla.org"


def test_an_invalid_legacy_message_is_rejected_with_the_profile_named():
    outcome = transform(parsed(kind="pending"), make_task(routes=[f"tc-treeherder.v2.autoland.{'z' * 40}"]),
                        None, LEGACY)
    assert isinstance(outcome, Rejected)
    assert outcome.stage is Stage.JOB
    assert outcome.reason.startswith("job message is not valid legacy format: origin")


@pytest.mark.parametrize("origin", [
    {"kind": "hg.mozilla.org", "project": "autoland", "revision": REVISION, "owner": "x"},
    {"kind": "github.com", "project": "fenix", "revision": REVISION},
    {"project": "autoland", "revision": REVISION, "id": 3},
])
def test_the_schema_holds_each_origin_to_its_kind(origin):
    job = legacy_job().job
    assert legacy_job_errors(job) is None
    assert legacy_job_errors({**job, "origin": origin}) is not None


def test_the_schema_refuses_a_name_over_100_characters():
    job = legacy_job().job
    job["display"] = {**job["display"], "jobName": "x" * 101}
    assert legacy_job_errors(job).startswith("display.jobName")
