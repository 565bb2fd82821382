"""The demo's Treeherder part (``tc-treeherder demo --treeherder``): the local Treeherder, an ingester for the
demo's namespace, the pushes of the simulated task groups, and at the end what Treeherder's own API reports."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from devtools.stack.process import is_alive, stop_pid
from devtools.treeherder import local as th
from streams.shared.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TreeherderDemo:
    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.instance = th.Instance.from_settings(settings, port)
        self.ready: th.Ready | None = None
        self.spec: th.IngesterSpec | None = None
        self.pid: int | None = None
        self.pushes: dict[tuple[str, str], int | None] = {}

    def start_treeherder(self) -> list[tuple[str, str, float]]:
        """Treeherder's API (started when absent, as ``tc-treeherder treeherder up`` does)."""
        self.ready = th.prepare(self.instance, lambda line: print(f"  {line}", flush=True))
        began = time.monotonic()
        outcome = th.start_api(self.ready, self.instance)
        return [*self.ready.steps, (f"API {self.instance.api_url}", outcome, time.monotonic() - began)]

    def start_ingester(self, settings: Settings) -> th.IngesterSpec:
        """An ingester for the demo's production destination, under the demo's namespace."""
        assert self.ready is not None
        destination = th.pick_destination(settings, None)
        self.spec = th.IngesterSpec.for_destination(settings, destination, _free_port(), delays="0.5,1,2,5",
                                                    park_after=300)
        self.pid, _ = th.start_ingester(self.ready, self.instance, self.spec)
        return self.spec

    def register(self, groups: Iterable[Any]) -> None:
        """The pushes of the task groups, as Treeherder's push ingestion would have registered them."""
        assert self.ready is not None
        wanted = sorted({(group.project.rpartition("/")[2], group.revision) for group in groups})
        self.pushes.update({(p["project"], p["revision"]): p["push_id"] for p in th.register_pushes(self.ready,
                                                                                                    wanted)})

    async def wait_settled(self, quiet: float = 3.0, limit: float = 120.0) -> dict[str, Any]:
        """The ingester's counts once nothing is in flight and the counts stopped changing for ``quiet`` s."""
        assert self.spec is not None
        deadline = time.monotonic() + limit
        last: tuple[int, ...] | None = None
        since = time.monotonic()
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = await asyncio.to_thread(th.ingester_status, self.spec) or {}
            counts = tuple(status.get(k, 0) for k in ("received", "stored", "refused", "retried", "parked"))
            if counts != last:
                last, since = counts, time.monotonic()
            elif status.get("in_flight") == 0 and time.monotonic() - since >= quiet:
                break
            await asyncio.sleep(0.5)
        return status

    def report(self, status: dict[str, Any]) -> None:
        """What Treeherder's API lists: jobs per push and per state, and where to browse them."""
        print("\nTreeherder (its own REST API)")
        print(f"  ingester           {status.get('received', 0)} messages: {status.get('stored', 0)} stored, "
              f"{status.get('refused', 0)} refused, {status.get('retried', 0)} retried while a push was missing, "
              f"{status.get('parked', 0)} parked")
        for reason, count in sorted(status.get("refused_by_reason", {}).items()):
            print(f"    refused {count:>5}  {reason}")
        total: Counter[str] = Counter()
        listed = 0
        busiest: tuple[int, str, int] | None = None  # (jobs, project, push id): the push to browse
        print(f"  {'push':>6}  {'project':<22} {'revision':<14} {'jobs':>5}  states")
        for (project, revision), push_id in sorted(self.pushes.items(), key=lambda item: item[1] or 0):
            if push_id is None:
                print(f"  {'-':>6}  {project:<22} {revision[:12]:<14} {'-':>5}  (no such repository in Treeherder)")
                continue
            jobs = th.jobs(self.instance, project, push_id=push_id)
            states = Counter(f"{job['state']}/{job['result']}" for job in jobs)
            total.update(states)
            listed += len(jobs)
            if jobs and (busiest is None or len(jobs) > busiest[0]):
                busiest = (len(jobs), project, push_id)
            shown = ", ".join(f"{key} {count}" for key, count in states.most_common(4))
            print(f"  {push_id:>6}  {project:<22} {revision[:12]:<14} {len(jobs):>5}  {shown}")
        print(f"  jobs listed        {listed} in {sum(1 for p in self.pushes.values() if p)} pushes")
        for key, count in total.most_common():
            print(f"    {count:>6}  {key}")
        print(f"  browse             {self.instance.api_url}/api/repository/")
        if busiest:
            print(f"                     {self.instance.api_url}/api/project/{busiest[1]}/jobs/?push_id={busiest[2]}")
        print("  Treeherder keeps running; stop it with `tc-treeherder treeherder down`")

    def stop(self) -> list[str]:
        """Stop the demo's ingester; returns its queues (the caller deletes them with the namespace)."""
        if self.pid is not None and is_alive(self.pid):
            stop_pid(self.pid, 30)
        return self.spec.queues() if self.spec else []
