"""The local stack's pure parts: broker configuration, wire probes, leases. No broker needed."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from devtools.stack import kafka, probe, rabbitmq, shared
from streams.shared.redact import public_url


@pytest.fixture
def node(tmp_path: Path) -> kafka.KafkaNode:
    return kafka.KafkaNode.for_bootstrap("localhost:19092", tmp_path)


def properties(text: str) -> dict[str, str]:
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return dict(line.split("=", 1) for line in lines)


def test_the_controller_listens_next_to_the_client_port_under_the_state_dir(node: kafka.KafkaNode,
                                                                           tmp_path: Path) -> None:
    assert (node.port, node.controller_port) == (19092, 19093)
    assert node.home == tmp_path / "kafka"
    assert node.bootstrap == "localhost:19092"
    assert node.is_local
    assert not kafka.KafkaNode.for_bootstrap("kafka.example:9092", tmp_path).is_local


def test_server_properties_make_a_single_node_kraft_broker_on_loopback(node: kafka.KafkaNode) -> None:
    props = properties(kafka.render_server_properties(node, offsets_partitions=3))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    # Clients reconnect to the advertised address: it must be the host they bootstrapped with.
    assert props["advertised.listeners"] == "PLAINTEXT://localhost:19092"
    assert props["log.dirs"] == str(node.data_dir)
    # With one node, internal topics need replication factor 1 or no consumer group ever finds a coordinator.
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["offsets.topic.num.partitions"] == "3"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_broker_logs_go_to_a_file_in_the_node_logs_folder(node: kafka.KafkaNode) -> None:
    text = kafka.render_log4j(node)
    assert f"log4j.appender.server.File={node.logs_dir / 'server.log'}" in text
    assert "ConsoleAppender" not in text


def test_cluster_ids_have_kafkas_text_form() -> None:
    ids = {kafka.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_exactly_one_slf4j_binding_is_detected(tmp_path: Path) -> None:
    for name in ("slf4j-api-1.7.36.jar", "slf4j-reload4j-1.7.36.jar", "kafka_2.13-3.9.2.jar"):
        (tmp_path / name).touch()
    assert kafka.slf4j_bindings(tmp_path) == ["slf4j-reload4j-1.7.36.jar"]
    (tmp_path / "logback-classic-1.2.13.jar").touch()
    assert len(kafka.slf4j_bindings(tmp_path)) == 2


def test_the_pom_resolves_the_broker_and_exactly_one_logging_backend() -> None:
    template = (Path(kafka.__file__).parent / "kafka-pom.xml").read_text()
    root = ElementTree.fromstring(template.replace("@KAFKA_VERSION@", "3.9.2"))
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    dependencies = {
        (dep.findtext("m:groupId", namespaces=ns), dep.findtext("m:artifactId", namespaces=ns)):
            dep.findtext("m:version", namespaces=ns)
        for dep in root.iterfind("m:dependencies/m:dependency", ns)
    }
    assert dependencies == {
        ("org.apache.kafka", "kafka_2.13"): "3.9.2",
        ("org.slf4j", "slf4j-reload4j"): "1.7.36",
        ("ch.qos.reload4j", "reload4j"): "1.2.25",
    }


def test_api_versions_request_and_answer() -> None:
    request = probe.api_versions_request(correlation_id=7)
    size, api_key, version, correlation = struct.unpack_from(">ihhi", request)
    assert (size, api_key, version, correlation) == (len(request) - 4, 18, 0, 7)
    assert probe.parse_api_versions_response(struct.pack(">ih", 7, 0) + b"\x00\x00\x00\x00", 7)
    assert not probe.parse_api_versions_response(struct.pack(">ih", 7, 35), 7)  # UNSUPPORTED_VERSION
    assert not probe.parse_api_versions_response(struct.pack(">ih", 8, 0), 7)  # someone else's answer
    assert not probe.parse_api_versions_response(b"\x00", 7)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_probes_say_no_when_nothing_listens() -> None:
    port = free_port()
    assert not probe.kafka_answers("127.0.0.1", port, timeout=0.5)
    assert not probe.amqp_answers("127.0.0.1", port, timeout=0.5)


def test_a_listener_that_does_not_speak_the_protocol_is_not_a_broker() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # The connection is accepted by the kernel but nothing ever answers: not a usable broker.
        assert not probe.kafka_answers("127.0.0.1", port, timeout=0.3)
        assert not probe.amqp_answers("127.0.0.1", port, timeout=0.3)


def test_stopping_a_node_we_never_started_does_nothing(node: kafka.KafkaNode, tmp_path: Path) -> None:
    assert kafka.stop(node) == "not running"
    rabbit = rabbitmq.RabbitNode.for_url("amqp://guest:guest@localhost:5672/", tmp_path)
    assert rabbitmq.stop(rabbit) == "not running"


def test_a_pid_file_pointing_at_another_program_is_ignored(node: kafka.KafkaNode) -> None:
    node.home.mkdir(parents=True)
    node.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not our broker
    assert kafka.running_pid(node) is None
    assert kafka.stop(node) == "not running"


def test_passwords_are_not_printed() -> None:
    assert public_url("amqp://guest:guest@localhost:5672/") == "amqp://guest@localhost:5672/"
    assert public_url("amqps://u:p@pulse.example/") == "amqps://u@pulse.example/"
    assert public_url("amqp://localhost/") == "amqp://localhost/"


def test_the_last_live_lease_holder_is_the_one_that_stops(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    mine = shared.take_lease(leases, os.getpid())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = shared.take_lease(leases, other.pid)
        (leases / "999999999").write_text("dead\n")  # a session that was killed
        assert shared.other_live_leases(leases, mine) == [theirs]
        assert not (leases / "999999999").exists()
    finally:
        other.kill()
        other.wait()
    assert shared.other_live_leases(leases, mine) == []


def test_the_rabbitmq_node_is_recognised_by_its_vm_command_line() -> None:
    node = ("/usr/lib/erlang/erts-13.1.5/bin/beam.smp -W w -- -root /usr/lib/erlang -- -home /var/lib/rabbitmq "
            "-- -pa  -noshell -noinput -s rabbit boot -boot start_sasl")
    assert rabbitmq.is_rabbit_node(node)
    # rabbitmqctl's own short-lived VM, and other Erlang programs, are not the node.
    assert not rabbitmq.is_rabbit_node("/usr/lib/erlang/erts-13.1.5/bin/beam.smp -- -s rabbitmqctl_escript main")
    assert not rabbitmq.is_rabbit_node("/usr/bin/python3 -s rabbit boot")
