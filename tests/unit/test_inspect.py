"""inspect: what a message says (project, state, result) and which messages the filters let through."""

from __future__ import annotations

from devtools.factories import REVISION, TASK_ID, make_event
from tc_treeherder.commands.inspect import describe_job, describe_task_event, matches, pretty, route_project

JOBS = "exchange/taskcluster-treeherder/v1/jobs"
PREFIXES = ("tc-treeherder", "tc-treeherder-staging")


def job(project: str = "autoland", state: str = "completed", result: str = "success") -> dict:
    return {"taskId": "07712179-0f88-4396-8fcf-0df8292fdaea/0", "state": state, "result": result,
            "origin": {"kind": "hg.mozilla.org", "project": project, "revision": REVISION},
            "display": {"jobSymbol": "tp6-7", "groupSymbol": "Rap", "jobName": "raptor tp6-7"},
            "buildMachine": {"platform": "macosx1014-64"}}


def test_a_job_message_is_described_by_its_origin_state_and_result() -> None:
    seen = describe_job(JOBS, "tc-treeherder.autoland._", job())
    assert (seen.project, seen.state, seen.result) == ("autoland", "completed", "success")
    assert seen.label.startswith("Rap(tp6-7) macosx1014-64")


def test_filters_combine_and_each_accepts_several_values() -> None:
    failed = describe_job(JOBS, "k", job(result="fail"))
    running = describe_job(JOBS, "k", job(project="mozilla-central", state="running", result="unknown"))
    assert matches(failed) and matches(running)
    assert matches(failed, project=["autoland"], result=["fail", "busted"])
    assert not matches(failed, project=["autoland"], result=["success"])
    assert not matches(running, project=["autoland"])
    assert matches(running, state=["running"], result=["unknown"])
    assert not matches(running, state=["completed"])


def test_a_job_that_is_not_json_is_still_shown_and_matches_no_project() -> None:
    seen = describe_job(JOBS, "k", "garbage")
    assert seen.project is None and matches(seen)
    assert not matches(seen, project=["autoland"])


def test_task_events_take_the_project_from_the_treeherder_cc_route() -> None:
    cc = ["route.index.gecko.v2.autoland.latest", f"route.tc-treeherder.v2.mozilla/autoland.{REVISION}.12"]
    assert route_project(cc, PREFIXES) == "autoland"
    assert route_project(["route.other.v2.x.y"], PREFIXES) is None
    seen = describe_task_event("exchange/taskcluster-queue/v1/task-failed", "primary.x", cc, make_event("failed"),
                               PREFIXES)
    assert (seen.project, seen.state, seen.result, seen.task) == ("autoland", "failed", "fail", f"{TASK_ID}/0")


def test_task_exception_result_follows_the_reason_resolved() -> None:
    canceled = describe_task_event("x/task-exception", "k", [], make_event("exception", reason_resolved="canceled"),
                                   PREFIXES)
    crashed = describe_task_event("x/task-exception", "k", [], make_event("exception"), PREFIXES)
    assert (canceled.result, crashed.result) == ("canceled", "exception")


def test_pretty_line_is_one_line_with_colour_only_on_a_terminal() -> None:
    seen = describe_job(JOBS, "k", job(result="fail"))
    plain = pretty(seen, color=False)
    assert "\n" not in plain and "\033[" not in plain and "completed/fail" in plain and "autoland" in plain
    assert "\033[33m" in pretty(seen, color=True)
