"""The project's JSON schemas, read once from the ``schemas/`` folder.

In a checkout the folder sits next to the packages; an installed wheel carries it inside the
``streams`` package (``streams/schemas``), beside the core that reads it.
Reading happens on first use and is cached, so the transform itself never touches the disk.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_STREAMS = Path(__file__).resolve().parents[1]
_CANDIDATES = (_STREAMS.parent / "schemas", _STREAMS / "schemas")


class SchemaNotFound(RuntimeError):
    """The schemas folder is missing from the checkout or the installation: a packaging fault, not bad input."""


def schema_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "pulse-job.json").is_file():
            return candidate
    raise SchemaNotFound(f"no schemas folder with pulse-job.json in {[str(c) for c in _CANDIDATES]}")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema in ``schemas/<name>.json``, parsed once per process."""
    with open(schema_dir() / f"{name}.json", encoding="utf-8") as handle:
        return json.load(handle)


def event_body_schema(kind: str) -> dict[str, Any]:
    """A stand-alone schema for the body of the ``task-<kind>`` exchange, built from task-event.json."""
    document = load_schema("task-event")
    return {
        "$schema": document["$schema"],
        "definitions": document["definitions"],
        "$ref": f"#/definitions/task-{kind}",
    }


def envelope_with_body_schema(kind: str) -> dict[str, Any]:
    """The envelope schema with its payload held to the ``task-<kind>`` body: both checks in one validator call.

    Valid under this schema means valid under ``envelope.json`` and under ``event_body_schema(kind)``. The body
    schema sits inside ``payload`` rather than beside the envelope in an ``allOf``, which validates faster.
    """
    document = load_schema("task-event")
    envelope = load_schema("envelope")
    payload = {**envelope["properties"]["payload"], "allOf": [{"$ref": f"#/definitions/task-{kind}"}]}
    return {
        **envelope,
        "$schema": document["$schema"],
        "definitions": {**envelope.get("definitions", {}), **document["definitions"]},
        "properties": {**envelope["properties"], "payload": payload},
    }
