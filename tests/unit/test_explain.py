"""explain: a task's verdict comes from the stream's own pipeline, with the precise reason and what to do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.factories import (
    REVISION,
    TASK_ID,
    make_artifacts,
    make_config,
    make_envelope,
    make_event,
    make_task,
)
from devtools.queue_standin import QueueStandIn
from streams.core.rules import DestinationRule, Rules
from streams.taskcluster.lookup import QueueLookup
from streams.taskcluster.queue_client import QueueClient
from tc_treeherder import cli
from tc_treeherder.commands.explain import render_text
from tc_treeherder.observability.explain import explain_definition, explain_task_id

PREFIX = "exchange/taskcluster-queue/v1/"
MISSING = "fQ3mh2ctQmeq2nOXDB2Hfw"


@pytest.fixture
async def queue() -> AsyncIterator[tuple[str, QueueLookup]]:
    async with QueueStandIn() as standin:
        standin.add_task(TASK_ID, make_task())
        standin.add_artifacts(TASK_ID, 0, make_artifacts("public/logs/live_backing.log", "public/build/target.zip"))
        root_url = standin.root_url
        client = QueueClient(timeout=5, retries=0)
        yield root_url, QueueLookup(client)
        await client.close()


async def test_a_treeherder_task_gives_a_job_per_lifecycle_event(queue: tuple[str, QueueLookup]) -> None:
    root_url, lookup = queue
    result = await explain_task_id(TASK_ID, lookup, Rules(), root_url, PREFIX)
    assert result.reaches_treeherder
    states = [(v.label, v.jobs[0]["job"]["state"], v.jobs[0]["job"].get("result")) for v in result.verdicts]
    assert states == [("task-pending run 0", "pending", "unknown"), ("task-running run 0", "running", "unknown"),
                      ("task-completed run 0", "completed", "success")]
    completed = result.verdicts[-1].jobs[0]
    assert completed["routingKey"] == "tc-treeherder.autoland._"
    assert [link["linkText"] for link in completed["job"]["jobInfo"]["links"]] == ["live_backing.log", "target.zip"]
    assert result.hint is None


async def test_unknown_task_is_rejected_with_the_root_url(queue: tuple[str, QueueLookup]) -> None:
    root_url, lookup = queue
    result = await explain_task_id(MISSING, lookup, Rules(), root_url, PREFIX)
    assert not result.reaches_treeherder
    assert result.verdicts[0].reason == f"task not found: {MISSING} at {root_url}"
    assert "root URL" in (result.hint or "")


@pytest.mark.parametrize(
    ("task", "outcome", "stage", "reason", "hint"),
    [
        (make_task(routes=["index.gecko.v2.autoland.latest"]), "ignored", "route",
         "no route starts with tc-treeherder or tc-treeherder-staging", "add exactly one route"),
        (make_task(routes=[f"tc-treeherder.v2.a.{REVISION}", f"tc-treeherder-staging.v2.a.{REVISION}"]), "rejected",
         "route", "2 routes select a Treeherder destination", "exactly one Treeherder route"),
        (make_task(routes=[f"tc-treeherder.autoland.{REVISION}"]), "rejected", "route",
         "does not have the form <prefix>.v2.<project>.<revision>[.<pushId>]", "must have the form"),
        (make_task(treeherder=make_config(tier=4)), "rejected", "config",
         "extra.treeherder.tier: 4 is greater than the maximum of 3", "extra.treeherder"),
        (make_task(treeherder=None), "ignored", "config", "task has no extra.treeherder section",
         "add an extra.treeherder"),
    ],
    ids=["no-route", "two-routes", "v1-route", "bad-tier", "no-config"],
)
async def test_why_a_task_does_not_reach_treeherder(task: dict, outcome: str, stage: str, reason: str,
                                                    hint: str) -> None:
    result = await explain_definition(TASK_ID, task, Rules(), "https://tc.example.com", PREFIX)
    assert not result.reaches_treeherder
    assert {(v.outcome, v.stage) for v in result.verdicts} == {(outcome, stage)}
    assert reason in result.verdicts[0].reason
    assert hint in (result.hint or "")
    assert reason in result.summary


async def test_a_disabled_destination_is_named() -> None:
    rules = Rules(destinations=(DestinationRule("tc-treeherder", ("tc-treeherder",), enabled=False),))
    result = await explain_definition(TASK_ID, make_task(), rules, "https://tc.example.com", PREFIX)
    assert not result.reaches_treeherder
    assert "disabled" in result.verdicts[0].reason and "ENABLED" in (result.hint or "")


async def test_each_destination_of_the_route_is_shown_with_its_job_or_its_reason() -> None:
    rules = Rules(destinations=(DestinationRule("production", ("tc-treeherder",)),
                                DestinationRule("dev", ("tc-treeherder",), projects=frozenset({"try"}))))
    result = await explain_definition(TASK_ID, make_task(), rules, "https://tc.example.com", PREFIX)
    assert result.reaches_treeherder and "for production" in result.summary
    pending = result.verdicts[0]
    assert [job["destination"] for job in pending.jobs] == ["production"]
    assert pending.declined == ({"destination": "dev", "outcome": "ignored", "stage": "route",
                                 "reason": "project 'autoland' is not taken by destination 'dev'"},)
    text = render_text(result, "https://tc.example.com")
    assert "ignored   [route] project 'autoland' is not taken by destination 'dev'" in text
    assert result.to_json()["events"][0]["declined"][0]["destination"] == "dev"

    only_dev = Rules(destinations=(rules.destinations[1],))
    result = await explain_definition(TASK_ID, make_task(), only_dev, "https://tc.example.com", PREFIX)
    assert not result.reaches_treeherder
    assert result.verdicts[0].reason == "project 'autoland' is not taken by destination 'dev'"
    assert "PROJECTS" in (result.hint or "")


def run_cli(*args: str) -> int:
    return cli.main(["explain", *args])


def test_command_exit_status_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(make_task()))
    bad.write_text(json.dumps(make_task(treeherder=make_config(tier=4))))
    assert run_cli(str(good), "--task-id", TASK_ID, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["reachesTreeherder"] is True and document["taskId"] == TASK_ID
    assert [event["jobs"][0]["job"]["state"] for event in document["events"]] == ["pending", "running", "completed"]
    assert run_cli(str(bad)) == 1
    text = capsys.readouterr().out
    assert "NO" in text and "extra.treeherder.tier: 4 is greater than the maximum of 3" in text
    assert run_cli("not-a-task-id") == 2


async def test_envelope_file_uses_the_queue_and_reports_unparseable_lines(
        queue: tuple[str, QueueLookup], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    root_url, _ = queue
    events = tmp_path / "events.jsonl"
    lines = [json.dumps(make_envelope(make_event(kind), root_url=None)) for kind in ("pending", "completed")]
    events.write_text("\n".join([*lines, "{not json"]) + "\n")
    status = await asyncio.to_thread(run_cli, str(events), "--root-url", root_url, "--json")
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1  # one of the two "tasks" (the unparseable line) does not reach Treeherder
    assert documents[0]["taskId"] == TASK_ID and documents[0]["reachesTreeherder"] is True
    assert documents[1]["events"][0]["reason"].startswith("line is not JSON")
