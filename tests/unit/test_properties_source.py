"""Bad input, property-based, at the source connector's edge: an AMQP body becomes an envelope or a reason.

``convert_body`` is what ``PulseSource`` does with each message. Whatever the body (bytes that are not UTF-8,
not JSON, JSON that is not an object, lone-surrogate escapes, deep nesting, over the size limit) and whatever
the CC header holds, it returns one record: an envelope on task-events that the worker can read, or a
rejected record with a reason that fits in Kafka.
"""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from connectors.pulse_source import convert_body
from devtools.factories import make_event
from streams.shared import records
from streams.shared.settings import Settings
from streams.shared.topics import TopicNames, max_record_bytes
from tests.conftest import PROPERTY_CASES
from tests.unit.test_properties_core import bodies, broken

SETTINGS = Settings(max_body_bytes=64 * 1024)
TOPICS = TopicNames.from_settings(SETTINGS)

raw_bodies = st.one_of(
    bodies().map(orjson.dumps),
    bodies().flatmap(broken).map(lambda value: orjson.dumps(value) if _encodable(value) else b"{\"x\": \"\\ud800\"}"),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda text: text.encode("utf-16")),
    st.sampled_from([b"", b"null", b"[]", b'"text"', b'{"status": {"taskId": "\\ud800"}}', b"\xff" * 10,
                     b"[" * 2000 + b"]" * 2000, b'{"status": ' * 600 + b"{}" + b"}" * 600]),
    st.integers(SETTINGS.max_body_bytes - 2, SETTINGS.max_body_bytes + 2).map(
        lambda n: orjson.dumps({**make_event("pending"), "pad": ""})[:-1] + b"," + b'"p":"' + b"x" * n + b'"}'),
)
headers = st.one_of(st.none(), st.fixed_dictionaries({}, optional={"CC": st.one_of(
    st.lists(st.one_of(st.text(max_size=30), st.binary(max_size=30), st.integers()), max_size=4),
    st.text(max_size=30), st.binary(max_size=30), st.integers(), st.none(), st.dictionaries(st.text(), st.text()))}))


def _encodable(value: object) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


@given(body=raw_bodies, header=headers, routing_key=st.text(max_size=80), message_id=st.none() | st.text(max_size=40))
def test_every_body_becomes_an_envelope_or_a_reason(body, header, routing_key, message_id):
    PROPERTY_CASES["source: AMQP bodies"] += 1
    conversion = convert_body(body, exchange="exchange/taskcluster-queue/v1/task-pending", routing_key=routing_key,
                              headers=header, message_id=message_id, settings=SETTINGS, topics=TOPICS)
    assert len(conversion.value) <= max_record_bytes(SETTINGS)
    if conversion.topic == TOPICS.task_events:
        envelope = records.decode_envelope(conversion.value)  # what the worker reads back
        assert envelope.task_id and conversion.key == envelope.task_id.encode()
        assert len(body) <= SETTINGS.max_body_bytes
    else:
        assert conversion.topic == TOPICS.rejected and conversion.rejection
        rejected = records.decode_rejected_record(conversion.value)
        assert rejected.stage == "source" and rejected.reason.strip()
        assert rejected.envelope["bodySize"] == len(body)
