"""``tc-treeherder sink``: job records from the jobs topic to each destination's Pulse jobs exchange."""

from __future__ import annotations

import argparse
import sys

from connectors.pulse_sink import PulseSink
from streams.shared.settings import Settings
from tc_treeherder.commands._serve import serve_connector

EPILOG = """examples:
  tc-treeherder sink
  tc-treeherder sink --destination tc-treeherder-staging

Each destination has its own consumer group and Pulse connection: one that is down delays no other, and
catches up when it returns. Offsets are committed only up to what the destination's broker confirmed.
Stop with Ctrl-C or SIGTERM; a one-line summary is logged at exit.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--destination", action="append", metavar="NAME", default=[],
                        help="deliver only to this destination (name or configuration table; repeatable; "
                             "default: every enabled destination)")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level of the sink (default: info)")


def run(args: argparse.Namespace, settings: Settings) -> int:

    known = {d.key: d for d in settings.destinations} | {d.name: d for d in settings.destinations}
    unknown = [name for name in args.destination if name not in known]
    if unknown:
        print(f"tc-treeherder sink: unknown destination(s) {', '.join(unknown)}; configured: "
              f"{', '.join(d.name for d in settings.destinations)}", file=sys.stderr)
        return 2
    chosen = list(dict.fromkeys(known[name] for name in args.destination)) or list(settings.destinations)
    disabled = [d.name for d in chosen if not d.enabled]
    if disabled and args.destination:
        print(f"tc-treeherder sink: destination(s) {', '.join(disabled)} are disabled in the settings",
              file=sys.stderr)
        return 2

    return serve_connector(settings, "sink", lambda: PulseSink(settings, chosen), args.loglevel)
