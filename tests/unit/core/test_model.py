"""The core's values stay frozen dataclasses with the usual constructor, whatever builds them faster."""

from __future__ import annotations

import dataclasses

import pytest

from streams.core.model import EventKind, Ignored, JobMessage, Jobs, Rejected, Stage, TaskEvent

ARGS = {
    TaskEvent: ("ex/task-pending", EventKind.PENDING, "primary.x", "https://tc.example.com", "x", 0, {"a": 1}),
    JobMessage: ("dest", "proj", "dest.proj._", {"state": "pending"}),
    Jobs: ((), (Ignored("x", "off", Stage.ROUTE, "dev"),)),
    Ignored: ("x", "not for us", Stage.ROUTE, "dev"),
    Rejected: (None, "broken", Stage.JOB, None),
}


@pytest.mark.parametrize("cls", list(ARGS))
def test_built_by_position_or_keyword_alike_and_frozen(cls):
    args = ARGS[cls]
    names = [field.name for field in dataclasses.fields(cls)]
    by_position = cls(*args)
    by_keyword = cls(**dict(zip(names, args, strict=True)))
    assert by_position == by_keyword
    assert [getattr(by_position, name) for name in names] == list(args)
    assert repr(by_position).startswith(f"{cls.__name__}(")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(by_position, names[0], "other")
    required = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    with pytest.raises(TypeError):
        cls(*args[:len(required) - 1])
    defaulted = cls(*args[:len(required)])
    assert [getattr(defaulted, f.name) for f in dataclasses.fields(cls)[len(required):]] == [
        f.default for f in dataclasses.fields(cls)[len(required):]]
    with pytest.raises(TypeError):
        cls(*args, "one too many")
    assert dataclasses.replace(by_position) == by_position
