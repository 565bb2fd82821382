"""Bad input, property-based, at the worker's batch logic: ``EventProcessor.process_batch``.

Batches of task-events records (broken envelopes, bytes that are not JSON or not UTF-8, 1 MB values) for tasks
whose definitions the Queue API stand-in serves as generated (broken, with lone surrogates, nested too deep to
decode, not JSON at all). The batch always completes, and every event ends as schema-valid job records, or
exactly one rejected/ignored record with a reason, or a job the state guard held back (counted).

The tables round-trip every value through orjson, as the worker's Faust tables do, so a value the tables
could not store fails here too. The stand-in runs in a thread of its own for the whole module.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.factories import make_artifacts, make_envelope, make_event, make_task
from devtools.queue_standin import QueueStandIn
from streams.core.rules import Rules
from streams.core.state_guard import GuardEntry
from streams.shared import records
from streams.taskcluster.queue_client import QueueClient
from streams.worker.processor import EventProcessor, RetryPolicy, SourceEvent
from tests.conftest import PROPERTY_CASES
from tests.unit.test_properties_core import REFERENCE, bodies, broken, tasks

TASK_IDS = ("B3EheQ-IQ5aPzw34KS_a6g", "JXCKWMboSA67pGalSfg3og", "ZShxu3oeTb6vA3genPZZ3g", "fqKyfd4DTYOyqm9ehF5pkw")


class StoredState:
    """The worker's tables as dicts of bytes: values are encoded and decoded with orjson, as in TableState."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], bytes] = {}

    def _load(self, table: str, key: str) -> Any:
        raw = self.tables.get((table, key))
        return None if raw is None else orjson.loads(raw)

    def definition(self, task_id: str) -> Mapping[str, Any] | None:
        return self._load("definitions", task_id)

    def store_definition(self, task_id: str, definition: Mapping[str, Any]) -> None:
        self.tables[("definitions", task_id)] = orjson.dumps(definition)

    def artifacts(self, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]] | None:
        return self._load("artifacts", f"{task_id}/{run_id}")

    def store_artifacts(self, task_id: str, run_id: int, artifacts: Sequence[Mapping[str, Any]]) -> None:
        self.tables[("artifacts", f"{task_id}/{run_id}")] = orjson.dumps(list(artifacts))

    def emitted(self, key: str) -> GuardEntry | None:
        raw = self.tables.get(("emitted", key))
        return None if raw is None else GuardEntry.decode(raw)

    def store_emitted(self, key: str, entry: GuardEntry) -> None:
        self.tables[("emitted", key)] = entry.encode()


class ThreadedStandIn:
    """The Queue API stand-in on its own event loop in a thread, so each example can use asyncio.run."""

    def __init__(self) -> None:
        self.server = QueueStandIn(page_size=2)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedStandIn:
        self.thread.start()
        self.root_url = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def serve(self, task_id: str, body: bytes) -> None:
        self.loop.call_soon_threadsafe(self.server.add_task_body, task_id, body)


@pytest.fixture(scope="module")
def queue() -> Iterator[ThreadedStandIn]:
    with ThreadedStandIn() as standin:
        standin.server.add_artifacts(TASK_IDS[0], 0, make_artifacts("public/logs/live_backing.log", "public/x.txt",
                                                                    "public/y/z.txt"))
        yield standin


def _json_bytes(value: Any) -> bytes:
    """``value`` as JSON text however it can be written: orjson, else Python's json (escapes lone surrogates),
    else, nested too deep for either, the nesting spelled out."""
    try:
        return orjson.dumps(value)
    except TypeError:
        pass
    try:
        return json.dumps(value).encode()
    except (RecursionError, ValueError, TypeError):
        return b'{"a":' * 3000 + b"1" + b"}" * 3000


