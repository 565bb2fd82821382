"""The local brokers listen on loopback only: nothing they open is reachable from another machine.

``ss -ltnp`` lists every listening TCP socket with its process. The brokers' processes are the ones that
listen on the Kafka and AMQP ports of the ``brokers`` fixture, plus epmd (which the RabbitMQ node starts);
every socket any of them listens on (Kafka's controller port, RabbitMQ's management UI and Erlang
distribution port, epmd's 4369) must be bound to 127.0.0.0/8 or ::1.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from devtools.stack.shared import Brokers

USERS = re.compile(r'\("(?P<name>[^"]+)",pid=(?P<pid>\d+),')


@dataclass(frozen=True, slots=True)
class Listener:
    address: str  # as ss prints it: 127.0.0.1, [::1], *, 0.0.0.0, [::ffff:127.0.0.1]
    port: int
    processes: tuple[tuple[str, int], ...]  # (name, pid)

    @property
    def loopback(self) -> bool:
        host = self.address.strip("[]").split("%", 1)[0]
        if host in ("*", ""):
            return False
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return address.is_loopback


def parse_ss(output: str) -> list[Listener]:
    """The listeners of ``ss -Hltnp`` output (no header): state, queues, local address:port, peer, process."""
    listeners = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        address, _, port = fields[3].rpartition(":")
        processes = tuple((m["name"], int(m["pid"])) for m in USERS.finditer(" ".join(fields[5:])))
        listeners.append(Listener(address, int(port), processes))
    return listeners


def listening_sockets() -> list[Listener]:
    if shutil.which("ss") is None:
        pytest.fail("`ss` (iproute2) is needed to list listening sockets: apt-get install -y iproute2")
    result = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True)
    return parse_ss(result.stdout)


def test_parse_ss_reads_addresses_ports_and_processes() -> None:
    listeners = parse_ss(
        'LISTEN 0 128 127.0.0.1:5672 0.0.0.0:* users:(("beam.smp",pid=41,fd=30))\n'
        'LISTEN 0 4096 0.0.0.0:4369 0.0.0.0:* users:(("epmd",pid=7,fd=3),("epmd",pid=7,fd=4))\n'
        'LISTEN 0 50 [::ffff:127.0.0.1]:19092 *:* users:(("java",pid=99,fd=140))\n'
        'LISTEN 0 128 *:15672 *:* users:(("beam.smp",pid=41,fd=31))\n'
        'LISTEN 0 128 [::1]:25672 [::]:*\n')
    assert [(item.port, item.loopback) for item in listeners] == [
        (5672, True), (4369, False), (19092, True), (15672, False), (25672, True)]
    assert listeners[1].processes == (("epmd", 7), ("epmd", 7))


def test_the_local_brokers_listen_on_loopback_only(brokers: Brokers) -> None:
    if os.environ.get("TC_TREEHERDER_TEST_KAFKA_BOOTSTRAP") or os.environ.get("TC_TREEHERDER_TEST_PULSE_URL"):
        pytest.skip("brokers of your own (TC_TREEHERDER_TEST_*): their configuration is yours")
    kafka_port = int(brokers.kafka_bootstrap.rpartition(":")[2])
    amqp_port = 5672
    listeners = listening_sockets()
    broker_pids = {pid for item in listeners if item.port in (kafka_port, amqp_port) for _, pid in item.processes}
    assert len(broker_pids) >= 2, f"no process found for the Kafka ({kafka_port}) and AMQP ({amqp_port}) ports: " \
                                  f"{listeners}"
    broker_pids |= {pid for item in listeners for name, pid in item.processes if name == "epmd"}
    ours = [item for item in listeners if {pid for _, pid in item.processes} & broker_pids]
    ports = {item.port for item in ours}
    assert {kafka_port, kafka_port + 1, amqp_port, 15672, 25672, 4369} <= ports, \
        f"expected Kafka, its controller, AMQP, management, distribution and epmd among {sorted(ports)}"
    exposed = [item for item in ours if not item.loopback]
    assert not exposed, "broker sockets reachable from other machines:\n" + "\n".join(
        f"  {item.address}:{item.port} {item.processes}" for item in exposed) + (
        "\nA RabbitMQ node (or its epmd) started before devtools/stack/rabbitmq.py wrote the loopback settings "
        "keeps its old addresses: stop it (rabbitmqctl shutdown; epmd -kill) and let the fixture start it again.")
