"""The worker's batch logic: cached lookups, per-task order, the state guard and the error policy.

Tables are a dict here (the Faust tables are exercised by the integration tests); the Queue API is the local
stand-in, so every request the worker makes is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from devtools.factories import TASK_ID, TASK_UUID, make_artifacts, make_envelope, make_event, make_task
from devtools.queue_standin import Fault, QueueStandIn
from streams.core.rules import DestinationRule, Rules
from streams.core.state_guard import GuardEntry
from streams.taskcluster.queue_client import QueueClient
from streams.worker.processor import EventProcessor, RetryPolicy, SourceEvent, WorkerStopping


class DictState:
    """The worker's three tables as plain dicts."""

    def __init__(self) -> None:
        self.definitions: dict[str, Any] = {}
        self.listings: dict[tuple[str, int], Any] = {}
        self.ranks: dict[str, GuardEntry] = {}

    def definition(self, task_id: str) -> Mapping[str, Any] | None:
        return self.definitions.get(task_id)

    def store_definition(self, task_id: str, definition: Mapping[str, Any]) -> None:
        self.definitions[task_id] = definition

    def artifacts(self, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]] | None:
        return self.listings.get((task_id, run_id))

    def store_artifacts(self, task_id: str, run_id: int, artifacts: Sequence[Mapping[str, Any]]) -> None:
        self.listings[(task_id, run_id)] = artifacts

    def emitted(self, key: str) -> GuardEntry | None:
        return self.ranks.get(key)

    def store_emitted(self, key: str, entry: GuardEntry) -> None:
        self.ranks[key] = entry


@pytest.fixture
async def standin():
    async with QueueStandIn(page_size=2) as server:
        yield server


@pytest.fixture
async def client():
    queue = QueueClient(timeout=2.0, retries=1, backoff=0.01, backoff_max=0.02)
    yield queue
    await queue.close()


def records_of(state: DictState, root_url: str, *payloads: Any, task_id: str = TASK_ID) -> list[SourceEvent]:
    out = []
    for offset, payload in enumerate(payloads):
        value = payload if isinstance(payload, bytes) else orjson.dumps(make_envelope(payload, root_url=root_url))
        out.append(SourceEvent("events", 0, offset, task_id.encode(), value, state))
    return out


def decoded(records) -> list[tuple[str, dict[str, Any]]]:
    return [(record.topic, orjson.loads(record.value)) for record in records]


async def test_a_task_is_fetched_once_and_its_jobs_keep_event_order(standin, client):
    standin.add_task(TASK_ID, make_task())
    standin.add_artifacts(TASK_ID, 0, make_artifacts("public/logs/live_backing.log", "public/a.txt", "public/b.txt"))
    state = DictState()
    processor = EventProcessor(Rules(), client, default_root_url=standin.root_url)

    out = await processor.process_batch(records_of(
        state, standin.root_url, make_event("pending"), make_event("running"), make_event("completed")))

    jobs = decoded(out)
    assert [topic for topic, _ in jobs] == ["jobs"] * 3
    assert [record["job"]["state"] for _, record in jobs] == ["pending", "running", "completed"]
    assert [record["source"]["offset"] for _, record in jobs] == [0, 1, 2]
    assert jobs[2][1]["routingKey"] == "tc-treeherder.autoland._"
    assert len(jobs[2][1]["job"]["jobInfo"]["links"]) == 3, "all pages of the listing become links"
    assert standin.stats["requests"] == {"task": 1, "artifacts": 2}  # one definition, one listing of 2 pages

    again = await processor.process_batch(records_of(state, standin.root_url, make_event("completed")))
    assert [orjson.loads(r.value)["job"]["state"] for r in again] == ["completed"]
    assert standin.stats["requests"] == {"task": 1, "artifacts": 2}, "served from the tables the second time"


async def test_a_job_record_names_the_root_url_of_its_event(standin, client):
    standin.add_task(TASK_ID, make_task())
    state = DictState()
    processor = EventProcessor(Rules(), client, default_root_url=standin.root_url)
    given = await processor.process_batch(records_of(state, standin.root_url + "/", make_event("pending")))
    assert [record["rootUrl"] for _, record in decoded(given)] == [standin.root_url]
    envelope = make_envelope(make_event("running"), root_url=standin.root_url)
    del envelope["rootUrl"]  # an envelope without one takes the worker's default, as the transform did
    defaulted = await processor.process_batch(records_of(state, standin.root_url, orjson.dumps(envelope)))
    assert [record["rootUrl"] for _, record in decoded(defaulted)] == [standin.root_url]


async def test_a_late_event_does_not_take_a_run_backwards(standin, client):
    standin.add_task(TASK_ID, make_task())
    state = DictState()
    processor = EventProcessor(Rules(), client, default_root_url=standin.root_url)

    out = await processor.process_batch(records_of(
        state, standin.root_url, make_event("completed"), make_event("running"), make_event("pending")))

    assert [orjson.loads(r.value)["job"]["state"] for r in out] == ["completed"]
    assert processor.counts.suppressed == 2
    # A redelivery of the final state still goes out: Treeherder takes it as an update of the same job.
    again = await processor.process_batch(records_of(state, standin.root_url, make_event("completed")))
    assert len(again) == 1


