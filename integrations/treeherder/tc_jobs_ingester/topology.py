"""The queues and exchanges of one ingester, named as Pulse's permissions expect.

For a Pulse user ``<user>`` and an ingester name ``<name>``:

- ``queue/<user>/<name>``: durable, bound to the jobs exchange (one binding per pattern, ``#`` for all) and
  to ``exchange/<user>/<name>/retry`` with the key ``due``. The ingester consumes it.
- ``queue/<user>/<name>/delay-<d>``: one per configured delay, with a queue-wide message TTL of ``d`` and
  dead-lettering to ``exchange/<user>/<name>/retry`` key ``due``: a message put there comes back to the main
  queue after ``d``. Every message of one delay queue has the same TTL, so expiry in queue order is exact.
- ``queue/<user>/<name>/parked``: durable, no TTL; messages wait there, reason in their headers, until an
  operator re-drives them (``python -m tc_jobs_ingester redrive``).

All copies the ingester publishes are persistent and confirmed before the original is acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .policy import delay_label

DUE = "due"
PARKED = "parked"


@dataclass(frozen=True, slots=True)
class Topology:
    jobs_exchange: str
    bindings: tuple[str, ...]
    retry_exchange: str
    main: str
    delays: dict[float, str]  # delay in seconds -> its queue
    parked: str

    @classmethod
    def build(cls, *, pulse_url: str, name: str, jobs_exchange: str, bindings: tuple[str, ...],
              delays: tuple[float, ...]) -> Topology:
        user = unquote(urlsplit(pulse_url).username or "guest")
        base = f"queue/{user}/{name}"
        return cls(jobs_exchange=jobs_exchange, bindings=bindings or ("#",),
                   retry_exchange=f"exchange/{user}/{name}/retry", main=base,
                   delays={seconds: f"{base}/delay-{delay_label(seconds)}" for seconds in delays},
                   parked=f"{base}/parked")

    def declare(self, channel: Any, *, declare_jobs_exchange: bool) -> None:
        """Declare everything on a py-amqp ``channel``; the jobs exchange only when asked (it is the sink's).

        Without ``declare_jobs_exchange`` the exchange is only checked (passive): a missing exchange closes
        the channel with NOT_FOUND, which the caller reports.
        """
        channel.exchange_declare(self.jobs_exchange, "topic", durable=True, auto_delete=False,
                                 passive=not declare_jobs_exchange)
        channel.exchange_declare(self.retry_exchange, "direct", durable=True, auto_delete=False)
        channel.queue_declare(self.main, durable=True, auto_delete=False)
        for pattern in self.bindings:
            channel.queue_bind(self.main, self.jobs_exchange, routing_key=pattern)
        channel.queue_bind(self.main, self.retry_exchange, routing_key=DUE)
        for seconds, queue in self.delays.items():
            channel.queue_declare(queue, durable=True, auto_delete=False,
                                  arguments={"x-message-ttl": round(seconds * 1000),
                                             "x-dead-letter-exchange": self.retry_exchange,
                                             "x-dead-letter-routing-key": DUE})
            channel.queue_bind(queue, self.retry_exchange, routing_key=delay_label(seconds))
        channel.queue_declare(self.parked, durable=True, auto_delete=False)
        channel.queue_bind(self.parked, self.retry_exchange, routing_key=PARKED)
