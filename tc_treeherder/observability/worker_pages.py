"""The worker's own pages on Faust's web server: /metrics, /status, /status.json and /explain.

``attach(worker, settings)`` registers them (and a timer that samples throughput) on the worker's Faust app
before it starts. They read the processor's counters and ask Kafka for lag and recent rejections through
caches, so a page view never touches the event path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka.errors import KafkaError

from streams.shared.settings import Settings
from streams.taskcluster.lookup import QueueLookup
from streams.taskcluster.queue_client import QueueClient
from streams.worker.app import Worker
from tc_treeherder.observability import status as status_module
from tc_treeherder.observability import status_page
from tc_treeherder.observability.explain import TASK_ID, explain_task_id
from tc_treeherder.observability.lag import LagMonitor, RecentRejections, all_groups
from tc_treeherder.observability.metrics import CONTENT_TYPE, LagCollector, WorkerCollector, build_registry, render

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WorkerObservability:
    """What the pages share: the registry, the Kafka readers, the throughput history, the Queue client."""

    worker: Worker
    settings: Settings
    monitor: LagMonitor
    recent: RecentRejections
    throughput: status_module.Throughput = field(default_factory=status_module.Throughput)
    started: float = field(default_factory=time.time)
    registry: Any = None
    _queue: Any = None

    def processor(self) -> Any:
        return self.worker.processor

    def counts(self) -> Any:
        processor = self.processor()
        return processor.counts if processor is not None else None

    def queue_stats(self) -> Any:
        processor = self.processor()
        return processor.client.stats if processor is not None else None

    def sample(self) -> None:
        self.throughput.sample(self.counts(), self.queue_stats())

    def assigned_partitions(self) -> list[int]:
        topic = self.settings.topic("task-events")
        try:
            assigned = self.worker.app.assignor.assigned_actives()
        except (AttributeError, RuntimeError):  # not assigned yet
            return []
        return sorted(tp.partition for tp in assigned if tp.topic == topic)

    async def status(self) -> dict[str, Any]:
        lag, recent = await asyncio.gather(self.monitor.report(), self._recent())
        return status_module.snapshot(
            process="worker", started=self.started, counts=self.counts(), queue_stats=self.queue_stats(),
            lag=lag, recent=recent, throughput=self.throughput, processes=await self._probe_processes(),
            partitions=self.assigned_partitions())

    async def _recent(self) -> list[dict[str, Any]]:

        try:
            return await self.recent.read()
        except (KafkaError, OSError, TimeoutError) as error:
            log.info("recent rejections unavailable: %s", error)
            return []

    async def _probe_processes(self) -> list[dict[str, Any]]:
        """The source's and the sink's /healthz, when their ports are configured (same host as the worker)."""
        targets = [(name, port) for name, port in (("source", self.settings.source_web_port),
                                                   ("sink", self.settings.sink_web_port)) if port]
        if not targets:
            return []
        checks = []
        timeout = aiohttp.ClientTimeout(total=1.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for name, port in targets:
                url = f"http://{self.settings.web_host}:{port}/healthz"
                try:
                    async with session.get(url) as response:
                        body = await response.json()
                    uptime = body.get("uptime", 0)
                    checks.append({"name": name, "ok": response.status == 200,
                                   "detail": f"answering at {url}, up {uptime:.0f}s"})
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    checks.append({"name": name, "ok": False,
                                   "detail": f"not answering at {url} ({type(error).__name__})"})
        return checks

    def queue_client(self) -> Any:
        """A Queue client of the page's own (the explain page must not skew the worker's statistics)."""
        if self._queue is None:

            self._queue = QueueClient(timeout=self.settings.queue_timeout, retries=1)
        return self._queue

    async def explain(self, task_id: str) -> dict[str, Any]:

        rules = self.settings.rules()
        result = await explain_task_id(task_id, QueueLookup(self.queue_client()), rules,
                                       self.settings.taskcluster_root_url, self.settings.task_exchange_prefix)
        return result.to_json()

    async def close(self) -> None:
        await self.monitor.close()
        if self._queue is not None:
            await self._queue.close()


def attach(worker: Any, settings: Settings) -> WorkerObservability:
    """Register the pages and the throughput timer on ``worker.app``; call before the app starts."""

    app = worker.app
    observability = WorkerObservability(
        worker=worker, settings=settings,
        monitor=LagMonitor(settings, all_groups(settings), extra_topics=[settings.topic("rejected")]),
        recent=RecentRejections(settings))
    observability.registry = build_registry("worker", WorkerCollector(observability.processor),
                                            LagCollector(observability.monitor))

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        body = await render(observability.registry, observability.monitor)
        return self.bytes(body, headers={"Content-Type": CONTENT_TYPE})

    @app.page("/status.json")
    async def status_json(self: Any, request: Any) -> Any:
        return self.json(await observability.status())

    @app.page("/status")
    async def status_html(self: Any, request: Any) -> Any:
        status = await observability.status()
        if request.query.get("fragment"):
            return self.html(status_page.fragment(status))
        return self.html(status_page.page(status))

    @app.page("/explain")
    async def explain(self: Any, request: Any) -> Any:
        task_id = request.query.get("taskId", "").strip()
        if not TASK_ID.match(task_id):
            return self.html(status_page.explain_page(None, task_id or "?", f"not a taskId: {task_id!r}"),
                             status=400)
        return self.html(status_page.explain_page(await observability.explain(task_id), task_id))

    @app.timer(interval=status_module.SAMPLE_SECONDS, name="tc-treeherder-throughput-sample")
    async def sample_throughput() -> None:
        observability.sample()

    @app.on_before_shutdown.connect
    async def close_observability(app: Any, **kwargs: Any) -> None:
        await observability.close()

    observability.sample()
    return observability
