"""``tc-treeherder status``: is the bridge healthy? Topic offsets and consumer lag from Kafka, optionally a
worker's own counts from its ``/status.json``; the exit code says it for scripts and probes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp
import orjson

from streams.shared.settings import Settings
from tc_treeherder.observability.lag import LagMonitor, all_groups
from tc_treeherder.observability.status import health_checks, summary

EPILOG = """\
examples:
  tc-treeherder status
  tc-treeherder status --url http://127.0.0.1:6066      # add a worker's counts and checks
  tc-treeherder status --max-lag 5000 --json | jq .checks

The consumer groups are the worker's (the application id) and one per enabled destination's sink; lag is
each group's committed offset against the topic's high watermark, per partition.

exit status: 0 healthy; 1 unhealthy: Kafka or the worker unreachable, a group without members, or a group
more than --max-lag records behind; 2 the command was misused.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", metavar="URL", help="a worker's web address, e.g. http://127.0.0.1:6066")
    parser.add_argument("--max-lag", type=int, default=1000, metavar="N",
                        help="records behind, per group, above which a group is lagging (default: 1000)")
    parser.add_argument("--json", action="store_true", help="print the status as one JSON document")


def run(args: argparse.Namespace, settings: Settings) -> int:

    if args.max_lag < 0:
        print("tc-treeherder status: --max-lag must not be negative", file=sys.stderr)
        return 2
    if args.url and not args.url.startswith(("http://", "https://")):
        print(f"tc-treeherder status: --url must be an http(s) URL, got {args.url!r}", file=sys.stderr)
        return 2
    status = asyncio.run(gather(settings, args.url, args.max_lag))
    if args.json:

        sys.stdout.buffer.write(orjson.dumps(status, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(render(status, color=sys.stdout.isatty()))
    return 0 if status["healthy"] else 1


async def gather(settings: Settings, url: str | None, max_lag: int) -> dict[str, Any]:
    """Kafka's view (always) and the worker's (with ``url``), checked alike."""

    topics = [settings.topic("rejected")]
    monitor = LagMonitor(settings, all_groups(settings), extra_topics=topics)
    try:
        lag = (await monitor.report()).to_json()
    finally:
        await monitor.close()
    checks = health_checks(lag, None, 0, lag_warn=max_lag)
    worker = None
    if url:
        worker, problem = await _fetch_worker(url.rstrip("/") + "/status.json")
        if worker is None:
            checks.append({"name": "worker web", "ok": False, "detail": problem})
        else:
            names = {check["name"] for check in checks}
            checks.extend(check for check in worker.get("checks", ()) if check["name"] not in names)
    return {"kafka": settings.kafka_bootstrap, "namespace": settings.namespace, "lag": lag, "worker": worker,
            "checks": checks, "healthy": all(check["ok"] for check in checks), "summary": summary(checks)}


async def _fetch_worker(url: str) -> tuple[dict[str, Any] | None, str]:

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                session.get(url) as response:
            if response.status != 200:
                return None, f"{url} answered HTTP {response.status}"
            return await response.json(), ""
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return None, f"{url} unreachable: {type(error).__name__} {error}".strip()


def render(status: dict[str, Any], *, color: bool = False) -> str:
    def paint(text: str, ok: bool) -> str:
        return f"\033[{'32' if ok else '31'}m{text}\033[0m" if color else text

    lag = status["lag"]
    namespace = status["namespace"] or "(none)"
    lines = [f"Kafka {status['kafka']}, namespace {namespace}"]
    if not lag["ok"]:
        lines.append(f"  {paint('unreachable', False)}: {lag['error']}")
    else:
        lines.append("  topics: " + ", ".join(f"{t['topic']} {t['records']:,} records" for t in lag["topics"]))
        lines.append("  consumer groups:")
        for group in lag["groups"]:
            members = "?" if group["members"] is None else group["members"]
            parts = " ".join(f"p{p['partition']}:{p['lag']}" for p in group["partitions"])
            lines.append(f"    {group['label']:<28} {group['state'] or '-'!s:<12} {members!s:>3} member(s)  "
                         f"lag {group['lag']:>8,}   {parts}")
    worker = status.get("worker")
    if worker:
        counts = worker["counts"]
        jobs = ", ".join(f"{name} {n:,}" for name, n in sorted(counts["jobs"].items())) or "none"
        lines.append(f"worker (up {worker['uptime']:.0f}s): {counts['events']:,} events in, jobs out: {jobs}; "
                     f"{sum(counts['rejected'].values()):,} rejected, {sum(counts['ignored'].values()):,} ignored, "
                     f"{counts['suppressed']:,} held back")
    lines.append("checks:")
    for check in status["checks"]:
        lines.append(f"  {paint('ok  ' if check['ok'] else 'FAIL', check['ok'])} {check['name']}: {check['detail']}")
    lines.append(paint(status["summary"], status["healthy"]))
    return "\n".join(lines) + "\n"
