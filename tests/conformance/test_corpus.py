"""Conformance over real Firefox CI events: our jobs are valid pulse-job and match what Treeherder stored.

The corpus (../shared/reference/treeherder-corpus, read in place) holds 91 events with their task
definitions and the jobs Treeherder stored after loading its own job messages for them. Treeherder's stored
form is not pulse-job; ``our_view`` maps our message onto it. None of these 91 events touches a behaviour
where design.md departs from Treeherder (paged artifact listings, short routes), so every field must agree.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from streams.core.envelope import parse_envelope
from streams.core.model import Jobs, TaskEvent
from streams.core.rules import Rules
from streams.core.transform import transform
from streams.core.validation import job_check

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "treeherder-corpus"

if not (CORPUS / "taskcluster_pulse_messages.json").is_file():
    pytest.skip(f"conformance corpus not found at {CORPUS.resolve()}: skipped", allow_module_level=True)


def _load(name: str) -> dict[str, Any]:
    with open(CORPUS / name, encoding="utf-8") as handle:
        return json.load(handle)


MESSAGES = _load("taskcluster_pulse_messages.json")
TASKS = _load("taskcluster_tasks.json")
STORED = _load("taskcluster_transformed_jobs.json")


def corpus_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """The corpus keeps {root_url, exchange, payload, routes (the primary routing key)}: make it an envelope."""
    return {
        "exchange": message["exchange"],
        "routingKey": message["routes"],
        "payload": message["payload"],
        "rootUrl": message["root_url"],
    }


def epoch(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def our_view(job: dict[str, Any]) -> dict[str, Any]:
    """Our pulse-job message, in the terms of Treeherder's stored job."""
    machine = job["buildMachine"]
    platform = {"platform": machine["platform"], "os_name": machine["os"], "architecture": machine["architecture"]}
    view = {
        "job_guid": job["taskId"],
        "taskcluster_retry_id": job["retryId"],
        "build_system_type": job["buildSystem"],
        "job_symbol": job["display"]["jobSymbol"],
        "group_symbol": job["display"]["groupSymbol"],
        "group_name": job["display"].get("groupName", "unknown"),  # Treeherder stores "unknown" when absent
        "name": job["display"]["jobName"],
        "build_platform": platform,
        "machine_platform": platform,
        "machine": machine["name"],
        "option_collection": dict.fromkeys(job["labels"], True),
        "state": job["state"],
        "result": job["result"],
        "tier": job["tier"],
        "who": job["owner"],
        "reason": job["reason"],
        "product_name": job.get("productName", "unknown"),
        "submit_timestamp": epoch(job["timeScheduled"]),
        "log_references": [(log["name"], urlsplit(log["url"]).path) for log in job.get("logs", [])],
        "revision": job["origin"]["revision"],
    }
    if "timeStarted" in job:
        view["start_timestamp"] = epoch(job["timeStarted"])
    if "timeCompleted" in job:
        view["end_timestamp"] = epoch(job["timeCompleted"])
    return view


def stored_view(stored: dict[str, Any]) -> dict[str, Any]:
    job = stored["job"]
    keys = (
        "job_guid", "taskcluster_retry_id", "build_system_type", "job_symbol", "group_symbol", "group_name", "name",
        "build_platform", "machine_platform", "machine", "option_collection", "state", "result", "tier", "who",
        "reason", "product_name", "submit_timestamp", "start_timestamp", "end_timestamp",
    )  # fmt: skip
    view = {key: job[key] for key in keys if key in job}
    view["log_references"] = [(log["name"], urlsplit(log["url"]).path) for log in job["log_references"]]
    view["revision"] = stored["revision"]
    return view


def test_the_corpus_is_complete():
    assert set(MESSAGES) == set(TASKS) == set(STORED)
    assert len(MESSAGES) == 91


@pytest.mark.parametrize("task_id", sorted(MESSAGES))
def test_event_becomes_the_job_treeherder_stored(task_id):
    event = parse_envelope(corpus_envelope(MESSAGES[task_id]))
    assert isinstance(event, TaskEvent), event
    outcome = transform(event, TASKS[task_id], [], Rules())
    assert isinstance(outcome, Jobs), outcome
    (message,) = outcome.messages
    assert job_check().reference_errors(message.job) is None  # python-jsonschema, as Treeherder validates
    assert message.routing_key == f"tc-treeherder.{message.project}._"
    assert our_view(message.job) == stored_view(STORED[task_id])
    assert STORED[task_id]["job"]["taskcluster_task_id"] == task_id
