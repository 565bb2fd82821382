"""Running a connector process: the part ``tc-treeherder source`` and ``tc-treeherder sink`` share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from streams.shared.settings import Settings
from streams.shared.topics import TopicError, ensure_topics
from tc_treeherder.observability.web import metrics_server


def serve_connector(settings: Settings, name: str, make: Callable[[], Any], loglevel: str) -> int:
    """Create the topics, then serve the connector ``make()`` builds (with its metrics) until it is stopped.

    Exit status 1 when the topics cannot be used as they are (e.g. another partition count).
    """

    logging.getLogger("connectors").setLevel(loglevel.upper())
    logging.getLogger("streams").setLevel(loglevel.upper())

    async def main() -> int:
        try:
            await ensure_topics(settings)
        except TopicError as error:
            logging.getLogger("connectors").error("%s", error)
            return 1
        connector = make()
        async with metrics_server(settings, name, connector):
            await connector.serve()
        return 0

    return asyncio.run(main())
