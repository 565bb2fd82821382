"""Brokers shared by several clients at once (test sessions run in parallel on one machine).

Each client takes a lease (a file named after its pid) while it uses the brokers. A client starts what is
missing; the last client to leave stops what *a client* started, never a broker it found running (a demo
started by ``tc-treeherder up``, a broker of the user's own). Leases of dead processes do not count, so a
killed test run does not keep the brokers alive forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools.stack import StackError, kafka, rabbitmq
from devtools.stack.probe import amqp_answers, kafka_answers
from devtools.stack.process import file_lock, is_alive
from streams.shared.redact import public_url

TEST_KAFKA_BOOTSTRAP = "localhost:19092"  # not 9092: a running demo keeps its broker and its topics
TEST_PULSE_URL = "amqp://guest:guest@localhost:5672/"


@dataclass(frozen=True, slots=True)
class Brokers:
    kafka_bootstrap: str
    pulse_url: str
    management_url: str


def take_lease(leases: Path, pid: int) -> Path:
    leases.mkdir(parents=True, exist_ok=True)
    lease = leases / str(pid)
    lease.write_text(f"{pid}\n")
    return lease


def other_live_leases(leases: Path, own: Path) -> list[Path]:
    """Leases held by other living processes; stale ones (their process died) are removed on the way."""
    alive = []
    for lease in sorted(leases.glob("*")) if leases.exists() else []:
        if lease == own:
            continue
        if lease.name.isdigit() and is_alive(int(lease.name)):
            alive.append(lease)
        else:
            lease.unlink(missing_ok=True)
    return alive


@contextmanager
def shared_brokers(state_dir: Path, *, kafka_bootstrap: str | None = None, pulse_url: str | None = None,
                   log: Callable[[str], None] = lambda _: None) -> Iterator[Brokers]:
    """Kafka and RabbitMQ for the duration of the block: external ones if given, else local ones.

    ``kafka_bootstrap``/``pulse_url`` name brokers that already run; they are checked, never started or
    stopped. Without them, a Kafka on port 19092 with its data under ``state_dir`` and the machine's RabbitMQ
    are started when absent. A Kafka started here begins with an empty data folder.
    """
    kafka_node = kafka.KafkaNode.for_bootstrap(kafka_bootstrap or TEST_KAFKA_BOOTSTRAP, state_dir)
    rabbit_node = rabbitmq.RabbitNode.for_url(pulse_url or TEST_PULSE_URL, state_dir)
    if kafka_bootstrap and not kafka_answers(kafka_node.host, kafka_node.port):
        raise StackError(f"no Kafka answers at {kafka_bootstrap} (from TC_TREEHERDER_TEST_KAFKA_BOOTSTRAP)")
    if pulse_url and not amqp_answers(rabbit_node.host, rabbit_node.port):
        raise StackError(f"no AMQP broker answers at {public_url(pulse_url)} "
                         "(from TC_TREEHERDER_TEST_PULSE_URL)")
    leases = state_dir / "leases"
    with file_lock(state_dir / "leases.lock"):
        lease = take_lease(leases, os.getpid())
        try:
            if not kafka_bootstrap:
                log(f"Kafka {kafka_node.bootstrap}: {kafka.start(kafka_node, log=log, fresh=True)}")
            if not pulse_url:
                log(f"RabbitMQ {rabbit_node.host}:{rabbit_node.port}: {rabbitmq.start(rabbit_node, log=log)}")
        except BaseException:
            lease.unlink(missing_ok=True)
            raise
    try:
        yield Brokers(kafka_bootstrap=kafka_node.bootstrap, pulse_url=pulse_url or TEST_PULSE_URL,
                      management_url=rabbit_node.management_url)
    finally:
        with file_lock(state_dir / "leases.lock"):
            lease.unlink(missing_ok=True)
            if not other_live_leases(leases, lease):
                if not kafka_bootstrap:
                    kafka.stop(kafka_node)
                if not pulse_url:
                    rabbitmq.stop(rabbit_node)
