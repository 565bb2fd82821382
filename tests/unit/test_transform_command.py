"""The real ``tc-treeherder transform`` command, run as a process against a Queue API stand-in."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from devtools.factories import TASK_ID, make_artifacts, make_envelope, make_event, make_task
from devtools.queue_standin import Fault, QueueStandIn

OTHER_TASK = "fUAV5m0qQ4K9Gl8RIVYpVw"  # not for Treeherder: no tc-treeherder route
MISSING_TASK = "Xq1Y3b8kQ9eXbX0y7b9xzg"  # the stand-in does not know it
SECOND_TASK = "KwUpnT0sQcCv1NA1XY8NwQ"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def standin():
    server = QueueStandIn(page_size=2)
    server.add_task(TASK_ID, make_task())
    server.add_artifacts(TASK_ID, 0, make_artifacts("public/a.txt", "public/b.txt", "public/a.txt"))
    server.add_task(OTHER_TASK, make_task(routes=["index.gecko.v2.autoland.latest"]))
    await server.start()
    yield server
    await server.stop()


async def run_transform(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None):
    """Run the command in its own process; returns (exit status, stdout lines, stderr JSON lines)."""
    environment = {**os.environ, "TC_TREEHERDER_QUEUE_TIMEOUT": "2", "TC_TREEHERDER_QUEUE_RETRIES": "1",
                   **(env or {})}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tc_treeherder.cli", "transform", *args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=environment,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode, [orjson.loads(line) for line in out.splitlines()], err.decode().splitlines()


def lines(*items: object) -> bytes:
    return b"".join((item if isinstance(item, bytes) else orjson.dumps(item)) + b"\n" for item in items)


async def test_jobs_on_stdout_and_every_other_line_explained_on_stderr(standin):
    root = standin.root_url
    text = lines(
        make_envelope(make_event("pending"), root_url=root),                      # 1: a job
        b"{not json",                                                             # 2: unparseable
        make_envelope(make_event("completed"), root_url=root),                    # 3: a job with links
        make_envelope(make_event("pending", task_id=OTHER_TASK), root_url=root),  # 4: ignored
        make_envelope(make_event("pending", task_id=MISSING_TASK), root_url=root),  # 5: task not found
        {"exchange": "exchange/taskcluster-queue/v1/task-pending"},               # 6: malformed envelope
    )
    status, jobs, errors = await run_transform(stdin=text)

    assert status == 0
    assert [set(job) for job in jobs] == [{"destination", "project", "routingKey", "job"}] * 2
    assert [(job["destination"], job["project"], job["routingKey"]) for job in jobs] == [
        ("tc-treeherder", "autoland", "tc-treeherder.autoland._")] * 2
    assert [job["job"]["state"] for job in jobs] == ["pending", "completed"]  # input order
    links = jobs[1]["job"]["jobInfo"]["links"]
    assert [link["linkText"] for link in links] == ["a.txt", "b.txt", "a.txt (1)"]  # both pages

    reports = [orjson.loads(line) for line in errors]
    assert [(r["line"], r["outcome"], r["stage"], r["taskId"]) for r in reports] == [
        (2, "rejected", "envelope", None),
        (4, "ignored", "route", OTHER_TASK),
        (5, "rejected", "task", MISSING_TASK),
        (6, "rejected", "envelope", None),
    ]
    assert reports[0]["reason"].startswith("line is not JSON")
    assert reports[2]["reason"] == f"task not found: {MISSING_TASK} at {root}"
    assert all(report["reason"] for report in reports)


async def test_root_url_falls_back_to_the_option_and_reads_a_file(standin, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(lines(make_envelope(make_event("running"), root_url=None), b"", b"   "))
    status, jobs, errors = await run_transform("--root-url", standin.root_url, str(events))
    assert (status, errors) == (0, [])  # blank lines are not events
    assert [job["job"]["state"] for job in jobs] == ["running"]
    assert standin.stats["requests"]["task"] == 1


async def test_output_keeps_input_order_with_many_lines_in_flight(standin):
    root = standin.root_url
    kinds = ["pending", "running", "completed"] * 40
    status, jobs, errors = await run_transform(
        stdin=lines(*(make_envelope(make_event(kind), root_url=root) for kind in kinds)))
    assert (status, errors) == (0, [])
    expected = {"pending": "pending", "running": "running", "completed": "completed"}
    assert [job["job"]["state"] for job in jobs] == [expected[kind] for kind in kinds]
    assert standin.stats["requests"]["task"] == 1  # one definition, fetched once for the whole run


async def test_an_unavailable_queue_rejects_the_line_and_goes_on(standin):
    standin.add_task(SECOND_TASK, make_task())
    standin.add_fault(Fault(status=503, endpoint="task", task_id=TASK_ID))
    root = standin.root_url
    status, jobs, errors = await run_transform(stdin=lines(
        make_envelope(make_event("pending"), root_url=root),
        make_envelope(make_event("running", task_id=SECOND_TASK), root_url=root),
    ))
    assert status == 0
    report = orjson.loads(errors[0])
    assert (report["line"], report["outcome"], report["stage"], report["taskId"]) == (1, "rejected", "task", TASK_ID)
    assert "Queue API unavailable" in report["reason"] and "2 time(s)" in report["reason"]
    assert [job["job"]["state"] for job in jobs] == ["running"]


async def test_a_failed_listing_still_prints_the_job(standin):
    standin.add_fault(Fault(status=500, endpoint="artifacts"))
    status, jobs, errors = await run_transform(
        stdin=lines(make_envelope(make_event("completed"), root_url=standin.root_url)))
    assert (status, errors) == (0, [])
    assert jobs[0]["job"]["jobInfo"]["links"] == []


async def test_misuse_is_the_only_non_zero_exit(tmp_path):
    status, _, errors = await run_transform(str(tmp_path / "missing.jsonl"))
    assert status == 2
    assert "cannot read" in errors[0]
