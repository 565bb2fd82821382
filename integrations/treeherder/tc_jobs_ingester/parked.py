"""The parked queue, for an operator: list what is parked and why, and re-drive it to the main queue.

Re-driving publishes each parked message (confirmed) back to the main queue through the retry exchange with
its attempt count and clock reset, then acknowledges the parked copy: a crash in between leaves a duplicate,
never a loss. Listing takes messages without acknowledging them and closes the channel, which returns them.
"""

from __future__ import annotations

import json
from typing import Any

import amqp

from . import policy
from .consumer import connect
from .topology import DUE, Topology

CLEARED = (policy.ATTEMPTS, policy.FIRST_FAILED_AT, policy.REASON, policy.PARKED_AT)


def _topology(pulse_url: str, name: str, exchange: str, delays: tuple[float, ...]) -> Topology:
    return Topology.build(pulse_url=pulse_url, name=name, jobs_exchange=exchange, bindings=("#",), delays=delays)


def _describe(message: amqp.Message) -> dict[str, Any]:
    headers = message.properties.get("application_headers") or {}
    try:
        job = json.loads(message.body)
    except ValueError:
        job = {}
    origin = job.get("origin", {}) if isinstance(job, dict) else {}
    return {"taskId": job.get("taskId") if isinstance(job, dict) else None,
            "project": origin.get("project") if isinstance(origin, dict) else None,
            "state": job.get("state") if isinstance(job, dict) else None,
            "attempts": headers.get(policy.ATTEMPTS), "reason": headers.get(policy.REASON),
            "parked_at": headers.get(policy.PARKED_AT), "routing_key": headers.get(policy.ROUTING_KEY)}


def list_parked(pulse_url: str, name: str, exchange: str, delays: tuple[float, ...], limit: int = 0,
                ) -> list[dict[str, Any]]:
    topology = _topology(pulse_url, name, exchange, delays)
    connection = connect(pulse_url, f"{name} (parked queue)")
    try:
        channel = connection.channel()
        found = []
        while not limit or len(found) < limit:
            message = channel.basic_get(topology.parked, no_ack=False)
            if message is None:
                break
            found.append(_describe(message))
        channel.close()  # everything taken goes back, unacknowledged
        return found
    finally:
        connection.release()


def redrive(pulse_url: str, name: str, exchange: str, delays: tuple[float, ...], limit: int = 0) -> int:
    topology = _topology(pulse_url, name, exchange, delays)
    connection = connect(pulse_url, f"{name} (parked queue)")
    moved = 0
    try:
        channel = connection.channel()
        while not limit or moved < limit:
            message = channel.basic_get(topology.parked, no_ack=False)
            if message is None:
                break
            headers = {k: v for k, v in (message.properties.get("application_headers") or {}).items()
                       if k not in CLEARED}
            headers["x-tc-ingest-redriven"] = int(headers.get("x-tc-ingest-redriven") or 0) + 1
            copy = amqp.Message(message.body, content_type=message.properties.get("content_type", "application/json"),
                                content_encoding=message.properties.get("content_encoding", "utf-8"),
                                delivery_mode=2, application_headers=headers)
            channel.basic_publish(copy, exchange=topology.retry_exchange, routing_key=DUE)
            channel.basic_ack(message.delivery_tag)
            moved += 1
        channel.close()
        return moved
    finally:
        connection.release()
