"""The benchmark's figures as pictures, drawn from ``bench.json`` into PNGs beside it (or into ``--out``).

    .venv/bin/python -m benchmarks.plots bench-results/bench.json [--out DIR]

``make bench`` calls :func:`draw` after writing the JSON. Each picture is drawn only when its part ran:

- ``e2e-latency.png``: end-to-end latency of each job over the load's time, and its distribution, per offered
  rate (the e2e part's samples: every n-th job, see ``benchmarks/bench_e2e.py``);
- ``profile.png``: the Firefox CI profile: latency over time with the offered rate behind it, the
  distribution per phase, and where the latency goes per phase (Pulse to source, worker, sink to observer);
- ``stages.png``: each stage's rate beside its raw-client baseline (and the worker's Faust floor, the core's
  floor, the replay's raw read), as measured in the same run;
- ``cpu.png``: CPU per event of each process, for the sustained load, each offered rate and the profile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

PROCESS_ORDER = ("source", "worker-0", "sink", "kafka", "rabbitmq", "queue-standin", "benchmark")
COLOURS = {"source": "#4c72b0", "worker-0": "#dd8452", "sink": "#55a868", "kafka": "#8c8c8c",
           "rabbitmq": "#c44e52", "queue-standin": "#b8a3d6", "benchmark": "#937860"}
HOP_NAMES = {"pulse_to_source": "Pulse to source", "source_to_worker_out": "source to worker output",
             "worker_out_to_observer": "worker output to observer (sink)"}


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    """Every picture the results allow, as PNGs in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in (("e2e-latency.png", e2e_latency), ("profile.png", profile), ("stages.png", stages),
                       ("cpu.png", cpu_per_event)):
        figure = make(results)
        if figure is not None:
            path = out / name
            figure.savefig(path, dpi=110)
            plt.close(figure)
            written.append(path)
    return written


def _subtitle(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    load = machine.get("load_average_at_start") or [0]
    return (f"{'quick' if results.get('quick') else 'full'} run {results.get('started', '')}, "
            f"{machine.get('nproc', '?')} CPUs, load average {load[0]:.1f} at the start")


def _cdf(axis: Any, values: list[float], label: str, colour: str | None = None) -> None:
    ordered = sorted(values)
    if ordered:
        axis.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label, color=colour)


def _log_ms(axis: Any, which: str) -> None:
    """A log axis in ms labelled at 1, 2 and 5 times the powers of ten, as plain numbers."""
    scale = axis.xaxis if which == "x" else axis.yaxis
    (axis.set_xscale if which == "x" else axis.set_yscale)("log")
    scale.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    scale.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
    scale.set_minor_formatter(NullFormatter())


def e2e_latency(results: dict[str, Any]) -> Figure | None:
    latency = (results.get("e2e") or {}).get("latency") or {}
    rates = [rate for rate, figures in latency.items() if figures["runs"] and figures["runs"][0].get("samples")]
    if not rates:
        return None
    figure, axes = plt.subplots(1, len(rates) + 1, figsize=(4.2 * (len(rates) + 1), 4.2))
    for axis, rate in zip(axes, rates, strict=False):
        for index, run in enumerate(latency[rate]["runs"]):
            offsets, values = zip(*run["samples"], strict=True) if run.get("samples") else ((), ())
            axis.scatter(offsets, values, s=4, alpha=0.6, label=f"run {index + 1}")
        figures = latency[rate]
        axis.set_title(f"{int(rate):,} events/s offered\n"
                       f"p50 {figures['p50_ms']:,.1f} ms, p99 {figures['p99_ms']:,.1f} ms", fontsize=10)
        axis.set_xlabel("time since the load's first event (s)")
        _log_ms(axis, "y")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency, event published to job received (ms)")
    distribution = axes[-1]
    for rate in rates:
        values = [value for run in latency[rate]["runs"] for _, value in run.get("samples") or []]
        _cdf(distribution, values, f"{int(rate):,}/s")
    _log_ms(distribution, "x")
    distribution.set_xlabel("latency (ms)")
    distribution.set_ylabel("fraction of jobs")
    distribution.set_title("distribution per offered rate", fontsize=10)
    distribution.grid(True, which="both", alpha=0.3)
    distribution.legend(fontsize=8)
    figure.suptitle(f"End to end at fixed offered rates ({_subtitle(results)})", fontsize=11)
    figure.tight_layout()
    return figure


