"""The worker's tables as one batch sees them: reads routed to each event's partition, writes logged with
the batch's output.

Tables are keyed so that they live on the partition of the event that writes them: a task's definition, its
runs' artifact listings and its guard entries all sit on the task's partition. Faust would find that
partition through its "current event", which inside a batch is whichever event came last, so every access
here names its event's partition and goes to that partition's store directly (``read_entry``,
``write_entry``). A batch's writes reach the local store at once and the changelogs together with the batch's
output (``BatchWrites``); state-guard entries only once that output is confirmed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import faust
import orjson
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import EventT

from streams.core.state_guard import GuardEntry


class Outgoing(NamedTuple):
    """One record to produce: output for a topic, or a table change for its changelog."""

    topic: str
    key: bytes
    value: bytes
    partition: int | None = None  # None: Kafka's partitioner picks from the key
    table: faust.Table | None = None  # set for changelog records: their offset is the table's checkpoint


class BatchWrites:
    """The table writes of one batch, applied to the local store at once and to the changelogs with the output.

    Faust logs each table write with a message of its own through a small buffer, and stalls the stream
    whenever that buffer holds a hundred messages; a batch's writes instead go out together with its output
    and are awaited like it.

    State-guard entries wait longer: until the batch's jobs are in Kafka. The guard suppresses a job that
    would move its run back; an entry that reached the table before the jobs it vouches for (a worker killed,
    or its partition revoked, between the two) would make whoever reads the batch again suppress those
    never-delivered jobs as "backwards". Until then, later events of the batch, and later batches already
    being prepared, read the entries from here.
    """

    def __init__(self, unreleased: dict[str, tuple[GuardEntry, int]] | None = None, serial: int = 0) -> None:
        self.changelog: list[Outgoing] = []
        self._guard: dict[str, tuple[GuardEntry, EventT]] = {}
        # Shared by the batches in flight: key -> (entry, serial of the batch that set it last), so a batch sees
        # the entries of those prepared before it but not yet settled.
        self._unreleased = unreleased if unreleased is not None else {}
        self._serial = serial

    def save(self, table: faust.Table, event: EventT, key: bytes, value: bytes) -> None:
        write_entry(table, key, value, event.message.partition)
        self.changelog.append(Outgoing(table.changelog_topic.get_topic_name(), key, value,
                                       event.message.partition, table))

    def take_changelog(self) -> list[Outgoing]:
        """The changelog records written so far, handed over once."""
        taken, self.changelog = self.changelog, []
        return taken

    def guard_entry(self, key: str) -> GuardEntry | None:
        unreleased = self._unreleased.get(key)
        return None if unreleased is None else unreleased[0]

    def put_guard_entry(self, key: str, entry: GuardEntry, event: EventT) -> None:
        self._guard[key] = (entry, event)
        self._unreleased[key] = (entry, self._serial)

    def release_guard(self, table: faust.Table, progress: faust.Table, last_events: Iterable[Any]) -> list[Outgoing]:
        """Apply the guard entries, and each partition's last processed offset, to the local store; the
        changelog records to send for them."""
        for key, (entry, event) in self._guard.items():
            self.save(table, event, key.encode(), entry.encode())
            if self._unreleased.get(key, (None, None))[1] == self._serial:
                del self._unreleased[key]  # no later batch has moved it on: the table has the newest entry
        self._guard.clear()
        for event in last_events:
            self.save(progress, event, progress_key(event.message.partition), str(event.message.offset).encode())
        return self.take_changelog()


class TableState:
    """The worker's tables as seen from one event: what ``EventProcessor`` reads and writes."""

    def __init__(self, tables: WorkerTables, event: EventT, writes: BatchWrites) -> None:
        self._tables = tables
        self._event = event
        self._writes = writes

    def definition(self, task_id: str) -> Mapping[str, Any] | None:
        return self._load(self._tables.definitions, task_id)

    def store_definition(self, task_id: str, definition: Mapping[str, Any]) -> None:
        self._save(self._tables.definitions, task_id, orjson.dumps(definition))

    def artifacts(self, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]] | None:
        return self._load(self._tables.artifacts, f"{task_id}/{run_id}")

    def store_artifacts(self, task_id: str, run_id: int, artifacts: Sequence[Mapping[str, Any]]) -> None:
        self._save(self._tables.artifacts, f"{task_id}/{run_id}", orjson.dumps(list(artifacts)))

    def emitted(self, key: str) -> GuardEntry | None:
        pending = self._writes.guard_entry(key)
        if pending is not None:
            return pending
        raw = self._raw(self._tables.emitted, key)
        return None if raw is None else GuardEntry.decode(raw)

    def store_emitted(self, key: str, entry: GuardEntry) -> None:
        self._writes.put_guard_entry(key, entry, self._event)

    def _raw(self, table: faust.Table, key: str) -> bytes | None:
        return read_entry(table, key.encode(), self._event.message.partition)

    def _load(self, table: faust.Table, key: str) -> Any:
        raw = self._raw(table, key)
        return None if raw is None else orjson.loads(raw)

    def _save(self, table: faust.Table, key: str, value: bytes) -> None:
        self._writes.save(table, self._event, key.encode(), value)


@dataclass(frozen=True, slots=True)
class WorkerTables:
    definitions: faust.Table  # taskId -> task definition, as the Queue API returned it
    artifacts: faust.Table  # taskId/runId -> artifact listing of a resolved run, all pages
    emitted: faust.Table  # destination/taskId/runId -> GuardEntry: states emitted, furthest offset (state guard)
    progress: faust.Table  # partition number -> last offset whose output is in Kafka (see streams/worker/gaps.py)


def read_entry(table: faust.Table, key: bytes, partition: int) -> bytes | None:
    """A table's value for ``key`` on ``partition``, with one store lookup.

    ``Table.get`` asks a RocksDB store twice (whether the key is there, then its value), finds the partition
    through Faust's current event (a context variable the caller must set) and records every key read in an
    index of key to partition. The worker's tables are raw bytes to bytes and every access names its
    partition, so it asks that partition's database directly (``_db_for_partition``, which Faust's own
    lookups use). The memory store keeps every partition in one mapping.
    """
    store = table.data
    if isinstance(store, RocksDBStore):
        return store._db_for_partition(partition).get(key)
    return store.get(key)


def write_entry(table: faust.Table, key: bytes, value: bytes, partition: int) -> None:
    """Set ``key`` to ``value`` in a table's local store on ``partition`` (the changelog is the caller's).

    As ``read_entry``: the partition's database directly, not through Faust's current event and key index.
    """
    store = table.data
    if isinstance(store, RocksDBStore):
        store._db_for_partition(partition).put(key, value)
    else:
        store[key] = value


def progress_key(partition: int) -> bytes:
    return str(partition).encode()


def processed_upto(progress: faust.Table, partition: int) -> int | None:
    """The last offset of ``partition`` that a worker of the group recorded as processed."""
    raw = read_entry(progress, progress_key(partition), partition)
    return None if raw is None else int(raw)
