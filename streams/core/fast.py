"""The hot path's two speed tricks, kept in one place with the figures that earn them their strangeness.

Both build the core's immutable values without the Python-level constructors the standard library generates.
Measured with ``python -m benchmarks.bench_core --seconds 3`` (one core, validation included, median pass in
CPU time; two runs each on a busy 2-core machine, November 2026): 52,485 and 51,423 events/s with them,
46,447 events/s with plain constructors, so about 11 % of the core's throughput, and the difference between
meeting the 50,000 events/s target and missing it. Remove them here, and only here, when a benchmark no
longer shows the difference.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, TypeVar

_T = TypeVar("_T")

# ``NamedTuple``'s ``__new__`` is a Python function; ``tuple.__new__(cls, values)`` builds the same instance in C.
# The values must be complete and in field order: callers pass every field, positionally.
new_tuple = tuple.__new__


def slots_init(cls: type[_T]) -> type[_T]:
    """Give a frozen slots dataclass an ``__init__`` that writes its slots directly.

    The generated ``__init__`` of a frozen dataclass sets each field through ``object.__setattr__`` looked up by
    name, about 0.1 µs a field, and these values are built for every event. The replacement takes the same
    arguments (every field, in order, by position or keyword; only fields with a plain default are optional)
    and leaves the instance as frozen as before: only ``__init__`` writes the slots, ``setattr`` still raises.
    """
    names = [field.name for field in fields(cls)]  # type: ignore[arg-type]
    assert all(f.default_factory is MISSING for f in fields(cls))  # type: ignore[arg-type]
    setters: dict[str, Any] = {f"_set_{name}": cls.__dict__[name].__set__ for name in names}  # member descriptors
    setters.update({f"_default_{f.name}": f.default for f in fields(cls) if f.default is not MISSING})  # type: ignore[arg-type]
    params = [f"{name}=_default_{name}" if f"_default_{name}" in setters else name for name in names]
    lines = [f"def __init__(self, {', '.join(params)}):", *(f"    _set_{name}(self, {name})" for name in names)]
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), setters, namespace)  # source built above from the field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    return cls
