"""inspect against the real RabbitMQ: a temporary queue on the jobs exchange, filters, clean exits."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aio_pika
import pytest

from streams.shared.settings import Settings
from tests.unit.test_inspect import job

COMMAND = [sys.executable, "-m", "tc_treeherder.cli", "inspect"]


async def start(test_env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*COMMAND, *args, env=test_env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def watching(process: asyncio.subprocess.Process) -> str:
    """Wait for the line saying the queue is bound (printed before anything is consumed)."""
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
    assert line.startswith("# watching"), line
    return line


@pytest.fixture
async def jobs_exchange(settings: Settings) -> aio_pika.abc.AbstractExchange:
    connection = await aio_pika.connect(settings.pulse_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(settings.destinations[0].exchange, aio_pika.ExchangeType.TOPIC,
                                              durable=True)
    yield exchange
    await exchange.delete()
    await connection.close()


async def publish(exchange: aio_pika.abc.AbstractExchange, body: dict, project: str) -> None:
    await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json"),
                           routing_key=f"tc-treeherder.{project}._")


async def test_prints_only_the_matching_jobs_then_stops_at_count(test_env: dict[str, str], settings: Settings,
                                                                 jobs_exchange: aio_pika.abc.AbstractExchange) -> None:
    process = await start(test_env, "--json", "--project", "autoland", "--result", "fail", "--count", "2",
                          "--timeout", "60")
    line = await watching(process)
    assert settings.destinations[0].exchange in line and "guest:guest" not in line  # no password printed
    await publish(jobs_exchange, job("autoland", result="success"), "autoland")
    await publish(jobs_exchange, job("mozilla-central", result="fail"), "mozilla-central")
    await publish(jobs_exchange, job("autoland", result="fail"), "autoland")
    await publish(jobs_exchange, job("autoland", state="running", result="unknown"), "autoland")
    await publish(jobs_exchange, job("autoland", result="fail"), "autoland")
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    printed = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [(m["project"], m["state"], m["result"], m["routingKey"]) for m in printed] == \
        [("autoland", "completed", "fail", "tc-treeherder.autoland._")] * 2
    assert printed[0]["body"]["origin"]["project"] == "autoland"


async def test_pattern_narrows_the_binding(test_env: dict[str, str],
                                           jobs_exchange: aio_pika.abc.AbstractExchange) -> None:
    process = await start(test_env, "--json", "--pattern", "tc-treeherder.try.#", "--count", "1", "--timeout", "60")
    await watching(process)
    await publish(jobs_exchange, job("autoland"), "autoland")
    await publish(jobs_exchange, job("try"), "try")
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert [json.loads(line)["project"] for line in stdout.decode().splitlines()] == ["try"]


async def test_ctrl_c_exits_zero_and_count_not_reached_exits_one(
        test_env: dict[str, str], jobs_exchange: aio_pika.abc.AbstractExchange) -> None:
    process = await start(test_env)
    await watching(process)
    process.send_signal(signal.SIGINT)
    await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0

    process = await start(test_env, "--count", "1", "--timeout", "1")
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert b"0 of 1 messages within 1s" in stderr


async def test_a_missing_exchange_is_named(test_env: dict[str, str]) -> None:
    process = await start(test_env, "--exchange", "exchange/nobody/v1/nothing", "--timeout", "5")
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert b"exchange exchange/nobody/v1/nothing does not exist" in stderr
