"""Prometheus metrics for every process, read from the counters the processes already keep.

Each process builds one ``CollectorRegistry`` (never the library's global one, so tests and several apps in
one interpreter do not collide) holding custom collectors. A collector's ``collect()`` runs at scrape time
and reads plain attributes (``EventProcessor.counts``, ``QueueClient.stats``, ``PulseSource.counts``,
``PulseSink.counts``, a ``LagMonitor``'s latest reading): the event paths pay nothing for being measured.

Names (all prefixed ``tc_treeherder_``; counters end in ``_total``):

=================================================  =============================================
events_total                                       task events the worker processed
jobs_total{destination}                            job messages produced, per destination
jobs_by_state_total{state,result}                  job messages produced, per state and result
rejected_total{stage,reason}                       events rejected (reason = the text before ':')
ignored_total{stage,reason}                        events not meant for Treeherder
state_guard_suppressed_total                       job messages held back by the state guard
state_guard_recovered_total                        jobs an earlier pass missed, let out late (state_guard.py)
records_read_back_total                            records the consumer skipped, read from Kafka directly (gaps.py)
queue_api_calls_total{call}                        task() and listArtifacts() calls
queue_api_requests_total / _retries_total          HTTP requests (pages, retries) / retries
queue_api_errors_total{kind}                       not_found, refused, transient, unavailable
queue_api_request_seconds (summary), _max          latency of one HTTP request
source_*                                           Pulse deliveries, events produced, acks, reconnects
sink_published_total{destination}                  jobs confirmed by a destination's broker
sink_confirm_seconds{destination} (histogram)      publish-to-confirm latency
consumer_lag{group,topic,partition}                records a consumer group has yet to process
topic_end_offset{topic,partition}                  high watermark
lag_probe_ok / lag_probe_seconds                   whether the last Kafka reading worked, its cost
=================================================  =============================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from streams.shared.tally import LatencyTally
from tc_treeherder.observability.lag import LagMonitor

PREFIX = "tc_treeherder_"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _counter(name: str, documentation: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    # The library appends _total itself to a counter family's samples.
    return CounterMetricFamily(PREFIX + name, documentation, labels=list(labels))


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=list(labels))


def split_reason_key(key: Any) -> tuple[str, str]:
    """(stage, reason) from a counter key: ``(stage, reason)`` tuples or a bare reason (stage unknown)."""
    if isinstance(key, tuple) and len(key) == 2:
        return str(key[0]), str(key[1])
    return "", str(key)


class WorkerCollector(Collector):
    """The worker's ``Counts`` and its Queue API client's ``QueueStats``.

    ``processor`` returns the ``EventProcessor`` or None before the first batch (the worker makes it lazily,
    inside the event loop); an absent processor reports zeros, so every series exists from the first scrape.
    """

    def __init__(self, processor: Callable[[], Any]) -> None:
        self._processor = processor

    def collect(self) -> Iterator[Metric]:
        processor = self._processor()
        counts = getattr(processor, "counts", None)
        events = _counter("events", "Task events the worker processed.")
        events.add_metric([], getattr(counts, "events", 0))
        yield events
        jobs = _counter("jobs", "Job messages produced, per destination.", ["destination"])
        by_state = _counter("jobs_by_state", "Job messages produced, per state and result.", ["state", "result"])
        rejected = _counter("rejected", "Events rejected, by stage and reason class.", ["stage", "reason"])
        ignored = _counter("ignored", "Events not meant for Treeherder, by stage and reason class.",
                           ["stage", "reason"])
        suppressed = _counter("state_guard_suppressed", "Job messages the state guard held back (would go "
                              "backwards).")
        recovered = _counter("state_guard_recovered", "Jobs below their run's furthest state that an earlier pass "
                             "missed, let out when the log was read again.")
        fetches = _counter("queue_fetches", "Definitions and listings fetched from the Queue API (table misses).")
        read_back = _counter("records_read_back", "Task events Faust's consumer skipped, which the worker read from "
                             "Kafka directly and processed (streams/worker/gaps.py).")
        if counts is not None:
            for destination, n in sorted(counts.jobs.items()):
                jobs.add_metric([destination], n)
            for key, n in sorted(counts.states.items()):
                state, _, result = key.partition("/")
                by_state.add_metric([state, result or "unknown"], n)
            for key, n in sorted(counts.rejected_by_stage.items()):
                rejected.add_metric(list(split_reason_key(key)), n)
            for key, n in sorted(counts.ignored_by_stage.items()):
                ignored.add_metric(list(split_reason_key(key)), n)
            suppressed.add_metric([], counts.suppressed)
            recovered.add_metric([], counts.recovered)
            fetches.add_metric([], counts.queue_fetches)
            read_back.add_metric([], counts.read_back)
        else:
            suppressed.add_metric([], 0)
            recovered.add_metric([], 0)
            fetches.add_metric([], 0)
            read_back.add_metric([], 0)
        yield from (jobs, by_state, rejected, ignored, suppressed, recovered, fetches, read_back)
        yield from queue_metrics(getattr(getattr(processor, "client", None), "stats", None))


def queue_metrics(stats: Any) -> Iterator[Metric]:
    """``QueueStats`` as metrics (zeros when there is no client yet)."""
    calls = _counter("queue_api_calls", "Queue API calls, per method.", ["call"])
    requests = _counter("queue_api_requests", "Queue API HTTP requests, pages and retries included.")
    retries = _counter("queue_api_retries", "Queue API requests retried after a transient failure.")
    errors = _counter("queue_api_errors", "Queue API failures, by kind.", ["kind"])
    latency = SummaryMetricFamily(PREFIX + "queue_api_request_seconds", "Latency of one Queue API HTTP request.")
    latency_max = _gauge("queue_api_request_seconds_max", "Slowest Queue API HTTP request since start.")
    if stats is None:
        requests.add_metric([], 0)
        retries.add_metric([], 0)
        latency.add_metric([], count_value=0, sum_value=0.0)
        latency_max.add_metric([], 0.0)
    else:
        for call in ("task", "listArtifacts"):
            calls.add_metric([call], stats.calls.get(call, 0))
        for kind in ("not_found", "refused", "transient", "unavailable"):
            errors.add_metric([kind], stats.errors.get(kind, 0))
        requests.add_metric([], stats.requests)
        retries.add_metric([], stats.retries)
        latency.add_metric([], count_value=stats.requests, sum_value=stats.latency_total)
        latency_max.add_metric([], stats.latency_max)
    yield from (calls, requests, retries, errors, latency, latency_max)


class SourceCollector(Collector):
    """``PulseSource.counts`` (``SourceCounts``)."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        counts = self._source.counts
        for name, value, doc in (
            ("source_messages_received", counts.received, "Pulse deliveries, redeliveries included."),
            ("source_events_produced", counts.produced, "Envelopes Kafka confirmed on task-events."),
            ("source_messages_acked", counts.acked, "Pulse messages acknowledged (after Kafka confirmed)."),
            ("source_messages_redelivered", counts.redelivered, "Deliveries RabbitMQ flagged as redelivered."),
            ("source_reconnects", counts.reconnects, "Pulse sessions started again after a failure."),
        ):
            family = _counter(name, doc)
            family.add_metric([], value)
            yield family
        rejected = _counter("rejected", "Events rejected, by stage and reason class.", ["stage", "reason"])
        for reason, n in sorted(counts.rejected.items()):
            rejected.add_metric(["source", reason], n)
        yield rejected


