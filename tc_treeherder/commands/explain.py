"""``tc-treeherder explain``: would this task reach Treeherder, and if not, precisely why not.

The events go through the stream's own pipeline (``streams.pipeline.process``) with the configured rules,
so the answer is the worker's answer. Logic: ``tc_treeherder.observability.explain``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from streams.shared.kafka_config import kafka_client_kwargs
from streams.shared.settings import Settings
from streams.taskcluster.lookup import QueueLookup
from streams.taskcluster.queue_client import QueueClient
from tc_treeherder.observability import explain
from tc_treeherder.observability.explain import TASK_ID, NotJson

EPILOG = """\
examples:
  tc-treeherder explain B3EheQ-IQ5aPzw34KS_a6g                 # definition from the Queue API
  tc-treeherder explain B3EheQ-IQ5aPzw34KS_a6g --from-log      # its real events, read back from Kafka
  tc-treeherder explain task.json                              # a task definition (as task() returns it)
  tc-treeherder explain events.jsonl --root-url http://127.0.0.1:8011
  tc-treeherder explain B3EheQ-IQ5aPzw34KS_a6g --json | jq .summary

input: a taskId, or a FILE ('-' for stdin) holding a task definition, one envelope, a JSON array of
envelopes or envelopes as JSON lines. For a taskId or a definition, the events of a run that goes
pending -> running -> completed are made up and explained; --from-log explains the events the source
actually recorded for the task (the task-events topic).

