"""The ``tc-treeherder`` command: one entry point, one subcommand module per job.

Each command module (``tc_treeherder.commands`` for the product, ``devtools.commands`` for the development
commands, present only in a source checkout) exposes ``HELP`` (one line), ``EPILOG`` (examples),
``add_arguments(parser)`` and ``run(args, settings) -> int``. Heavy imports stay inside ``run`` so that
``--help`` and the light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from streams.shared.settings import SettingsError, load_settings

# Subcommand name -> its module, in the order --help lists them. Development commands load only where the
# dev tooling is present (a source checkout); an installed wheel lists the product's commands alone.
COMMANDS: dict[str, str] = {
    "up": "devtools.commands.stack_up",
    "down": "devtools.commands.stack_down",
    "demo": "devtools.commands.demo",
    "source": "tc_treeherder.commands.source",
    "worker": "tc_treeherder.commands.worker",
    "sink": "tc_treeherder.commands.sink",
    "transform": "tc_treeherder.commands.transform",
    "simulate": "devtools.commands.simulate",
    "queue-standin": "devtools.commands.queue_standin",
    "replay": "tc_treeherder.commands.replay",
    "inspect": "tc_treeherder.commands.inspect",
    "explain": "tc_treeherder.commands.explain",
    "status": "tc_treeherder.commands.status",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _load(qualified: str) -> ModuleType | None:
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as error:
        if qualified.startswith(f"{error.name}.") or error.name == qualified:
            return None  # a development command outside a source checkout
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tc-treeherder",
        description="Turn Taskcluster task events into Treeherder job messages through a Kafka log.",
        epilog="Settings come from TC_TREEHERDER_* environment variables and an optional TOML file; "
        "see docs/configuration.md.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (default: $TC_TREEHERDER_CONFIG)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