class SinkCollector(Collector):
    """``PulseSink.counts`` (``SinkCounts``): per destination."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Metric]:
        per_destination: Mapping[str, Any] = self._sink.counts.per_destination
        published = _counter("sink_published", "Job messages the destination's broker confirmed.", ["destination"])
        passed = _counter("sink_passed_over", "Job records for other destinations.", ["destination"])
        reconnects = _counter("sink_reconnects", "Pulse sessions started again after a failure.", ["destination"])
        rejected = _counter("rejected", "Events rejected, by stage and reason class.", ["stage", "reason"])
        confirm = HistogramMetricFamily(PREFIX + "sink_confirm_seconds",
                                        "Time from publishing a job to the broker's confirm.", labels=["destination"])
        for name, counts in sorted(per_destination.items()):
            published.add_metric([name], counts.published)
            passed.add_metric([name], counts.passed_over)
            reconnects.add_metric([name], counts.reconnects)
            if counts.rejected:
                rejected.add_metric(["sink", f"not delivered to {name}"], counts.rejected)
            tally = getattr(counts, "confirm_latency", None)
            if isinstance(tally, LatencyTally):
                confirm.add_metric([name], tally.cumulative(), sum_value=tally.total)
        yield from (published, passed, reconnects, rejected, confirm)


class LagCollector(Collector):
    """The latest reading of a ``LagMonitor`` (refresh it before rendering; see ``render``)."""

    def __init__(self, monitor: LagMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        report = self._monitor.last
        lag = _gauge("consumer_lag", "Records a consumer group has yet to process.", ["group", "topic", "partition"])
        committed = _gauge("consumer_committed_offset", "The group's committed offset (absent: none).",
                           ["group", "topic", "partition"])
        end = _gauge("topic_end_offset", "High watermark of the partition.", ["topic", "partition"])
        ok = _gauge("lag_probe_ok", "1 when the last reading of Kafka's offsets worked, else 0.")
        seconds = _gauge("lag_probe_seconds", "How long the last reading of Kafka's offsets took.")
        age = _gauge("lag_probe_age_seconds", "Age of the last reading of Kafka's offsets.")
        if report is not None:
            for group in report.groups:
                for p in group.partitions:
                    labels = [group.watched.group, group.watched.topic, str(p.partition)]
                    lag.add_metric(labels, p.lag)
                    if p.committed is not None:
                        committed.add_metric(labels, p.committed)
            for topic in report.topics:
                for partition, offset in enumerate(topic.ends):
                    end.add_metric([topic.topic, str(partition)], offset)
            ok.add_metric([], 1 if report.ok else 0)
            seconds.add_metric([], report.seconds)
            age.add_metric([], max(time.time() - report.at, 0.0))
        else:
            ok.add_metric([], 0)
        yield from (lag, committed, end, ok, seconds, age)


class ProcessInfo(Collector):
    """Which process this is and when it started, for dashboards that join on ``process``."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        info = _gauge("process_info", "Always 1; labels name the process.", ["process"])
        info.add_metric([self.process], 1)
        started = _gauge("process_started_seconds", "Unix time the process started.")
        started.add_metric([], self.started)
        yield from (info, started)


def build_registry(process: str, *collectors: Collector) -> CollectorRegistry:
    """A registry for one process: its collectors, its identity and the standard ``process_*`` metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessInfo(process))
    ProcessCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    return registry


async def render(registry: CollectorRegistry, monitor: LagMonitor | None = None) -> bytes:
    """The exposition text; ``monitor`` (if any) is refreshed first so lag is at most its max age old."""
    if monitor is not None:
        await monitor.report()
    return generate_latest(registry)
