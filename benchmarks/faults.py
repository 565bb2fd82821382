"""The fault matrix: for each fault, a workload through the whole pipeline, jobs counted against the oracle.

    .venv/bin/python -m benchmarks.faults                       # every fault but the RabbitMQ restart
    .venv/bin/python -m benchmarks.faults --faults worker-kill9 sink-kill9 --events 5000
    .venv/bin/python -m benchmarks.faults --with-rabbitmq-restart   # also restarts the machine's RabbitMQ
    .venv/bin/python -m benchmarks.faults --faults rabbitmq-frozen-30s  # opt-in too: freezes the machine's RabbitMQ

Each fault gets its own scenario (``benchmarks/faults_lab.py``): a fresh namespace, the Queue API stand-in,
source, workers and sink as real processes, at least ``--events`` simulated task events published to the
task exchanges, the fault injected once a quarter of the expected jobs arrived, then a wait until every run
reached its final state (or nothing arrived for ``--idle`` seconds). The simulator's ``ExpectedRun`` records
are the oracle. Beside lost and duplicated jobs, each row gives the longest time without a job message while
jobs were still to come (how long the fault held delivery up). Prints a table and writes
``bench-results/faults.json``. Exit status 1 when a job was lost
or a run did not end in its final state.

Kafka is a broker of the harness's own (port 29092, data under ``<state dir>/faults/kafka-<port>``), wiped at start
and stopped at the end, so restarting it disturbs nobody. RabbitMQ is the machine's single broker: the
connection faults go through its management API (http://localhost:15672, guest/guest) and touch only this
run's connections; restarting the broker itself is opt-in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.faults_lab import Lab, ScenarioResult, catalogue, run_scenario  # noqa: E402
from devtools.stack import kafka, rabbitmq  # noqa: E402
from streams.shared.settings import load_settings  # noqa: E402

PULSE_URL = "amqp://guest:guest@localhost:5672/"
OPT_IN = ("rabbitmq-restart", "rabbitmq-frozen-30s")  # they disturb every user of the machine's RabbitMQ


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = list(catalogue(load_settings(env={})))
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="task events per fault (default 20000)")
    parser.add_argument("--faults", nargs="+", choices=names, metavar="FAULT",
                        help=f"faults to run (default: all but {', '.join(OPT_IN)}); one of {', '.join(names)}")
    parser.add_argument("--with-rabbitmq-restart", action="store_true",
                        help="also restart the machine's RabbitMQ (disturbs everyone using it)")
    parser.add_argument("--baseline", action="store_true", help="first run the workload with no fault")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument("--store", default="rocksdb://", help="worker table store (default rocksdb://)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kafka-port", type=int, default=29092, help="the harness's own Kafka (default 29092)")
    parser.add_argument("--idle", type=float, default=120.0,
                        help="give a scenario up after this long without a job message (default 120 s)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results" / "faults.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    defaults = load_settings(env={})
    specs = catalogue(defaults)
    chosen = args.faults or [name for name in specs if name not in OPT_IN]
    if args.with_rabbitmq_restart and "rabbitmq-restart" not in chosen:
        chosen.append("rabbitmq-restart")
    state = defaults.state_dir / "faults"
    node = kafka.KafkaNode(home=state / f"kafka-{args.kafka_port}", host="localhost", port=args.kafka_port,
                           controller_port=args.kafka_port + 1)
    print(f"Kafka (harness-owned) {node.bootstrap}: {kafka.start(node, fresh=True)}", flush=True)
    rabbit = rabbitmq.RabbitNode.for_url(PULSE_URL, defaults.state_dir)
    print(f"RabbitMQ {rabbit.host}:{rabbit.port}: {rabbitmq.start(rabbit)}", flush=True)
    lab = Lab(kafka_bootstrap=node.bootstrap, pulse_url=PULSE_URL, work_dir=state / "runs", kafka_node=node)
    runs: list[tuple[str, ScenarioResult]] = []
    try:
        plan = (["baseline"] if args.baseline else []) + chosen
        for name in plan:
            faults = [] if name == "baseline" else [specs[name]]
            result = asyncio.run(run_scenario(
                lab, faults, events=args.events, seed=args.seed, workers=args.workers, store=args.store,
                partitions=args.partitions, idle=args.idle, log=lambda line: print(line, flush=True)))
            runs.append((name, result))
            print(_row(name, result), flush=True)
            _write(args, runs, specs)
    finally:
        print(f"Kafka (harness-owned) {node.bootstrap}: {kafka.stop(node)}", flush=True)
    print()
    print(table(runs))
    print(f"\nwritten to {args.json}")
    failed = [name for name, r in runs if not r.verdict.settled or r.exited_unexpectedly]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


HEADER = ("fault", "events", "jobs expected", "received", "lost", "duplicates", "not final", "went back",
          "longest stall (s)", "seconds")


def _cells(name: str, result: ScenarioResult) -> tuple[str, ...]:
    v = result.verdict
    return (name, str(result.events), str(v.expected_jobs), str(v.received), str(v.lost), str(v.duplicates),
            str(v.wrong_final), str(v.backward_steps), f"{result.stall:.1f}", f"{result.seconds:.0f}")


def _row(name: str, result: ScenarioResult) -> str:
    return "  ".join(_cells(name, result))


def table(runs: list[tuple[str, ScenarioResult]]) -> str:
    rows = [HEADER, *(_cells(name, result) for name, result in runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths, strict=True))) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _write(args: argparse.Namespace, runs: list[tuple[str, ScenarioResult]], specs: dict) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "events_per_fault": args.events, "workers": args.workers, "partitions": args.partitions,
        "store": args.store,
        "runs": [{"name": name, "what": specs[name].what if name in specs else "no fault",
                  "duplicate_bound": specs[name].bound if name in specs else "0", **result.to_json()}
                 for name, result in runs],
    }
    args.json.write_text(json.dumps(body, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
