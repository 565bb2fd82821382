"""``tc-treeherder source``: Taskcluster task events from Pulse into the task-events topic."""

from __future__ import annotations

import argparse
import asyncio
import logging

from tc_treeherder.settings import Settings

HELP = "Run the Pulse source: task events from a durable Pulse queue into Kafka."
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
    from connectors.pulse_source import PulseSource
    from streams.topics import TopicError, ensure_topics
    from tc_treeherder.observability.web import metrics_server

    logging.getLogger("connectors").setLevel(args.loglevel.upper())
    logging.getLogger("streams").setLevel(args.loglevel.upper())

    async def main() -> int:
        try:
            await ensure_topics(settings)
        except TopicError as error:
            logging.getLogger("connectors").error("%s", error)
            return 1
        source = PulseSource(settings)
        async with metrics_server(settings, "source", source):
            await source.serve()
        return 0

    return asyncio.run(main())
