"""``tc-treeherder treeherder up|down|push|status``: a real Treeherder on this machine, fed by the jobs exchange.

``up`` unpacks Treeherder's backend (the reference tarball) into the cache, builds its Python 3.12 venv once,
starts Postgres and Redis on loopback, migrates and loads the initial data once, starts Treeherder's API and
the jobs ingester (integrations/treeherder/) bound to the configured destination's exchange, and prints the
API URL. ``push`` registers a push; ``status`` shows what the ingester counted; ``down`` stops what ``up``
started.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from devtools.stack import StackError
from devtools.stack import local as stack
from devtools.treeherder import TreeherderError, ui
from devtools.treeherder import local as th
from streams.shared.settings import Settings

EPILOG = """examples:
  tc-treeherder treeherder up                       # API on http://127.0.0.1:8000, ingester for tc-treeherder
  tc-treeherder treeherder up --destination tc-treeherder-staging --port 8100
  tc-treeherder treeherder push autoland 5c3a1b2e...  # register a push (Treeherder stores jobs of known pushes)
  tc-treeherder treeherder status                   # the ingester's counts and recent refusals
  tc-treeherder treeherder parked                   # parked messages and why; `redrive` sends them back
  tc-treeherder treeherder up --ui ~/src/treeherder  # also Treeherder's UI, built from a checkout of its repository
  tc-treeherder treeherder screenshot autoland 5c3a1b2e... --out push.png   # the UI's page of a push (Chromium)
  tc-treeherder treeherder down                     # stop the API, the ingester and what up started

