"""Security basics: secrets from the environment or files, never shown; TLS/SASL reach every Kafka client;
HTTP endpoints on loopback by default; the body size limit of the source."""

from __future__ import annotations

import ast
import logging
import ssl
from pathlib import Path

import faust
import orjson
import pytest

from connectors.pulse_source import convert_body
from devtools.queue_standin import QueueStandIn
from streams.shared import records
from streams.shared.kafka_config import faust_broker_credentials, kafka_client_kwargs
from streams.shared.redact import redact_text, redact_url
from streams.shared.settings import Settings, SettingsError, load_settings
from streams.shared.topics import TopicNames

PASSWORD = "s3cr3t-Pa55"
ROOT = Path(__file__).resolve().parents[2]


def test_urls_and_messages_lose_their_passwords():
    assert redact_url(f"amqps://bob:{PASSWORD}@pulse.example.com:5671/vhost") == \
        "amqps://bob:***@pulse.example.com:5671/vhost"
    assert redact_url("amqp://localhost/") == "amqp://localhost/"
    message = f"cannot connect to amqp://bob:{PASSWORD}@h/ (and sasl {PASSWORD})"
    assert PASSWORD not in redact_text(message, [PASSWORD])


def test_settings_repr_and_redacted_never_show_a_password(caplog):
    settings = load_settings(env={"TC_TREEHERDER_PULSE_URL": f"amqps://bob:{PASSWORD}@pulse.example.com/",
                                  "TC_TREEHERDER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                  "TC_TREEHERDER_KAFKA_SASL_USERNAME": "svc",
                                  "TC_TREEHERDER_KAFKA_SASL_PASSWORD": PASSWORD})
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("starting with %s / %r", settings, settings.destinations[0])
    shown = settings.redacted()
    assert PASSWORD not in repr(settings) + str(settings) + caplog.text + orjson.dumps(shown).decode()
    assert shown["pulse_url"] == "amqps://bob:***@pulse.example.com/"
    assert shown["kafka_sasl_password"] == "***" and shown["kafka_sasl_username"] == "svc"
    assert settings.pulse_url.endswith(f"{PASSWORD}@pulse.example.com/"), "the client still gets the real URL"


def test_a_bad_setting_is_named_without_quoting_its_secret():
    with pytest.raises(SettingsError) as error:
        load_settings(env={"TC_TREEHERDER_PULSE_URL": f"http://bob:{PASSWORD}@pulse.example.com/"})
    assert "TC_TREEHERDER_PULSE_URL" in str(error.value) and PASSWORD not in str(error.value)


def test_secrets_come_from_files(tmp_path):
    url_file, password_file = tmp_path / "pulse-url", tmp_path / "kafka-password"
    url_file.write_text(f"amqps://bob:{PASSWORD}@pulse.example.com/\n")
    password_file.write_text(PASSWORD + "\n")
    settings = load_settings(env={"TC_TREEHERDER_PULSE_URL_FILE": str(url_file),
                                  "TC_TREEHERDER_KAFKA_SASL_PASSWORD_FILE": str(password_file),
                                  "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PULSE_URL_FILE": str(url_file)})
    assert settings.pulse_url == f"amqps://bob:{PASSWORD}@pulse.example.com/"
    assert settings.kafka_sasl_password == PASSWORD
    assert settings.destinations[0].pulse_url == settings.pulse_url
    with pytest.raises(SettingsError, match="both set"):
        load_settings(env={"TC_TREEHERDER_PULSE_URL_FILE": str(url_file), "TC_TREEHERDER_PULSE_URL": "amqp://h/"})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(env={"TC_TREEHERDER_PULSE_URL_FILE": str(tmp_path / "missing")})


def test_plaintext_kafka_gets_only_the_bootstrap_servers():
    assert kafka_client_kwargs(Settings(kafka_bootstrap="k1:9092,k2:9092")) == {
        "bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(Settings()) is None


async def test_sasl_ssl_settings_reach_aiokafka_and_faust():
    settings = load_settings(env={"TC_TREEHERDER_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                                  "TC_TREEHERDER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                                  "TC_TREEHERDER_KAFKA_SASL_USERNAME": "svc",
                                  "TC_TREEHERDER_KAFKA_SASL_PASSWORD": PASSWORD})
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc", PASSWORD)
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED and kwargs["ssl_context"].check_hostname
    credentials = faust_broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("svc", PASSWORD,
                                                                                       "SCRAM-SHA-512")
    assert credentials.protocol.value == "SASL_SSL"
    assert PASSWORD not in repr(credentials)
    from aiokafka import AIOKafkaProducer  # the arguments are ones the real client takes

    producer = AIOKafkaProducer(**kwargs)
    assert producer.client._sasl_mechanism == "SCRAM-SHA-512" and producer.client._security_protocol == "SASL_SSL"


def test_tls_only_kafka_uses_the_ca_bundle_given(tmp_path):
    with pytest.raises(SettingsError, match="TC_TREEHERDER_KAFKA_SSL_CAFILE"):
        load_settings(env={"TC_TREEHERDER_KAFKA_SECURITY_PROTOCOL": "SSL",
                           "TC_TREEHERDER_KAFKA_SSL_CAFILE": str(tmp_path / "none.pem")})
    settings = load_settings(env={"TC_TREEHERDER_KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert "sasl_mechanism" not in kafka_client_kwargs(settings)
    assert isinstance(faust_broker_credentials(settings), faust.SSLCredentials)


def test_every_kafka_client_of_the_service_is_built_from_kafka_client_kwargs():
    """A client built with bootstrap_servers by hand would talk plaintext to a TLS broker."""
    offenders = []
    for folder in ("streams", "connectors", "tc_treeherder"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and any(k.arg == "bootstrap_servers" for k in node.keywords):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
    worker_app = (ROOT / "streams" / "worker" / "app.py").read_text()
    assert "broker_credentials=faust_broker_credentials(settings)" in worker_app


def test_http_endpoints_bind_to_loopback_by_default():
    assert Settings().web_host == "127.0.0.1"  # Faust's web server, the source's and the sink's /metrics
    assert load_settings(env={}).web_host == "127.0.0.1"


async def test_the_queue_standin_listens_on_loopback():
    async with QueueStandIn() as standin:
        assert standin.root_url.startswith("http://127.0.0.1:")


def test_a_body_over_the_limit_is_rejected_with_its_size_and_an_excerpt():
    settings = Settings(max_body_bytes=1000)
    body = orjson.dumps({"status": {"taskId": "B3EheQ-IQ5aPzw34KS_a6g"}, "pad": "x" * 5000})
    conversion = convert_body(body, exchange="exchange/taskcluster-queue/v1/task-pending", routing_key="primary.x",
                              headers={}, message_id=None, settings=settings,
                              topics=TopicNames.from_settings(settings))
    record = records.decode_rejected_record(conversion.value)
    assert conversion.topic == settings.topic("rejected")
    assert record.reason == f"message body is {len(body)} bytes, over the limit of 1000"
    assert record.envelope["bodyTruncated"] is True and record.envelope["bodySize"] == len(body)
    assert len(record.envelope["body"]) <= records.OVERSIZED_BODY_EXCERPT
    at_limit = Settings(max_body_bytes=len(body))
    assert convert_body(body, exchange="e/task-pending", routing_key="k", headers={}, message_id=None,
                        settings=at_limit, topics=TopicNames.from_settings(at_limit)).rejection is None
