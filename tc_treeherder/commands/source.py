"""``tc-treeherder source``: Taskcluster task events from Pulse into the task-events topic."""

from __future__ import annotations

import argparse

from connectors.pulse_source import PulseSource
from streams.shared.settings import Settings
from tc_treeherder.commands._serve import serve_connector

EPILOG = """examples:
  tc-treeherder source
  TC_TREEHERDER_PULSE_URL=amqps://user:pass@pulse.mozilla.org:5671 tc-treeherder source

The queue is bound to the six task exchanges with route.<prefix>.# for each route prefix
(TC_TREEHERDER_ROUTE_PREFIXES). A message is acknowledged only once Kafka has its record. Stop with Ctrl-C
or SIGTERM: what was received is written and acknowledged first; a one-line summary is logged at exit.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level of the source (default: info)")


def run(args: argparse.Namespace, settings: Settings) -> int:

    return serve_connector(settings, "source", lambda: PulseSource(settings), args.loglevel)
