"""The whole local stack at once: both brokers started (or stopped) side by side, each step timed.

Kafka and RabbitMQ boot independently and each spends its time in its own JVM or Erlang VM, so they are
started in parallel threads; the slower of the two sets the wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from devtools.stack import kafka, rabbitmq
from streams.shared.redact import public_url
from streams.shared.settings import Settings

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Step:
    """What happened to one broker: started, running (ours already), reused (not ours), stopped..."""

    broker: str
    address: str
    outcome: str
    seconds: float


def nodes(settings: Settings) -> tuple[kafka.KafkaNode, rabbitmq.RabbitNode]:
    return (kafka.KafkaNode.for_bootstrap(settings.kafka_bootstrap, settings.state_dir),
            rabbitmq.RabbitNode.for_url(settings.pulse_url, settings.state_dir))


def _timed(broker: str, address: str, action: Callable[[], str]) -> Step:
    began = time.monotonic()
    outcome = action()
    return Step(broker, address, outcome, time.monotonic() - began)


def up(settings: Settings, log: Log) -> list[Step]:
    """Start whatever does not answer yet; raises StackError (from either broker) when one cannot start."""
    kafka_node, rabbit_node = nodes(settings)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_timed, "Kafka", kafka_node.bootstrap,
                        lambda: kafka.start(kafka_node, log=lambda line: log(f"kafka: {line}"))),
            pool.submit(_timed, "RabbitMQ", public_url(settings.pulse_url),
                        lambda: rabbitmq.start(rabbit_node, log=lambda line: log(f"rabbitmq: {line}"))),
        ]
        return [future.result() for future in futures]


def down(settings: Settings) -> list[Step]:
    """Stop what ``up`` started; brokers it reused, or that are already gone, are left alone."""
    kafka_node, rabbit_node = nodes(settings)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_timed, "Kafka", kafka_node.bootstrap, lambda: kafka.stop(kafka_node)),
            pool.submit(_timed, "RabbitMQ", public_url(settings.pulse_url),
                        lambda: rabbitmq.stop(rabbit_node)),
        ]
        return [future.result() for future in futures]
