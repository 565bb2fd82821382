"""``tc-treeherder down``: stop the brokers that ``up`` started; leave the ones it reused."""

from __future__ import annotations

import argparse
import sys

from devtools.stack import StackError, local
from streams.shared.settings import Settings

EPILOG = """examples:
  tc-treeherder down     # stops only what `up` started, by pid; data stays for the next `up`

Brokers that `up` found already running are left alone. Running it again is harmless.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace, settings: Settings) -> int:

    del args
    try:
        steps = local.down(settings)
    except StackError as error:
        print(f"tc-treeherder down: {error}", file=sys.stderr)
        return 1
    for step in steps:
        print(f"{step.broker:<9} {step.address:<34} {step.outcome:<12} {step.seconds:6.1f}s")
    return 0
