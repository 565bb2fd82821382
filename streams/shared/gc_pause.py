"""Pause Python's automatic cycle collection around work that only makes short-lived acyclic garbage.

Reference counting frees such garbage at once; the cycle collector would only walk the long-lived objects
again and again (the simulator's workloads, a replay's loaded tables). Collection resumes on the way out,
whatever happened, and only if it was on to begin with.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
