"""``tc-treeherder transform``: task-event envelopes in, job messages out, offline, with the stream's code.

The contract (docs/design, "Offline contract"): JSON lines in from FILE or stdin; one JSON line
``{"destination", "project", "routingKey", "job"}`` per job message on stdout; one JSON line on stderr for
every input line that was ignored or rejected (``line``, ``taskId``, ``outcome``, ``stage``, ``reason``);
a bad line never stops the run; exit 0 unless the command itself is misused.

Lines are processed concurrently (a window of them waits on the Queue API at once) and printed in input
order, so output lines follow the input however fast each answer comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
from collections import deque
from typing import IO, Any

import orjson

from streams.core.model import Ignored, Jobs, Rejected, Stage
from streams.shared.settings import Settings
from streams.taskcluster.lookup import QueueLookup, process
from streams.taskcluster.queue_client import QueueClient, QueueUnavailable

EPILOG = """\
examples:
  tc-treeherder transform events.jsonl > jobs.jsonl 2> rejected.jsonl
  tc-treeherder transform --root-url http://127.0.0.1:8011 < events.jsonl

input: one envelope per line, {"exchange", "routingKey", "payload", "rootUrl"}; rootUrl may be left out,
then --root-url (default: $TASKCLUSTER_ROOT_URL or the configured taskcluster_root_url) is used.
output: one line per job message {"destination", "project", "routingKey", "job"} on stdout; one line per
ignored or rejected input {"line", "taskId", "outcome", "stage", "reason"} on stderr. Blank lines are skipped.
"""

WINDOW = 64  # input lines in flight at once


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root-url", metavar="URL",
                        help="Taskcluster root URL for envelopes without rootUrl "
                             "(default: the taskcluster_root_url setting)")
    parser.add_argument("file", nargs="?", metavar="FILE", help="JSON lines to read (default: stdin)")


def run(args: argparse.Namespace, settings: Settings) -> int:

    root_url = (args.root_url or settings.taskcluster_root_url).rstrip("/")
    if not root_url.startswith(("http://", "https://")):
        print(f"tc-treeherder transform: --root-url must be an http(s) URL, got {args.root_url!r}", file=sys.stderr)
        return 2
    if args.file in (None, "-"):
        source: IO[bytes] = sys.stdin.buffer
    else:
        try:
            source = open(args.file, "rb")  # noqa: SIM115 - closed below, after the run
        except OSError as error:
            print(f"tc-treeherder transform: cannot read {args.file}: {error.strerror}", file=sys.stderr)
            return 2
    try:
        asyncio.run(_transform(source, root_url, settings))
    except BrokenPipeError:  # e.g. `| head`: the reader has all it wants
        sys.stderr.close()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    return 0


async def _transform(source: IO[bytes], root_url: str, settings: Settings) -> None:


    rules = settings.rules()
    client = QueueClient(timeout=settings.queue_timeout, retries=settings.queue_retries)
    lookup = QueueLookup(client, memo=True)
    # A regular file never blocks; a pipe or terminal is read in a thread so answers keep flowing meanwhile.
    from_disk = stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    in_flight: deque[asyncio.Task[tuple[list[bytes], list[bytes]]]] = deque()
    try:
        number = 0
        while True:
            line = source.readline() if from_disk else await asyncio.to_thread(source.readline)
            if not line:
                break
            number += 1
            if not line.strip():
                continue
            in_flight.append(asyncio.create_task(_one_line(number, line, lookup, rules, root_url)))
            if len(in_flight) >= WINDOW:
                _write(await in_flight.popleft())
        while in_flight:
            _write(await in_flight.popleft())
    finally:
        for task in in_flight:
            task.cancel()
        await client.close()


async def _one_line(number: int, line: bytes, lookup: Any, rules: Any,
                    root_url: str) -> tuple[list[bytes], list[bytes]]:
    """The stdout and stderr lines for one input line."""


    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        outcome: Any = Rejected(None, f"line is not JSON: {error}", Stage.ENVELOPE)
    else:
        try:
            outcome = await process(raw, lookup, rules, default_root_url=root_url)
        except QueueUnavailable as error:
            outcome = Rejected(error.task_id, f"Queue API unavailable: {error}", Stage.TASK)
    if isinstance(outcome, Jobs):  # each destination that declined the job says so on stderr, named
        return ([orjson.dumps(message.to_record()) for message in outcome.messages],
                [_report(number, declined) for declined in outcome.declined])
    return [], [_report(number, outcome)]


def _report(number: int, outcome: Ignored | Rejected) -> bytes:
    report = {
        "line": number,
        "taskId": outcome.task_id,
        "outcome": "ignored" if isinstance(outcome, Ignored) else "rejected",
        "stage": str(outcome.stage),
        "reason": outcome.reason,
    }
    if outcome.destination is not None:
        report["destination"] = outcome.destination
    return orjson.dumps(report)


def _write(result: tuple[list[bytes], list[bytes]]) -> None:
    jobs, reports = result
    if jobs:
        sys.stdout.buffer.write(b"".join(job + b"\n" for job in jobs))
        sys.stdout.buffer.flush()
    if reports:
        sys.stderr.buffer.write(b"".join(report + b"\n" for report in reports))
        sys.stderr.buffer.flush()
