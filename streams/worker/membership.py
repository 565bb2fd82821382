"""How long a change of the workers' group holds partitions up: short session, frequent heartbeats, a clean leave.

A partition stops while the group rebalances, and a member that went away without saying so holds its
partitions until the group coordinator gives up on it. Three things about the worker's Kafka consumer bound
that time:

- **Session timeout** (Faust's default: 60 s): how long the coordinator waits for a silent member (SIGKILL, a
  crash, a lost host) before it hands its partitions to the others. ``TC_TREEHERDER_WORKER_SESSION_TIMEOUT``,
  6 s by default: the least a Kafka broker accepts out of the box (``group.min.session.timeout.ms``).
  Heartbeats come from the consumer's own thread, so a busy event loop does not miss them.
- **Heartbeat interval** (Faust's default: 3 s): members learn that a rebalance began only from the answer to
  a heartbeat, so a worker that joins waits up to one interval for every other member to notice. A sixth of
  the session timeout (1 s by default), as Kafka advises (at most a third).
- **Leaving on a clean stop.** With static membership (``TC_TREEHERDER_WORKER_ID``: a worker that restarts
  under its id gets its partitions back without a rebalance) a consumer sends no LeaveGroup when it closes
  (KIP-345; aiokafka's ``GroupCoordinator._maybe_leave_group`` skips it), so a worker stopped with SIGTERM
  held its partitions for the whole session timeout. The worker's coordinator here sends LeaveGroup with its
  member id when it closes (after its final commit, where a dynamic member would leave): the coordinator
  removes the member, static or not, and the group rebalances at once. A restart under the same id then
  joins as a new member: two quick rebalances instead of one long silence.

- **Finishing before leaving.** When partitions are revoked, Faust waits until the events the worker holds are
  acknowledged, so their jobs, guard entries and offsets are in Kafka before another worker takes the
  partitions over. A worker that is already stopping when a rebalance begins skips that wait and closes its
  consumer: the group moved on while the worker still finished its batches, and the new owner read the
  same events again without the guard entries the old owner wrote late (a run went pending, running,
  completed, then pending, running, completed again). ``WorkerApp`` makes a stopping worker wait as a running
  one does; the group waits for it as it would for any member, up to the rebalance timeout.

``streams.worker.app.faust_app`` builds a ``WorkerApp`` and sets the first two; ``Worker`` connects
``leave_when_closing`` to the app's assignments. The leave reaches into aiokafka 0.14's coordinator
(``_coordinator``, ``_maybe_leave_group``, ``_send_req``; tests/unit/test_membership.py): if a later aiokafka
moves them, ``_coordinator`` finds nothing and the worker falls back to the session timeout. ``WorkerApp``
overrides Faust 0.15's ``App._on_partitions_revoked``; tests/unit/test_membership.py fails if Faust renames it.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.types import TP

log = logging.getLogger(__name__)


class WorkerApp(faust.App):
    """Faust's app, except that a rebalance arriving while the worker stops waits for the events in hand."""

    async def _on_partitions_revoked(self, revoked: set[TP]) -> None:
        if self.should_stop and self._consumer is not None:
            await self._consumer.wait_empty()  # as Faust does for a worker that is not stopping
        await super()._on_partitions_revoked(revoked)


def heartbeat_interval(session_timeout: float) -> float:
    return session_timeout / 6


async def leave_when_closing(app: faust.App, *args: Any, **kwargs: Any) -> None:
    """For ``app.on_partitions_assigned``: the consumer's coordinator exists once the consumer has joined, and
    the first assignment is the first sure moment to reach it."""
    coordinator = _coordinator(app)
    if coordinator is not None:
        leave_on_close(coordinator)


def _coordinator(app: faust.App) -> GroupCoordinator | None:
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    return coordinator if isinstance(coordinator, GroupCoordinator) else None


def leave_on_close(coordinator: GroupCoordinator) -> None:
    """Make ``coordinator`` leave the group when it closes, even as a static member."""
    if getattr(coordinator, "_leaves_on_close", False):
        return

    async def maybe_leave_group() -> None:
        if coordinator.generation > 0 and coordinator.member_id:
            try:
                await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
            except KafkaError as error:  # best effort, as for a dynamic member: the session timeout remains
                log.warning("leaving the group failed (%s): the session timeout will remove this worker", error)
            else:
                log.info("left the group %s as %s", coordinator.group_id, coordinator.member_id)
        coordinator.reset_generation()

    coordinator._maybe_leave_group = maybe_leave_group  # type: ignore[method-assign]
    coordinator._leaves_on_close = True  # type: ignore[attr-defined]
