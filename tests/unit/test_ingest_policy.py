"""The Treeherder jobs ingester's retry policy (integrations/treeherder/tc_jobs_ingester/policy.py): pure, so it
is tested here with the project's Python; the rest of the ingester runs in Treeherder's and is tested by
tests/integration/test_treeherder.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

INGESTER = Path(__file__).resolve().parents[2] / "integrations" / "treeherder"
sys.path.insert(0, str(INGESTER))
from tc_jobs_ingester import policy  # noqa: E402

sys.path.remove(str(INGESTER))


def test_a_missing_push_is_retried_with_growing_delays_then_parked() -> None:
    rules = policy.RetryPolicy(delays=(1.0, 5.0, 30.0), park_after=60.0)
    first = rules.after_missing_push(None, now=1000.0)
    assert (first.action, first.attempts, first.delay, first.first_failed_at) == ("retry", 1, 1.0, 1000.0)
    headers = {policy.ATTEMPTS: 1, policy.FIRST_FAILED_AT: 1000.0}
    assert rules.after_missing_push(headers, now=1001.0).delay == 5.0
    headers = {policy.ATTEMPTS: 5, policy.FIRST_FAILED_AT: 1000.0}
    assert rules.after_missing_push(headers, now=1030.0).delay == 30.0  # the last delay repeats
    parked = rules.after_missing_push(headers, now=1060.0)
    assert (parked.action, parked.attempts, parked.first_failed_at) == ("park", 6, 1000.0)


def test_headers_of_another_kind_count_as_a_first_attempt() -> None:
    rules = policy.RetryPolicy(delays=(2.0,), park_after=10.0)
    step = rules.after_missing_push({policy.ATTEMPTS: "x", policy.FIRST_FAILED_AT: b"?"}, now=50.0)
    assert (step.action, step.attempts, step.first_failed_at) == ("retry", 1, 50.0)


def test_delays_are_parsed_and_named() -> None:
    assert policy.parse_delays("0.5, 1,30") == (0.5, 1.0, 30.0)
    for bad in ("", "0", "-1,2", "a"):
        with pytest.raises(ValueError):
            policy.parse_delays(bad)
    assert [policy.delay_label(d) for d in (0.5, 1.0, 30.0, 1.25)] == ["500ms", "1s", "30s", "1250ms"]


def test_the_ingester_stands_alone() -> None:
    """It runs inside Treeherder's environment, where tc-treeherder's packages are not installed."""
    ours = {"streams", "connectors", "tc_treeherder", "devtools", "benchmarks"}
    for module in (INGESTER / "tc_jobs_ingester").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not {name.split(".")[0] for name in names} & ours, f"{module.name} imports {names}"