definitions = st.one_of(
    st.builds(lambda task: _json_bytes(task), tasks),
    st.sampled_from([b"", b"not json", b"\xff\xfe{", b'{"metadata": {"name": "\\ud800"}}', b"[]",
                     b'{"a":' * 2000 + b"1" + b"}" * 2000]),
)
good_envelope = bodies().map(lambda body: make_envelope(body, root_url=None))  # the stand-in is the default
values = st.one_of(
    good_envelope.map(orjson.dumps),
    bodies().flatmap(lambda body: broken(make_envelope(body, root_url=None))).map(_json_bytes),
    st.binary(max_size=200),
    st.just(b'{"payload": ' + b"[" * 900 + b"]" * 900 + b"}"),
    good_envelope.map(lambda envelope: orjson.dumps({**envelope, "padding": "x" * 1_048_576})),  # 1 MB record
)


# Each example runs a batch over HTTP: half the profile's examples keeps the default suite quick.
@settings(max_examples=max(25, settings.default.max_examples // 2))
@given(definition_bodies=st.lists(definitions, min_size=len(TASK_IDS), max_size=len(TASK_IDS)),
       batch=st.lists(st.tuples(st.sampled_from(TASK_IDS), values), min_size=1, max_size=8))
def test_every_event_of_a_bad_batch_ends_as_jobs_or_one_reason(queue, definition_bodies, batch):
    PROPERTY_CASES["worker: batches of bad events and definitions"] += 1
    PROPERTY_CASES["worker: events in those batches"] += len(batch)
    for task_id, body in zip(TASK_IDS, definition_bodies, strict=True):
        queue.serve(task_id, body)
    state = StoredState()
    events = [SourceEvent("events", 0, offset, task_id.encode(), value, state)
              for offset, (task_id, value) in enumerate(batch)]

    async def run() -> tuple[list[Any], int]:
        client = QueueClient(timeout=2.0, retries=0)
        processor = EventProcessor(Rules(), client, default_root_url=queue.root_url,
                                   policy=RetryPolicy(give_up_after=0.01, first_delay=0.001))
        try:
            return await processor.process_batch(events), processor.counts.suppressed
        finally:
            await client.close()

    output, suppressed = asyncio.run(run())

    answered: dict[int, list[str]] = {}
    for record in output:
        if record.topic == "jobs":
            job_record = records.decode_job_record(record.value)
            errors = list(REFERENCE.iter_errors(job_record.job))
            assert not errors, errors[0].message
            answered.setdefault(job_record.source_offset, []).append("jobs")
        else:
            assert record.topic == "rejected"
            rejected = records.decode_rejected_record(record.value)
            assert rejected.reason.strip() and rejected.stage
            answered.setdefault(rejected.source["offset"], []).append("rejected")
    for kinds in answered.values():
        assert kinds == ["rejected"] or set(kinds) == {"jobs"}, kinds
    assert len(events) - len(answered) == suppressed, "an event without output must be a suppressed job"


def test_a_definition_with_a_lone_surrogate_is_rejected_not_stored(queue):
    """Python's json (the Queue client's) reads "\\ud800"; orjson, which writes the tables, cannot write it."""
    task_id = "fqKyfd4DTYOyqm9ehF5pkw"
    queue.serve(task_id, json.dumps(make_task(name="build \ud800")).encode())
    state = StoredState()
    envelope = orjson.dumps(make_envelope(make_event("pending", task_id=task_id), root_url=None))

    async def run() -> list[Any]:
        client = QueueClient(timeout=2.0, retries=0)
        try:
            return await EventProcessor(Rules(), client, default_root_url=queue.root_url).process_batch(
                [SourceEvent("events", 0, 7, task_id.encode(), envelope, state)])
        finally:
            await client.close()

    [record] = asyncio.run(run())
    rejected = records.decode_rejected_record(record.value)
    assert (rejected.stage, rejected.kind) == ("task", "rejected")
    assert "metadata.name: 'build \\ud800' is not valid Unicode text" in rejected.reason
    assert state.tables == {}
