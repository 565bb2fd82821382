"""The worker's status page in a real headless browser (Debian's chromium), on a worker fed real events.

The browser is installed with apt-get on first use when the tests run as root (as CI does on a fresh
machine); otherwise the test is skipped, saying how to install it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.factories import make_artifacts, make_config, make_envelope, make_event, make_task
from devtools.harness import terminate
from devtools.queue_standin import QueueStandIn
from devtools.stack.process import file_lock
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics
from tests.integration.test_worker import produce

GOOD = ["JXCKWMboSA67pGalSfg3og", "ZShxu3oeTb6vA3genPZZ3g", "B3EheQ-IQ5aPzw34KS_a6g"]
BAD = "fQ3mh2ctQmeq2nOXDB2Hfw"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1360,1500"]


def _install_chromium() -> str | None:
    """chromium's path, installing Debian's package once when this user may (root with apt-get)."""
    found = shutil.which("chromium")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    with file_lock(Path(tempfile.gettempdir()) / "tc-treeherder-chromium.lock"):
        if shutil.which("chromium"):
            return shutil.which("chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], env=env,
                       capture_output=True, timeout=1200, check=False)
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _install_chromium()
    if path is None:
        pytest.skip("chromium is not installed and this user cannot install it: "
                    "`sudo apt-get install -y chromium` (Debian) enables this test")
    return path


def browse(chromium: str, url: str, *options: str) -> str:
    """Load ``url`` in a fresh headless profile and return chromium's stdout (e.g. the DOM)."""
    with tempfile.TemporaryDirectory(prefix="tc-treeherder-chromium-") as profile:
        result = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=4000",
                                 *options, url], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def standin() -> AsyncIterator[QueueStandIn]:
    async with QueueStandIn() as server:
        for task_id in GOOD:
            server.add_task(task_id, make_task())
            server.add_artifacts(task_id, 0, make_artifacts("public/logs/live_backing.log"))
        server.add_task(BAD, make_task(treeherder=make_config(tier=4)))
        yield server


@pytest.fixture
def worker(test_env: dict[str, str], standin: QueueStandIn, tmp_path: Path) -> Iterator[str]:
    """A real ``tc-treeherder worker`` with its web server on a free port; yields its base URL."""
    port = free_port()
    env = {**test_env, "TC_TREEHERDER_WEB_PORT": str(port), "TASKCLUSTER_ROOT_URL": standin.root_url}
    with open(tmp_path / "worker.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tc_treeherder.cli", "worker"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            terminate(process)


async def wait_for_status(url: str, done: Any, wait: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    last: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/status.json") as response:
                    last = await response.json()
                if done(last):
                    return last
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)
    raise AssertionError(f"status never reached the expected state; last: {last}")


async def test_status_page_renders_live_counts_lag_and_rejections(settings: Settings, standin: QueueStandIn,
                                                                  worker: str, chromium: str,
                                                                  tmp_path: Path) -> None:
    await ensure_topics(settings)
    events = [(task_id, make_envelope(make_event(kind, task_id=task_id), root_url=standin.root_url))
              for task_id in GOOD for kind in ("pending", "running", "completed")]
    events.append((BAD, make_envelope(make_event("pending", task_id=BAD), root_url=standin.root_url)))
    await produce(settings, events)

    status = await wait_for_status(worker, lambda s: s.get("counts", {}).get("events") == 10
                                   and len(s.get("throughput", [])) >= 2 and s.get("recentRejections"))
    assert status["counts"]["jobs"] == {"tc-treeherder": 9}
    assert status["counts"]["rejected"] == {"extra.treeherder.tier": 1}
    worker_group = next(g for g in status["lag"]["groups"] if g["label"] == "worker")
    assert worker_group["members"] == 1

    dom = await asyncio.to_thread(browse, chromium, f"{worker}/status", "--dump-dom")
    assert '<div class="label">events in</div><div class="value">10</div>' in dom
    assert '<div class="label">jobs out</div><div class="value">9</div>' in dom
    assert "completed/success<b>3</b>" in dom
    assert "extra.treeherder.tier: 4 is greater than the maximum of 3" in dom
    assert f'href="/explain?taskId={BAD}"' in dom
    assert "<polyline" in dom  # the throughput chart has its lines
    assert "consumer lag" in dom and "sink tc-treeherder" in dom

    screenshot = tmp_path / "status.png"
    await asyncio.to_thread(browse, chromium, f"{worker}/status", f"--screenshot={screenshot}")
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"status page screenshot: {screenshot}")

    explained = await asyncio.to_thread(browse, chromium, f"{worker}/explain?taskId={BAD}", "--dump-dom")
    assert "does not" in explained and "extra.treeherder.tier: 4 is greater than the maximum of 3" in explained

    async with aiohttp.ClientSession() as session, session.get(f"{worker}/metrics") as response:
        metrics = await response.text()
    assert "tc_treeherder_events_total 10.0" in metrics
    assert 'tc_treeherder_jobs_total{destination="tc-treeherder"} 9.0' in metrics