The tarball comes from ../shared/reference/treeherder/ beside the repository (or TC_TREEHERDER_TREEHERDER_TARBALL);
Treeherder's venv needs Python 3.12 (TC_TREEHERDER_TREEHERDER_PYTHON) and is built once into
~/.cache/tc-treeherder/treeherder/. Postgres and Redis come from Debian's packages (installed as root when
missing). Running up or down twice is harmless. See docs/treeherder.md.
"""

INGESTER_METRICS_OFFSET = 1  # the ingester's /metrics is on the API port + 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="start Treeherder's API and the jobs ingester (and what they need)")
    up.add_argument("--destination", help="the destination (name or route prefix) whose exchange to read "
                                          "(default: the first enabled)")
    up.add_argument("--port", type=int, help="API port (default 8000, or TC_TREEHERDER_TREEHERDER_PORT)")
    up.add_argument("--no-brokers", action="store_true", help="do not start the local Kafka and RabbitMQ")
    up.add_argument("--ui", metavar="CHECKOUT", default=os.environ.get(ui.UI_VARIABLE),
                    help="a checkout of Treeherder's repository: build its UI (npm registry) and serve it "
                         f"(default: ${ui.UI_VARIABLE})")
    down = sub.add_parser("down", help="stop what `treeherder up` started")
    down.add_argument("--port", type=int)
    down.add_argument("--keep-services", action="store_true", help="leave Postgres and Redis running")
    push = sub.add_parser("push", help="register a push in the local Treeherder")
    push.add_argument("project", help="a repository known to Treeherder, e.g. autoland or try")
    push.add_argument("revision", help="the push's head revision (40 hex digits)")
    push.add_argument("--author", default="tc-treeherder@example.com")
    push.add_argument("--port", type=int)
    shot = sub.add_parser("screenshot", help="a PNG of the UI's page of a push (needs `up --ui` and Chromium)")
    shot.add_argument("project")
    shot.add_argument("revision")
    shot.add_argument("--out", default="treeherder-push.png", help="the PNG to write (default treeherder-push.png)")
    shot.add_argument("--port", type=int)
    status = sub.add_parser("status", help="the ingester's counts and the API's job totals")
    status.add_argument("--destination")
    status.add_argument("--port", type=int)
    for name, text in (("parked", "list the ingester's parked messages with their reasons (they stay parked)"),
                       ("redrive", "send the ingester's parked messages back to its queue")):
        action = sub.add_parser(name, help=text)
        action.add_argument("--destination")
        action.add_argument("--port", type=int)


def _log(line: str) -> None:
    print(f"  {line}", flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    instance = th.Instance.from_settings(settings, args.port)
    try:
        if args.action == "up":
            return _up(args, settings, instance)
        if args.action == "down":
            for what, outcome in th.down(instance, services_too=not args.keep_services):
                print(f"{what:<48} {outcome}")
            return 0
        if args.action == "screenshot":
            url = f"{instance.api_url}/jobs?repo={args.project}&revision={args.revision}"
            ui.screenshot(url, Path(args.out))
            print(f"{args.out}: {url}")
            return 0
        ready = th.prepare(instance)
        if args.action == "push":
            for push in th.register_pushes(ready, [(args.project, args.revision)], author=args.author):
                if push["push_id"] is None:
                    print(f"tc-treeherder treeherder push: no repository {args.project!r} in this Treeherder "
                          f"(see {instance.api_url}/api/repository/)", file=sys.stderr)
                    return 1
                state = "registered" if push["created"] else "already known"
                print(f"push {push['push_id']} {push['project']} {push['revision']}: {state}; jobs: "
                      f"{instance.api_url}/api/project/{push['project']}/jobs/?push_id={push['push_id']}")
            return 0
        destination = th.pick_destination(settings, args.destination)
        spec = th.IngesterSpec.for_destination(settings, destination, instance.api_port + INGESTER_METRICS_OFFSET)
        if args.action in ("parked", "redrive"):
            for line in th.ingester_command(ready, spec, args.action):
                print(line)
            return 0
        status = th.ingester_status(spec)
        if status is None:
            print(f"no ingester answers on 127.0.0.1:{spec.metrics_port} (is `tc-treeherder treeherder up` running?)")
            return 1
        print(json.dumps(status, indent=2))
        return 0
    except TreeherderError as error:
        print(f"tc-treeherder treeherder {args.action}: {error}", file=sys.stderr)
        return 1


def _up(args: argparse.Namespace, settings: Settings, instance: th.Instance) -> int:
    began = time.monotonic()
    destination = th.pick_destination(settings, args.destination)
    if not args.no_brokers:
        try:
            for step in stack.up(settings, _log):
                print(f"{step.broker:<34} {step.outcome:<40} {step.seconds:6.1f}s")
        except StackError as error:
            print(f"tc-treeherder treeherder up: the local brokers did not start: {error}", file=sys.stderr)
            return 1
    ready = th.prepare(instance, _log)
    th.print_steps(ready.steps)
    if args.ui:
        step_began = time.monotonic()
        built = ui.build(Path(args.ui).expanduser(), _log)
        if ui.link(ready.installation.source, built):
            th.stop_api(instance)  # Treeherder reads the UI's files when it starts
        th.print_steps([("Treeherder's UI", "ready", time.monotonic() - step_began)])
    step_began = time.monotonic()
    outcome = th.start_api(ready, instance, _log)
    th.print_steps([(f"API {instance.api_url}", outcome, time.monotonic() - step_began)])
    spec = th.IngesterSpec.for_destination(settings, destination, instance.api_port + INGESTER_METRICS_OFFSET)
    step_began = time.monotonic()
    _, outcome = th.start_ingester(ready, instance, spec, _log)
    th.print_steps([(f"ingester ({destination.name})", outcome, time.monotonic() - step_began)])
    print(f"reading {spec.exchange} ({', '.join(spec.bindings)}) through queue/<user>/{spec.name}")
    print(f"ingester metrics: http://127.0.0.1:{spec.metrics_port}/metrics; logs in {instance.state}")
    print(f"ready in {time.monotonic() - began:.1f}s; stop with `tc-treeherder treeherder down`")
    print(f"Treeherder API: {instance.api_url}/api/")
    if args.ui:
        print(f"Treeherder UI:  {instance.api_url}/jobs?repo=autoland")
    return 0
