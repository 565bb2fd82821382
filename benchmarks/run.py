"""``make bench``: every stage of the bridge against its raw-client baseline, end to end, replay, backlog, RSS.

Runs on the local stack (started when it is not running), each part in a namespace of its own that is
deleted afterwards. Prints a table and writes every figure to ``bench-results/bench.json``.

    .venv/bin/python -m benchmarks.run [--quick] [--repeats N] [--only core,source,...]

The machine is shared: each throughput is measured ``--repeats`` times and the table shows the median.
``--quick`` uses smaller loads and finishes within about two minutes; its last line gives the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_stages
from benchmarks.bench_data import stage_data
from benchmarks.bench_e2e import FIREFOX_CI, FIREFOX_CI_QUICK, EndToEnd, warm_up
from benchmarks.bench_stages import child_env, median
from devtools.harness import delete_namespace
from devtools.queue_standin import QueueStandIn
from devtools.stack import StackError, local
from streams.shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results" / "bench.json"
PARTS = ("core", "source", "worker", "sink", "e2e", "profile", "replay")

TARGETS = {"core": 50_000, "ratio": 0.5, "p99_ms_at_1000": 100.0, "backlog_s": 2.0, "replay": 10_000,
           "p99_ms_in_burst": 100.0}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0")
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(int(memory) / 1024 / 1024, 1),
            "python": platform.python_version(), "load_average_at_start": os.getloadavg()}


def run_settings(base: Any, run_dir: Path, label: str) -> tuple[Any, dict[str, str]]:
    """Settings and the processes' environment for one part, under a namespace of its own."""

    namespace = f"bench{label}{secrets.token_hex(3)}"
    env = {
        "TC_TREEHERDER_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
        "TC_TREEHERDER_PULSE_URL": base.pulse_url,
        "TC_TREEHERDER_NAMESPACE": namespace,
        "TC_TREEHERDER_TASK_EXCHANGE_PREFIX": f"exchange/{namespace}/taskcluster-queue/v1/",
        "TC_TREEHERDER_STATE_DIR": str(run_dir / namespace),
        "TC_TREEHERDER_DATA_DIR": str(run_dir / namespace / "worker"),
        "TC_TREEHERDER_STORE": base.store,
        "TC_TREEHERDER_PARTITIONS": str(base.partitions),
        "TC_TREEHERDER_WEB_PORT": "0",
    }
    return load_settings(env=env), child_env(env)


def bench_core(seconds: float) -> dict[str, Any]:
    output = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_core.py"), "--seconds", str(seconds),
                             "--json"], capture_output=True, text=True, check=True).stdout
    return json.loads(output)


async def with_standin(action: Any) -> Any:

    standin = QueueStandIn()
    root_url = await standin.start()
    try:
        return await action(standin, root_url)
    finally:
        await standin.stop()


