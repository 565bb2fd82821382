"""The inputs every stage benchmark shares, all derived from one simulated workload.

The simulator gives realistic task events (a mix of kinds, GitHub and hg projects, retries, ignored and
rejected tasks) with their definitions and artifact listings. From it come, for the same events:

- the Pulse messages the source reads (only those a queue bound with ``route.<prefix>.#`` receives);
- the task-events records the worker reads (exactly what the source writes, through ``convert_body``);
- the job records the sink reads (exactly what the worker writes, through the same pipeline code).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from connectors.pulse_source import convert_body
from devtools.workload import Envelope, SimulatedTask, WorkloadOptions, iter_groups
from streams.core.model import Jobs
from streams.shared import records
from streams.shared.settings import Settings
from streams.shared.topics import TopicNames
from streams.taskcluster.lookup import process


@dataclass(slots=True)
class StageData:
    messages: list[Envelope]  # Pulse messages that reach the source's queue, in publishing order
    tasks: dict[str, SimulatedTask]
    events: list[tuple[bytes, bytes]] = field(default_factory=list)  # task-events records (key, value)
    jobs: list[tuple[bytes, bytes, str]] = field(default_factory=list)  # job records (key, value, destination)


def delivered(envelope: Envelope, prefixes: Sequence[str]) -> bool:
    """Whether a queue bound with ``route.<prefix>.#`` for ``prefixes`` receives this message."""
    return any(route.split(".")[1:2] == [prefix] for route in envelope["ccRoutes"] for prefix in prefixes)


def workload(settings: Settings, *, events: int, seed: int, root_url: str) -> tuple[list[Envelope], dict[str, Any]]:
    """At least ``events`` delivered messages (whole task groups), and every task by taskId."""
    options = WorkloadOptions(tasks=10**9, seed=seed, root_url=root_url, task_exchange=settings.task_exchange)
    messages: list[Envelope] = []
    tasks: dict[str, SimulatedTask] = {}
    for group in iter_groups(options):
        tasks.update((task.task_id, task) for task in group.tasks)
        messages.extend(e for e in group.events if delivered(e, settings.route_prefixes))
        if len(messages) >= events:
            break
    return messages, tasks


class _Lookup:
    """The pipeline's TaskLookup over the simulated definitions: no network, no cache misses."""

    def __init__(self, tasks: Mapping[str, SimulatedTask]) -> None:
        self.tasks = tasks

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        return self.tasks[task_id].definition

    async def artifacts(self, root_url: str, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]]:
        return self.tasks[task_id].artifacts.get(run_id, [])


async def stage_data(settings: Settings, *, events: int, seed: int, root_url: str) -> StageData:
    messages, tasks = workload(settings, events=events, seed=seed, root_url=root_url)
    data = StageData(messages=messages, tasks=tasks)
    topics = TopicNames.from_settings(settings)
    for message in messages:
        conversion = convert_body(orjson.dumps(message["payload"]), exchange=message["exchange"],
                                  routing_key=message["routingKey"], headers={"CC": message["ccRoutes"]},
                                  message_id=None, settings=settings, topics=topics)
        data.events.append((conversion.key, conversion.value))
    lookup, rules = _Lookup(tasks), settings.rules()
    for key, value in data.events:
        outcome = await process(orjson.loads(value), lookup, rules, default_root_url=root_url)
        if isinstance(outcome, Jobs):
            for job in outcome.messages:
                data.jobs.append((key, records.encode_job_record(job, partition=None, offset=None), job.destination))
    return data


def partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's default partitioner (and so the source) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions

