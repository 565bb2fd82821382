"""``tc-treeherder up``: the local Kafka and RabbitMQ, started when absent, reused when they answer."""

from __future__ import annotations

import argparse
import sys
import time

from devtools.stack import StackError, local
from streams.shared.settings import Settings

EPILOG = """examples:
  tc-treeherder up                      # Kafka on localhost:9092, RabbitMQ on localhost:5672
  TC_TREEHERDER_KAFKA_BOOTSTRAP=localhost:29092 tc-treeherder up   # a second Kafka beside the first

The first run fetches Kafka's jars from Maven Central into ~/.cache/tc-treeherder and installs Debian's
rabbitmq-server (as root). Running it again is harmless. Stop with `tc-treeherder down`.
"""

OUTCOMES = {
    "started": "started",
    "running": "already running",
    "reused": "reused (not ours: down leaves it)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the addresses")


def run(args: argparse.Namespace, settings: Settings) -> int:

    def log(line: str) -> None:
        if not args.quiet:
            print(f"  {line}", flush=True)

    began = time.monotonic()
    try:
        steps = local.up(settings, log)
    except StackError as error:
        print(f"tc-treeherder up: {error}", file=sys.stderr)
        return 1
    for step in steps:
        print(f"{step.broker:<9} {step.address:<34} {OUTCOMES.get(step.outcome, step.outcome):<34} "
              f"{step.seconds:5.1f}s")
    _, rabbit_node = local.nodes(settings)
    print(f"{'UI':<9} {rabbit_node.management_url:<34} RabbitMQ management (guest/guest on localhost)")
    print(f"ready in {time.monotonic() - began:.1f}s; state in {settings.state_dir}; stop with `tc-treeherder down`")
    return 0
