"""The Pulse connectors: ``PulseSource`` (task exchanges to Kafka) and ``PulseSink`` (Kafka to jobs exchanges),
on a shared lifecycle (``base``)."""
