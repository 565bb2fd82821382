"""Dev tooling, outside the runtime: the local broker stack (``stack``), the simulator (``workload``,
``publisher``), the Queue API stand-in (``queue_standin``), the test and benchmark harness (``harness``),
test-data factories (``factories``) and the CLI's development commands (``commands``).

Tests and benchmarks import from here; nothing in ``streams``, ``connectors`` or ``tc_treeherder`` does, and
the wheel does not ship it (the import-linter contract in ``pyproject.toml`` holds both).
"""
