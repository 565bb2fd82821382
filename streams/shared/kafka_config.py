"""One place that turns settings into Kafka client arguments, so TLS and SASL reach every client alike.

Every Kafka client of the project (source, sink, worker, topics admin, replay, lag, status, explain, demo,
benchmarks) is built with ``kafka_client_kwargs(settings)``; the Faust worker gets the same through
``faust_broker_credentials(settings)``. A client built any other way would silently talk plaintext to a
broker that expects TLS, so nothing else names ``bootstrap_servers``.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.shared.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context (the CA bundle of the settings, else the system's) when the protocol uses TLS."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security arguments of aiokafka's producer, consumer and admin client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password
    return kwargs


def faust_broker_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the same settings (None for plaintext)."""

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                     ssl_context=context, mechanism=settings.kafka_sasl_mechanism or "PLAIN")
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None
