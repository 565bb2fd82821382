"""The async step between an envelope and its outcome: what is fetched, when, and what each failure becomes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from devtools.factories import ROOT_URL, TASK_ID, make_artifacts, make_envelope, make_event, make_task
from devtools.queue_standin import Fault, QueueStandIn
from streams.core.model import Ignored, Jobs, Rejected, Stage
from streams.core.rules import Rules
from streams.taskcluster.lookup import QueueLookup, process
from streams.taskcluster.queue_client import QueueClient, QueueError, QueueRefused, QueueUnavailable, TaskNotFound

RULES = Rules()


class MemoryLookup:
    """A TaskLookup over dicts, recording every call; a value that is an exception is raised instead."""

    def __init__(self, task: Any = None, artifacts: Any = ()) -> None:
        self._task = make_task() if task is None else task
        self._artifacts = artifacts
        self.calls: list[tuple[Any, ...]] = []

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        self.calls.append(("task", root_url, task_id))
        if isinstance(self._task, Exception):
            raise self._task
        return self._task

    async def artifacts(self, root_url: str, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]]:
        self.calls.append(("artifacts", root_url, task_id, run_id))
        if isinstance(self._artifacts, Exception):
            raise self._artifacts
        return self._artifacts


def queue_error(kind: type[QueueError], **extra: Any) -> QueueError:
    return kind("boom", call="task", task_id=TASK_ID, root_url=ROOT_URL, **extra)


async def test_a_pending_event_needs_the_definition_only():
    lookup = MemoryLookup()
    outcome = await process(make_envelope(make_event("pending")), lookup, RULES)
    assert isinstance(outcome, Jobs)
    assert outcome.messages[0].job["state"] == "pending"
    assert lookup.calls == [("task", ROOT_URL, TASK_ID)]


async def test_a_completed_event_gets_the_runs_artifact_links():
    lookup = MemoryLookup(artifacts=make_artifacts("public/build/target.zip", "public/logs/"))
    outcome = await process(make_envelope(make_event("completed")), lookup, RULES)
    assert isinstance(outcome, Jobs)
    links = outcome.messages[0].job["jobInfo"]["links"]
    assert [link["linkText"] for link in links] == ["target.zip"]
    assert lookup.calls[1] == ("artifacts", ROOT_URL, TASK_ID, 0)


async def test_a_failed_listing_still_gives_the_job_without_links():
    lookup = MemoryLookup(artifacts=queue_error(QueueUnavailable, attempts=6))
    outcome = await process(make_envelope(make_event("failed")), lookup, RULES)
    assert isinstance(outcome, Jobs)
    job = outcome.messages[0].job
    assert (job["state"], job["result"], job["jobInfo"]["links"]) == ("completed", "fail", [])


async def test_a_listing_of_a_vanished_run_still_gives_the_job():
    lookup = MemoryLookup(artifacts=queue_error(TaskNotFound))
    outcome = await process(make_envelope(make_event("completed")), lookup, RULES)
    assert isinstance(outcome, Jobs)


async def test_an_unknown_task_is_rejected_at_the_task_stage():
    outcome = await process(make_envelope(make_event("pending")), MemoryLookup(task=queue_error(TaskNotFound)), RULES)
    assert outcome == Rejected(TASK_ID, f"task not found: {TASK_ID} at {ROOT_URL}", Stage.TASK)


async def test_a_refused_task_lookup_is_rejected_at_the_task_stage():
    lookup = MemoryLookup(task=queue_error(QueueRefused, status=403))
    outcome = await process(make_envelope(make_event("pending")), lookup, RULES)
    assert isinstance(outcome, Rejected)
    assert (outcome.stage, outcome.task_id) == (Stage.TASK, TASK_ID)
    assert "refused" in outcome.reason


async def test_an_unavailable_queue_propagates_for_the_caller_to_decide():
    lookup = MemoryLookup(task=queue_error(QueueUnavailable, attempts=6))
    with pytest.raises(QueueUnavailable):
        await process(make_envelope(make_event("pending")), lookup, RULES)


async def test_a_malformed_envelope_asks_the_queue_nothing():
    lookup = MemoryLookup()
    outcome = await process({"exchange": "x"}, lookup, RULES)
    assert isinstance(outcome, Rejected) and outcome.stage is Stage.ENVELOPE
    assert lookup.calls == []


async def test_a_task_not_for_treeherder_costs_no_listing():
    lookup = MemoryLookup(task=make_task(routes=["index.gecko.v2.autoland.latest"]))
    outcome = await process(make_envelope(make_event("completed")), lookup, RULES)
    assert isinstance(outcome, Ignored) and outcome.stage is Stage.ROUTE
    assert [call[0] for call in lookup.calls] == ["task"]


async def test_the_default_root_url_serves_envelopes_without_one():
    lookup = MemoryLookup()
    outcome = await process(make_envelope(make_event("pending"), root_url=None), lookup, RULES,
                            default_root_url="https://other.example.com")
    assert isinstance(outcome, Jobs)
    assert lookup.calls == [("task", "https://other.example.com", TASK_ID)]


# QueueLookup over the real client and the stand-in


@pytest.fixture
async def standin():
    server = QueueStandIn(page_size=2)
    server.add_task(TASK_ID, make_task())
    server.add_artifacts(TASK_ID, 0, make_artifacts("public/a", "public/b", "public/c"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client():
    queue = QueueClient(timeout=1.0, retries=1, backoff=0.01)
    yield queue
    await queue.close()


async def test_queue_lookup_gives_every_page_to_the_transform(standin, client):
    envelope = make_envelope(make_event("completed"), root_url=standin.root_url)
    outcome = await process(envelope, QueueLookup(client), RULES)
    assert isinstance(outcome, Jobs)
    assert [link["linkText"] for link in outcome.messages[0].job["jobInfo"]["links"]] == ["a", "b", "c"]


async def test_a_memo_lookup_fetches_each_definition_once(standin, client):
    lookup = QueueLookup(client, memo=True)
    envelope = make_envelope(make_event("running"), root_url=standin.root_url)
    outcomes = await asyncio.gather(*(process(envelope, lookup, RULES) for _ in range(5)))
    assert all(isinstance(outcome, Jobs) for outcome in outcomes)
    assert standin.stats["requests"]["task"] == 1


async def test_a_memo_lookup_forgets_failures(standin, client):
    lookup = QueueLookup(client, memo=True)
    standin.add_fault(Fault(status=500, remaining=2))  # both attempts of the first call
    with pytest.raises(QueueUnavailable):
        await lookup.task(standin.root_url, TASK_ID)
    assert (await lookup.task(standin.root_url, TASK_ID))["metadata"]["owner"] == "dev@example.com"


class DecisionLookup(MemoryLookup):
    """The task, and its decision task under the task group's id (or an error for it)."""

    def __init__(self, task: Any, decision: Any) -> None:
        super().__init__(task)
        self._decision = decision

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        if task_id != TASK_ID:
            self.calls.append(("task", root_url, task_id))
            if isinstance(self._decision, Exception):
                raise self._decision
            return self._decision
        return await super().task(root_url, task_id)


