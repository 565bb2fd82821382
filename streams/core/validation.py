"""Schema validation for the hot path, with Treeherder's own validator as the judge.

Treeherder checks job messages and ``extra.treeherder`` with python-jsonschema and no format checker, so its
patterns follow Python's ``re.search`` (``\\w`` is Unicode, ``$`` also matches before a final newline) and
``format`` is never asserted. jsonschema-rs is ~100 times faster but follows ECMA-262 regexes (``\\w`` is
ASCII, ``$`` is the very end), so on these schemas it accepts a subset of what Treeherder accepts.

Hence the split: jsonschema-rs (formats off) answers "valid" alone; whenever it says "invalid" (or cannot
read the value), python-jsonschema decides and writes the reason. The verdict is always Treeherder's, the
common case costs a few microseconds, and reasons name the field path. See docs/transform.md for figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import jsonschema
import jsonschema_rs
from jsonschema.exceptions import ValidationError, best_match

from streams.core.schemas import event_body_schema, load_schema

_MAX_MESSAGE = 300


class SchemaCheck:
    """One schema, checked fast and explained by the reference validator."""

    __slots__ = ("_fast", "_reference")

    def __init__(self, schema: dict[str, Any]) -> None:
        self._fast = jsonschema_rs.validator_for(schema, validate_formats=False)
        reference_cls = jsonschema.validators.validator_for(schema)
        reference_cls.check_schema(schema)
        self._reference = reference_cls(schema)  # no format_checker: formats are annotations, as in Treeherder

    def errors(self, instance: Any, where: str = "") -> str | None:
        """None when valid; else ``"<where>.<path>: <what is wrong>"``."""
        try:
            if self._fast.is_valid(instance):
                return None
        except ValueError:
            pass  # a value jsonschema-rs cannot read (lone surrogate, non-JSON type): let the reference judge
        return describe(self.reference_errors(instance), where)

    def reference_errors(self, instance: Any) -> ValidationError | None:
        """The reference verdict alone (tests compare it with the fast one)."""
        return best_match(self._reference.iter_errors(instance))

    def fast_is_valid(self, instance: Any) -> bool:
        return self._fast.is_valid(instance)


def describe(error: ValidationError | None, where: str = "") -> str | None:
    if error is None:
        return None
    path = field_path(error.absolute_path, where) or "(top level)"
    message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return f"{path}: {message}"


def field_path(parts: Iterable[str | int], where: str = "") -> str:
    """``payload`` + ``["status", "runs", 0, "state"]`` -> ``payload.status.runs[0].state``."""
    text = where
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@cache
def job_check() -> SchemaCheck:
    return SchemaCheck(load_schema("pulse-job"))


@cache
def config_check() -> SchemaCheck:
    return SchemaCheck(load_schema("task-treeherder-config"))


@cache
def envelope_check() -> SchemaCheck:
    return SchemaCheck(load_schema("envelope"))


@cache
def event_check(kind: str) -> SchemaCheck:
    return SchemaCheck(event_body_schema(kind))


def job_errors(job: Any) -> str | None:
    """Why ``job`` is not a valid pulse-job message (e.g. ``display.jobName: '' is too short``), or None."""
    return job_check().errors(job)


def config_errors(config: Any) -> str | None:
    """Why ``config`` is not a valid ``extra.treeherder``, the path starting at ``extra.treeherder``, or None."""
    return config_check().errors(config, "extra.treeherder")
