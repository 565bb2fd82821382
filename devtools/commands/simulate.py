"""``tc-treeherder simulate``: drive the pipeline with realistic Taskcluster task lifecycles."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import IO, Any

import aiohttp
import orjson

from devtools.publisher import PublishError, PulsePublisher, StandInRegistrar, publish_workload, redact
from devtools.workload import KINDS, WorkloadOptions, iter_groups

EPILOG = """\
examples:
  # a stand-in for the Queue API, then 2,000 tasks at 500 events/s, keeping the expected outcomes
  tc-treeherder queue-standin --port 8011 &
  tc-treeherder simulate --root-url http://127.0.0.1:8011 --tasks 2000 --rate 500 --expected expected.jsonl

  # at least 20,000 events as fast as the broker confirms them
  tc-treeherder simulate --root-url http://127.0.0.1:8011 --events 20000

  # no broker: events as JSON lines for `tc-treeherder transform`, definitions registered on the stand-in
  tc-treeherder simulate --root-url http://127.0.0.1:8011 --no-publish --events-out events.jsonl
  tc-treeherder transform --root-url http://127.0.0.1:8011 events.jsonl

  # no broker, no stand-in: files the stand-in can serve later
  tc-treeherder simulate --no-publish --no-register --events-out events.jsonl \\
      --tasks-out tasks.json --artifacts-out artifacts.json

