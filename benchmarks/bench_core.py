"""Events per second of the pure transform core over the reference corpus, on one core.

Each event: parse_envelope (envelope + body schema) then transform (rules, job building, pulse-job
validation) with its stored task definition. Completed events get a 20-entry artifact listing so the link
code is exercised. Target: at least 50,000 events/s.

Beside it, in the same run, a floor: the least any implementation must do with the same events, their
bytes parsed with orjson and the envelope checked by one compiled schema validator (jsonschema-rs, the task's
event body included). The core is also timed from the same bytes (orjson, then as above), and the ratio of
the two says how close the core is to that floor on whatever machine runs it.

Every pass repeats the same events, so the core's per-task caches (parsed routes, job guids) always hit;
``--cold`` empties them before each pass, as if every task and route were new (each corpus event is a
different task).

    .venv/bin/python benchmarks/bench_core.py [--seconds 3] [--json] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jsonschema_rs  # noqa: E402
import orjson  # noqa: E402

from streams.core.envelope import parse_envelope  # noqa: E402
from streams.core.model import Jobs, TaskEvent  # noqa: E402
from streams.core.pulse_job import task_uuid  # noqa: E402
from streams.core.routes import parse_route  # noqa: E402
from streams.core.rules import Rules  # noqa: E402
from streams.core.schemas import envelope_with_body_schema  # noqa: E402
from streams.core.transform import artifacts_run, transform  # noqa: E402

CORPUS = ROOT / ".." / "shared" / "reference" / "treeherder-corpus"
TARGET = 50_000


def load_inputs() -> list[tuple[dict, dict, list]]:
    messages = json.loads((CORPUS / "taskcluster_pulse_messages.json").read_text())
    tasks = json.loads((CORPUS / "taskcluster_tasks.json").read_text())
    listing = [{"name": f"public/test_info/file{i % 7}.log", "storageType": "s3"} for i in range(20)]
    inputs = []
    for task_id, message in sorted(messages.items()):
        envelope = {
            "exchange": message["exchange"],
            "routingKey": message["routes"],
            "payload": message["payload"],
            "rootUrl": message["root_url"],
        }
        inputs.append((envelope, tasks[task_id], listing))
    return inputs


def one_pass(inputs, rules, cold: bool = False) -> int:
    if cold:
        parse_route.cache_clear()
        task_uuid.cache_clear()
    jobs = 0
    for envelope, task, listing in inputs:
        event = parse_envelope(envelope)
        if not isinstance(event, TaskEvent):
            raise SystemExit(f"corpus event rejected: {event}")
        outcome = transform(event, task, listing if artifacts_run(event) is not None else None, rules)
        if not isinstance(outcome, Jobs):
            raise SystemExit(f"corpus event gave no job: {outcome}")
        jobs += len(outcome.messages)
    return jobs


def floor_pass(encoded: list[tuple[bytes, object]]) -> int:
    """orjson parsing and one compiled schema check per event: the least a transform of these events does."""
    valid = 0
    for raw, validator in encoded:
        valid += validator.is_valid(orjson.loads(raw))
    return valid


def core_from_bytes_pass(encoded: list[tuple[bytes, object]], inputs, rules) -> int:
    """The core as the worker runs it: from the record's bytes, parsed with orjson, to validated jobs."""
    jobs = 0
    for (raw, _), (_, task, listing) in zip(encoded, inputs, strict=True):
        event = parse_envelope(orjson.loads(raw))
        outcome = transform(event, task, listing if artifacts_run(event) is not None else None, rules)
        jobs += len(outcome.messages)
    return jobs


def timed_passes(run, seconds: float) -> list[float]:
    """CPU seconds of each pass of ``run`` repeated for ``seconds`` of wall time."""
    cpu_times, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        c0 = time.thread_time()
        run()
        cpu_times.append(time.thread_time() - c0)
    return cpu_times


def floor_figures(inputs, rules, seconds: float) -> dict[str, float]:
    validators = {}
    encoded = []
    for envelope, _, _ in inputs:
        kind = envelope["exchange"].rpartition("task-")[2]
        if kind not in validators:
            validators[kind] = jsonschema_rs.validator_for(envelope_with_body_schema(kind), validate_formats=False)
        encoded.append((orjson.dumps(envelope), validators[kind]))
    if floor_pass(encoded) != len(encoded):
        raise SystemExit("a corpus event does not pass the floor's schema check")
    for _ in range(20):
        floor_pass(encoded)
        core_from_bytes_pass(encoded, inputs, rules)
    floor_cpu = statistics.median(timed_passes(lambda: floor_pass(encoded), seconds / 2))
    core_cpu = statistics.median(timed_passes(lambda: core_from_bytes_pass(encoded, inputs, rules), seconds / 2))
    floor_rate, core_rate = len(inputs) / floor_cpu, len(inputs) / core_cpu
    return {"floor_cpu_events_per_second": round(floor_rate),
            "core_from_bytes_cpu_events_per_second": round(core_rate),
            "ratio_to_floor": round(core_rate / floor_rate, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--cold", action="store_true", help="empty the per-task caches before each pass")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS.resolve()}", file=sys.stderr)
        return 2
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    inputs = load_inputs()
    rules = Rules()
    for _ in range(50):  # warm up: schema loading, validator compilation, caches
        one_pass(inputs, rules)
    events, started, durations, cpu_times = 0, time.perf_counter(), [], []
    while time.perf_counter() - started < args.seconds:
        t0, c0 = time.perf_counter(), time.thread_time()
        one_pass(inputs, rules, args.cold)
        cpu_times.append(time.thread_time() - c0)
        durations.append(time.perf_counter() - t0)
        events += len(inputs)
    elapsed = time.perf_counter() - started
    # The machine is shared: the median pass says what the code does on a core it has to itself.
    median = statistics.median(durations)
    result = {
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed),
        "median_pass_events_per_second": round(len(inputs) / median),
        "best_pass_events_per_second": round(len(inputs) / min(durations)),
        # CPU time leaves out the time other processes had the core: steadier when the machine is busy.
        "median_pass_cpu_events_per_second": round(len(inputs) / statistics.median(cpu_times)),
        "microseconds_per_event": round(elapsed / events * 1e6, 2),
        "target_events_per_second": TARGET,
        "meets_target": len(inputs) / median >= TARGET,
        "cold_caches": args.cold,
        **floor_figures(inputs, rules, args.seconds),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['events']} events in {result['seconds']} s on one core{' (cold caches)' if args.cold else ''}")
        print(
            f"  median pass {result['median_pass_events_per_second']:,} events/s, "
            f"best pass {result['best_pass_events_per_second']:,}/s, "
            f"overall {result['events_per_second']:,}/s ({result['microseconds_per_event']} us/event)"
        )
        print(f"  median pass in CPU time {result['median_pass_cpu_events_per_second']:,} events/s")
        print(f"  target {TARGET:,} events/s: {'met' if result['meets_target'] else 'NOT met'}")
        print(f"  from bytes {result['core_from_bytes_cpu_events_per_second']:,} events/s against the floor (orjson +"
              f" one compiled schema check) {result['floor_cpu_events_per_second']:,}/s:"
              f" ratio {result['ratio_to_floor']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
