"""A latency histogram with fixed buckets, kept without any metrics library.

Processes record into it on their own paths (e.g. the sink's publish confirms); the metrics module turns it
into a Prometheus histogram at scrape time. Observing costs a bisect and three additions.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Upper bounds in seconds, from a local broker's sub-millisecond confirm to a Queue API timeout.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class LatencyTally:
    """Counts per bucket (not cumulative), plus the sum, count and maximum of every observation."""

    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # last: above every bound
    total: float = 0.0
    count: int = 0
    maximum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1
        if seconds > self.maximum:
            self.maximum = seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or under it) pairs ending with ``+Inf``, as Prometheus wants them."""
        pairs, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return pairs

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0
