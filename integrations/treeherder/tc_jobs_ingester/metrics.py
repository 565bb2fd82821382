"""Counters of one ingester process, served as Prometheus text (``/metrics``) and JSON (``/status.json``)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started_at = time.time()
        self.received = 0
        self.redelivered = 0  # delivered again by RabbitMQ (an earlier consumer died before acknowledging)
        self.stored = 0
        self.refused: Counter[str] = Counter()  # by reason kind (first words of the reason)
        self.stored_by_root_url: Counter[str] = Counter()  # which Taskcluster deployments the stored jobs came from
        self.retried = 0  # sent to a delay queue (push missing)
        self.parked = 0
        self.failed = 0  # parked at once: storing raised
        self.store_seconds = 0.0
        self.in_flight = 0
        self.consuming = False  # the queue is declared, bound and consumed
        self.recent_refusals: deque[dict[str, Any]] = deque(maxlen=50)
        self.recent_parked: deque[dict[str, Any]] = deque(maxlen=50)

    def add(self, **changes: int | float) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, getattr(self, name) + value)

    def stored_from(self, root_url: str) -> None:
        with self._lock:
            self.stored += 1
            self.stored_by_root_url[root_url] += 1

    def refusal(self, kind: str, detail: dict[str, Any]) -> None:
        with self._lock:
            self.refused[kind] += 1
            self.recent_refusals.append(detail)

    def parking(self, detail: dict[str, Any]) -> None:
        with self._lock:
            self.parked += 1
            self.recent_parked.append(detail)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "uptime_seconds": round(time.time() - self.started_at, 1), "consuming": self.consuming,
                "received": self.received, "redelivered": self.redelivered, "stored": self.stored,
                "stored_by_root_url": dict(self.stored_by_root_url),
                "refused": sum(self.refused.values()), "refused_by_reason": dict(self.refused),
                "retried": self.retried, "parked": self.parked, "failed": self.failed,
                "in_flight": self.in_flight, "store_seconds": round(self.store_seconds, 3),
                "recent_refusals": list(self.recent_refusals), "recent_parked": list(self.recent_parked),
            }

    def summary(self) -> str:
        s = self.snapshot()
        return (f"{s['received']} received, {s['stored']} stored, {s['refused']} refused, {s['retried']} retried, "
                f"{s['parked']} parked ({s['failed']} failed), {s['in_flight']} in flight")

    def prometheus(self) -> str:
        s = self.snapshot()
        lines = []

        def metric(name: str, kind: str, help_text: str, value: float, labels: str = "") -> None:
            if not any(line.startswith(f"# TYPE {name} ") for line in lines):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name}{labels} {value}")

        metric("tc_ingest_received_total", "counter", "Job messages taken from the queue.", s["received"])
        metric("tc_ingest_redelivered_total", "counter", "Messages RabbitMQ delivered again.", s["redelivered"])
        metric("tc_ingest_stored_total", "counter", "Jobs Treeherder stored.", s["stored"])
        for root_url, count in sorted(s["stored_by_root_url"].items()):
            metric("tc_ingest_stored_by_deployment_total", "counter",
                   "Jobs Treeherder stored, by the Taskcluster root URL they came with.", count,
                   f'{{root_url="{root_url}"}}')
        for reason, count in sorted(s["refused_by_reason"].items()) or [("none", 0)]:
            metric("tc_ingest_refused_total", "counter", "Messages Treeherder refused, by reason.", count,
                   f'{{reason="{reason}"}}')
        metric("tc_ingest_retried_total", "counter", "Messages delayed because their push is missing.",
               s["retried"])
        metric("tc_ingest_parked_total", "counter", "Messages parked for an operator.", s["parked"])
        metric("tc_ingest_failed_total", "counter", "Messages whose store raised (parked).", s["failed"])
        metric("tc_ingest_in_flight", "gauge", "Messages taken and not yet settled.", s["in_flight"])
        metric("tc_ingest_store_seconds_total", "counter", "Time spent storing.", s["store_seconds"])
        return "\n".join(lines) + "\n"


def serve(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """``/metrics``, ``/status.json`` and ``/healthz`` on a daemon thread; returns the server (port 0: any)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind = metrics.prometheus().encode(), "text/plain; version=0.0.4"
            elif self.path == "/status.json":
                body, kind = json.dumps(metrics.snapshot()).encode(), "application/json"
            elif self.path == "/healthz":
                body, kind = b"ok\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