async def part(name: str, base: Any, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:

    settings, env = run_settings(base, run_dir, name)
    cleanup: dict[str, Any] = {}
    try:
        if name == "replay":
            try:
                from benchmarks.bench_replay import measure
            except ImportError as error:
                return {"built": False, "reason": str(error)}
            report, raw_rate = await measure(settings, args.replay_tasks)
            return {"built": True, "events": report.events, "seconds": round(report.seconds, 3),
                    "events_per_second": round(report.rate), "raw_read_events_per_second": round(raw_rate),
                    "ratio_to_raw_read": round(report.rate / raw_rate, 3), "jobs": sum(report.jobs.values()),
                    "from_tables": report.from_tables, "queue_fetches": report.queue_fetches}

        if name in ("e2e", "profile"):  # its own Queue API stand-in, in a process of its own
            return await end_to_end(settings, env, run_dir, args, profile_only=name == "profile")

        async def stages(standin: Any, root_url: str) -> dict[str, Any]:
            env["TASKCLUSTER_ROOT_URL"] = root_url
            data = await stage_data(settings, events=args.events, seed=7, root_url=root_url)
            if name == "source":
                return await bench_stages.bench_source(settings, data, args.repeats)
            if name == "worker":
                result = await bench_stages.bench_worker(settings, env, data, args.repeats, run_dir / "logs")
                result["queue_api_requests"] = dict(standin.stats["requests"])
                return result
            return await bench_stages.bench_sink(settings, data, args.repeats)

        result = await with_standin(stages)
        cleanup = result.pop("cleanup", {})
        return result
    finally:
        await delete_namespace(settings, **cleanup)


async def end_to_end(settings: Any, env: dict[str, str], run_dir: Path, args: argparse.Namespace, *,
                     profile_only: bool = False) -> dict[str, Any]:
    """The e2e part (latency per offered rate, sustained, backlog) or, with ``profile_only``, the Firefox CI
    profile on a pipeline of its own (fresh processes, as a burst would meet them after a quiet time)."""
    e2e = EndToEnd(settings, env, run_dir / "logs" / settings.namespace)
    result: dict[str, Any] = {"latency": {}, "sustained": [], "backlog": []}
    await e2e.start()
    try:
        await warm_up(e2e)
        if profile_only:
            profile = await e2e.run_profile(args.profile)
            profile["queue_api_requests"] = await e2e.queue_api_requests()
            profile["peak_rss_kib"] = await e2e.stop()
            return profile
        for _ in range(args.e2e_repeats):
            for rate, events in args.rate_events.items():
                runs = result["latency"].setdefault(str(rate), [])
                runs.append(await e2e.run_load(events=events, rate=rate))
            result["sustained"].append(await e2e.run_load(events=args.sustained_events, rate=0))
            result["backlog"].append(await e2e.backlog(messages=args.backlog))
        result["queue_api_requests"] = await e2e.queue_api_requests()
    finally:
        result["peak_rss_kib"] = await e2e.stop()
    for rate, runs in result["latency"].items():
        result["latency"][rate] = {"runs": runs, "p50_ms": median([r["latency_ms"]["p50"] for r in runs]),
                                   "p99_ms": median([r["latency_ms"]["p99"] for r in runs]),
                                   "complete": all(r["complete"] for r in runs)}
    result["sustained_median"] = median([r["events_per_second"] or 0 for r in result["sustained"]])
    result["backlog_median_s"] = median([r["seconds_from_consumer"] or float("inf") for r in result["backlog"]])
    result["backlog_from_start_median_s"] = median([r["seconds_from_process_start"] for r in result["backlog"]])
    return result


def compact_json(results: dict[str, Any]) -> str:
    """Indented JSON with every array of numbers on one line: the latency samples stay a few lines long."""
    text = json.dumps(results, indent=2, default=str)
    text = re.sub(r"\[[-0-9.,eE\s]*\]", lambda found: re.sub(r"\s+", "", found[0]).replace(",", ", "), text)
    return re.sub(r"\[(\s*\[[-0-9., eE]*\],?)+\s*\]", lambda found: re.sub(r"\s+", "", found[0]), text)


def table(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str, str, str]] = []

    def met(ok: bool | None) -> str:
        return "-" if ok is None else ("yes" if ok else "NO")

    core = results.get("core")
    if core:
        rate = core["median_pass_events_per_second"]
        rows.append(("core (transform, 1 core)", f"{rate:,} events/s", "", f">= {TARGETS['core']:,}/s",
                     met(rate >= TARGETS["core"])))
        if core.get("ratio_to_floor") is not None:
            rows.append(("  core from bytes vs floor (CPU)", f"{core['core_from_bytes_cpu_events_per_second']:,}/s",
                         f"orjson + 1 schema check {core['floor_cpu_events_per_second']:,}/s"
                         f" = {core['ratio_to_floor']:.2f}", "", "-"))
    for stage, unit in (("source", "messages"), ("worker", "events"), ("sink", "jobs")):
        figures = results.get(stage)
        if figures:
            rows.append((f"{stage} vs raw (ratio)", f"{figures['stage_median']:,} {unit}/s",
                         f"raw {figures['raw_median']:,}/s = {figures['ratio']:.2f}", ">= 0.50",
                         met(figures["ratio"] is not None and figures["ratio"] >= TARGETS["ratio"])))
            if figures.get("cpu_ratio") is not None:
                rows.append((f"{stage} CPU per {unit[:-1]}", f"{figures['stage_cpu_us_per_item']:,.0f} µs",
                             f"raw {figures['raw_cpu_us_per_item']:,.0f} µs = {figures['cpu_ratio']:.2f}", "", "-"))
            floor = figures.get("faust_floor")
            if floor:  # the least any Faust agent does: what separates the worker from raw, and why
                rows.append(("  Faust floor vs raw (ratio)", f"{floor['stage_median']:,} {unit}/s",
                             f"raw {floor['raw_median']:,}/s = {floor['ratio']:.2f}", "", "-"))
                if floor.get("cpu_ratio") is not None and figures.get("stage_cpu_us_per_item"):
                    rows.append(("  Faust floor CPU per event", f"{floor['stage_cpu_us_per_item']:,.0f} µs",
                                 f"worker = {figures['stage_cpu_us_per_item'] / floor['stage_cpu_us_per_item']:.1f}"
                                 " x floor", "", "-"))
    e2e = results.get("e2e")
    if e2e:
        for rate, figures in e2e["latency"].items():
            target = f"p99 < {TARGETS['p99_ms_at_1000']:.0f} ms" if rate == "1000" else ""
            ok = figures["p99_ms"] < TARGETS["p99_ms_at_1000"] and figures["complete"] if rate == "1000" else None
            rows.append((f"end to end @ {int(rate):,}/s offered", f"p50 {figures['p50_ms']:.1f} ms",
                         f"p99 {figures['p99_ms']:.1f} ms", target, met(ok)))
        rows.append(("end to end, sustained", f"{e2e['sustained_median']:,} events/s", "", "", "-"))
        cpu = e2e["sustained"][0].get("cpu_us_per_event") if e2e["sustained"] else None
        if cpu:
            spent = ", ".join(f"{name} {us:,}" for name, us in sorted(cpu.items(), key=lambda item: -item[1]))
            rows.append(("  CPU µs per event, sustained", f"{sum(cpu.values()):,} µs", spent, "", "-"))
        backlog = e2e["backlog"][0]
        rows.append((f"backlog of {backlog['messages_waiting']:,} drained", f"{e2e['backlog_median_s']:.2f} s",
                     f"{e2e['backlog_from_start_median_s']:.2f} s from process start", "< 2 s",
                     met(e2e["backlog_median_s"] < TARGETS["backlog_s"])))
        for name, kib in e2e["peak_rss_kib"].items():
            rows.append((f"peak RSS {name}", f"{(kib or 0) / 1024:.0f} MiB", "", "", "-"))
    profile = results.get("profile")
    if profile:
        for phase in profile["phases"]:
            figures = phase["latency_ms"]
            burst = phase["name"] == profile["burst"]
            rows.append((f"Firefox CI profile: {phase['name']} @ {phase['rate']:,.0f}/s", f"p50 {figures['p50']} ms",
                         f"p99 {figures['p99']} ms, max {figures['max']} ms, {phase['events']:,} events",
                         f"p99 < {TARGETS['p99_ms_in_burst']:.0f} ms" if burst else "",
                         met(figures["p99"] < TARGETS["p99_ms_in_burst"] and profile["complete"]) if burst else "-"))
        rows.append(("  burst's backlog cleared", f"{profile['burst_clear_s']:.2f} s",
                     "from the burst's last event to the last of its jobs", "", "-"))
        cpu = profile.get("cpu_us_per_event") or {}
        if cpu:
            spent = ", ".join(f"{name} {us:,}" for name, us in sorted(cpu.items(), key=lambda item: -item[1]))
            rows.append(("  CPU µs per event, profile", f"{sum(cpu.values()):,} µs", spent, "", "-"))
    if results.get("worker", {}).get("worker_peak_rss_kib"):
        rows.append(("peak RSS worker (stage run)", f"{results['worker']['worker_peak_rss_kib'] / 1024:.0f} MiB",
                     "", "", "-"))
    replay = results.get("replay")
    if replay is not None:
        if replay.get("built"):
            rows.append(("replay (1 process)", f"{replay['events_per_second']:,} events/s",
                         f"{replay['events']:,} events", f">= {TARGETS['replay']:,}/s",
                         met(replay["events_per_second"] >= TARGETS["replay"])))
            if replay.get("ratio_to_raw_read") is not None:
                rows.append(("  replay vs raw read of the range", f"{replay['ratio_to_raw_read']:.2f}",
                             f"raw aiokafka {replay['raw_read_events_per_second']:,} events/s", "", "-"))
        else:
            rows.append(("replay", "not built", "", f">= {TARGETS['replay']:,}/s", "-"))
    widths = [max(len(row[i]) for row in [*rows, HEADER]) for i in range(5)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(HEADER, widths, strict=True)),
             "-|-".join("-" * width for width in widths)]
    lines += [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return lines


HEADER = ("measure", "figure (median)", "baseline / detail", "target", "met")


def ratios_line(results: dict[str, Any]) -> str:
    parts = [f"{stage} {results[stage]['ratio']:.2f}" for stage in ("source", "worker", "sink")
             if results.get(stage) and results[stage].get("ratio") is not None]
    return "ratios vs raw clients: " + (", ".join(parts) or "none measured")


def draw_pictures(results: dict[str, Any], out: Path) -> str:
    """The PNGs of ``benchmarks/plots.py`` beside the JSON; a line saying where, or why not."""
    try:
        from benchmarks.plots import draw  # matplotlib comes with the dev extra; the figures do not need it
    except ImportError as error:
        return f"no pictures: {error} (pip install -e '.[dev]')"
    return "pictures: " + ", ".join(str(path) for path in draw(results, out))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small loads; about two minutes")
    parser.add_argument("--repeats", type=int, help="measurements per figure (default: 3, quick: 2)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run, of {','.join(PARTS)}")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default: {RESULTS})")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.events = 2000 if args.quick else 10_000  # messages per stage run
    args.e2e_repeats = 1 if args.quick else 2
    # events per offered rate: 2 s, 1 s and 0.5 s of load when quick, 10 s each otherwise
    args.rate_events = {100: 200, 1000: 1000, 5000: 2500} if args.quick else {100: 1000, 1000: 10_000, 5000: 50_000}
    args.sustained_events = 2000 if args.quick else 15_000
    args.backlog = 2000 if args.quick else 8000  # the full run holds the 8,000 a Pulse queue may reach
    args.profile = FIREFOX_CI_QUICK if args.quick else FIREFOX_CI  # (phase, seconds, events/s)
    args.replay_tasks = 2000 if args.quick else 5000
    args.core_seconds = 2.0 if args.quick else 5.0
    args.parts = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return args


async def run_parts(args: argparse.Namespace, base: Any, results: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="tc-treeherder-bench-") as tmp:
        for name in args.parts:
            if name == "core":
                continue
            started = time.monotonic()
            print(f"  {name}...", end="", flush=True)
            results[name] = await part(name, base, Path(tmp), args)
            print(f" {time.monotonic() - started:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader moves right after a topic is created
    logging.getLogger("connectors").setLevel(logging.ERROR)  # the local stack's missing task exchanges

    base = load_settings()
    try:
        for step in local.up(base, log=lambda line: None):
            print(f"{step.broker}: {step.address} {step.outcome}")
    except StackError as error:
        print(f"the local stack did not start: {error}", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "repeats": args.repeats,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    began = time.monotonic()
    if "core" in args.parts:
        print("  core...", flush=True)
        results["core"] = bench_core(args.core_seconds)
    asyncio.run(run_parts(args, base, results))
    results["seconds"] = round(time.monotonic() - began, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(compact_json(results) + "\n")
    print()
    print("\n".join(table(results)))
    print(f"\n{results['seconds']:.0f}s; figures in {args.output}")
    print(draw_pictures(results, args.output.parent))
    print(ratios_line(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
