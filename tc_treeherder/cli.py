"""The ``tc-treeherder`` command: one entry point, one subcommand module per job.

Each module in ``tc_treeherder.commands`` exposes ``HELP`` (one line), ``EPILOG`` (examples),
``add_arguments(parser)`` and ``run(args, settings) -> int``. Heavy imports stay inside ``run`` so that
``--help`` and the light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from tc_treeherder.settings import SettingsError, load_settings

# Subcommand name -> module under tc_treeherder.commands, in the order --help lists them.
COMMANDS: dict[str, str] = {
    "up": "stack_up",
    "down": "stack_down",
    "demo": "demo",
    "source": "source",
    "worker": "worker",
    "sink": "sink",
    "transform": "transform",
    "simulate": "simulate",
    "queue-standin": "queue_standin",
    "replay": "replay",
    "inspect": "inspect",
    "explain": "explain",
    "status": "status",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _load(module_name: str) -> ModuleType | None:
    qualified = f"tc_treeherder.commands.{module_name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as error:
        if error.name == qualified:
            return None  # not built yet in this version
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
