"""Schema validation for the hot path, with Treeherder's own validator as the judge.

Treeherder checks job messages and ``extra.treeherder`` with python-jsonschema and no format checker, so its
patterns follow Python's ``re.search`` (``\\w`` is Unicode, ``$`` also matches before a final newline) and
``format`` is never asserted. jsonschema-rs is ~100 times faster but follows ECMA-262 regexes (``\\w`` is
ASCII, ``$`` is the very end), so on these schemas it accepts a subset of what Treeherder accepts.

Hence the split: jsonschema-rs (formats off) answers "valid" alone; whenever it says "invalid" (or cannot
read the value), python-jsonschema decides and writes the reason. The verdict is always Treeherder's, the
common case costs a few microseconds, and reasons name the field path. See docs/transform.md for figures.

Two shortcuts keep that split: a sound envelope and its body pass one fast call together
(``envelope_fast_check``), and a job the core built skips, in its fast check only, the fields its builder
guarantees (``pulse_job.GUARANTEED``). Whatever a shortcut refuses goes the long way, so reasons are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
from jsonschema.exceptions import ValidationError, best_match

from streams.core.schemas import envelope_with_body_schema, event_body_schema, load_schema

_MAX_MESSAGE = 300


class SchemaCheck:
    """One schema, checked fast and explained by the reference validator."""

    __slots__ = ("_fast", "_reference")

    def __init__(self, schema: dict[str, Any], fast_schema: dict[str, Any] | None = None) -> None:
        """``fast_schema`` (default ``schema``) may leave out what the caller guarantees; ``schema`` judges."""
        self._fast = jsonschema_rs.validator_for(schema if fast_schema is None else fast_schema, validate_formats=False)
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
        try:
            return describe(self.reference_errors(instance), where)
        except RecursionError:
            # The reference validator (and the repr in its messages) recurses per level of nesting: a value a
            # few hundred levels deep exhausts the stack. No schema here allows such depth, so it is invalid.
            return f"{where or '(top level)'}: nested {nesting_depth(instance)} levels deep, too deep to check"

    def reference_errors(self, instance: Any) -> ValidationError | None:
        """The reference verdict alone (tests compare it with the fast one)."""
        return best_match(self._reference.iter_errors(instance))

    def fast_is_valid(self, instance: Any) -> bool:
        return self._fast.is_valid(instance)


def nesting_depth(value: Any) -> int:
    """How many arrays/objects deep ``value`` goes, measured without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            pending.extend((child, depth + 1) for child in item)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest


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


@cache
def envelope_fast_check(exchange_name: str) -> Any:
    """The fast validator alone for an envelope and its body, by exchange name (``task-pending``), in one call.

    Only "valid" is taken from it (a subset of what the two reference checks accept); anything else goes
    through ``envelope_check`` and ``event_check``, which write the reason.
    """
    return jsonschema_rs.validator_for(
        envelope_with_body_schema(exchange_name.removeprefix("task-")), validate_formats=False
    )


def text_errors(value: Any, where: str = "") -> str | None:
    """Why ``value`` cannot be written as UTF-8 JSON, or None.

    Both validators accept a string holding a lone surrogate (``"\\ud800"``, which Python's json module and
    the Queue's HTTP client decode without complaint), yet no UTF-8 encoder can write it, so a job built from
    it would be valid and then fail when a record is encoded. One orjson pass (about a microsecond for a
    job) answers; only a failure walks the value to name the field.
    """
    try:
        orjson.dumps(value)
    except TypeError as error:
        path, text = _unencodable(value, [])
        if text is None:
            return f"{field_path([], where) or '(top level)'}: cannot be encoded as JSON: {error}"
        return f"{field_path(path, where) or '(top level)'}: {text!r} is not valid Unicode text (a lone surrogate)"
    return None


def _unencodable(value: Any, path: list[str | int]) -> tuple[list[str | int], str | None]:
    """The path to the first string that UTF-8 cannot encode (keys included), and the string."""
    pending: list[tuple[list[str | int], Any]] = [(path, value)]
    while pending:  # iterative, so a deeply nested value cannot exhaust the stack
        where, item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where, item[:_MAX_MESSAGE]
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                pending.append(([*where, str(key)], key))
                pending.append(([*where, str(key)], child))
        elif isinstance(item, list | tuple):
            pending.extend(([*where, index], child) for index, child in reversed(list(enumerate(item))))
    return path, None


def job_errors(job: Any) -> str | None:
    """Why ``job`` is not a valid pulse-job message (e.g. ``display.jobName: '' is too short``), or None."""
    return job_check().errors(job)


def config_errors(config: Any) -> str | None:
    """Why ``config`` is not a valid ``extra.treeherder``, the path starting at ``extra.treeherder``, or None."""
    return config_check().errors(config, "extra.treeherder")
