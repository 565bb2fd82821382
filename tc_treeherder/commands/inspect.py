"""``tc-treeherder inspect``: watch what goes over Pulse, live: the jobs the sink publishes, or the task events.

A temporary queue (exclusive, deleted when the command ends, named under the Pulse user as Pulse requires)
is bound to each exchange with the routing-key pattern; every message is shown as one line, or as JSON.
Nothing is acknowledged to anyone else: the queue is this command's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import orjson

from connectors.pulse_source import AMQP_TRANSIENT, cc_routes
from streams.core.model import EventKind
from streams.core.pulse_job import job_result
from streams.core.routes import RouteProblem, parse_route
from streams.shared.redact import public_url
from streams.shared.settings import Settings

EPILOG = """\
examples:
  tc-treeherder inspect                                    # every enabled destination's jobs exchange
  tc-treeherder inspect --project autoland --result fail   # only failed autoland jobs
  tc-treeherder inspect --pattern 'tc-treeherder.mozilla-central.#'
  tc-treeherder inspect --task-events --state exception    # task events as the Queue sends them
  tc-treeherder inspect --json --count 10 --timeout 60 > jobs.jsonl

The queue is bound with --pattern (default '#'); jobs are published with routing key
<destination>.<project>._ and task events carry route.<route> CC keys. --project matches the job's
origin.project (for task events: the project of its Treeherder route).

exit status: 0 stopped by Ctrl-C, --count reached, or --timeout without --count; 1 --count not reached
within --timeout, or Pulse / the exchange unreachable; 2 the command was misused.
"""

RESULT_COLORS = {"success": "32", "fail": "33", "testfailed": "33", "busted": "31", "exception": "35",
                 "canceled": "36", "superseded": "36", "retry": "34", "unknown": "37"}
STATE_COLORS = {"pending": "37", "running": "34", "unscheduled": "37"}


@dataclass(frozen=True, slots=True)
class Seen:
    """One message, with the facts the filters and the line need."""

    exchange: str
    routing_key: str
    project: str | None
    state: str | None
    result: str | None
    task: str | None  # "<taskId>/<runId>" or the job's taskId field
    label: str  # symbol and name, for the pretty line
    body: Any

    def to_json(self) -> dict[str, Any]:
        return {"exchange": self.exchange, "routingKey": self.routing_key, "project": self.project,
                "state": self.state, "result": self.result, "body": self.body}


def describe_job(exchange: str, routing_key: str, body: Any) -> Seen:
    """A message of a jobs exchange (pulse-job)."""
    job = body if isinstance(body, Mapping) else {}
    origin = job.get("origin") if isinstance(job.get("origin"), Mapping) else {}
    display = job.get("display") if isinstance(job.get("display"), Mapping) else {}
    machine = job.get("buildMachine") if isinstance(job.get("buildMachine"), Mapping) else {}
    symbol = f"{display.get('groupSymbol', '?')}({display.get('jobSymbol', '?')})"
    label = f"{symbol} {machine.get('platform', '')} {display.get('jobName', '')}".strip()
    return Seen(exchange, routing_key, origin.get("project"), job.get("state"), job.get("result"), job.get("taskId"),
                label, body)


def route_project(routes: Sequence[str], prefixes: Sequence[str]) -> str | None:
    """The project of the first ``route.<prefix>.v2.<project>.<revision>`` CC key that the core's route parser
    accepts (owner/ cut off, as for the job)."""
    for cc in routes:
        route = cc.removeprefix("route.")
        if route.partition(".")[0] in prefixes:
            try:
                return parse_route(route).project
            except RouteProblem:
                continue
    return None


def describe_task_event(exchange: str, routing_key: str, cc: Sequence[str], body: Any,
                        prefixes: Sequence[str]) -> Seen:
    """A message of a task exchange: its run's state, and a result like the job would get."""
    payload = body if isinstance(body, Mapping) else {}
    status = payload.get("status") if isinstance(payload.get("status"), Mapping) else {}
    runs = status.get("runs") if isinstance(status.get("runs"), list) else []
    run_id = payload.get("runId")
    run = runs[run_id] if isinstance(run_id, int) and 0 <= run_id < len(runs) else (runs[-1] if runs else {})
    state = run.get("state") if isinstance(run, Mapping) else None
    kind = exchange.rpartition("/")[2]
    try:  # the result the job would get, by the core's own mapping
        result = job_result(EventKind(kind.removeprefix("task-")), run if state else None)
    except ValueError:
        result = "unknown"
    task = f"{status.get('taskId', '?')}/{run_id if run_id is not None else '-'}"
    return Seen(exchange, routing_key, route_project(cc, prefixes), state or status.get("state"), result, task,
                kind, body)


def matches(seen: Seen, project: Sequence[str] = (), state: Sequence[str] = (), result: Sequence[str] = ()) -> bool:
    """Every given filter must match (each may list several values, any of which will do)."""
    if project and seen.project not in project:
        return False
    if state and seen.state not in state:
        return False
    return not (result and (seen.result or "unknown") not in result)


