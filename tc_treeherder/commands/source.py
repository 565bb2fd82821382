"""``tc-treeherder source``: Taskcluster task events from Pulse into the task-events topic."""

from __future__ import annotations

import argparse
import sys

from connectors.pulse_source import PulseSource
from streams.shared.settings import Settings, SettingsError
from tc_treeherder.commands._serve import serve_connector

EPILOG = """examples:
  tc-treeherder source
  TC_TREEHERDER_PULSE_URL=amqps://user:pass@pulse.mozilla.org:5671 tc-treeherder source
  tc-treeherder source --deployment community        # one source per configured Taskcluster deployment

The queue is bound to the six task exchanges with route.<prefix>.# for each route prefix
(TC_TREEHERDER_ROUTE_PREFIXES). A message is acknowledged only once Kafka has its record. Stop with Ctrl-C
or SIGTERM: what was received is written and acknowledged first; a one-line summary is logged at exit.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deployment", metavar="NAME",
                        help="the Taskcluster deployment to read, when several are configured "
                             "(TC_TREEHERDER_DEPLOYMENTS; see docs/configuration.md)")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level of the source (default: info)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        chosen = settings.for_deployment(args.deployment)
    except SettingsError as error:
        print(f"tc-treeherder source: {error}", file=sys.stderr)
        return 2
    return serve_connector(chosen, "source", lambda: PulseSource(chosen), args.loglevel)
