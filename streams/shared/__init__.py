"""The shared ground: what every process agrees on and nothing more.

Settings (``settings``), the wire records on each topic (``records``), topic names and their creation
(``topics``), Kafka client configuration (``kafka_config``), redaction of secrets (``redact``), and small
helpers every process uses (``tally``, ``gc_pause``). Imports only the pure core below it.
"""
