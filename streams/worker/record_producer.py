"""The worker's records to Kafka as whole record batches, through the Faust app's own producer.

The worker sends two to four records per event (jobs, guard entries, progress marks); with one ``send`` each,
py-spy put a fifth of its samples in aiokafka's produce path (``streams.shared.record_batches``). The records
still go through the producer Faust owns, the one it flushes before committing offsets and stops last, so
nothing about delivery changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust

from streams.shared.record_batches import RecordBatches, SubmittedBatch
from streams.worker.tables import Outgoing


class RecordProducer:
    """Hands a list of records to Kafka in record batches; both of the worker's stages send through one."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._batches: RecordBatches[Outgoing] | None = None

    async def send(self, records: Sequence[Outgoing]) -> list[SubmittedBatch[Outgoing]]:
        """Submit ``records``, each to its partition in the order given; the batches' deliveries are returned."""
        producer = self._app.producer._ensure_producer()  # aiokafka's producer under Faust's (a private name)
        if self._batches is None or self._batches.producer is not producer:
            self._batches = RecordBatches(producer)
        batches = self._batches
        await batches.learn({record.topic for record in records if record.partition is None})
        # No await from the first add to the start of submit, which takes the open batches at once: the other
        # stage's records, added between its own awaits, never end up in this call's batches.
        for record in records:
            batches.add(record.topic, record.key, record.value, record, record.partition)
        return await batches.submit()