def pretty(seen: Seen, *, color: bool, label_width: int = 90) -> str:
    """One compact line: time, project, state/result, task, label (cut to ``label_width``)."""
    outcome = seen.state or "?"
    if seen.result and seen.result != "unknown":
        outcome += f"/{seen.result}"
    outcome = f"{outcome:<20}"
    if color:
        code = RESULT_COLORS.get(seen.result or "", "37") if seen.state == "completed" else \
            STATE_COLORS.get(seen.state or "", "37")
        outcome = f"\033[{code}m{outcome}\033[0m"
    return (f"{time.strftime('%H:%M:%S')}  {(seen.project or '-'):<18.18} {outcome} {(seen.task or '-'):<26} "
            f"{seen.label[:label_width]}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--task-events", action="store_true",
                        help="watch the Queue's six task exchanges instead of the jobs exchanges")
    source.add_argument("--destination", action="append", default=[], metavar="NAME",
                        help="watch only this destination's jobs exchange (name or configuration table; "
                             "repeatable)")
    source.add_argument("--exchange", action="append", default=[], metavar="NAME",
                        help="watch this exchange on TC_TREEHERDER_PULSE_URL (repeatable)")
    parser.add_argument("--pattern", default="#", metavar="KEY", help="routing-key binding pattern (default: #)")
    parser.add_argument("--project", action="append", default=[], metavar="NAME", help="only this project")
    parser.add_argument("--state", action="append", default=[], metavar="STATE",
                        help="only this state (pending, running, completed, unscheduled; repeatable)")
    parser.add_argument("--result", action="append", default=[], metavar="RESULT",
                        help="only this result (success, fail, exception, canceled, superseded, unknown)")
    parser.add_argument("--json", action="store_true", help="one JSON line per message (exchange, key, body...)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N matching messages")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this many seconds")


def run(args: argparse.Namespace, settings: Settings) -> int:

    if args.count is not None and args.count < 1:
        return _usage("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        return _usage("--timeout must be positive")
    try:
        targets = _targets(args, settings)
    except ValueError as error:
        return _usage(str(error))
    try:
        return asyncio.run(_inspect(args, settings, targets))
    except KeyboardInterrupt:
        return 0


def _usage(message: str) -> int:
    print(f"tc-treeherder inspect: {message}", file=sys.stderr)
    return 2


def _targets(args: argparse.Namespace, settings: Settings) -> dict[str, list[str]]:
    """Pulse URL -> exchanges to bind."""
    if args.task_events:

        return {settings.pulse_url: [settings.task_exchange(kind.value) for kind in EventKind]}
    if args.exchange:
        return {settings.pulse_url: list(dict.fromkeys(args.exchange))}
    known = {d.key: d for d in settings.destinations} | {d.name: d for d in settings.destinations}
    unknown = [name for name in args.destination if name not in known]
    if unknown:
        raise ValueError(f"unknown destination(s) {', '.join(unknown)}; configured: "
                         f"{', '.join(d.name for d in settings.destinations)}")
    chosen = [known[name] for name in args.destination] or [d for d in settings.destinations if d.enabled]
    if not chosen:
        raise ValueError("no enabled destination: name an --exchange")
    targets: dict[str, list[str]] = {}
    for destination in chosen:
        exchanges = targets.setdefault(destination.pulse_url, [])
        if destination.exchange not in exchanges:
            exchanges.append(destination.exchange)
    return targets


async def _inspect(args: argparse.Namespace, settings: Settings, targets: dict[str, list[str]]) -> int:



    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    shown = 0
    color = sys.stdout.isatty() and not args.json
    prefixes = tuple(settings.route_prefixes)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal shown
        if done.is_set():
            return
        exchange = message.exchange or ""
        try:
            body: Any = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            body = message.body.decode("utf-8", "replace")
        if args.task_events:
            seen = describe_task_event(exchange, message.routing_key or "", cc_routes(message.headers), body,
                                       prefixes)
        else:
            seen = describe_job(exchange, message.routing_key or "", body)
        if not matches(seen, args.project, args.state, args.result):
            return
        line = orjson.dumps(seen.to_json()).decode() if args.json else pretty(seen, color=color)
        try:
            print(line, flush=True)
        except BrokenPipeError:
            done.set()
            return
        shown += 1
        if args.count is not None and shown >= args.count:
            done.set()

    connections = []
    try:
        for pulse_url, exchanges in targets.items():
            try:
                connection = await aio_pika.connect(pulse_url, timeout=15, client_properties={
                    "connection_name": f"{settings.app_id}-inspect"})
            except (*AMQP_TRANSIENT, OSError) as error:
                print(f"tc-treeherder inspect: cannot connect to Pulse at {_public(pulse_url)}: {error}",
                      file=sys.stderr)
                return 1
            connections.append(connection)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=200)
            name = settings.pulse_queue(f"inspect-{secrets.token_hex(4)}")
            queue = await channel.declare_queue(name, exclusive=True, auto_delete=True, durable=False)
            for exchange in exchanges:
                try:
                    probe = await connection.channel()
                    await probe.declare_exchange(exchange, passive=True)
                    await probe.close()
                except aiormq.exceptions.ChannelNotFoundEntity:
                    print(f"tc-treeherder inspect: exchange {exchange} does not exist on {_public(pulse_url)} "
                          "(nothing was ever published to it: is the sink running, is the name right?)",
                          file=sys.stderr)
                    return 1
                await queue.bind(exchange, routing_key=args.pattern)
            await queue.consume(on_message, no_ack=True)
            # On stderr, so JSON output stays clean; scripts may wait for this line before publishing.
            print(f"# watching {', '.join(exchanges)} on {_public(pulse_url)} with {args.pattern!r} (Ctrl-C stops)",
                  file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), args.timeout)
    finally:
        for connection in connections:
            with contextlib.suppress(*AMQP_TRANSIENT):
                await connection.close()
    if args.count is not None and shown < args.count:
        print(f"tc-treeherder inspect: {shown} of {args.count} messages within {args.timeout:g}s", file=sys.stderr)
        return 1
    return 0


def _public(url: str) -> str:

    return public_url(url)
