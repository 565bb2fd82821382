"""The rules of design.md ("Which tasks become jobs", "The job message"), one behaviour per test."""

from __future__ import annotations

import pytest

from devtools.factories import (
    CREATED,
    RESOLVED,
    REVISION,
    ROOT_URL,
    STARTED,
    TASK_ID,
    TASK_UUID,
    WORKER_ID,
    make_artifacts,
    make_config,
    make_event,
    make_run,
    make_task,
    parsed,
)
from streams.core.model import Ignored, Jobs, ListingFailed, Rejected, Stage
from streams.core.rules import DestinationRule, Rules
from streams.core.transform import artifacts_run, preflight, transform
from streams.core.validation import job_check

RULES = Rules()
QUEUE = f"{ROOT_URL}/api/queue/v1/task/{TASK_ID}"


def job_of(outcome):
    assert isinstance(outcome, Jobs), outcome
    (message,) = outcome.messages
    assert job_check().reference_errors(message.job) is None  # python-jsonschema agrees it is a valid pulse-job
    return message.job


def run_transform(kind, task=None, artifacts=None, rules=RULES, decision=None, **event_options):
    event = parsed(make_event(kind, **event_options), kind=kind)
    return transform(event, make_task() if task is None else task, artifacts, rules, decision)


# Exchanges and states


def test_task_defined_is_an_unscheduled_job_of_run_0():
    job = job_of(run_transform("defined"))
    assert job["state"] == "unscheduled"
    assert job["result"] == "unknown"
    assert job["taskId"] == f"{TASK_UUID}/0"
    assert job["retryId"] == 0
    assert job["buildMachine"]["name"] == "unknown"
    assert not {"timeStarted", "timeCompleted", "logs"} & set(job)


def test_pending():
    job = job_of(run_transform("pending"))
    assert (job["state"], job["result"]) == ("pending", "unknown")
    assert job["buildMachine"]["name"] == "unknown"
    assert not {"timeStarted", "timeCompleted", "logs"} & set(job)


def test_running_has_a_start_time_and_the_worker():
    job = job_of(run_transform("running"))
    assert (job["state"], job["result"]) == ("running", "unknown")
    assert job["timeStarted"] == STARTED
    assert job["buildMachine"]["name"] == WORKER_ID
    assert not {"timeCompleted", "logs"} & set(job)


@pytest.mark.parametrize(("kind", "result"), [("completed", "success"), ("failed", "fail")])
def test_resolved_runs_have_times_log_and_links(kind, result):
    job = job_of(run_transform(kind, artifacts=make_artifacts("public/build/target.zip")))
    assert (job["state"], job["result"]) == ("completed", result)
    assert (job["timeStarted"], job["timeCompleted"]) == (STARTED, RESOLVED)
    assert job["logs"] == [
        {"name": "live_backing_log", "url": f"{QUEUE}/runs/0/artifacts/public/logs/live_backing.log"}
    ]
    assert job["jobInfo"]["links"] == [
        {
            "label": "artifact uploaded",
            "linkText": "target.zip",
            "url": f"{QUEUE}/runs/0/artifacts/public/build/target.zip",
        }
    ]
    assert job["isRetried"] is False


def test_common_fields_come_from_the_task_and_its_config():
    job = job_of(run_transform("pending"))
    assert job["buildSystem"] == "taskcluster"
    assert job["owner"] == "dev@example.com"
    assert job["version"] == 1
    assert job["display"] == {
        "jobSymbol": "tp6-7",
        "groupSymbol": "Rap",
        "groupName": "Raptor performance tests on Firefox",
        "jobName": "test-macosx1014-64-shippable/opt-raptor-tp6-7-firefox-e10s",
    }
    assert job["timeScheduled"] == CREATED
    assert (job["tier"], job["jobKind"], job["reason"]) == (1, "test", "scheduled")
    assert job["jobInfo"] == {"links": [], "summary": "Raptor tp6-7 on Firefox"}
    assert job["origin"] == {"project": "autoland", "revision": REVISION, "id": 88554}
    assert job["labels"] == ["opt"]
    assert job["buildMachine"] == {
        "name": "unknown",
        "platform": "macosx1014-64-shippable",
        "os": "-",
        "architecture": "-",
    }
    assert "productName" not in job


