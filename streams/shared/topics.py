"""The project's Kafka topics: their names, and creating them with explicit, equal partition counts.

The worker's tables are co-partitioned with the task-events topic, and a task's records keep one partition
from topic to topic, so every topic has ``settings.partitions`` partitions. A topic that already exists with
another count is an error, never silently used: keys would land on other partitions than the tables expect.
The worker's table changelogs are created here too, compacted, before Faust starts: Faust would create them
itself, but a table written before the new topic's metadata reaches the worker fails its co-partitioning check.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000
# Room for the envelope's own fields around a body of ``max_body_bytes``.
ENVELOPE_OVERHEAD_BYTES = 64 * 1024


class TopicError(RuntimeError):
    """The topics cannot be used as they are (wrong partition count, creation refused); the message says why."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The namespaced names of the project's topics and of the sink's consumer groups."""

    task_events: str
    jobs: str
    rejected: str
    namespace: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(
            task_events=settings.topic("task-events"),
            jobs=settings.topic("jobs"),
            rejected=settings.topic("rejected"),
            namespace=settings.namespace,
        )

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.task_events, self.jobs, self.rejected)


# The worker's tables (see streams/worker/app.py); Faust names a table's changelog "<app id>-<table>-changelog".
TABLES = ("task-definitions", "run-artifacts", "emitted-states", "partition-progress")


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def changelog_topics(settings: Settings) -> tuple[str, ...]:
    return tuple(changelog_topic(settings, table) for table in TABLES)


def sink_group(settings: Settings, destination_name: str) -> str:
    """The consumer group of one destination's sink loop: its own offsets, so it waits for no other."""
    return settings.topic(f"sink.{destination_name}")


def max_record_bytes(settings: Settings) -> int:
    """The largest record the source may write: a body of ``max_body_bytes`` in its envelope."""
    return settings.max_body_bytes + ENVELOPE_OVERHEAD_BYTES


def topic_specs(settings: Settings) -> list[NewTopic]:
    """What ``ensure_topics`` creates: every topic with the same partition count; events and jobs kept for
    the replay window, rejected records as long (``replay --rejected-only`` re-reads them)."""
    names = TopicNames.from_settings(settings)
    retention_ms = str(int(settings.events_retention_days * DAY_MS))
    configs = {
        "retention.ms": retention_ms,
        "cleanup.policy": "delete",
        "max.message.bytes": str(max_record_bytes(settings)),
    }
    compacted = {"cleanup.policy": "compact", "max.message.bytes": str(max_record_bytes(settings))}
    return [
        NewTopic(name, settings.partitions, settings.replication_factor, topic_configs=dict(configs))
        for name in names.all
    ] + [
        NewTopic(name, settings.partitions, settings.replication_factor, topic_configs=dict(compacted))
        for name in changelog_topics(settings)
    ]


async def ensure_topics(settings: Settings, *, wait_for_kafka: float = 60.0) -> TopicNames:
    """Create the project's topics if missing (idempotent) and check the partition count of existing ones.

    Waits up to ``wait_for_kafka`` seconds for Kafka to answer; raises ``TopicError`` on a partition-count mismatch
    or a refused creation.
    """
    names = TopicNames.from_settings(settings)
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="tc-treeherder-topics")
    await _start_patiently(admin, wait_for_kafka)
    try:
        all_names = names.all + changelog_topics(settings)
        existing = await _partition_counts(admin, all_names)
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            await _create(admin, missing)
            existing = await _partition_counts(admin, all_names)
        for name in all_names:
            count = existing.get(name)
            if count != settings.partitions:
                raise TopicError(
                    f"topic {name} has {count} partitions but TC_TREEHERDER_PARTITIONS is {settings.partitions}: "
                    "every topic must have the same count, because a task's records and the worker's tables "
                    "are partitioned by taskId. Use the existing count, or a new namespace for a new count."
                )
    finally:
        await admin.close()
    return names


async def _start_patiently(admin: AIOKafkaAdminClient, wait_for_kafka: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_for_kafka
    delay = 0.5
    while True:
        try:
            await admin.start()
            return
        except KafkaConnectionError as error:
            if loop.time() + delay > deadline:
                raise TopicError(f"Kafka did not answer within {wait_for_kafka:.0f}s: {error}") from None
            log.info("waiting for Kafka (%s)", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _partition_counts(admin: AIOKafkaAdminClient, names: tuple[str, ...]) -> dict[str, int]:
    """Partition count of each of ``names`` that exists."""
    counts: dict[str, int] = {}
    for topic in await admin.describe_topics(list(names)):
        error = for_code(topic["error_code"])
        if topic["error_code"] == 0:
            counts[topic["topic"]] = len(topic["partitions"])
        elif error.__name__ not in ("UnknownTopicOrPartitionError", "LeaderNotAvailableError"):
            raise TopicError(f"cannot describe topic {topic['topic']}: {error.__name__}")
    return counts


async def _create(admin: AIOKafkaAdminClient, specs: list[NewTopic]) -> None:
    response = await admin.create_topics(specs, timeout_ms=30_000)
    for name, code, *rest in response.topic_errors:
        if code == 0:
            log.info("created topic %s", name)
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:  # another process created it meanwhile: checked below
            continue
        message = rest[0] if rest and rest[0] else error.__name__
        raise TopicError(f"cannot create topic {name}: {message}")
    # Metadata lags creation on a busy broker: wait until every topic has its leaders.
    for _ in range(50):
        counts = await _partition_counts(admin, tuple(spec.name for spec in specs))
        if all(name in counts for name in (spec.name for spec in specs)):
            return
        await asyncio.sleep(0.1)
