"""One event's outcome in a replay, from the tables alone: no broker is involved in this step."""

from __future__ import annotations

import io

import orjson
import pytest

from devtools.factories import make_artifacts, make_envelope, make_event, make_task
from streams.core.model import Jobs, Rejected, Stage
from streams.replay.plan import ReplayReport, select
from streams.replay.runner import Replay, ReplayLookup, ReplayOptions, _Input
from streams.shared.settings import load_settings

TASK_ID = "fN1SbArXTPSVFNUvaOlinQ"


def replay(*, use_queue: bool) -> Replay:
    settings = load_settings(env={})
    return Replay(settings, ReplayOptions(selection=select(settings), use_queue=use_queue), progress=io.StringIO())


def item(envelope: object) -> _Input:
    return _Input(TASK_ID, envelope, partition=0, offset=7)


@pytest.mark.parametrize("kind", ["pending", "completed"])
async def test_a_task_in_the_tables_is_re_run_without_the_queue(kind: str) -> None:
    lookup = ReplayLookup({TASK_ID: make_task()}, {f"{TASK_ID}/0": make_artifacts("public/a.txt")}, None,
                          ReplayReport())
    outcome = await replay(use_queue=False)._outcome(item(make_envelope(make_event(kind, task_id=TASK_ID))), lookup)
    assert isinstance(outcome, Jobs)
    assert outcome.messages[0].job["taskId"].endswith("/0")


async def test_without_the_queue_a_task_missing_from_the_tables_is_rejected_saying_so() -> None:
    lookup = ReplayLookup({}, {}, None, ReplayReport())
    outcome = await replay(use_queue=False)._outcome(item(make_envelope(make_event("pending", task_id=TASK_ID))),
                                                     lookup)
    assert isinstance(outcome, Rejected)
    assert outcome.task_id == TASK_ID and outcome.stage == Stage.TASK
    assert "--no-queue forbids asking the Queue API" in outcome.reason


async def test_a_record_that_is_not_json_is_rejected_not_dropped() -> None:
    lookup = ReplayLookup({}, {}, None, ReplayReport())
    outcome = await replay(use_queue=False)._outcome(item(b"{not json"), lookup)
    assert isinstance(outcome, Rejected) and outcome.stage == Stage.ENVELOPE


async def test_job_records_carry_their_source_and_the_replay_marker() -> None:
    run = replay(use_queue=False)
    lookup = ReplayLookup({TASK_ID: make_task()}, {}, None, run.report)
    envelope = make_envelope(make_event("pending", task_id=TASK_ID))
    marker = {"id": run.replay_id, "at": "2024-05-01T00:00:00.000Z", "from": "task-events"}
    (value,) = run._records(item(envelope), await run._outcome(item(envelope), lookup), lookup, marker)
    record = orjson.loads(value)
    assert record["source"] == {"partition": 0, "offset": 7}
    assert record["replay"] == marker
    assert record["job"]["state"] == "pending" and record["destination"] == "tc-treeherder"
    assert sum(run.report.jobs.values()) == 1


THREE = {"TC_TREEHERDER_DESTINATIONS": "production,stage,dev",
         "TC_TREEHERDER_DESTINATION_PRODUCTION_ROUTE_PREFIXES": "tc-treeherder",
         "TC_TREEHERDER_DESTINATION_STAGE_ROUTE_PREFIXES": "tc-treeherder",
         "TC_TREEHERDER_DESTINATION_DEV_ROUTE_PREFIXES": "tc-treeherder",
         "TC_TREEHERDER_DESTINATION_DEV_PROJECTS": "try"}


async def test_a_shared_prefix_replays_each_chosen_destination_and_reports_the_others_reasons() -> None:
    settings = load_settings(env=THREE)
    run = Replay(settings, ReplayOptions(selection=select(settings), use_queue=False), progress=io.StringIO())
    lookup = ReplayLookup({TASK_ID: make_task()}, {}, None, run.report)  # an autoland task
    envelope = make_envelope(make_event("pending", task_id=TASK_ID))
    values = run._records(item(envelope), await run._outcome(item(envelope), lookup), lookup, {"id": "r"})
    assert [orjson.loads(v)["destination"] for v in values] == ["production", "stage"]
    assert run.report.ignored == {"project 'autoland' is not taken by destination 'dev'": 1}
    assert "project 'autoland' is not taken by destination 'dev'" in "\n".join(run.report.lines())


async def test_a_rejected_record_about_one_destination_is_re_run_for_that_one_only() -> None:
    settings = load_settings(env={**THREE, "TC_TREEHERDER_DESTINATION_DEV_PROJECTS": "autoland"})
    run = Replay(settings, ReplayOptions(selection=select(settings), use_queue=False, rejected_only=True,
                                         include_ignored=True), progress=io.StringIO())
    lookup = ReplayLookup({TASK_ID: make_task()}, {}, None, run.report)
    envelope = make_envelope(make_event("pending", task_id=TASK_ID))
    about_dev = _Input(TASK_ID, envelope, partition=0, offset=7, destination="dev")
    values = run._records(about_dev, await run._outcome(about_dev, lookup), lookup, {"id": "r"})
    assert [orjson.loads(v)["destination"] for v in values] == ["dev"]  # production and stage had theirs
    elsewhere = Replay(settings, ReplayOptions(selection=select(settings, ["production"]), use_queue=False,
                                               rejected_only=True, include_ignored=True), progress=io.StringIO())
    assert elsewhere._records(about_dev, await elsewhere._outcome(about_dev, lookup), lookup, {"id": "r"}) == []
    assert elsewhere.report.other_destination == 1
