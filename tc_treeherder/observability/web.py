"""A small HTTP server for the processes without one of their own (source, sink): /metrics and /healthz.

The worker serves the same paths from Faust's web server (see ``worker_pages``). Port 0 means off: no
server, no socket. It binds ``settings.web_host`` (loopback by default): metrics name internal topics and
groups, and nothing here asks for authentication.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from streams.shared.settings import Settings
from tc_treeherder.observability.lag import LagMonitor, sink_groups
from tc_treeherder.observability.metrics import (
    CONTENT_TYPE,
    LagCollector,
    SinkCollector,
    SourceCollector,
    build_registry,
    render,
)

log = logging.getLogger(__name__)


class MetricsServer:
    """``async with MetricsServer(...)``: serves while the block runs; ``port=0`` serves nothing."""

    def __init__(self, process: str, host: str, port: int, registry: CollectorRegistry, *,
                 monitor: LagMonitor | None = None, health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.registry = registry
        self.monitor = monitor
        self.health = health
        self.started = time.time()
        self.url: str | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str | None:
        if self.port == 0:
            return None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.url = f"http://{self.host}:{self.port}"
        log.info("%s: metrics at %s/metrics", self.process, self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.monitor is not None:
            await self.monitor.close()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await render(self.registry, self.monitor)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        details = self.health() if self.health is not None else {}
        body = {"process": self.process, "ok": bool(details.get("ok", True)),
                "uptime": round(time.time() - self.started, 1), **details}
        return web.json_response(body, status=200 if body["ok"] else 503)


def metrics_server(settings: Settings, process: str, connector: Any) -> MetricsServer:
    """The /metrics server of the source or the sink, on its configured port (0: none).

    The sink's server also reports the lag of its destinations' consumer groups.
    """

    monitor = None
    if process == "sink":
        monitor = LagMonitor(settings, sink_groups(settings, connector.destinations))
        registry = build_registry("sink", SinkCollector(connector), LagCollector(monitor))
        port = settings.sink_web_port
    else:
        registry = build_registry("source", SourceCollector(connector))
        port = settings.source_web_port
    return MetricsServer(process, settings.web_host, port, registry, monitor=monitor,
                         health=lambda: {"ok": not connector.stopping, "stopping": connector.stopping})
