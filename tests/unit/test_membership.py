"""A worker leaves its group when it stops cleanly, static member or not, and finishes its events in hand first
(streams/worker/membership.py)."""

from __future__ import annotations

from typing import Any

import faust
import pytest

from streams.worker.membership import WorkerApp, heartbeat_interval, leave_on_close


class Coordinator:
    """What ``leave_on_close`` uses of aiokafka's GroupCoordinator."""

    def __init__(self, generation: int, member_id: str) -> None:
        self.group_id = "ns.tc-treeherder"
        self.generation = generation
        self.member_id = member_id
        self._group_instance_id = "worker-0"  # static: aiokafka's own _maybe_leave_group would send nothing
        self.sent: list[Any] = []
        self.resets = 0

    async def _send_req(self, request: Any) -> None:
        self.sent.append(request)

    def reset_generation(self) -> None:
        self.resets += 1

    async def _maybe_leave_group(self) -> None:
        raise AssertionError("aiokafka's rule (no LeaveGroup for a static member) should have been replaced")


async def test_a_static_member_sends_leave_group_with_its_member_id_when_it_closes() -> None:
    coordinator = Coordinator(generation=3, member_id="worker-0-5c1d")
    leave_on_close(coordinator)  # type: ignore[arg-type]
    leave_on_close(coordinator)  # type: ignore[arg-type]  # every assignment calls it: once is enough
    await coordinator._maybe_leave_group()
    [request] = coordinator.sent
    assert (request._group, request._member_id) == ("ns.tc-treeherder", "worker-0-5c1d")
    assert coordinator.resets == 1


async def test_a_member_that_never_joined_sends_nothing() -> None:
    coordinator = Coordinator(generation=0, member_id="")
    leave_on_close(coordinator)  # type: ignore[arg-type]
    await coordinator._maybe_leave_group()
    assert coordinator.sent == []
    assert coordinator.resets == 1


def test_heartbeats_come_six_times_a_session() -> None:
    assert heartbeat_interval(6.0) == 1.0


class Consumer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def wait_empty(self) -> None:
        self.calls.append("events in hand acknowledged")


async def test_a_stopping_worker_finishes_its_events_before_faust_hands_its_partitions_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def faust_revocation(app: faust.App, revoked: set[Any]) -> None:
        calls.append("faust: stopping, so it closes the consumer")

    monkeypatch.setattr(faust.App, "_on_partitions_revoked", faust_revocation)
    app = WorkerApp("membership-test")
    app._consumer = Consumer(calls)  # type: ignore[assignment]
    await app._on_partitions_revoked(set())
    assert calls == ["faust: stopping, so it closes the consumer"]  # running: Faust waits by itself

    calls.clear()
    app._stopped.set()
    await app._on_partitions_revoked(set())
    assert calls == ["events in hand acknowledged", "faust: stopping, so it closes the consumer"]