MOBILE = make_task(routes=[f"tc-treeherder.v2.mozilla-mobile/reference-browser.{'a' * 40}"])


async def test_a_mobile_task_asks_its_decision_task_as_treeherder_does():
    from devtools.factories import TASK_GROUP_ID

    on_main = DecisionLookup(MOBILE, {"routes": ["index.mobile.v2.reference-browser.branch.main.latest"]})
    assert isinstance(await process(make_envelope(make_event("pending")), on_main, RULES), Jobs)
    assert on_main.calls == [("task", ROOT_URL, TASK_ID), ("task", ROOT_URL, TASK_GROUP_ID)]
    elsewhere = DecisionLookup(MOBILE, {"routes": ["index.mobile.v2.reference-browser.pr.7"]})
    outcome = await process(make_envelope(make_event("pending")), elsewhere, RULES)
    assert isinstance(outcome, Ignored) and "no master or main route" in outcome.reason
    missing = DecisionLookup(MOBILE, TaskNotFound("gone", call="task", task_id=TASK_GROUP_ID, root_url=ROOT_URL))
    outcome = await process(make_envelope(make_event("pending")), missing, RULES)
    assert isinstance(outcome, Ignored) and f"decision task {TASK_GROUP_ID}" in outcome.reason
    down = DecisionLookup(MOBILE, QueueUnavailable("down", attempts=3, call="task", task_id=TASK_GROUP_ID,
                                                   root_url=ROOT_URL))
    with pytest.raises(QueueUnavailable):
        await process(make_envelope(make_event("pending")), down, RULES)
    plain = MemoryLookup()
    await process(make_envelope(make_event("pending")), plain, RULES)
    assert len(plain.calls) == 1  # any other task: no decision task asked for
