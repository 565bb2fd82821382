"""What to do with a job message after one attempt to store it: pure decisions, no I/O, no Django.

Outcomes of one attempt (``store.Store.store``):

- ``stored``: Treeherder has the job (or already had it in that state); acknowledge.
- ``refused``: Treeherder will never take it (not JSON, invalid against pulse-job, unknown or inactive
  repository); log the reason, count it, acknowledge. Retrying cannot help and must not block the queue.
- ``missing_push``: the job's push is not in Treeherder yet; pushes arrive on their own (hg/GitHub push
  ingestion, ``tc-treeherder treeherder push`` locally), so try again later. The message leaves the main
  queue for a delay queue and comes back after the delay, so it holds up no other message. After
  ``park_after`` seconds of trying it is parked with its reason, for an operator to re-drive.
- ``failed``: storing raised something unexpected (a bug, data Treeherder's code cannot handle). Parked at
  once with the error: retrying a deterministic failure would only loop, and dropping it would lose it.

Transient trouble (the database away) is not an outcome: the store retries it in place, the message stays
unacknowledged meanwhile, and a crash hands it back to RabbitMQ.
"""

from __future__ import annotations

from dataclasses import dataclass

STORED = "stored"
REFUSED = "refused"
MISSING_PUSH = "missing_push"
FAILED = "failed"

# Header names carried by a message between attempts (AMQP headers of the re-published copy).
ATTEMPTS = "x-tc-ingest-attempts"
FIRST_FAILED_AT = "x-tc-ingest-first-failed-at"  # epoch seconds of the first failed attempt
REASON = "x-tc-ingest-reason"
PARKED_AT = "x-tc-ingest-parked-at"
ROUTING_KEY = "x-tc-ingest-routing-key"  # the routing key the message had on the jobs exchange
ROOT_URL = "taskcluster-root-url"  # set by tc-treeherder's sink on every job message

DEFAULT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DEFAULT_PARK_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    reason: str = ""
    project: str = ""


@dataclass(frozen=True, slots=True)
class Next:
    """Where a message that was not stored goes: ``delay`` seconds in a delay queue, or the parked queue."""

    action: str  # "retry" or "park"
    attempts: int
    first_failed_at: float
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    delays: tuple[float, ...] = DEFAULT_DELAYS
    park_after: float = DEFAULT_PARK_AFTER

    def __post_init__(self) -> None:
        if not self.delays or any(d <= 0 for d in self.delays):
            raise ValueError("delays must be positive seconds, at least one")
        if self.park_after < 0:
            raise ValueError("park_after must be zero or more seconds")

    def after_missing_push(self, headers: dict[str, object] | None, now: float) -> Next:
        """The attempt just failed for a missing push: retry after the next delay, or park when time is up.

        ``attempts`` counts failed attempts including this one; the delay grows with it along ``delays``
        (the last one repeats). A retry is never scheduled past the parking deadline by more than its delay.
        """
        attempts = _int(headers, ATTEMPTS) + 1
        first = _float(headers, FIRST_FAILED_AT) or now
        if now - first >= self.park_after:
            return Next("park", attempts, first)
        delay = self.delays[min(attempts - 1, len(self.delays) - 1)]
        return Next("retry", attempts, first, delay)


def attempts(headers: dict[str, object] | None) -> int:
    """Failed attempts a message has behind it, from its headers (0 for a first delivery)."""
    return _int(headers, ATTEMPTS)


def parse_delays(text: str) -> tuple[float, ...]:
    """``"1,2,5,30"`` -> (1.0, 2.0, 5.0, 30.0); raises ValueError on anything else."""
    delays = tuple(float(part) for part in text.split(",") if part.strip())
    if not delays or any(d <= 0 for d in delays):
        raise ValueError(f"expected comma-separated positive seconds, got {text!r}")
    return delays


def delay_label(seconds: float) -> str:
    """A delay as part of a queue name: 1.5 -> '1500ms', 30 -> '30s'."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _int(headers: dict[str, object] | None, name: str) -> int:
    try:
        return int((headers or {}).get(name) or 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _float(headers: dict[str, object] | None, name: str) -> float:
    try:
        return float((headers or {}).get(name) or 0.0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