The same --seed and options give the same workload. Exit status: 0 when every event was published (and
confirmed), 1 when Pulse or the stand-in cannot be reached or fails, 2 on bad options.
See docs/simulator.md.
"""


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate (events/s, 0 for no limit)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tasks", type=_count, default=1000, metavar="N", help="tasks to simulate (default: 1000)")
    size.add_argument("--events", type=_count, metavar="N",
                      help="simulate whole task groups until at least N events instead")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same workload (default: 0)")
    parser.add_argument("--rate", type=_rate, default=0.0, metavar="EVENTS_PER_S",
                        help="publish at this many events/s (default: 0, as fast as the broker confirms)")
    parser.add_argument("--root-url", metavar="URL",
                        help="the Queue API (stand-in) the events refer to and where definitions are registered "
                             "(default: TASKCLUSTER_ROOT_URL)")
    parser.add_argument("--expected", metavar="FILE", help="write the expected outcome of every run as JSON lines")
    parser.add_argument("--events-out", metavar="FILE",
                        help="write the event envelopes as JSON lines (input for `tc-treeherder transform`)")
    parser.add_argument("--tasks-out", metavar="FILE",
                        help="write the definitions as {taskId: definition} (for `queue-standin --tasks`)")
    parser.add_argument("--artifacts-out", metavar="FILE",
                        help="write the artifact listings as {taskId: {runId: [...]}} (`queue-standin --artifacts`)")
    parser.add_argument("--no-publish", action="store_true", help="do not publish to Pulse")
    parser.add_argument("--no-register", action="store_true",
                        help="do not register definitions and artifacts with the stand-in")
    parser.add_argument("--max-in-flight", type=_count, default=1000, metavar="N",
                        help="unconfirmed messages allowed at once (default: 1000)")
    mix = parser.add_argument_group("workload mix (fractions between 0 and 1)")
    mix.add_argument("--staging-fraction", type=_fraction, default=0.15, metavar="F",
                     help="task groups routed to the staging prefix (default: 0.15)")
    mix.add_argument("--github-fraction", type=_fraction, default=0.2, metavar="F",
                     help="task groups of GitHub owner/project repositories (default: 0.2)")
    mix.add_argument("--bad-config-fraction", type=_fraction, default=0.02, metavar="F",
                     help="tasks with an invalid extra.treeherder or a malformed route (default: 0.02)")
    mix.add_argument("--no-route-fraction", type=_fraction, default=0.05, metavar="F",
                     help="tasks without a treeherder route (default: 0.05)")
    mix.add_argument("--retry-fraction", type=_fraction, default=0.06, metavar="F",
                     help="tasks with automatic retries (default: 0.06)")


def run(args: argparse.Namespace, settings: Any) -> int:


    root_url = (args.root_url or settings.taskcluster_root_url).rstrip("/")
    try:
        options = WorkloadOptions(
            tasks=args.tasks, events=args.events, seed=args.seed, root_url=root_url,
            task_exchange=settings.task_exchange,
            production_prefix=settings.route_prefixes[0],
            staging_prefix=settings.route_prefixes[1] if len(settings.route_prefixes) > 1 else
            settings.route_prefixes[0],
            staging_fraction=args.staging_fraction, github_fraction=args.github_fraction,
            bad_config_fraction=args.bad_config_fraction, no_route_fraction=args.no_route_fraction,
            retry_fraction=args.retry_fraction,
        )
    except ValueError as error:
        print(f"tc-treeherder simulate: {error}", file=sys.stderr)
        return 2
    try:
        with _Outputs(args, root_url) as outputs:
            report = asyncio.run(_simulate(args, settings, options, outputs))
    except PublishError as error:
        print(f"tc-treeherder simulate: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"tc-treeherder simulate: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    to_stdout = "-" in (args.events_out, args.expected, args.tasks_out, args.artifacts_out)
    _summary(report, outputs, args, settings, sys.stderr if to_stdout else sys.stdout)
    return 0


async def _simulate(args: argparse.Namespace, settings: Any, options: Any, outputs: _Outputs) -> Any:


    progress = _Progress(sys.stderr, args.rate)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        registrar = None
        if not args.no_register:
            registrar = StandInRegistrar(options.root_url, session)
            await registrar.check()
        publisher = None
        if not args.no_publish:
            publisher = PulsePublisher(settings.pulse_url, settings.task_exchange, args.max_in_flight)
            await publisher.open()
        try:
            report = await publish_workload(iter_groups(options), publisher, registrar, rate=args.rate,
                                            on_event=outputs.event, on_group=outputs.group,
                                            on_progress=progress.show)
        finally:
            progress.done()
            if publisher is not None:
                await publisher.close()
    return report


class _Outputs:
    """The files the user asked for, written as the workload streams by; plus the expected tallies."""

    def __init__(self, args: argparse.Namespace, root_url: str) -> None:
        self.args = args
        self.root_url = root_url
        self.files: list[IO[bytes]] = []
        self.events_out: IO[bytes] | None = None
        self.expected_out: IO[bytes] | None = None
        self.tasks_out: IO[bytes] | None = None
        self.artifacts_out: IO[bytes] | None = None
        self._first_task = True
        self._first_listing = True
        self.runs = 0
        self.jobs_by_destination: dict[str, int] = {}
        self.tasks_by_outcome: dict[str, int] = {}
        self.undelivered = 0

    def __enter__(self) -> _Outputs:
        self.events_out = self._open(self.args.events_out)
        self.expected_out = self._open(self.args.expected)
        self.tasks_out = self._open(self.args.tasks_out, b"{")
        self.artifacts_out = self._open(self.args.artifacts_out, b"{")
        return self

    def _open(self, path: str | None, header: bytes = b"") -> IO[bytes] | None:
        if not path:
            return None
        handle = sys.stdout.buffer if path == "-" else open(path, "wb")  # noqa: SIM115 (closed in __exit__)
        if handle is not sys.stdout.buffer:
            self.files.append(handle)
        handle.write(header)
        return handle

    def __exit__(self, *exc_info: object) -> None:
        for handle in (self.tasks_out, self.artifacts_out):
            if handle is not None:
                handle.write(b"}\n")
        for handle in self.files:
            handle.close()
        sys.stdout.flush()

    def event(self, envelope: dict[str, Any]) -> None:
        if self.events_out is not None:

            self.events_out.write(orjson.dumps({**envelope, "rootUrl": self.root_url}) + b"\n")

    def group(self, group: Any) -> None:

        for task in group.tasks:
            outcome = task.expected[0].outcome
            self.tasks_by_outcome[outcome] = self.tasks_by_outcome.get(outcome, 0) + 1
            self.undelivered += not task.expected[0].delivered
            for run in task.expected:
                self.runs += 1
                if run.jobs:
                    self.jobs_by_destination[run.destination] = self.jobs_by_destination.get(run.destination, 0) \
                        + run.jobs
                if self.expected_out is not None:
                    self.expected_out.write(orjson.dumps(run.to_record()) + b"\n")
            if self.tasks_out is not None:
                self.tasks_out.write(b"" if self._first_task else b",\n")
                self.tasks_out.write(orjson.dumps(task.task_id) + b":" + orjson.dumps(task.definition))
                self._first_task = False
            if self.artifacts_out is not None and task.artifacts:
                self.artifacts_out.write(b"" if self._first_listing else b",\n")
                listings = {str(run): artifacts for run, artifacts in task.artifacts.items()}
                self.artifacts_out.write(orjson.dumps(task.task_id) + b":" + orjson.dumps(listings))
                self._first_listing = False


class _Progress:
    """One status line on stderr, rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, stream: IO[str], rate: float) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.rate = rate
        self.calls = 0
        self.shown = False

    def show(self, report: Any, in_flight: int) -> None:
        self.calls += 1
        if not self.tty and self.calls % 5:
            return
        target = f" (target {self.rate:,.0f}/s)" if self.rate else ""
        line = (f"simulate: {report.total:,} events, {report.tasks:,} tasks, {report.rate:,.0f} events/s{target}, "
                f"{in_flight} in flight")
        self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _summary(report: Any, outputs: _Outputs, args: argparse.Namespace, settings: Any, stream: IO[str]) -> None:

    where = "generated" if args.no_publish else "published and confirmed"
    target = f", target {args.rate:,.0f}/s" if args.rate else ""
    lines = [
        f"{report.total:,} events of {report.tasks:,} tasks in {report.groups:,} task groups {where} "
        f"in {report.elapsed:.1f} s ({report.rate:,.0f} events/s{target})",
        "  by kind: " + ", ".join(f"{kind} {report.events.get(kind, 0):,}" for kind in KINDS),
    ]
    if not args.no_publish:
        prefix = settings.task_exchange("").rpartition("task-")[0]
        lines.append(f"  exchanges: {prefix}task-* on {_safe(settings.pulse_url)}")
    jobs = ", ".join(f"{name} {count:,}" for name, count in sorted(outputs.jobs_by_destination.items()))
    tasks = ", ".join(f"{outcome} {count:,}" for outcome, count in sorted(outputs.tasks_by_outcome.items()))
    lines.append(f"  expected: {sum(outputs.jobs_by_destination.values()):,} job messages ({jobs or 'none'}) "
                 f"over {outputs.runs:,} runs; tasks by outcome: {tasks}; "
                 f"{outputs.undelivered:,} tasks carry no treeherder route")
    for label, path in (("expected outcomes", args.expected), ("events", args.events_out),
                        ("definitions", args.tasks_out), ("artifact listings", args.artifacts_out)):
        if path and path != "-":
            lines.append(f"  {label}: {path}")
    stream.write("\n".join(lines) + "\n")


def _safe(url: str) -> str:

    return redact(url)
