"""A replay pauses the cycle collector and freezes its tables while it runs; the process gets both back."""

from __future__ import annotations

import gc
import io

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from devtools.factories import make_envelope, make_event
from streams.replay.plan import select
from streams.replay.runner import Replay, ReplayOptions
from streams.shared.settings import Settings
from streams.shared.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_the_collector_is_back_as_it_was_after_a_replay(settings: Settings) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        envelope = make_envelope(make_event("pending", task_id="fN1SbArXTPSVFNUvaOlinQ"))
        await producer.send_and_wait(settings.topic("task-events"), orjson.dumps(envelope),
                                     key=b"fN1SbArXTPSVFNUvaOlinQ")
    finally:
        await producer.stop()
    options = ReplayOptions(selection=select(settings), from_offsets=dict.fromkeys(range(settings.partitions), 0),
                            use_queue=False, dry_run=True)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    result = await Replay(settings, options, progress=io.StringIO()).run()
    assert result.report.events == 1
    assert sum(result.report.rejected.values()) == 1  # no worker ran: no definition, and --no-queue
    assert gc.isenabled(), "the replay left automatic collection off"
    assert gc.get_freeze_count() == 0, "the replay left objects frozen"
