"""Replays: what a replay selects and reports, as pure code (``plan``), and the run against Kafka (``runner``)."""
