"""``tc-treeherder queue-standin``: serve task definitions and artifact listings like the Queue API does."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from devtools.queue_standin import QueueStandIn

EPILOG = """\
examples:
  tc-treeherder queue-standin --port 8011 --tasks tasks.json
  tc-treeherder queue-standin --tasks tasks.json --artifacts artifacts.json --page-size 2

  # then point the service at it
  TASKCLUSTER_ROOT_URL=http://127.0.0.1:8011 tc-treeherder transform events.jsonl

files: --tasks is {"<taskId>": <definition>}, --artifacts is {"<taskId>": {"<runId>": [<artifact>, ...]}}.
Admin API (for the simulator and tests): PUT /__standin/tasks/<taskId>, PUT /__standin/artifacts/<taskId>/<runId>,
GET /__standin/stats, POST /__standin/faults {"status": 500, "count": 10} | {"delay": 2.0} | {"clear": true}.
See docs/queue-api.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8011, help="port to bind, 0 for any free one (default: 8011)")
    parser.add_argument("--tasks", metavar="FILE", help="JSON file {taskId: definition} to serve")
    parser.add_argument("--artifacts", metavar="FILE", help="JSON file {taskId: {runId: [artifact, ...]}}")
    parser.add_argument("--page-size", type=int, default=1000, metavar="N",
                        help="artifacts per listing page (default: 1000, the Queue's own maximum)")


def run(args: argparse.Namespace, settings: Any) -> int:


    if args.page_size < 1:
        print("tc-treeherder queue-standin: --page-size must be positive", file=sys.stderr)
        return 2
    standin = QueueStandIn(page_size=args.page_size)
    try:
        tasks = standin.load_tasks(args.tasks) if args.tasks else 0
        listings = standin.load_artifacts(args.artifacts) if args.artifacts else 0
    except ValueError as error:
        print(f"tc-treeherder queue-standin: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(standin, args.host, args.port, tasks, listings))
    except OSError as error:  # typically: the port is taken
        print(f"tc-treeherder queue-standin: cannot listen on {args.host}:{args.port}: {error.strerror}",
              file=sys.stderr)
        return 1
    return 0


async def _serve(standin: Any, host: str, port: int, tasks: int, listings: int) -> None:

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    root_url = await standin.start(host, port)
    print(f"Queue API stand-in at {root_url} ({tasks} tasks, {listings} artifact listings, "
          f"page size {standin.page_size}); Ctrl-C stops it", flush=True)
    try:
        await stop.wait()
    finally:
        await standin.stop()
        stats = standin.stats
        print(f"served {stats['requests']['task']} task and {stats['requests']['artifacts']} listing requests",
              flush=True)