async def test_fan_out_gives_each_destination_its_job_guard_and_ignored_record(standin, client):
    standin.add_task(TASK_ID, make_task())  # route tc-treeherder.v2.autoland...
    state = DictState()
    rules = Rules(destinations=(DestinationRule("production", ("tc-treeherder",)),
                                DestinationRule("stage", ("tc-treeherder",), profile="legacy"),
                                DestinationRule("dev", ("tc-treeherder",), projects=frozenset({"try"}))))
    processor = EventProcessor(rules, client, default_root_url=standin.root_url)

    out = decoded(await processor.process_batch(records_of(
        state, standin.root_url, make_event("running"), make_event("pending"))))

    assert [(topic, record.get("destination"), record.get("kind")) for topic, record in out] == [
        ("jobs", "production", None), ("jobs", "stage", None),
        ("rejected", "dev", "ignored"),  # the running event
        ("rejected", "dev", "ignored"),  # the late pending one: each live destination's guard held it back
    ]
    assert out[2][1]["reason"] == "project 'autoland' is not taken by destination 'dev'"
    assert "kind" in out[1][1]["job"]["origin"]  # stage's job in the legacy profile
    assert sorted(state.ranks) == [f"production/{TASK_UUID}/0", f"stage/{TASK_UUID}/0"]
    assert processor.counts.suppressed == 2
    assert processor.counts.ignored == {"project 'autoland' is not taken by destination 'dev'": 2}


async def test_every_bad_event_becomes_one_rejected_record_and_the_batch_goes_on(standin, client):
    standin.add_task(TASK_ID, make_task())
    standin.add_task("ZShxu3oeTb6vA3genPZZ3g", make_task(routes=["index.foo"]))
    state = DictState()
    processor = EventProcessor(Rules(), client, default_root_url=standin.root_url)
    batch = [
        *records_of(state, standin.root_url, b"{not json"),
        *records_of(state, standin.root_url, make_event("pending", task_id="JXCKWMboSA67pGalSfg3og"),
                    task_id="JXCKWMboSA67pGalSfg3og"),
        *records_of(state, standin.root_url, make_event("pending", task_id="ZShxu3oeTb6vA3genPZZ3g"),
                    task_id="ZShxu3oeTb6vA3genPZZ3g"),
        *records_of(state, standin.root_url, make_event("pending")),
    ]

    out = decoded(await processor.process_batch(batch))

    rejected = [record for topic, record in out if topic == "rejected"]
    assert [(r["stage"], r["kind"]) for r in rejected] == [
        ("envelope", "rejected"), ("task", "rejected"), ("route", "ignored")]
    assert "not JSON" in rejected[0]["reason"]
    assert rejected[0]["envelope"] == "{not json", "the original bytes are kept for a later replay"
    assert rejected[1]["reason"].startswith("task not found: JXCKWMboSA67pGalSfg3og")
    assert rejected[1]["source"] == {"topic": "events", "partition": 0, "offset": 0}
    assert [topic for topic, _ in out].count("jobs") == 1
    assert processor.counts.events == 4


async def test_a_queue_outage_is_waited_out_then_rejected_with_the_reason(standin, client):
    standin.add_task(TASK_ID, make_task())
    standin.add_fault(Fault(status=500, remaining=3, endpoint="task"))
    processor = EventProcessor(Rules(), client, default_root_url=standin.root_url,
                               policy=RetryPolicy(give_up_after=5.0, first_delay=0.01, max_delay=0.02))

    out = await processor.process_batch(records_of(DictState(), standin.root_url, make_event("pending")))
    assert [r.topic for r in out] == ["jobs"], "a short outage only delays the job"

    standin.add_fault(Fault(status=503, endpoint="task"))
    impatient = EventProcessor(Rules(), client, default_root_url=standin.root_url,
                               policy=RetryPolicy(give_up_after=0.05, first_delay=0.01, max_delay=0.02))
    out = decoded(await impatient.process_batch(records_of(DictState(), standin.root_url, make_event("pending"))))
    assert [(topic, record["stage"]) for topic, record in out] == [("rejected", "task")]
    assert out[0][1]["reason"].startswith("Queue API unavailable")


async def test_a_worker_that_stops_during_an_outage_leaves_the_event_for_the_next_owner(standin, client):
    standin.add_task(TASK_ID, make_task())
    standin.add_fault(Fault(status=503, endpoint="task"))
    processor = EventProcessor(Rules(), client, default_root_url=standin.root_url, stopping=lambda: True,
                               policy=RetryPolicy(give_up_after=60.0, first_delay=0.01, max_delay=0.02))

    with pytest.raises(WorkerStopping):
        await processor.process_batch(records_of(DictState(), standin.root_url, make_event("pending")))