def test_config_defaults():
    task = make_task(treeherder={"symbol": 7})
    task["extra"]["treeherder"]["symbol"] = "7"
    job = job_of(run_transform("pending", task=task))
    assert job["display"] == {"jobSymbol": "7", "groupSymbol": "?", "jobName": task["metadata"]["name"]}
    assert (job["tier"], job["jobKind"], job["reason"]) == (1, "other", "scheduled")
    assert job["labels"] == ["opt"]
    assert job["buildMachine"]["platform"] == "gecko-t-osx-1014"  # the workerType


def test_config_values_that_override_defaults():
    config = make_config(
        labels=["debug", "asan"],
        collection={"opt": True},
        tier=2,
        reason="rebuilt",
        productName="firefox",
        machine={"platform": "linux64", "os": "linux", "architecture": "x86_64"},
        jobKind="build",
    )
    job = job_of(run_transform("pending", task=make_task(treeherder=config)))
    assert job["labels"] == ["debug", "asan"]  # labels win over collection
    assert (job["tier"], job["reason"], job["productName"], job["jobKind"]) == (2, "rebuilt", "firefox", "build")
    assert job["buildMachine"] == {"name": "unknown", "platform": "linux64", "os": "linux", "architecture": "x86_64"}


def test_labels_fall_back_to_the_collection_keys_then_opt():
    with_collection = make_task(treeherder=make_config(labels=[], collection={"debug": True, "asan": True}))
    assert job_of(run_transform("pending", task=with_collection))["labels"] == ["debug", "asan"]
    without = make_task(treeherder=make_config(drop=["collection"]))
    assert job_of(run_transform("pending", task=without))["labels"] == ["opt"]


def test_platform_falls_back_to_the_task_queue_on_newer_deployments():
    task = make_task(treeherder=make_config(drop=["machine"]), taskQueueId="proj-gecko/b-linux")
    del task["workerType"]
    assert job_of(run_transform("pending", task=task))["buildMachine"]["platform"] == "b-linux"


# Exceptions, retries, cancellation


def test_exception_then_pending_of_the_next_run():
    runs = [
        make_run(0, "exception", reason_resolved="worker-shutdown", started=True),
        make_run(1, "pending", reason_created="retry"),
    ]
    exception = job_of(run_transform("exception", run_id=0, runs=runs, artifacts=make_artifacts("public/a.txt")))
    assert exception["taskId"] == f"{TASK_UUID}/0"
    assert (exception["state"], exception["result"]) == ("completed", "exception")
    assert exception["isRetried"] is True
    assert exception["logs"] == []
    assert (exception["timeStarted"], exception["timeCompleted"]) == (STARTED, RESOLVED)
    assert [link["linkText"] for link in exception["jobInfo"]["links"]] == ["a.txt"]

    pending = job_of(run_transform("pending", run_id=1, runs=runs))
    assert pending["taskId"] == f"{TASK_UUID}/1"
    assert (pending["retryId"], pending["state"], pending["isRetried"]) == (1, "pending", False)


def test_task_retry_also_marks_the_exception_retried_but_a_rerun_does_not():
    for reason, retried in (("task-retry", True), ("rerun", False)):
        runs = [
            make_run(0, "exception", reason_resolved="intermittent-task", started=True),
            make_run(1, "pending", reason_created=reason),
        ]
        assert job_of(run_transform("exception", run_id=0, runs=runs))["isRetried"] is retried


def test_exception_that_never_started_has_no_start_time():
    job = job_of(run_transform("exception", reason_resolved="worker-shutdown"))
    assert "timeStarted" not in job
    assert job["timeCompleted"] == RESOLVED
    assert job["isRetried"] is False


@pytest.mark.parametrize("reason", ["canceled", "superseded"])
def test_canceled_and_superseded(reason):
    job = job_of(run_transform("exception", reason_resolved=reason))
    assert (job["state"], job["result"]) == ("completed", reason)


def test_exception_created_as_an_exception_gives_no_job():
    runs = [make_run(0, "exception", reason_created="exception", reason_resolved="deadline-exceeded")]
    event = parsed(make_event("exception", runs=runs), kind="exception")
    outcome = transform(event, make_task(), [], RULES)
    assert isinstance(outcome, Ignored)
    assert outcome.task_id == TASK_ID
    assert "created as an exception" in outcome.reason
    assert preflight(event, make_task(), RULES) == outcome
    assert artifacts_run(event) is None


