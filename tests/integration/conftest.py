"""Fixtures for tests against the real Kafka and RabbitMQ.

``brokers`` starts a test Kafka (port 19092, its own data folder, so a running demo on 9092 is untouched) and
the machine's RabbitMQ when they are absent, and stops at the end of the session only what it started (and
only when no other test session still uses them). Set ``TC_TREEHERDER_TEST_KAFKA_BOOTSTRAP`` and/or
``TC_TREEHERDER_TEST_PULSE_URL`` to run against brokers of your own instead.

Every test gets its own ``namespace``: topics, consumer groups, queues and exchanges are named under it, so
tests never see each other's data even on shared brokers.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.harness import terminate
from devtools.stack import StackError
from devtools.stack.shared import Brokers, shared_brokers
from streams.shared.settings import Settings, load_settings


def _test_state_dir() -> Path:
    """Outside the work tree and apart from the demo's state: ~/.local/state/tc-treeherder/test-brokers."""
    return load_settings(env={}).state_dir / "test-brokers"


@pytest.fixture(scope="session")
def brokers() -> Iterator[Brokers]:
    try:
        with shared_brokers(
            _test_state_dir(),
            kafka_bootstrap=os.environ.get("TC_TREEHERDER_TEST_KAFKA_BOOTSTRAP") or None,
            pulse_url=os.environ.get("TC_TREEHERDER_TEST_PULSE_URL") or None,
        ) as running:
            yield running
    except StackError as error:
        pytest.fail(f"the test brokers could not be started: {error}", pytrace=False)


@pytest.fixture
def namespace() -> str:
    """A fresh name prefix per test, valid for TC_TREEHERDER_NAMESPACE, e.g. ``t1a2b3c4d``."""
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def test_env(brokers: Brokers, namespace: str, tmp_path: Path) -> dict[str, str]:
    """The environment for code or CLI subprocesses under test: the test brokers, this test's namespace.

    Other TC_TREEHERDER_* variables of the caller's shell are left out so a developer's own settings cannot
    leak into a test.
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("TC_TREEHERDER_") or key.startswith("TC_TREEHERDER_TEST_")}
    env.update({
        "TC_TREEHERDER_KAFKA_BOOTSTRAP": brokers.kafka_bootstrap,
        "TC_TREEHERDER_PULSE_URL": brokers.pulse_url,
        "TC_TREEHERDER_NAMESPACE": namespace,
        "TC_TREEHERDER_TASK_EXCHANGE_PREFIX": f"exchange/{namespace}/taskcluster-queue/v1/",
        "TC_TREEHERDER_STORE": "memory://",
        "TC_TREEHERDER_STATE_DIR": str(tmp_path / "state"),
        "TC_TREEHERDER_WEB_PORT": "0",
        "TC_TREEHERDER_PARTITIONS": "2",
    })
    return env


@pytest.fixture
def settings(test_env: dict[str, str]) -> Settings:
    return load_settings(env=test_env)


@pytest.fixture
def make_settings(test_env: dict[str, str]) -> Callable[..., Settings]:
    """``make_settings(TC_TREEHERDER_PARTITIONS="4", ...)``: settings from test_env with some variables changed."""

    def build(**env_overrides: str) -> Settings:
        return load_settings(env={**test_env, **env_overrides})

    return build


@pytest.fixture
def worker_process(test_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start and stop ``tc-treeherder worker`` processes; all are stopped at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**env_overrides: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([sys.executable, "-m", "tc_treeherder.cli", "worker"],
                                   env={**test_env, **env_overrides}, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        terminate(process)
