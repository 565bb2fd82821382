"""The least any Faust agent does between the task-events topic and an output topic: the worker's ceiling.

A Faust app with the worker's broker settings and one agent that reads the events in batches
(``take_events``), produces one small record per event (its source partition and offset, so the benchmark's
output watch can follow it) and waits for Kafka's confirms before the batch is acknowledged. No tables, no
transform. Whatever separates this from the raw aiokafka loop is Faust's per-record path, which every agent
pays; whatever separates the worker from this is the worker's own work.

    python -m benchmarks.faust_floor        (settings from the TC_TREEHERDER_* environment, as the worker)
"""

from __future__ import annotations

import asyncio
import sys

import faust
import orjson

from streams.shared.settings import load_settings

OUTPUT = "bench-floor-out"  # base name of the output topic, namespaced like the others


def create_app() -> faust.App:
    settings = load_settings()
    app = faust.App(f"{settings.app_id}-floor", broker=[f"kafka://{s}" for s in settings.kafka_bootstrap.split(",")],
                    store="memory://", datadir=str(settings.data_dir / "floor"), topic_partitions=settings.partitions,
                    topic_disable_leader=True, producer_acks=-1, consumer_auto_offset_reset="earliest",
                    web_enabled=False)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(settings.topic("task-events"), partitions=settings.partitions, **raw)
    output = settings.topic(OUTPUT)

    @app.agent(events, name="floor", concurrency=1)
    async def floor(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(500, within=0.05):
            futures = [await app.producer.send(output, event.key, orjson.dumps(
                {"source": {"partition": event.message.partition, "offset": event.message.offset}}), None, None, None)
                for event in batch]
            await asyncio.gather(*futures)

    return app


def main() -> int:
    app = create_app()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = faust.Worker(app, loglevel="warning", loop=loop, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