def test_artifacts_run_is_the_resolved_run_only():
    assert artifacts_run(parsed(make_event("completed", run_id=2), kind="completed")) == 2
    assert artifacts_run(parsed(make_event("failed"), kind="failed")) == 0
    assert artifacts_run(parsed(make_event("exception"), kind="exception")) == 0
    for kind in ("defined", "pending", "running"):
        assert artifacts_run(parsed(make_event(kind), kind=kind)) is None


# Routes


def test_github_owner_project_route():
    task = make_task(routes=[f"tc-treeherder.v2.mozilla-mobile/fenix.{REVISION}.123"])
    outcome = run_transform("pending", task=task)
    assert outcome.messages[0].project == "fenix"
    assert job_of(outcome)["origin"] == {"project": "fenix", "revision": REVISION, "id": 123}


def test_route_without_push_id_gives_id_0():
    job = job_of(run_transform("pending", task=make_task(routes=[f"tc-treeherder.v2.try.{REVISION}"])))
    assert job["origin"]["id"] == 0


def test_destination_and_routing_key():
    (message,) = run_transform("pending").messages
    assert (message.destination, message.project, message.routing_key) == (
        "tc-treeherder",
        "autoland",
        "tc-treeherder.autoland._",
    )


def test_staging_prefix_goes_to_the_staging_destination():
    task = make_task(routes=[f"tc-treeherder-staging.v2.autoland.{REVISION}.5"])
    (message,) = run_transform("pending", task=task).messages
    assert (message.destination, message.routing_key) == ("tc-treeherder-staging", "tc-treeherder-staging.autoland._")


def test_destination_names_come_from_the_rules():
    rules = Rules(destinations=(DestinationRule("prod", ("tc-treeherder",)),))
    (message,) = run_transform("pending", rules=rules).messages
    assert (message.destination, message.routing_key) == ("prod", "prod.autoland._")


def test_no_matching_route_is_ignored():
    task = make_task(routes=["index.gecko.v2.autoland.latest", "tc-treeherderx.v2.autoland.abc.1"])
    outcome = run_transform("pending", task=task)
    assert isinstance(outcome, Ignored) and outcome.stage is Stage.ROUTE
    assert "no route starts with tc-treeherder or tc-treeherder-staging" in outcome.reason


def test_two_matching_routes_are_rejected_naming_them():
    routes = [f"tc-treeherder.v2.autoland.{REVISION}.1", f"tc-treeherder-staging.v2.autoland.{REVISION}.1"]
    outcome = run_transform("pending", task=make_task(routes=routes))
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.ROUTE
    assert routes[0] in outcome.reason and routes[1] in outcome.reason


def test_a_route_listed_twice_counts_once():
    job_of(run_transform("pending", task=make_task(routes=[f"tc-treeherder.v2.autoland.{REVISION}.1"] * 2)))


@pytest.mark.parametrize(
    "route",
    [
        f"tc-treeherder.autoland.{REVISION}",  # the retired three-word v1 form
        "tc-treeherder",
        "tc-treeherder.v2",
        "tc-treeherder.v2.autoland",
        f"tc-treeherder.v3.autoland.{REVISION}.1",
        f"tc-treeherder.v2.autoland.{REVISION}.1.extra",
        f"tc-treeherder.v2.autoland.{REVISION}.12x",
        f"tc-treeherder.v2..{REVISION}.1",
        f"tc-treeherder.v2.a/b/c.{REVISION}.1",
    ],
)
def test_malformed_routes_are_rejected_not_crashed_on(route):
    outcome = run_transform("pending", task=make_task(routes=[route]))
    assert isinstance(outcome, Rejected), outcome
    assert outcome.stage is Stage.ROUTE
    assert repr(route) in outcome.reason


def test_a_disabled_destination_ignores_its_tasks():
    switched_off = Rules(destinations=(DestinationRule("tc-treeherder", ("tc-treeherder",), enabled=False),))
    outcome = run_transform("pending", rules=switched_off)
    assert isinstance(outcome, Ignored) and "disabled" in outcome.reason


def test_a_bad_revision_is_rejected_by_job_validation():
    outcome = run_transform("pending", task=make_task(routes=["tc-treeherder.v2.autoland.notahash.1"]))
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.JOB
    assert "origin.revision: 'notahash'" in outcome.reason


# extra.treeherder


