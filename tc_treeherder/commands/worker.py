"""``tc-treeherder worker``: the Faust worker that turns task events into job messages."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from faust import Worker

from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics
from streams.worker.app import create_worker
from tc_treeherder.observability.worker_pages import attach

EPILOG = """examples:
  tc-treeherder worker
  TC_TREEHERDER_WEB_PORT=6067 TC_TREEHERDER_DATA_DIR=/var/lib/tc-treeherder/w2 tc-treeherder worker

Run several workers to scale out: each needs its own data directory and web port. Partitions cap how
many workers share the work (TC_TREEHERDER_PARTITIONS, default 8).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                        help="worker log level (default: info)")


def writable_data_dir(data_dir: Path) -> str | None:
    """None when the worker can keep its tables in ``data_dir`` (created if missing), else why not."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as error:
        return (f"the data folder {data_dir} (TC_TREEHERDER_DATA_DIR) is not writable: {error.strerror}. The "
                "worker keeps its tables there; make it writable (or point TC_TREEHERDER_DATA_DIR elsewhere) "
                "and start the worker again: nothing is lost meanwhile, its events wait in Kafka")
    return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    problem = writable_data_dir(settings.data_dir)
    if problem is not None:  # before Faust opens RocksDB, which would fail with a trace far from the cause
        logging.getLogger("tc_treeherder").error("%s", problem)
        return 1
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    worker = create_worker(settings)
    if settings.web_port:  # /metrics, /status, /status.json and /explain on Faust's web server

        attach(worker, settings)
    logging.getLogger("streams").setLevel(args.loglevel.upper())
    faust_worker = Worker(worker.app, loglevel=args.loglevel, loop=loop, redirect_stdouts=False,
                          workdir=str(settings.data_dir))
    faust_worker.execute_from_commandline()  # returns only through SystemExit on shutdown
    return 0
