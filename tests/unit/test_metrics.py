"""Metrics: the collectors read the processes' own counters, and the exposition text says what they hold."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from connectors.pulse_sink import DestinationCounts, SinkCounts
from connectors.pulse_source import SourceCounts
from streams.shared.tally import LatencyTally
from streams.taskcluster.queue_client import QueueStats
from streams.worker.processor import Counts
from tc_treeherder.observability.lag import GroupLag, LagReport, PartitionLag, TopicOffsets, WatchedGroup
from tc_treeherder.observability.metrics import (
    LagCollector,
    SinkCollector,
    SourceCollector,
    WorkerCollector,
    build_registry,
    render,
)
from tc_treeherder.observability.web import MetricsServer


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def worker_processor() -> SimpleNamespace:
    counts = Counts(events=12, jobs=Counter({"tc-treeherder": 7}), states=Counter({"completed/success": 4,
                                                                                    "running/unknown": 3}),
                    ignored=Counter({"task has no extra.treeherder section": 2}),
                    rejected=Counter({"extra.treeherder.tier": 3}), suppressed=1, recovered=2, queue_fetches=9,
                    read_back=6,
                    rejected_by_stage=Counter({("config", "extra.treeherder.tier"): 3}),
                    ignored_by_stage=Counter({("config", "task has no extra.treeherder section"): 2}))
    stats = QueueStats(calls=Counter({"task": 5, "listArtifacts": 2}), requests=8, retries=1,
                       errors=Counter({"transient": 1}), latency_total=0.4, latency_max=0.2)
    return SimpleNamespace(counts=counts, client=SimpleNamespace(stats=stats))


async def test_worker_counters_become_prometheus_samples() -> None:
    processor = worker_processor()
    found = samples(await render(build_registry("worker", WorkerCollector(lambda: processor))))
    assert found[("tc_treeherder_events_total", ())] == 12
    assert found[("tc_treeherder_jobs_total", (("destination", "tc-treeherder"),))] == 7
    assert found[("tc_treeherder_jobs_by_state_total", (("result", "success"), ("state", "completed")))] == 4
    assert found[("tc_treeherder_rejected_total", (("reason", "extra.treeherder.tier"), ("stage", "config")))] == 3
    assert found[("tc_treeherder_ignored_total",
                  (("reason", "task has no extra.treeherder section"), ("stage", "config")))] == 2
    assert found[("tc_treeherder_state_guard_suppressed_total", ())] == 1
    assert found[("tc_treeherder_state_guard_recovered_total", ())] == 2
    assert found[("tc_treeherder_records_read_back_total", ())] == 6
    assert found[("tc_treeherder_queue_api_calls_total", (("call", "listArtifacts"),))] == 2
    assert found[("tc_treeherder_queue_api_errors_total", (("kind", "transient"),))] == 1
    assert found[("tc_treeherder_queue_api_request_seconds_count", ())] == 8
    assert abs(found[("tc_treeherder_queue_api_request_seconds_sum", ())] - 0.4) < 1e-9
    assert found[("tc_treeherder_process_info", (("process", "worker"),))] == 1


async def test_counters_are_read_at_scrape_time_and_absent_processor_reads_zero() -> None:
    holder: dict[str, object] = {"processor": None}
    registry = build_registry("worker", WorkerCollector(lambda: holder["processor"]))
    assert samples(await render(registry))[("tc_treeherder_events_total", ())] == 0
    processor = worker_processor()
    holder["processor"] = processor
    processor.counts.events += 30
    assert samples(await render(registry))[("tc_treeherder_events_total", ())] == 42


async def test_source_and_sink_counts_with_confirm_latency_histogram() -> None:
    rejected = Counter({"message body is not JSON": 1})
    source = SimpleNamespace(counts=SourceCounts(received=5, produced=4, rejected=rejected, acked=5, redelivered=1,
                                                 reconnects=2))
    found = samples(await render(build_registry("source", SourceCollector(source))))
    assert found[("tc_treeherder_source_events_produced_total", ())] == 4
    assert found[("tc_treeherder_rejected_total", (("reason", "message body is not JSON"), ("stage", "source")))] == 1

    tally = LatencyTally()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 30.0):
        tally.observe(seconds)
    counts = DestinationCounts(published=5, passed_over=2, rejected=1, reconnects=1)
    counts.confirm_latency = tally
    sink = SimpleNamespace(counts=SinkCounts(per_destination={"tc-treeherder": counts}))
    found = samples(await render(build_registry("sink", SinkCollector(sink))))
    label = ("destination", "tc-treeherder")
    assert found[("tc_treeherder_sink_published_total", (label,))] == 5
    assert found[("tc_treeherder_sink_confirm_seconds_bucket", (label, ("le", "0.001")))] == 1
    assert found[("tc_treeherder_sink_confirm_seconds_bucket", (label, ("le", "0.005")))] == 3
    assert found[("tc_treeherder_sink_confirm_seconds_bucket", (label, ("le", "10.0")))] == 4
    assert found[("tc_treeherder_sink_confirm_seconds_bucket", (label, ("le", "+Inf")))] == 5
    assert found[("tc_treeherder_sink_confirm_seconds_count", (label,))] == 5


def lag_report() -> LagReport:
    group = GroupLag(WatchedGroup("worker", "ns.tc-treeherder", "ns.tc-treeherder.task-events"),
                     (PartitionLag(0, 10, 0, 25), PartitionLag(1, None, 5, 9)), "Stable", 1)
    return LagReport(at=time.time(), groups=(group,),
                     topics=(TopicOffsets("ns.tc-treeherder.task-events", (0, 5), (25, 9)),), seconds=0.02)


async def test_lag_per_partition_counts_from_log_start_when_nothing_was_committed() -> None:
    monitor = SimpleNamespace(last=lag_report())
    found = samples(await render(build_registry("worker", LagCollector(monitor))))  # type: ignore[arg-type]
    base = (("group", "ns.tc-treeherder"), ("topic", "ns.tc-treeherder.task-events"))
    assert found[("tc_treeherder_consumer_lag", (*base[:1], ("partition", "0"), base[1]))] == 15
    assert found[("tc_treeherder_consumer_lag", (*base[:1], ("partition", "1"), base[1]))] == 4
    assert ("tc_treeherder_consumer_committed_offset", (*base[:1], ("partition", "1"), base[1])) not in found
    assert found[("tc_treeherder_lag_probe_ok", ())] == 1
    assert lag_report().groups[0].total == 19


async def test_metrics_server_serves_the_exposition_and_health(unused_tcp_port: int) -> None:
    source = SimpleNamespace(counts=SourceCounts(received=3))
    registry = build_registry("source", SourceCollector(source))
    server = MetricsServer("source", "127.0.0.1", unused_tcp_port, registry, health=lambda: {"ok": True})
    async with server, aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = await response.read()
        async with session.get(f"{server.url}/healthz") as response:
            health = await response.json()
    assert samples(body)[("tc_treeherder_source_messages_received_total", ())] == 3
    assert health["process"] == "source" and health["ok"] is True


async def test_port_zero_serves_nothing() -> None:
    server = MetricsServer("sink", "127.0.0.1", 0, build_registry("sink"))
    assert await server.start() is None
    await server.stop()