exit status: 0 the task reaches Treeherder (at least one job message), 1 it does not (or it cannot be
told: Queue API or Kafka unreachable), 2 the command was misused.
"""

PLACEHOLDER_TASK_ID = "AAAAAAAAQACAAAAAAAAAAA"  # stands for the taskId of a definition given without one

COLORS = {"jobs": "32", "ignored": "33", "rejected": "31", "dim": "2", "bold": "1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TASKID|FILE", help="a taskId, or a file of a definition or envelopes")
    parser.add_argument("--root-url", metavar="URL",
                        help="Taskcluster root URL (default: the taskcluster_root_url setting)")
    parser.add_argument("--from-log", action="store_true",
                        help="explain the task's recorded events from the task-events topic (needs Kafka)")
    parser.add_argument("--task-id", metavar="TASKID", help="the taskId of a definition FILE (default: a placeholder)")
    parser.add_argument("--full", action="store_true", help="print every job message in full")
    parser.add_argument("--json", action="store_true", help="one JSON document per task on stdout")


def run(args: argparse.Namespace, settings: Settings) -> int:


    root_url = (args.root_url or settings.taskcluster_root_url).rstrip("/")
    if not root_url.startswith(("http://", "https://")):
        return _usage(f"--root-url must be an http(s) URL, got {args.root_url!r}")
    is_file = args.target == "-" or Path(args.target).exists()
    if not is_file and not TASK_ID.match(args.target):
        return _usage(f"{args.target!r} is neither a file nor a taskId (22 characters of slugid)")
    if args.from_log and is_file:
        return _usage("--from-log takes a taskId, not a file")
    documents: list[tuple[str, Any]] = []
    if is_file:
        try:
            documents = _read_documents(args.target)
        except (OSError, ValueError) as error:
            return _usage(str(error))
    explanations, root_url = asyncio.run(_explain(args, settings, root_url, documents, is_file))
    color = sys.stdout.isatty() and not args.json
    for explanation in explanations:
        if args.json:

            sys.stdout.buffer.write(orjson.dumps(explanation.to_json()) + b"\n")
        else:
            sys.stdout.write(render_text(explanation, root_url, color=color, full=args.full))
    sys.stdout.flush()
    return 0 if explanations and all(e.reaches_treeherder for e in explanations) else 1


def _usage(message: str) -> int:
    print(f"tc-treeherder explain: {message}", file=sys.stderr)
    return 2


def _read_documents(target: str) -> list[tuple[str, Any]]:
    """(label, JSON document) pairs: a whole-file JSON value, or JSON lines."""


    data = sys.stdin.buffer.read() if target == "-" else Path(target).read_bytes()
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        documents = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                documents.append((f"line {number}", orjson.loads(line)))
            except orjson.JSONDecodeError as error:
                documents.append((f"line {number}", NotJson(str(error))))
        if not documents:
            raise ValueError(f"{target}: no JSON in the file") from None
        return documents
    if isinstance(whole, list):
        return [(f"item {index}", item) for index, item in enumerate(whole)]
    return [("file", whole)]


async def _explain(args: argparse.Namespace, settings: Settings, root_url: str, documents: list[tuple[str, Any]],
                   is_file: bool) -> tuple[list[Any], str]:
    """The explanations, and the root URL they came from (a taskId is looked for at every deployment read)."""
    if not is_file and not args.from_log and not args.root_url and len(settings.root_urls) > 1:
        client = QueueClient(timeout=settings.queue_timeout, retries=min(settings.queue_retries, 2))
        try:
            found, used = await explain.explain_task_id_at(args.target, QueueLookup(client, memo=True),
                                                           settings.rules(), settings.root_urls,
                                                           settings.task_exchange_prefix)
        finally:
            await client.close()
        return [found], used
    return await _explain_at(args, settings, root_url, documents, is_file), root_url


async def _explain_at(args: argparse.Namespace, settings: Settings, root_url: str,
                      documents: list[tuple[str, Any]], is_file: bool) -> list[Any]:

    rules = settings.rules()
    prefix = settings.task_exchange_prefix
    client = QueueClient(timeout=settings.queue_timeout, retries=min(settings.queue_retries, 2))
    lookup = QueueLookup(client, memo=True)
    try:
        if not is_file and not args.from_log:
            return [await explain.explain_task_id(args.target, lookup, rules, root_url, prefix)]
        if args.from_log:
            try:
                recorded = await read_task_events(settings, args.target)
            except (OSError, TimeoutError) as error:
                return [explain.Explanation(args.target, "log", (), problems=(f"cannot read Kafka: {error}",))]
            except _kafka_errors() as error:
                return [explain.Explanation(args.target, "log", (),
                                            problems=(f"cannot read Kafka: {type(error).__name__}: {error}",))]
            if not recorded:
                topic = settings.topic("task-events")
                return [explain.Explanation(args.target, "log", (), problems=(
                    f"no event of this task in {topic} (not received by the source, or past retention)",))]
            return await explain.explain_envelopes(recorded, explain.DefinitionLookup({}, lookup), rules, root_url,
                                                   "log")
        definitions = [doc for _, doc in documents if explain.looks_like_definition(doc)]
        if definitions and len(documents) == 1:
            task_id = args.task_id or PLACEHOLDER_TASK_ID
            return [await explain.explain_definition(task_id, definitions[0], rules, root_url, prefix,
                                                     listings=None, origin="file")]
        return await explain.explain_envelopes(documents, explain.DefinitionLookup({}, lookup), rules, root_url,
                                               "file")
    finally:
        await client.close()


def _kafka_errors() -> tuple[type[BaseException], ...]:

    return (KafkaError,)


async def read_task_events(settings: Settings, task_id: str, wait: float = 30.0) -> list[tuple[str, Any]]:
    """Every envelope of ``task_id`` still in the task-events topic, in order, labelled by position.

    The source keys records by taskId with Kafka's default partitioner, so only that partition is read.
    """



    topic = settings.topic("task-events")
    key = task_id.encode()
    partitions = list(range(settings.partitions))
    tp = TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False,
                                client_id=f"{settings.app_id}-explain")
    found: list[tuple[str, Any]] = []
    async with asyncio.timeout(wait):
        await consumer.start()
        try:
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            position = await consumer.position(tp)
            while position < end:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                for message in batch.get(tp, []):
                    position = message.offset + 1
                    if message.key == key:
                        try:
                            raw = orjson.loads(message.value)
                        except orjson.JSONDecodeError as error:
                            raw = NotJson(str(error))
                        found.append((f"{tp.partition}@{message.offset}", raw))
                if not batch:
                    position = await consumer.position(tp)
        finally:
            await consumer.stop()
    return found


def render_text(explanation: Any, root_url: str, *, color: bool = False, full: bool = False) -> str:
    """A few lines a person reads at a glance: the verdict first, then each event, then the hint."""

    def paint(text: str, code: str) -> str:
        return f"\033[{COLORS[code]}m{text}\033[0m" if color else text

    origin = {"queue": f"definition from the Queue API at {root_url}", "file": "from the given file",
              "log": "events recorded in the task-events topic"}[explanation.origin]
    lines = [f"{paint('task ' + (explanation.task_id or '(unknown taskId)'), 'bold')}  ({origin})"]
    if explanation.routes is not None:
        lines.append(f"  routes: {', '.join(explanation.routes) or '(none)'}")
    mark = paint("YES", "jobs") if explanation.reaches_treeherder else paint("NO", "rejected")
    lines.append(f"  {mark}  {explanation.summary}")
    width = max((len(v.label) for v in explanation.verdicts), default=0)
    for item in explanation.verdicts:
        if item.outcome == "jobs":
            for job in item.jobs:
                body = job["job"]
                display = body.get("display", {})
                symbol = f"{display.get('groupSymbol', '?')}({display.get('jobSymbol', '?')})"
                detail = f"{body.get('state')}/{body.get('result', 'unknown')}  {symbol}  -> {job['routingKey']}"
                lines.append(f"    {item.label:<{width}}  {paint('job', 'jobs')}       {detail}")
                if full:
                    pretty = orjson.dumps(job, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
                    lines.extend("        " + row for row in pretty.splitlines())
            if item.note:
                lines.append(f"    {'':<{width}}  {paint('note: ' + item.note, 'dim')}")
        elif not item.declined:
            lines.append(f"    {item.label:<{width}}  {paint(f'{item.outcome:<9}', item.outcome)} "
                         f"[{item.stage}] {item.reason}")
        for other in item.declined:  # a destination of the route that does not take this job, and why
            kind, stage, reason = other["outcome"], other["stage"], other["reason"]
            lines.append(f"    {item.label:<{width}}  {paint(f'{kind:<9}', kind)} [{stage}] {reason}")
    for problem in explanation.problems:
        lines.append(f"  {paint('problem:', 'rejected')} {problem}")
    if explanation.hint:
        lines.append(f"  {paint('what to do:', 'bold')} {explanation.hint}")
    return "\n".join(lines) + "\n\n"
