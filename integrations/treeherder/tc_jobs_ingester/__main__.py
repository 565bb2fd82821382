"""``python -m tc_jobs_ingester``: run the ingester, list parked messages, re-drive them.

Run with Treeherder's Python, Treeherder's source folder and this folder's parent on ``PYTHONPATH``, and
Treeherder's settings in the environment (``DATABASE_URL``, ...; see docs/treeherder.md). Every option has an
environment variable (``TC_TREEHERDER_INGEST_<OPTION>``), so a deployment can set them like Treeherder's own.

  python -m tc_jobs_ingester run --pulse-url amqps://user:pw@pulse.mozilla.org:5671/ \\
      --exchange exchange/<sink's pulse user>/v1/jobs --binding 'tc-treeherder.#'
  python -m tc_jobs_ingester parked            # what is parked, and why
  python -m tc_jobs_ingester redrive           # send every parked message back to the queue
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from .policy import DEFAULT_DELAYS, DEFAULT_PARK_AFTER, RetryPolicy, parse_delays

ENV = "TC_TREEHERDER_INGEST_"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(ENV + name.upper().replace("-", "_"), default)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pulse-url", default=_env("pulse-url", "amqp://guest:guest@localhost:5672/"),
                        help="AMQP URL of the broker with the jobs exchange (the queue's user is its user)")
    parser.add_argument("--name", default=_env("name", "treeherder-jobs"),
                        help="the queue is queue/<pulse user>/<name> (default treeherder-jobs)")
    parser.add_argument("--exchange", default=_env("exchange", "exchange/taskcluster-treeherder/v1/jobs"),
                        help="the jobs exchange to consume: the destination's, as tc-treeherder's settings name it "
                             "(by default exchange/<the sink's pulse user>/v1/jobs)")
    parser.add_argument("--delays", default=_env("delays", ",".join(f"{d:g}" for d in DEFAULT_DELAYS)),
                        help="seconds between tries while a push is missing, comma-separated; the last repeats")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tc_jobs_ingester", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=int(_env("verbose", "0") or 0))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="consume the jobs exchange and store every job in Treeherder")
    _common(run)
    run.add_argument("--binding", action="append", default=None,
                     help="routing-key pattern to bind (repeatable; default '#', env: comma-separated)")
    run.add_argument("--concurrency", type=int, default=int(_env("concurrency", "4")),
                     help="jobs stored at once, each with its own database connection (default 4)")
    run.add_argument("--prefetch", type=int, default=int(_env("prefetch", "64")),
                     help="unacknowledged messages the broker hands out at once (default 64)")
    run.add_argument("--park-after", type=float, default=float(_env("park-after", str(DEFAULT_PARK_AFTER))),
                     help="seconds a job may wait for its push before it is parked (default 3600)")
    run.add_argument("--default-root-url", default=_env("default-root-url", os.environ.get("TASKCLUSTER_ROOT_URL", "")),
                     help="Taskcluster root URL for messages without the taskcluster-root-url header")
    run.add_argument("--metrics-port", type=int, default=int(_env("metrics-port", "0")),
                     help="serve /metrics, /status.json and /healthz on 127.0.0.1:<port> (0: off)")
    run.add_argument("--metrics-host", default=_env("metrics-host", "127.0.0.1"))
    run.add_argument("--declare-exchange", action="store_true", default=_env("declare-exchange") == "1",
                     help="declare the jobs exchange instead of requiring it to exist")
    for name in ("parked", "redrive"):
        command = sub.add_parser(name, help={"parked": "list parked messages with their reasons (they stay)",
                                             "redrive": "send parked messages back to the queue"}[name])
        _common(command)
        command.add_argument("--limit", type=int, default=0, help="at most this many (0: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2) if args.command == "run" else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("tc_jobs_ingester")
    ours.addHandler(handler)
    ours.setLevel(level)
    ours.propagate = False
    try:
        delays = parse_delays(args.delays)
    except ValueError as error:
        print(f"tc_jobs_ingester: --delays: {error}", file=sys.stderr)
        return 2
    if args.command == "run":
        return _run(args, delays)
    from .parked import list_parked, redrive

    if args.command == "parked":
        for entry in list_parked(args.pulse_url, args.name, args.exchange, delays, args.limit):
            print(json.dumps(entry))
        return 0
    moved = redrive(args.pulse_url, args.name, args.exchange, delays, args.limit)
    print(f"re-drove {moved} parked message(s)")
    return 0


def _run(args: argparse.Namespace, delays: tuple[float, ...]) -> int:
    from .consumer import Config, Ingester
    from .metrics import Metrics, serve
    from .store import Store, setup_django

    bindings = tuple(args.binding or [b for b in _env("binding", "#").split(",") if b.strip()])
    config = Config(pulse_url=args.pulse_url, name=args.name, jobs_exchange=args.exchange, bindings=bindings,
                    concurrency=max(1, args.concurrency), prefetch=max(1, args.prefetch),
                    default_root_url=args.default_root_url,
                    retry=RetryPolicy(delays=delays, park_after=args.park_after),
                    declare_jobs_exchange=args.declare_exchange)
    began = time.monotonic()
    setup_django()
    metrics = Metrics()
    ingester = Ingester(config, None, metrics)
    ingester.store = Store(stopping=ingester.stopping)
    if args.metrics_port:
        server = serve(metrics, args.metrics_host, args.metrics_port)
        logging.getLogger("tc_jobs_ingester").info("metrics on http://%s:%d/metrics", *server.server_address[:2])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: ingester.stop())
    logging.getLogger("tc_jobs_ingester").info("Treeherder's Django ready in %.1fs", time.monotonic() - began)
    ingester.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
