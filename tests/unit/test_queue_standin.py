"""The Queue API stand-in over HTTP: the Queue's URLs and error shapes, and the admin API other processes use."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from devtools.queue_standin import QueueStandIn

TASK_ID = "Xq1Y3b8kQ9eXbX0y7b9xzg"


@pytest.fixture
async def standin():
    server = QueueStandIn(page_size=3)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http, url):
    async with http.get(url) as response:
        return response.status, await response.json()


async def send(http, method, url, body):
    async with http.request(method, url, data=json.dumps(body)) as response:
        text = await response.text()
        return response.status, (json.loads(text) if response.content_type == "application/json" else text)


async def test_binds_to_loopback_by_default(standin):
    assert standin.root_url.startswith("http://127.0.0.1:")


async def test_unknown_task_gets_taskclusters_404_body(standin, http):
    status, body = await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}")
    assert status == 404
    assert body["code"] == "ResourceNotFound"
    assert TASK_ID in body["message"]
    assert body["requestInfo"]["method"] == "task"
    assert body["requestInfo"]["params"] == {"taskId": TASK_ID}


async def test_tasks_and_artifacts_added_over_the_admin_api_are_served(standin, http):
    status, _ = await send(http, "PUT", f"{standin.root_url}/__standin/tasks/{TASK_ID}", {"routes": ["a"]})
    assert status == 200
    artifacts = [{"name": f"public/{i}"} for i in range(7)]
    status, _ = await send(http, "PUT", f"{standin.root_url}/__standin/artifacts/{TASK_ID}/1", artifacts)
    assert status == 200

    assert await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}") == (200, {"routes": ["a"]})
    pages, token = [], None
    while True:
        url = f"{standin.root_url}/api/queue/v1/task/{TASK_ID}/runs/1/artifacts"
        status, page = await get(http, url + (f"?continuationToken={token}" if token else ""))
        assert status == 200
        pages.append([item["name"] for item in page["artifacts"]])
        token = page.get("continuationToken")
        if not token:
            break
    assert pages == [["public/0", "public/1", "public/2"], ["public/3", "public/4", "public/5"], ["public/6"]]


async def test_limit_narrows_a_page_and_a_forged_token_is_refused(standin, http):
    standin.add_task(TASK_ID, {})
    standin.add_artifacts(TASK_ID, 0, [{"name": str(i)} for i in range(5)])
    base = f"{standin.root_url}/api/queue/v1/task/{TASK_ID}/runs/0/artifacts"
    status, page = await get(http, base + "?limit=1")
    assert (status, len(page["artifacts"])) == (200, 1)
    status, body = await get(http, base + "?continuationToken=not-a-token")
    assert status == 400 and body["code"] == "InvalidRequestArguments"


async def test_bulk_loading_and_bad_admin_bodies(standin, http):
    status, body = await send(http, "POST", f"{standin.root_url}/__standin/tasks", {TASK_ID: {}, "other": {}})
    assert (status, body) == (200, {"added": 2})
    status, body = await send(http, "POST", f"{standin.root_url}/__standin/artifacts", {TASK_ID: {"0": [{}]}})
    assert (status, body) == (200, {"added": 1})
    status, _ = await send(http, "PUT", f"{standin.root_url}/__standin/tasks/x", ["not", "an", "object"])
    assert status == 400
    status, _ = await send(http, "PUT", f"{standin.root_url}/__standin/artifacts/x/zero", [])
    assert status == 400


async def test_stats_count_per_endpoint_and_per_task_and_can_be_reset(standin, http):
    standin.add_task(TASK_ID, {})
    await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}")
    await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}")
    await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}/runs/0/artifacts")
    await get(http, f"{standin.root_url}/api/queue/v1/task/other")
    status, stats = await get(http, f"{standin.root_url}/__standin/stats")
    assert status == 200
    assert stats["requests"] == {"task": 3, "artifacts": 1}
    assert stats["tasks"] == {TASK_ID: {"task": 2, "artifacts": 1}, "other": {"task": 1}}
    async with http.delete(f"{standin.root_url}/__standin/stats") as response:
        assert (await response.json())["requests"] == {"task": 0, "artifacts": 0}


async def test_status_faults_are_served_count_times_then_cleared(standin, http):
    standin.add_task(TASK_ID, {})
    url = f"{standin.root_url}/api/queue/v1/task/{TASK_ID}"
    status, body = await send(http, "POST", f"{standin.root_url}/__standin/faults", {"status": 500, "count": 2})
    assert (status, body) == (200, {"faults_pending": 1})
    statuses = [(await get(http, url))[0] for _ in range(3)]
    assert statuses == [500, 500, 200]

    await send(http, "POST", f"{standin.root_url}/__standin/faults", {"status": 502})  # until cleared
    assert (await get(http, url))[0] == 502
    await send(http, "POST", f"{standin.root_url}/__standin/faults", {"clear": True})
    assert (await get(http, url))[0] == 200
    assert standin.stats["faults_served"] == 3


async def test_faults_can_target_one_endpoint_or_task(standin, http):
    standin.add_task(TASK_ID, {})
    standin.add_task("other", {})
    await send(http, "POST", f"{standin.root_url}/__standin/faults", {"status": 503, "taskId": "other"})
    await send(http, "POST", f"{standin.root_url}/__standin/faults", {"status": 500, "endpoint": "artifacts"})
    assert (await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}"))[0] == 200
    assert (await get(http, f"{standin.root_url}/api/queue/v1/task/other"))[0] == 503
    assert (await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}/runs/0/artifacts"))[0] == 500


async def test_delay_faults_hold_the_answer(standin, http):
    standin.add_task(TASK_ID, {})
    await send(http, "POST", f"{standin.root_url}/__standin/faults", {"delay": 0.3, "count": 1})
    started = time.monotonic()
    assert (await get(http, f"{standin.root_url}/api/queue/v1/task/{TASK_ID}"))[0] == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("fault", [{"status": 200}, {"count": 2}, {"status": 500, "count": 0}, {"nope": 1}, []])
async def test_malformed_faults_are_refused(standin, http, fault):
    status, text = await send(http, "POST", f"{standin.root_url}/__standin/faults", fault)
    assert status == 400 and text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_the_command_serves_files_until_interrupted(tmp_path, http):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({TASK_ID: {"routes": ["r"]}}))
    artifacts = tmp_path / "artifacts.json"
    artifacts.write_text(json.dumps({TASK_ID: {"0": [{"name": "a"}, {"name": "b"}]}}))
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tc_treeherder.cli", "queue-standin", "--port", str(port), "--tasks", str(tasks),
        "--artifacts", str(artifacts), "--page-size", "1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        banner = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert f"http://127.0.0.1:{port}" in banner
        root = f"http://127.0.0.1:{port}"
        assert await get(http, f"{root}/api/queue/v1/task/{TASK_ID}") == (200, {"routes": ["r"]})
        status, page = await get(http, f"{root}/api/queue/v1/task/{TASK_ID}/runs/0/artifacts")
        assert status == 200
        assert page["artifacts"] == [{"name": "a"}] and page["continuationToken"]
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    out = banner + out.decode()
    assert "served 1 task and 1 listing requests" in out


def test_the_command_refuses_a_missing_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tc_treeherder.cli", "queue-standin", "--tasks", str(tmp_path / "none.json")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "cannot read" in result.stderr
