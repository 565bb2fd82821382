"""Test-suite wide hooks: everything under tests/integration/ is an integration test (real brokers)."""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


# Property-based tests (hypothesis): a modest default, ``--hypothesis-profile=thorough`` for a long run.
# Each property test counts the cases it ran in PROPERTY_CASES; the total is printed at the end of the session.
from collections import Counter  # noqa: E402

from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

PROPERTY_CASES: Counter[str] = Counter()
_SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large]
hypothesis_settings.register_profile("suite", max_examples=200, deadline=None, suppress_health_check=_SLOW_DATA)
hypothesis_settings.register_profile("thorough", max_examples=5000, deadline=None, suppress_health_check=_SLOW_DATA)
hypothesis_settings.load_profile("suite")  # pytest's --hypothesis-profile=NAME loads another after this


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if PROPERTY_CASES:
        terminalreporter.section("property-based cases")
        for name, count in sorted(PROPERTY_CASES.items()):
            terminalreporter.write_line(f"{count:8d}  {name}")
        terminalreporter.write_line(f"{sum(PROPERTY_CASES.values()):8d}  in all")
