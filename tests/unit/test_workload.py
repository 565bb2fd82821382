"""The simulated workload: reproducible, realistic in shape, and an oracle that agrees with its own events."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from devtools.workload import (
    KINDS,
    QUEUE_PAGE_SIZE,
    Config,
    Lifecycle,
    Workload,
    WorkloadOptions,
    event_kind,
    generate,
    iter_groups,
)
from streams.shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference"

RESOLVED = {"completed", "failed", "exception"}


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(WorkloadOptions(tasks=3000, seed=11))


def events_by_task(workload: Workload) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in workload.events:
        grouped[event["payload"]["status"]["taskId"]].append(event)
    return grouped


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    options = WorkloadOptions(tasks=400, seed=5)
    first, second = generate(options), generate(options)
    assert orjson.dumps(first.events) == orjson.dumps(second.events)
    assert [task.definition for task in first.tasks] == [task.definition for task in second.tasks]
    assert [run.to_record() for run in first.expected] == [run.to_record() for run in second.expected]
    other = generate(WorkloadOptions(tasks=400, seed=6))
    assert orjson.dumps(other.events) != orjson.dumps(first.events)


def test_streaming_gives_the_same_workload_as_generating_it_whole():
    options = WorkloadOptions(tasks=300, seed=2)
    streamed = [event for group in iter_groups(options) for event in group.events]
    assert orjson.dumps(streamed) == orjson.dumps(generate(options).events)


def test_size_is_exact_in_tasks_and_at_least_the_asked_events():
    assert len(generate(WorkloadOptions(tasks=777, seed=1)).tasks) == 777
    by_events = generate(WorkloadOptions(events=5000, seed=1))
    assert len(by_events.events) >= 5000
    assert len(by_events.events) - len(by_events.groups[-1].events) < 5000  # stopped after the group that got there


def test_a_mid_size_workload_has_every_lifecycle_config_kind_and_destination(workload):
    assert {task.lifecycle for task in workload.tasks} == set(Lifecycle)
    assert {task.config for task in workload.tasks} == set(Config)
    assert {event_kind(event) for event in workload.events} == set(KINDS)
    destinations = {run.destination for run in workload.expected if run.destination}
    assert destinations == {"tc-treeherder", "tc-treeherder-staging"}
    projects = {group.project for group in workload.groups}
    assert any("/" in project for project in projects) and {"try", "autoland"} <= projects
    assert any(group.push_id is None for group in workload.groups)
    assert any(group.push_id is not None for group in workload.groups)
    reasons = {run.get("reasonResolved") for event in workload.events for run in event["payload"]["status"]["runs"]}
    assert {"worker-shutdown", "claim-expired", "intermittent-task", "canceled", "superseded",
            "deadline-exceeded"} <= reasons
    created = {run["reasonCreated"] for event in workload.events for run in event["payload"]["status"]["runs"]}
    assert created == {"scheduled", "retry", "task-retry", "rerun", "exception"}


def test_artifact_listings_have_second_pages_repeated_basenames_and_directories():
    workload = generate(WorkloadOptions(tasks=2000, seed=4, large_listing_fraction=0.01))
    listings = [listing for task in workload.tasks for listing in task.artifacts.values()]
    assert any(len(listing) > QUEUE_PAGE_SIZE for listing in listings)
    assert any(any(item["name"].endswith("/") for item in listing) for listing in listings)

    def repeats(listing: list[dict[str, Any]]) -> bool:
        names = [item["name"].rpartition("/")[2] for item in listing if not item["name"].endswith("/")]
        return len(names) != len(set(names))

    assert any(repeats(listing) for listing in listings)
    final_runs = {task_id: events[-1]["payload"]["status"]["runs"]
                  for task_id, events in events_by_task(workload).items()}
    for task in workload.tasks:  # a listing for every resolved run, none for a run still going
        resolved = {run_id for run_id, run in enumerate(final_runs[task.task_id]) if run["state"] in RESOLVED}
        assert set(task.artifacts) == resolved


def test_each_task_s_events_come_in_lifecycle_order(workload):
    for task_id, events in events_by_task(workload).items():
        kinds = [event_kind(event) for event in events]
        assert kinds[0] == "defined", task_id
        assert kinds.count("defined") == 1
        previous_runs = 0
        current: tuple[int, str] | None = None
        for event in events[1:]:
            kind, body = event_kind(event), event["payload"]
            run_id, runs = body["runId"], body["status"]["runs"]
            assert len(runs) >= previous_runs, "runs are never forgotten"
            previous_runs = len(runs)
            assert body["status"]["state"] == runs[-1]["state"]
            if kind == "pending":
                assert current is None or current[1] in RESOLVED, f"{task_id}: a new run before the last ended"
                assert runs[run_id]["state"] == "pending"
            elif kind == "running":
                assert current == (run_id, "pending")
            else:
                assert kind in RESOLVED
                if runs[run_id]["reasonCreated"] == "exception":
                    assert current is None and kind == "exception"
                else:
                    assert current is not None and current[0] == run_id and current[1] in ("pending", "running")
                assert runs[run_id]["state"] == kind
            current = (run_id, kind)


def test_an_automatic_retry_lists_the_next_run_and_its_pending_follows(workload):
    seen = 0
    for events in events_by_task(workload).values():
        for index, event in enumerate(events):
            body = event["payload"]
            if event_kind(event) != "exception":
                continue
            runs = body["status"]["runs"]
            if runs[body["runId"]]["reasonResolved"] in ("worker-shutdown", "claim-expired", "intermittent-task"):
                following = runs[body["runId"] + 1]
                assert following["reasonCreated"] in ("retry", "task-retry")
                assert following["state"] == "pending"
                after = events[index + 1]
                assert event_kind(after) == "pending" and after["payload"]["runId"] == body["runId"] + 1
                assert after["payload"]["status"]["retriesLeft"] == body["status"]["retriesLeft"]
                seen += 1
    assert seen > 10


def test_routing_keys_and_cc_routes_are_the_ones_taskcluster_sends(workload):
    definitions = {task.task_id: task.definition for task in workload.tasks}
    exchanges = {Settings().task_exchange(kind) for kind in KINDS}
    for event in workload.events:
        body = event["payload"]
        status = body["status"]
        definition = definitions[status["taskId"]]
        assert event["exchange"] in exchanges
        words = event["routingKey"].split(".")
        assert len(words) == 10 and words[0] == "primary" and words[-1] == "_"
        assert words[1] == status["taskId"]
        assert words[2] == (str(body["runId"]) if "runId" in body else "_")
        assert words[3:5] == [body.get("workerGroup", "_"), body.get("workerId", "_")]
        assert words[5:9] == [status["provisionerId"], status["workerType"], status["schedulerId"],
                              status["taskGroupId"]]
        assert event["ccRoutes"] == [f"route.{route}" for route in definition["routes"]]
        if event_kind(event) in ("running", "completed", "failed"):
            assert words[3] != "_" and words[4] != "_"
    treeherder = [task for task in workload.tasks if any(
        route.startswith(("tc-treeherder.", "tc-treeherder-staging.")) for route in task.definition["routes"])]
    assert len(treeherder) == sum(1 for task in workload.tasks if task.config is not Config.NO_ROUTE)


def test_exchanges_follow_the_configured_prefix():
    settings = Settings(task_exchange_prefix="exchange/ns1/taskcluster-queue/v1/")
    workload = generate(WorkloadOptions(tasks=20, seed=1, task_exchange=settings.task_exchange))
    assert {event["exchange"] for event in workload.events} <= {settings.task_exchange(kind) for kind in KINDS}


def test_bodies_validate_against_the_task_event_schema(workload):
    schema = json.loads((REPO / "schemas" / "task-event.json").read_text())
    validators = {kind: jsonschema.Draft7Validator({**schema, "$ref": f"#/definitions/task-{kind}"})
                  for kind in KINDS}
    for event in workload.events[:4000]:
        validators[event_kind(event)].validate(event["payload"])


def test_extra_treeherder_is_valid_exactly_when_the_task_is_meant_to_be_valid(workload):
    schema = json.loads((REPO / "schemas" / "task-treeherder-config.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    for task in workload.tasks:
        config = task.definition["extra"].get("treeherder")
        if task.config is Config.NO_CONFIG:
            assert config is None
        elif task.config is Config.BAD_CONFIG:
            assert not validator.is_valid(config), config
        else:
            assert validator.is_valid(config), config


def test_expected_outcomes_count_the_events_of_each_run(workload):
    per_run: Counter[tuple[str, int]] = Counter()
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for event in workload.events:
        body = event["payload"]
        key = (body["status"]["taskId"], body.get("runId", 0))
        per_run[key] += 1
        last[key] = event
    expected = {(run.task_id, run.run_id): run for run in workload.expected}
    assert set(expected) == set(per_run)
    for key, run in expected.items():
        assert run.events == per_run[key]
        event = last[key]
        body = event["payload"]
        if run.outcome != "jobs":
            assert run.jobs == 0
            continue
        created_as_exception = "runId" in body and body["status"]["runs"][body["runId"]]["reasonCreated"] == "exception"
        assert run.jobs == run.events - created_as_exception
        if event_kind(event) == "defined" or created_as_exception:
            assert (run.state, run.result) == ("unscheduled", "unknown")
            continue
        state = body["status"]["runs"][body["runId"]]["state"]
        reason = body["status"]["runs"][body["runId"]].get("reasonResolved")
        assert run.state == ("completed" if state in RESOLVED else state)
        assert run.result == {"completed": "success", "failed": "fail", "pending": "unknown", "running": "unknown",
                              "exception": reason if reason in ("canceled", "superseded") else "exception"}[state]
        next_runs = body["status"]["runs"][body["runId"] + 1:]
        assert run.is_retried == bool(next_runs and next_runs[0]["reasonCreated"] in ("retry", "task-retry"))


def test_expected_projects_and_destinations_come_from_the_route(workload):
    groups = {group.task_group_id: group for group in workload.groups}
    for run in workload.expected:
        if run.outcome == "jobs":
            group = groups[run.task_group_id]
            assert run.project == group.project.rpartition("/")[2]
            route = next(r for r in next(t for t in group.tasks if t.task_id == run.task_id).definition["routes"]
                         if r.startswith(run.destination + ".v2."))
            assert route.split(".")[2] == group.project


def test_the_transform_core_agrees_with_the_oracle():
    """Two independent readings of the design (the core's, the oracle's) must match on every run."""
    from streams.core.envelope import parse_envelope
    from streams.core.model import Jobs, TaskEvent
    from streams.core.rules import Rules
    from streams.core.transform import artifacts_run, transform

    workload = generate(WorkloadOptions(tasks=1500, seed=23))
    tasks = {task.task_id: task for task in workload.tasks}
    rules = Rules()
    jobs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    not_jobs: Counter[tuple[str, int]] = Counter()
    for envelope in workload.events:
        event = parse_envelope({**envelope, "rootUrl": "http://127.0.0.1:1"})
        assert isinstance(event, TaskEvent), event
        task = tasks[event.task_id]
        run = artifacts_run(event)
        outcome = transform(event, task.definition, task.artifacts[run] if run is not None else None, rules)
        key = (event.task_id, event.run_id or 0)
        if isinstance(outcome, Jobs):
            jobs[key].extend(message.job for message in outcome.messages)
        else:
            not_jobs[key] += 1
    for expected in workload.expected:
        key = (expected.task_id, expected.run_id)
        got = jobs.get(key, [])
        assert len(got) == expected.jobs, expected
        assert not_jobs[key] == expected.events - expected.jobs
        if got:
            final = got[-1]
            assert (final["state"], final["result"], final["isRetried"]) == (
                expected.state, expected.result, expected.is_retried), expected
            assert final["origin"]["project"] == expected.project


def test_fractions_that_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        WorkloadOptions(retry_fraction=1.5)
    with pytest.raises(ValueError, match="more than 1"):
        WorkloadOptions(retry_fraction=0.6, failed_fraction=0.6)


def test_no_staging_no_github_no_bad_configs_when_asked():
    workload = generate(WorkloadOptions(tasks=500, seed=3, staging_fraction=0, github_fraction=0,
                                        bad_config_fraction=0, no_config_fraction=0, no_route_fraction=0))
    assert {task.config for task in workload.tasks} == {Config.VALID}
    assert {run.destination for run in workload.expected} == {"tc-treeherder"}
    assert not any("/" in group.project for group in workload.groups)


@pytest.mark.skipif(not (REFERENCE / "treeherder-corpus").exists(),
                    reason="the reference corpus (../shared/reference) is absent")
def test_shapes_cover_those_of_real_firefox_ci_events_and_tasks(workload):
    corpus = REFERENCE / "treeherder-corpus"
    real_tasks = json.loads((corpus / "taskcluster_tasks.json").read_text())
    real_events = json.loads((corpus / "taskcluster_pulse_messages.json").read_text())
    ours = workload.tasks[5].definition
    for definition in real_tasks.values():
        assert set(definition) <= set(ours), set(definition) - set(ours)
        assert set(definition["metadata"]) <= set(ours["metadata"])
    our_events: dict[str, dict[str, Any]] = {}
    for event in workload.events:
        our_events.setdefault(event["exchange"].rpartition("/")[2], event)
    for message in real_events.values():
        kind = message["exchange"].rpartition("/")[2]
        ours_body = our_events[kind]["payload"]
        real = message["payload"]
        assert set(real) <= set(ours_body), (kind, set(real) - set(ours_body))
        assert set(real["status"]) <= set(ours_body["status"])
        real_run_keys = set(real["status"]["runs"][0])
        our_run_keys = set(ours_body["status"]["runs"][ours_body["runId"]])
        assert real_run_keys <= our_run_keys, (kind, real_run_keys - our_run_keys)
        assert len(message["routes"].split(".")) == len(our_events[kind]["routingKey"].split("."))
    schema = yaml.safe_load((REFERENCE / "task-treeherder-config.yml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    valid = [t for t in workload.tasks if t.config is Config.VALID]
    assert all(validator.is_valid(task.definition["extra"]["treeherder"]) for task in valid)