def test_no_config_is_ignored():
    outcome = run_transform("pending", task=make_task(treeherder=None))
    assert isinstance(outcome, Ignored) and outcome.stage is Stage.CONFIG
    assert "extra.treeherder" in outcome.reason


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (make_config(tier=4), "extra.treeherder.tier: 4 is greater than the maximum of 3"),
        (make_config(drop=["symbol"]), "extra.treeherder: 'symbol' is a required property"),
        (make_config(machine={"platform": "linux 64"}), "extra.treeherder.machine.platform: 'linux 64' does not match"),
        (make_config(labels=["ok", ""]), "extra.treeherder.labels[1]: '' should be non-empty"),
        ("B", "extra.treeherder: 'B' is not of type 'object'"),
    ],
)
def test_invalid_config_is_rejected_with_the_validation_error(config, reason):
    outcome = run_transform("pending", task=make_task(treeherder=config))
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.CONFIG
    assert outcome.reason.startswith(reason), outcome.reason


# Task shape


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda t: t.update(routes="tc-treeherder"), "task.routes: expected a list of strings"),
        (lambda t: t.pop("metadata"), "task.metadata: expected an object"),
        (lambda t: t["metadata"].pop("owner"), "task.metadata.owner: expected a string"),
        (lambda t: t.update(created=None), "task.created: expected a string"),
        (lambda t: t.update(extra=[]), "task.extra: expected an object"),
    ],
)
def test_malformed_task_definitions_are_rejected(edit, reason):
    task = make_task()
    edit(task)
    outcome = run_transform("pending", task=task)
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.TASK
    assert outcome.reason.startswith(reason)


# Names and artifacts


def test_names_over_139_characters_are_cut():
    job = job_of(run_transform("pending", task=make_task(name="n" * 200)))
    assert job["display"]["jobName"] == "n" * 139


def test_repeated_basenames_are_numbered_and_directories_skipped():
    artifacts = make_artifacts(
        "public/logs/",
        "public/logs/live.log",
        "public/a/log.txt",
        "public/b/log.txt",
        "private/",
        "c/log.txt",
        "public/live.log",
    )
    links = job_of(run_transform("completed", artifacts=artifacts))["jobInfo"]["links"]
    assert [link["linkText"] for link in links] == ["live.log", "log.txt", "log.txt (1)", "log.txt (2)", "live.log (1)"]
    assert links[2]["url"] == f"{QUEUE}/runs/0/artifacts/public/b/log.txt"
    assert all(link["label"] == "artifact uploaded" for link in links)


def test_every_entry_of_a_paged_listing_becomes_a_link_in_order():
    pages = [[f"public/page{p}/file{i}.txt" for i in range(1000)] for p in range(3)]
    listing = make_artifacts(*(name for page in pages for name in page))
    links = job_of(run_transform("completed", artifacts=listing, run_id=1))["jobInfo"]["links"]
    assert len(links) == 3000
    assert [link["url"] for link in links] == [f"{QUEUE}/runs/1/artifacts/{name}" for page in pages for name in page]
    assert links[1000]["linkText"] == "file0.txt (1)"


def test_a_failed_listing_still_sends_the_job_without_links():
    job = job_of(run_transform("completed", artifacts=ListingFailed("queue answered 500")))
    assert job["jobInfo"]["links"] == []
    assert job["logs"][0]["name"] == "live_backing_log"


def test_a_malformed_listing_entry_is_rejected():
    outcome = run_transform("completed", artifacts=[{"name": "public/a"}, {"size": 3}])
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.JOB
    assert "artifacts[1].name" in outcome.reason


def test_a_job_that_fails_pulse_job_is_rejected_with_the_field_path():
    outcome = run_transform("pending", task=make_task(owner=""))  # (a long owner is cut: test_treeherder_parity)
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.JOB
    assert "owner: ''" in outcome.reason


def test_the_core_does_not_modify_its_inputs():
    import copy

    task = make_task()
    body = make_event("completed")
    event = parsed(body, kind="completed")
    artifacts = make_artifacts("public/x")
    before = copy.deepcopy((task, body, artifacts))
    transform(event, task, artifacts, RULES)
    assert (task, body, artifacts) == before


def test_a_route_that_is_not_a_string_is_a_malformed_task():
    outcome = run_transform("pending", task=make_task(routes=["index.x", 42]))
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.TASK
    assert outcome.reason == "task.routes[1]: expected a string, got int"
