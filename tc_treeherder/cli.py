"""The ``tc-treeherder`` command: one entry point, one subcommand module per job.

Each command module (``tc_treeherder.commands`` for the product, ``devtools.commands`` for the development
commands, present only in a source checkout) exposes ``EPILOG`` (examples), ``add_arguments(parser)`` and
``run(args, settings) -> int``; its one-line help lives in ``COMMANDS`` below. Only the chosen command's module
is imported, so ``--help`` and the light commands start fast while every module keeps its imports at the top.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass
from importlib.util import find_spec

from streams.shared.settings import SettingsError, load_settings


@dataclass(frozen=True, slots=True)
class Command:
    module: str  # imported only when the command runs
    help: str


# Subcommand name -> its module, in the order --help lists them. Development commands load only where the
# dev tooling is present (a source checkout); an installed wheel lists the product's commands alone.
COMMANDS: dict[str, Command] = {
    "up": Command(
        "devtools.commands.stack_up",
        "start the local Kafka (KRaft) and RabbitMQ, or reuse the ones that already answer"),
    "down": Command(
        "devtools.commands.stack_down",
        "stop the local Kafka and RabbitMQ that `tc-treeherder up` started"),
    "demo": Command(
        "devtools.commands.demo",
        "run the whole bridge on a simulated workload and watch the jobs arrive"),
    "treeherder": Command(
        "devtools.commands.treeherder",
        "run a real Treeherder locally (API and jobs ingester): up, down, push, status"),
    "source": Command(
        "tc_treeherder.commands.source",
        "run the Pulse source: task events from a durable Pulse queue into Kafka"),
    "worker": Command(
        "tc_treeherder.commands.worker",
        "run a stream worker: task events in, job messages and rejected events out"),
    "sink": Command(
        "tc_treeherder.commands.sink",
        "run the Pulse sink: job messages from Kafka to each destination's jobs exchange"),
    "transform": Command(
        "tc_treeherder.commands.transform",
        "turn task-event envelopes (JSON lines) into job messages, fetching tasks from the Queue API"),
    "simulate": Command(
        "devtools.commands.simulate",
        "publish realistic Taskcluster task events to Pulse, with their definitions on the Queue API stand-in"),
    "queue-standin": Command(
        "devtools.commands.queue_standin",
        "run a local stand-in for the Taskcluster Queue API (task definitions and artifact listings)"),
    "replay": Command(
        "tc_treeherder.commands.replay",
        "re-run a range of task events (or rejected ones) through the current transform and re-emit the jobs"),
    "inspect": Command(
        "tc_treeherder.commands.inspect",
        "print job messages (or task events) from Pulse live, filtered by project, state and result"),
    "explain": Command(
        "tc_treeherder.commands.explain",
        "say whether a task would reach Treeherder: the job messages it gives, or why not"),
    "status": Command(
        "tc_treeherder.commands.status",
        "print the bridge's health: topic offsets, consumer lag per group, a worker's counts"),
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _available(command: Command) -> bool:
    """A development command is offered only where the dev tooling is importable (a source checkout)."""
    package = command.module.split(".", 1)[0]
    return package != "devtools" or find_spec(package) is not None


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line, found without importing any command module."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command; only ``chosen`` gets its options (and its module imported)."""
    parser = argparse.ArgumentParser(
        prog="tc-treeherder",
        description="Turn Taskcluster task events into Treeherder job messages through a Kafka log.",
        epilog="Settings come from TC_TREEHERDER_* environment variables and an optional TOML file; "
        "see docs/configuration.md.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (default: $TC_TREEHERDER_CONFIG)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        if not _available(command):
            continue
        sub = subparsers.add_parser(name, help=command.help, description=command.help,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            module = importlib.import_module(command.module)
            sub.epilog = getattr(module, "EPILOG", None)
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_chosen(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config_file=args.config)
    except SettingsError as error:
        print(f"tc-treeherder: bad setting: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args._module.run(args, settings) or EXIT_OK)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
