"""QueueClient against the Queue API stand-in: answers, paging, retries, timeouts and what each failure becomes."""

from __future__ import annotations

import socket
import time

import pytest

from devtools.queue_standin import Fault, QueueStandIn
from streams.taskcluster.queue_client import (
    QueueClient,
    QueueRefused,
    QueueUnavailable,
    TaskNotFound,
    UnusableAnswer,
)

TASK_ID = "fUAV5m0qQ4K9Gl8RIVYpVw"
DEFINITION = {"metadata": {"name": "build-linux64/opt"}, "routes": ["tc-treeherder.v2.try.abc.1"]}


def artifact(name: str) -> dict:
    return {"storageType": "s3", "name": name, "expires": "2030-01-01T00:00:00.000Z", "contentType": "text/plain"}


@pytest.fixture
async def standin():
    server = QueueStandIn(page_size=2)
    server.add_task(TASK_ID, DEFINITION)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client():
    queue = QueueClient(timeout=1.0, retries=2, backoff=0.01, backoff_max=0.05)
    yield queue
    await queue.close()


async def test_task_returns_the_definition(standin, client):
    assert await client.task(standin.root_url, TASK_ID) == DEFINITION
    assert client.stats.calls["task"] == 1
    assert client.stats.requests == 1
    assert standin.stats["tasks"][TASK_ID] == {"task": 1}


async def test_unknown_task_is_task_not_found_without_retrying(standin, client):
    with pytest.raises(TaskNotFound) as caught:
        await client.task(standin.root_url, "AAAAAAAAAAAAAAAAAAAAAA")
    assert caught.value.task_id == "AAAAAAAAAAAAAAAAAAAAAA"
    assert "404" in str(caught.value)
    assert standin.stats["requests"]["task"] == 1


async def test_listing_follows_every_continuation_token(standin, client):
    names = [f"public/file-{i}.txt" for i in range(7)]
    standin.add_artifacts(TASK_ID, 0, [artifact(name) for name in names])
    listing = await client.list_artifacts(standin.root_url, TASK_ID, 0)
    assert [item["name"] for item in listing] == names
    assert standin.stats["requests"]["artifacts"] == 4  # pages of 2, 2, 2, 1


async def test_listing_of_a_run_without_artifacts_is_empty(standin, client):
    assert await client.list_artifacts(standin.root_url, TASK_ID, 3) == []


async def test_server_errors_are_retried_until_an_answer(standin, client):
    standin.add_fault(Fault(status=500, remaining=2))
    assert await client.task(standin.root_url, TASK_ID) == DEFINITION
    assert standin.stats["requests"]["task"] == 3
    assert client.stats.retries == 2


async def test_a_failing_page_is_retried_alone(standin, client):
    standin.add_artifacts(TASK_ID, 0, [artifact(f"public/{i}") for i in range(5)])
    standin.add_fault(Fault(status=503, remaining=1, endpoint="artifacts"))
    assert len(await client.list_artifacts(standin.root_url, TASK_ID, 0)) == 5
    assert standin.stats["requests"]["artifacts"] == 4  # 3 pages + 1 retry, not a restart from page one


async def test_exhausted_retries_raise_queue_unavailable_in_bounded_time(standin, client):
    standin.add_fault(Fault(status=500))
    started = time.monotonic()
    with pytest.raises(QueueUnavailable) as caught:
        await client.task(standin.root_url, TASK_ID)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "task(" in message and TASK_ID in message
    assert "3 time(s)" in message and "HTTP 500" in message
    assert caught.value.attempts == 3
    assert standin.stats["requests"]["task"] == 3
    assert elapsed <= client.max_request_seconds


async def test_a_slow_answer_hits_the_timeout_and_is_retried(standin):
    queue = QueueClient(timeout=0.2, retries=1, backoff=0.01)
    standin.add_fault(Fault(delay=1.0, remaining=1))
    try:
        assert await queue.task(standin.root_url, TASK_ID) == DEFINITION
        assert queue.stats.retries == 1
    finally:
        await queue.close()


async def test_a_queue_that_never_answers_in_time_is_unavailable(standin):
    queue = QueueClient(timeout=0.2, retries=1, backoff=0.01)
    standin.add_fault(Fault(delay=1.0))
    started = time.monotonic()
    try:
        with pytest.raises(QueueUnavailable, match=r"no answer within 0\.2s"):
            await queue.task(standin.root_url, TASK_ID)
    finally:
        await queue.close()
    assert time.monotonic() - started < 1.0  # both attempts cut at 0.2s, not left to the 1s delay


async def test_connection_refused_is_unavailable():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    queue = QueueClient(timeout=1.0, retries=1, backoff=0.01)
    try:
        with pytest.raises(QueueUnavailable, match="connection failed") as caught:
            await queue.task(f"http://127.0.0.1:{port}", TASK_ID)
    finally:
        await queue.close()
    assert caught.value.attempts == 2


async def test_other_client_errors_are_refused_at_once(standin, client):
    standin.add_fault(Fault(status=403, remaining=1))
    with pytest.raises(QueueRefused) as caught:
        await client.task(standin.root_url, TASK_ID)
    assert caught.value.status == 403
    assert "403 fault injected by the Queue stand-in (403)" in str(caught.value)  # the answer's own message
    assert standin.stats["requests"]["task"] == 1


@pytest.mark.parametrize(("body", "error", "says"), [
    (b'{"metadata": {"name": "caf\xe9"}}', UnusableAnswer, "not UTF-8 text"),
    (b"[" * 3000 + b"]" * 3000, UnusableAnswer, "nested too deeply to read"),
    (b'{"metadata": {"name": "build \\ud800"}}', UnusableAnswer, "task.metadata.name"),
    (b"<html>Service Unavailable</html>", QueueUnavailable, "not the expected JSON"),
    (b'["a definition is an object"]', QueueUnavailable, "not the expected JSON"),
])
async def test_an_answer_that_cannot_be_used_says_why_without_retrying(standin, client, body, error, says):
    standin.add_task_body(TASK_ID, body)
    with pytest.raises(error, match=says):
        await client.task(standin.root_url, TASK_ID)
    assert standin.stats["requests"]["task"] == 1


async def test_one_taskcluster_client_per_root_url(standin, client):
    await client.task(standin.root_url, TASK_ID)
    await client.task(standin.root_url, TASK_ID)
    assert len(client._queues) == 1


def test_retry_budget_is_bounded():
    queue = QueueClient(timeout=10.0, retries=5, backoff=0.25, backoff_max=5.0)
    # 6 attempts of at most 10s plus backoffs of at most 0.25+0.5+1+2+4 seconds
    assert queue.max_request_seconds == pytest.approx(60 + 7.75)
