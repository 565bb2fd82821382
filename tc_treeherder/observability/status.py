"""The health summary behind the status page, ``/status.json`` and ``tc-treeherder status``: one shape for all.

``snapshot()`` joins what this worker counted (events, jobs, rejections, Queue API), what Kafka says (lag
per group and partition, recent rejections) and a throughput history sampled every few seconds, and decides
whether the service looks healthy, naming each problem in words an operator can act on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tc_treeherder.observability.lag import LagReport

LAG_WARN = 1000  # records behind, per group, above which the service is "lagging"
SAMPLE_SECONDS = 5.0
HISTORY = 120  # samples kept: ten minutes at the default interval


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    events: int
    jobs: int
    rejected: int
    queue_unavailable: int


class Throughput:
    """Cumulative counters sampled at intervals; rates are differences between neighbouring samples."""

    def __init__(self, history: int = HISTORY) -> None:
        self.samples: deque[Sample] = deque(maxlen=history + 1)

    def sample(self, counts: Any, queue_stats: Any, at: float | None = None) -> None:
        events = getattr(counts, "events", 0)
        jobs = sum(getattr(counts, "jobs", {}).values()) if counts is not None else 0
        rejected = sum(getattr(counts, "rejected", {}).values()) if counts is not None else 0
        unavailable = queue_stats.errors.get("unavailable", 0) if queue_stats is not None else 0
        self.samples.append(Sample(time.time() if at is None else at, events, jobs, rejected, unavailable))

    def rates(self) -> list[dict[str, float]]:
        """Per interval: its end time and events, jobs and rejections per second."""
        points = []
        previous: Sample | None = None
        for sample in self.samples:
            if previous is not None and sample.at > previous.at:
                span = sample.at - previous.at
                points.append({"at": sample.at,
                               "events": max(sample.events - previous.events, 0) / span,
                               "jobs": max(sample.jobs - previous.jobs, 0) / span,
                               "rejected": max(sample.rejected - previous.rejected, 0) / span})
            previous = sample
        return points

    def queue_unavailable_recently(self, window: float = 60.0) -> int:
        """Queue API calls that gave up (every retry failed) in the last ``window`` seconds."""
        if not self.samples:
            return 0
        latest = self.samples[-1]
        oldest = next((s for s in self.samples if latest.at - s.at <= window), latest)
        return latest.queue_unavailable - oldest.queue_unavailable


def counts_json(counts: Any) -> dict[str, Any]:
    if counts is None:
        return {"events": 0, "jobs": {}, "states": {}, "rejected": {}, "ignored": {}, "suppressed": 0,
                "queueFetches": 0, "readBack": 0}
    return {
        "events": counts.events,
        "jobs": dict(counts.jobs),
        "states": dict(counts.states),
        "rejected": dict(counts.rejected),
        "ignored": dict(counts.ignored),
        "suppressed": counts.suppressed,
        "queueFetches": counts.queue_fetches,
        "readBack": counts.read_back,
    }


def health_checks(lag: Mapping[str, Any] | None, queue: Mapping[str, Any] | None, queue_unavailable_recently: int,
                  processes: Sequence[Mapping[str, Any]] = (), lag_warn: int = LAG_WARN) -> list[dict[str, Any]]:
    """Checks as ``{"name", "ok", "detail"}``: Kafka, each consumer group's members and lag, the Queue API,
    and any process probed over HTTP."""
    checks: list[dict[str, Any]] = []
    if lag is not None:
        if not lag.get("ok"):
            checks.append({"name": "Kafka", "ok": False, "detail": f"cannot read offsets: {lag.get('error')}"})
        else:
            checks.append({"name": "Kafka", "ok": True, "detail": f"offsets read in {lag['seconds'] * 1000:.0f} ms"})
            for group in lag.get("groups", ()):
                members = group.get("members")
                consuming = members is not None and members > 0
                state = group.get("state") or "unknown"
                lagging = group["lag"] > lag_warn
                if not consuming:
                    detail = f"no member is consuming (group {state}); {group['lag']} records waiting"
                elif lagging:
                    detail = f"{group['lag']} records behind (over {lag_warn}); {members} member(s)"
                else:
                    detail = f"{group['lag']} behind, {members} member(s), {state}"
                checks.append({"name": group["label"], "ok": consuming and not lagging, "detail": detail})
    if queue is not None:
        requests = queue.get("requests", 0)
        if queue_unavailable_recently:
            checks.append({"name": "Queue API", "ok": False,
                           "detail": f"{queue_unavailable_recently} call(s) gave up after every retry in the "
                                     "last minute: events wait in place"})
        else:
            checks.append({"name": "Queue API", "ok": True,
                           "detail": f"{requests} requests, mean {queue.get('latency_mean', 0) * 1000:.0f} ms"
                                     if requests else "no request yet"})
    checks.extend(processes)
    return checks


def summary(checks: Sequence[Mapping[str, Any]]) -> str:
    """"healthy", or the names of what is not."""
    failing = [check["name"] for check in checks if not check["ok"]]
    return "healthy" if not failing else "unhealthy: " + ", ".join(failing)


def snapshot(*, process: str, started: float, counts: Any, queue_stats: Any, lag: LagReport | None,
             recent: Sequence[Mapping[str, Any]], throughput: Throughput,
             processes: Sequence[Mapping[str, Any]] = (), lag_warn: int = LAG_WARN,
             partitions: Sequence[int] = ()) -> dict[str, Any]:
    """The whole status as JSON-ready data (what ``/status.json`` serves)."""
    lag_json = lag.to_json() if lag is not None else None
    queue = queue_stats.snapshot() if queue_stats is not None else None
    checks = health_checks(lag_json, queue, throughput.queue_unavailable_recently(), processes, lag_warn)
    return {
        "process": process,
        "at": time.time(),
        "uptime": time.time() - started,
        "healthy": all(check["ok"] for check in checks),
        "summary": summary(checks),
        "checks": checks,
        "counts": counts_json(counts),
        "queueApi": queue,
        "throughput": throughput.rates(),
        "lag": lag_json,
        "lagWarn": lag_warn,
        "recentRejections": list(recent),
        "assignedPartitions": list(partitions),
    }