def profile(results: dict[str, Any]) -> Figure | None:
    report = results.get("profile")
    if not report or not report.get("samples"):
        return None
    figure, (over_time, distribution, hops) = plt.subplots(1, 3, figsize=(15, 4.6),
                                                          gridspec_kw={"width_ratios": [2.2, 1, 1.2]})
    offsets, values = zip(*report["samples"], strict=True)
    colours = ["#4c72b0", "#c44e52", "#55a868", "#8172b2"]
    phases = report["phases"]
    for index, phase in enumerate(phases):
        over_time.axvspan(phase["from_s"], phase["to_s"], color=colours[index % 4], alpha=0.08)
    over_time.scatter(offsets, values, s=3, alpha=0.6, color="#333333", label="jobs (every n-th)")
    _log_ms(over_time, "y")
    over_time.set_xlabel("time since the first event (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.grid(True, which="both", alpha=0.3)
    rate_axis = over_time.twinx()
    steps_x, steps_y = [], []
    for phase in phases:
        steps_x += [phase["from_s"], phase["to_s"]]
        steps_y += [phase["rate"], phase["rate"]]
    rate_axis.plot(steps_x, steps_y, color="#c44e52", linewidth=1.2, alpha=0.7, label="offered events/s")
    rate_axis.set_ylabel("offered events/s", color="#c44e52")
    rate_axis.set_ylim(0, max(steps_y) * 1.15)
    over_time.set_title(f"latency over time; the burst's backlog cleared {report['burst_clear_s']:.2f} s after "
                        "its last event", fontsize=10)
    for index, phase in enumerate(phases):
        values = [latency for offset, latency in report["samples"] if phase["from_s"] <= offset <= phase["to_s"]]
        figures = phase["latency_ms"]
        _cdf(distribution, values, f"{phase['name']} {phase['rate']:,.0f}/s: p50 {figures['p50']}, "
             f"p99 {figures['p99']}, max {figures['max']} ms", colours[index % 4])
    _log_ms(distribution, "x")
    distribution.set_xlabel("latency (ms)")
    distribution.set_ylabel("fraction of jobs")
    distribution.set_title("distribution per phase", fontsize=10)
    distribution.grid(True, which="both", alpha=0.3)
    distribution.legend(fontsize=7, loc="lower right")
    hop_report = report.get("hops_ms") or []
    if hop_report:
        names = [entry["phase"] for entry in hop_report]
        bottom = [0.0] * len(names)
        for hop, label in HOP_NAMES.items():
            heights = [entry[hop]["p50"] for entry in hop_report]
            hops.bar(names, heights, bottom=bottom, label=label)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        for position, total in enumerate(bottom):
            hops.text(position, total, f"{total:,.0f} ms", ha="center", va="bottom", fontsize=8)
        hops.set_ylabel("p50 per hop (ms), stacked")
        hops.set_title("where the latency goes (median of each hop)", fontsize=10)
        hops.legend(fontsize=7)
        hops.grid(True, axis="y", alpha=0.3)
    else:
        hops.axis("off")
    figure.suptitle(f"Firefox CI profile, cold definitions ({_subtitle(results)})", fontsize=11)
    figure.tight_layout()
    return figure


def stages(results: dict[str, Any]) -> Figure | None:
    rows: list[tuple[str, float, str, float]] = []  # (stage, its rate, baseline's name, baseline's rate)
    core = results.get("core")
    if core and core.get("floor_cpu_events_per_second"):
        rows.append(("core (CPU, from bytes)", core["core_from_bytes_cpu_events_per_second"],
                     "orjson + 1 schema check", core["floor_cpu_events_per_second"]))
    for stage in ("source", "worker", "sink"):
        figures = results.get(stage)
        if figures and figures.get("raw_median"):
            rows.append((stage, figures["stage_median"], "raw client", figures["raw_median"]))
            floor = figures.get("faust_floor")
            if floor and floor.get("stage_median"):
                rows.append(("Faust floor", floor["stage_median"], "raw client", floor["raw_median"]))
    replay = results.get("replay")
    if replay and replay.get("raw_read_events_per_second"):
        rows.append(("replay", replay["events_per_second"], "raw aiokafka read", replay["raw_read_events_per_second"]))
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(9, 0.75 * len(rows) + 1.6))
    positions = list(range(len(rows)))
    axis.barh([p + 0.2 for p in positions], [row[3] for row in rows], height=0.4, color="#bbbbbb",
              label="baseline, same run")
    axis.barh([p - 0.2 for p in positions], [row[1] for row in rows], height=0.4, color="#4c72b0",
              label="the bridge's stage")
    for position, (_, rate, baseline, raw) in zip(positions, rows, strict=True):
        label = f" {rate:,.0f}/s = {rate / raw:.2f}" if rate > 0 else " no output measured (see bench.json)"
        axis.text(max(rate, axis.get_xlim()[0]), position - 0.2, label, va="center", fontsize=8)
        axis.text(raw, position + 0.2, f" {baseline} {raw:,.0f}/s", va="center", fontsize=8, color="#555555")
    axis.set_yticks(positions, [row[0] for row in rows])
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("items per second (log scale); label: rate and ratio to the baseline")
    axis.grid(True, axis="x", which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_xlim(right=max(max(row[1], row[3]) for row in rows) * 8)
    axis.set_title(f"Each stage beside its raw baseline ({_subtitle(results)})", fontsize=10)
    figure.tight_layout()
    return figure


def cpu_per_event(results: dict[str, Any]) -> Figure | None:
    loads: list[tuple[str, dict[str, int]]] = []
    e2e = results.get("e2e") or {}
    for rate, figures in (e2e.get("latency") or {}).items():
        if figures["runs"] and figures["runs"][0].get("cpu_us_per_event"):
            loads.append((f"{int(rate):,}/s offered", figures["runs"][0]["cpu_us_per_event"]))
    for index, run in enumerate(e2e.get("sustained") or []):
        if run.get("cpu_us_per_event"):
            loads.append((f"sustained{'' if index == 0 else f' ({index + 1})'}", run["cpu_us_per_event"]))
    report = results.get("profile")
    if report and report.get("cpu_us_per_event"):
        loads.append(("Firefox CI profile", report["cpu_us_per_event"]))
    if not loads:
        return None
    names = [name for name in PROCESS_ORDER if any(name in cpu for _, cpu in loads)]
    names += sorted({name for _, cpu in loads for name in cpu} - set(names))
    figure, axis = plt.subplots(figsize=(9, 0.6 * len(loads) + 1.8))
    left = [0.0] * len(loads)
    for name in names:
        widths = [cpu.get(name, 0) for _, cpu in loads]
        axis.barh([label for label, _ in loads], widths, left=left, label=name, color=COLOURS.get(name))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for position, total in enumerate(left):
        axis.text(total, position, f" {total:,.0f} µs", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("CPU µs per event, by process (brokers and the benchmark's own harness included)")
    axis.set_xlim(right=max(left) * 1.35)  # room for the legend
    axis.grid(True, axis="x", alpha=0.3)
    axis.legend(fontsize=8, ncols=2, loc="center right")
    axis.set_title(f"CPU per event per process ({_subtitle(results)})\nat low rates the idle "
                   "work of each process (timers, heartbeats, polls) is shared by few events", fontsize=10)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="bench.json written by `make bench`")
    parser.add_argument("--out", type=Path, help="directory for the PNGs (default: beside the JSON)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    written = draw(results, args.out or args.results.parent)
    for path in written:
        print(path)
    if not written:
        print("nothing to draw: no part with figures in", args.results, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
