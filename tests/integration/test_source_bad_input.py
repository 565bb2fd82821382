"""The source on the real RabbitMQ and Kafka, fed the nastiest bodies: it keeps running and accounts for each."""

from __future__ import annotations

import orjson
import pytest

from streams.shared import records
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics
from tests.integration.test_source import (
    REVISION,
    primary_key,
    publish,
    queue_depth,
    read_topic,
    running_source,
    task_body,
)

pytestmark = pytest.mark.integration


async def test_nasty_bodies_become_rejected_records_and_good_ones_still_flow(make_settings) -> None:
    settings: Settings = make_settings(TC_TREEHERDER_MAX_BODY_BYTES="200000")
    await ensure_topics(settings)
    route = [f"route.tc-treeherder.v2.try.{REVISION}"]
    nasty = {
        "NOTUTF8aaaaaaaaaaaaaaa": b"\xff\xfe\x00{\"status\"",
        "SURROGATEaaaaaaaaaaaaa": b'{"status": {"taskId": "SURROGATEaaaaaaaaaaaaa", "x": "\\ud800"}}',
        "DEEPaaaaaaaaaaaaaaaaaa": b"[" * 5000 + b"]" * 5000,
        "HUGEaaaaaaaaaaaaaaaaaa": orjson.dumps({**task_body("HUGEaaaaaaaaaaaaaaaaaa"), "pad": "x" * 1_048_576}),
        "EMPTYaaaaaaaaaaaaaaaaa": b"",
        "NOTOBJECTaaaaaaaaaaaaa": b"[1, 2, 3]",
    }
    good = [f"G{i:03d}aaaaaaaaaaaaaaaaaaa"[:22] for i in range(5)]
    messages = [("pending", primary_key(task_id), body, route) for task_id, body in nasty.items()]
    messages += [("pending", primary_key(task_id), orjson.dumps(task_body(task_id)), route) for task_id in good]

    async with running_source(settings) as source:
        await publish(settings, messages)
        events = await read_topic(settings, settings.topic("task-events"), count=len(good))
        rejected = await read_topic(settings, settings.topic("rejected"), count=len(nasty))
        assert (await queue_depth(settings))[0] == 0, "every message acknowledged once Kafka had its record"
        assert source.counts.received == len(messages)

    assert sorted(key.decode() for key, _ in events) == sorted(good)
    by_task = {key.decode(): records.decode_rejected_record(orjson.dumps(value)) for key, value in rejected}
    assert sorted(by_task) == sorted(nasty)
    for task_id, record in by_task.items():
        assert record.stage == "source" and record.reason, task_id
        assert record.envelope["bodySize"] == len(nasty[task_id])
    assert by_task["HUGEaaaaaaaaaaaaaaaaaa"].reason.endswith("over the limit of 200000")
    assert by_task["HUGEaaaaaaaaaaaaaaaaaa"].envelope["bodyTruncated"] is True
    assert by_task["NOTUTF8aaaaaaaaaaaaaaa"].envelope["bodyEncoding"] == "base64"
    assert by_task["SURROGATEaaaaaaaaaaaaa"].reason.startswith("message body is not JSON")
    assert by_task["NOTOBJECTaaaaaaaaaaaaa"].reason == "message body is not a JSON object"
