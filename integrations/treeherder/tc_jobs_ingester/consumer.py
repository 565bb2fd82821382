"""The ingester's loop: job messages from a durable queue into Treeherder, acknowledged only once settled.

Threads. The main thread owns the AMQP connection (py-amqp is not thread-safe): it receives messages,
hands each to a lane, and settles what the lanes finished (acknowledge; or publish a delayed or parked copy,
wait for the broker's confirm, then acknowledge). ``concurrency`` lanes each run one store at a time with
their own database connection. A job's messages always go to the same lane (by its ``taskId``), so the
states of one job are stored in the order they arrived and two stores of one job never race.

Settled means: Treeherder has the job, or refused it (logged and counted), or a copy of the message is safe
in a delay queue or the parked queue. Anything not settled is still unacknowledged, so a crash (or a kill)
loses nothing: RabbitMQ delivers it again, and storing a job twice is harmless (Treeherder keeps one job per
``taskId``, and never moves a job back to an earlier state).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import amqp
from kombu import Connection

from . import policy
from .metrics import Metrics
from .policy import FAILED, MISSING_PUSH, REFUSED, STORED, Outcome, RetryPolicy
from .topology import PARKED, Topology

log = logging.getLogger("tc_jobs_ingester")

SUMMARY_EVERY = 10.0  # seconds between summary log lines while messages flow
STOP_GRACE = 30.0  # seconds a stopping ingester lets its lanes finish what they hold


@dataclass(frozen=True, slots=True)
class Config:
    pulse_url: str
    name: str
    jobs_exchange: str
    bindings: tuple[str, ...] = ("#",)
    concurrency: int = 4
    prefetch: int = 64
    default_root_url: str = ""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    declare_jobs_exchange: bool = False


@dataclass(slots=True)
class Work:
    message: amqp.Message
    job: Any
    root_url: str
    label: str  # taskId/runId or the routing key, for log lines
    session: int = 0  # which connection delivered it: a delivery tag means nothing on another
    outcome: Outcome | None = None
    seconds: float = 0.0


def connect(url: str, name: str) -> Connection:
    """A connection whose publishes wait for the broker's confirm, named for RabbitMQ's connection list."""
    connection = Connection(url, heartbeat=30, connect_timeout=15, transport_options={
        "confirm_publish": True, "client_properties": {"connection_name": f"tc_jobs_ingester {name}"}})
    connection.ensure_connection(max_retries=1)
    return connection


class Ingester:
    def __init__(self, config: Config, store: Any, metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or Metrics()
        self.topology = Topology.build(pulse_url=config.pulse_url, name=config.name,
                                       jobs_exchange=config.jobs_exchange, bindings=config.bindings,
                                       delays=config.retry.delays)
        self.stopping = threading.Event()
        self._done: queue.SimpleQueue[Work] = queue.SimpleQueue()
        self._lanes: list[queue.SimpleQueue[Work | None]] = [queue.SimpleQueue() for _ in range(config.concurrency)]
        self._threads: list[threading.Thread] = []
        self._channel: Any = None
        self._session = 0

    # The lanes.

    def _lane(self, inbox: queue.SimpleQueue[Work | None]) -> None:
        while True:
            work = inbox.get()
            if work is None:
                return
            began = time.monotonic()
            try:
                work.outcome = self.store.store(work.job, work.root_url)
            except Exception as error:  # only when stopping with the database away: leave it unacknowledged
                log.warning("%s: not stored (%s: %s); it stays in the queue", work.label, type(error).__name__, error)
                work.outcome = None
            work.seconds = time.monotonic() - began
            self._done.put(work)

    def _start_lanes(self) -> None:
        for number, inbox in enumerate(self._lanes):
            thread = threading.Thread(target=self._lane, args=(inbox,), name=f"lane-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _stop_lanes(self) -> None:
        for inbox in self._lanes:
            inbox.put(None)
        deadline = time.monotonic() + STOP_GRACE
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # The main thread.

    def run(self) -> None:
        """Consume until ``stop()``, reconnecting with a growing delay when the connection is lost."""
        self._start_lanes()
        delay = 1.0
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    self._session_loop()
                except (OSError, amqp.exceptions.ConnectionError, amqp.exceptions.ChannelError,
                        amqp.exceptions.RecoverableConnectionError) as error:
                    if isinstance(error, amqp.exceptions.NotFound):
                        raise SystemExit(
                            f"tc_jobs_ingester: {error}: does the jobs exchange {self.config.jobs_exchange!r} "
                            "exist? (tc-treeherder's sink declares it; start it first, or pass "
                            "--declare-exchange)") from error
                    if self.stopping.is_set():
                        break
                    delay = 1.0 if time.monotonic() - began > 30 else min(delay * 2, 30.0)
                    log.warning("connection lost (%s: %s); reconnecting in %.0fs; unacknowledged messages come "
                                "back", type(error).__name__, error, delay)
                    self.stopping.wait(delay)
        finally:
            self._stop_lanes()
            log.info("stopped: %s", self.metrics.summary())

    def _session_loop(self) -> None:
        connection = connect(self.config.pulse_url, self.config.name)
        self._session += 1
        try:
            channel = connection.default_channel
            self.topology.declare(channel, declare_jobs_exchange=self.config.declare_jobs_exchange)
            channel.basic_qos(0, self.config.prefetch, False)
            tag = channel.basic_consume(self.topology.main, callback=self._on_message, no_ack=False)
            self._channel = channel
            self.metrics.consuming = True
            log.info("consuming %s (bound to %s with %s), %d lanes, prefetch %d; retries after %s s, parked after "
                     "%.0f s in %s", self.topology.main, self.config.jobs_exchange, ", ".join(self.config.bindings),
                     self.config.concurrency, self.config.prefetch,
                     ",".join(f"{d:g}" for d in self.config.retry.delays), self.config.retry.park_after,
                     self.topology.parked)
            next_summary = time.monotonic() + SUMMARY_EVERY
            last_summary = ""
            while not self.stopping.is_set():
                try:
                    connection.drain_events(timeout=0.05)
                except TimeoutError:
                    connection.heartbeat_check()
                self._settle_finished()
                if time.monotonic() >= next_summary:
                    next_summary = time.monotonic() + SUMMARY_EVERY
                    summary = self.metrics.summary()
                    if summary != last_summary:
                        log.info("%s", summary)
                        last_summary = summary
            channel.basic_cancel(tag)
            # Let the lanes finish what they hold and settle it on this channel, within the grace time.
            deadline = time.monotonic() + STOP_GRACE
            while self.metrics.in_flight > 0 and time.monotonic() < deadline:
                with contextlib.suppress(socket.timeout):
                    connection.drain_events(timeout=0.05)
                self._settle_finished()
        finally:
            self._channel = None
            self.metrics.consuming = False
            connection.release()

    def stop(self) -> None:
        self.stopping.set()

    def _on_message(self, message: amqp.Message) -> None:
        self.metrics.add(received=1, in_flight=1)
        if message.delivery_info.get("redelivered"):
            self.metrics.add(redelivered=1)
        headers = message.properties.get("application_headers") or {}
        routing_key = message.delivery_info.get("routing_key", "")
        root_url = _text(headers.get(policy.ROOT_URL)) or self.config.default_root_url
        try:
            job = json.loads(message.body)
        except (ValueError, UnicodeDecodeError) as error:
            self._settle(Work(message, None, root_url, routing_key, self._session,
                              Outcome(REFUSED, f"not JSON: {error}")))
            return
        task_id = job.get("taskId") if isinstance(job, dict) else None
        label = task_id if isinstance(task_id, str) else routing_key
        if not root_url:
            self._settle(Work(message, job, root_url, label, self._session,
                              Outcome(REFUSED, f"no {policy.ROOT_URL} header and no --default-root-url")))
            return
        lane = zlib.crc32(label.encode()) % len(self._lanes)
        self._lanes[lane].put(Work(message, job, root_url, label, self._session))

    def _settle_finished(self) -> None:
        while True:
            try:
                work = self._done.get_nowait()
            except queue.Empty:
                return
            self._settle(work)

    def _settle(self, work: Work) -> None:
        outcome = work.outcome
        channel = self._channel
        self.metrics.add(in_flight=-1, store_seconds=work.seconds)
        if outcome is None or channel is None or work.session != self._session:
            return  # left unacknowledged: RabbitMQ delivers it again
        tag = work.message.delivery_tag
        if outcome.kind == STORED:
            self.metrics.stored_from(work.root_url)
            log.debug("%s: stored in %s (%.0f ms)", work.label, outcome.project, work.seconds * 1000)
        elif outcome.kind == REFUSED:
            kind = _reason_kind(outcome.reason)
            self.metrics.refusal(kind, {"job": work.label, "project": outcome.project, "reason": outcome.reason,
                                        "at": time.time()})
            log.warning("%s: refused by Treeherder: %s", work.label, outcome.reason)
        elif outcome.kind == MISSING_PUSH:
            headers = dict(work.message.properties.get("application_headers") or {})
            step = self.config.retry.after_missing_push(headers, time.time())
            if step.action == "retry":
                self._republish(work, _label_of(step.delay), {
                    **headers, policy.ATTEMPTS: step.attempts, policy.FIRST_FAILED_AT: step.first_failed_at,
                    policy.REASON: outcome.reason})
                self.metrics.add(retried=1)
                log.info("%s: %s; retry %d in %gs", work.label, outcome.reason, step.attempts, step.delay)
            else:
                self._park(work, headers, outcome, step.attempts, step.first_failed_at)
        elif outcome.kind == FAILED:
            self.metrics.add(failed=1)
            headers = dict(work.message.properties.get("application_headers") or {})
            self._park(work, headers, outcome, policy.attempts(headers) + 1, time.time())
        channel.basic_ack(tag)

    def _park(self, work: Work, headers: dict[str, Any], outcome: Outcome, attempts: int, first: float) -> None:
        self._republish(work, PARKED, {**headers, policy.ATTEMPTS: attempts, policy.FIRST_FAILED_AT: first,
                                       policy.REASON: outcome.reason[:1000], policy.PARKED_AT: time.time()})
        self.metrics.parking({"job": work.label, "project": outcome.project, "reason": outcome.reason,
                              "attempts": attempts, "at": time.time()})
        log.error("%s: parked in %s after %d attempt(s): %s", work.label, self.topology.parked, attempts,
                  outcome.reason)

    def _republish(self, work: Work, routing_key: str, headers: dict[str, Any]) -> None:
        """A copy of the message to the retry exchange, confirmed by the broker (confirm_publish) on return."""
        original = work.message
        headers.setdefault(policy.ROUTING_KEY, original.delivery_info.get("routing_key", ""))
        if work.root_url:
            headers.setdefault(policy.ROOT_URL, work.root_url)
        copy = amqp.Message(original.body, content_type=original.properties.get("content_type", "application/json"),
                            content_encoding=original.properties.get("content_encoding", "utf-8"),
                            delivery_mode=2, application_headers=headers)
        self._channel.basic_publish(copy, exchange=self.topology.retry_exchange, routing_key=routing_key)


def _label_of(seconds: float) -> str:
    return policy.delay_label(seconds)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _reason_kind(reason: str) -> str:
    """A short, bounded label for a refusal reason (a metrics label must not carry a job's data)."""
    for kind in ("unknown repository", "is not active", "invalid against pulse-job", "not JSON", "no origin",
                 f"no {policy.ROOT_URL}", "not a JSON object"):
        if kind in reason:
            return {"is not active": "inactive repository"}.get(kind, kind)
    return "other"
