"""The one async step between an event envelope and its outcome, shared by the worker and ``transform``.

The transform core is pure; this is where its inputs are fetched. The order matters and is the same for
every caller: parse the envelope, fetch the task definition, let the core decide whether the task is for
Treeherder at all (so an ignored task costs one Queue call, never a listing), fetch the artifact listing
only when the job needs one, then build the jobs.

Failures, by call:

- task: 404 (``TaskNotFound``) and other refusals (``QueueRefused``) become a rejection at the task stage;
  ``QueueUnavailable`` propagates, because the Queue may be back in a minute: the worker retries in place,
  the offline command turns it into a rejection of that line.
- task: ``UnusableAnswer`` (text no UTF-8 encoder can write) becomes a rejection at the task stage too.
- artifacts: any ``QueueError`` becomes ``ListingFailed``; design.md says the job still goes out, without
  artifact links.
- decision task (only for the few mobile repositories whose tasks Treeherder judges by it): a refusal or a
  404 makes the event ignored, as Treeherder drops such a task; ``QueueUnavailable`` propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from streams.core.envelope import parse_envelope
from streams.core.model import Ignored, ListingFailed, Outcome, Rejected, Stage
from streams.core.rules import Rules
from streams.core.transform import Cleared, artifacts_run, build, check, decision_task
from streams.taskcluster.queue_client import QueueClient, QueueError, QueueRefused, TaskNotFound, UnusableAnswer


class TaskLookup(Protocol):
    """Where the pipeline gets task definitions and artifact listings (the Queue API, maybe cached)."""

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        """Raises TaskNotFound, QueueRefused or QueueUnavailable."""
        ...

    async def artifacts(self, root_url: str, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]]:
        """Raises a QueueError (usually QueueUnavailable)."""
        ...


async def process(raw_envelope: object, lookup: TaskLookup, rules: Rules,
                  default_root_url: str | None = None) -> Outcome:
    """Turn one raw envelope (decoded JSON) into its outcome. Raises only QueueUnavailable (for the task)."""
    event = parse_envelope(raw_envelope, default_root_url=default_root_url)
    if isinstance(event, Rejected):
        return event
    try:
        task = await lookup.task(event.root_url, event.task_id)
    except TaskNotFound:
        return Rejected(event.task_id, f"task not found: {event.task_id} at {event.root_url}", Stage.TASK)
    except QueueRefused as error:
        return Rejected(event.task_id, f"the Queue API refused the task lookup: {error}", Stage.TASK)
    except UnusableAnswer as error:
        return Rejected(event.task_id, f"task definition cannot be used: {error}", Stage.TASK)
    decision: Mapping[str, Any] | None = None
    decision_id = decision_task(task, rules)
    if decision_id is not None:  # Treeherder's rule for a few mobile repositories asks the decision task
        try:
            decision = await lookup.task(event.root_url, decision_id)
        except (TaskNotFound, QueueRefused, UnusableAnswer) as error:
            return Ignored(event.task_id, f"decision task {decision_id} of this mobile task cannot be had "
                                          f"({error}): Treeherder drops such a task", Stage.ROUTE)
    checked = check(event, task, rules, decision)
    if type(checked) is not Cleared:
        return checked
    artifacts: Sequence[Mapping[str, Any]] | ListingFailed | None = None
    run_id = artifacts_run(event)
    if run_id is not None:
        try:
            artifacts = await lookup.artifacts(event.root_url, event.task_id, run_id)
        except QueueError as error:
            artifacts = ListingFailed(f"artifact listing of run {run_id} failed: {error}")
    return build(event, artifacts, rules, task, checked)


class QueueLookup:
    """``TaskLookup`` straight over the Queue API.

    With ``memo=True`` (the offline command) each definition and listing is fetched once per process, and
    concurrent asks for the same one share a single request: definitions never change, and listings are only
    asked for once a run is resolved. The worker does not use the memo; its tables are its cache.
    """

    def __init__(self, client: QueueClient, *, memo: bool = False) -> None:
        self._client = client
        self._memo: dict[Hashable, asyncio.Future[Any]] | None = {} if memo else None

    async def task(self, root_url: str, task_id: str) -> Mapping[str, Any]:
        return await self._once(("task", root_url, task_id), lambda: self._client.task(root_url, task_id))

    async def artifacts(self, root_url: str, task_id: str, run_id: int) -> Sequence[Mapping[str, Any]]:
        return await self._once(("artifacts", root_url, task_id, run_id),
                                lambda: self._client.list_artifacts(root_url, task_id, run_id))

    async def _once(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> Any:
        if self._memo is None:
            return await fetch()
        pending = self._memo.get(key)
        if pending is None:
            pending = asyncio.ensure_future(fetch())
            self._memo[key] = pending
            pending.add_done_callback(lambda done: self._forget_failure(key, done))
        return await asyncio.shield(pending)

    def _forget_failure(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        """Only answers are remembered: a failed fetch is tried again by the next line that needs it."""
        if (done.cancelled() or done.exception() is not None) and self._memo is not None:
            self._memo.pop(key, None)
