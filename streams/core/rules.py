"""Which route prefixes the service answers to, and where each one's jobs go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_PROFILE = "treeherder"
# The route prefixes Taskcluster deployments use for Treeherder; settings default to these.
DEFAULT_ROUTE_PREFIXES: tuple[str, ...] = ("tc-treeherder", "tc-treeherder-staging")


def _frozen(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Rules:
    """The deployment's choices the transform depends on; everything else comes from the event and the task.

    ``destination_names`` maps a route prefix to the destination name used in routing keys (default: the
    prefix). Prefixes in ``disabled_prefixes`` still claim their tasks, which are then ignored with a reason.
    ``destination_profiles`` names the message format per prefix (default ``treeherder``, the pulse-job form).
    """

    route_prefixes: tuple[str, ...] = DEFAULT_ROUTE_PREFIXES
    destination_names: Mapping[str, str] = field(default_factory=_frozen)
    disabled_prefixes: frozenset[str] = frozenset()
    destination_profiles: Mapping[str, str] = field(default_factory=_frozen)

    def __post_init__(self) -> None:
        object.__setattr__(self, "route_prefixes", tuple(self.route_prefixes))
        object.__setattr__(self, "destination_names", _frozen(self.destination_names))
        object.__setattr__(self, "disabled_prefixes", frozenset(self.disabled_prefixes))
        object.__setattr__(self, "destination_profiles", _frozen(self.destination_profiles))
        object.__setattr__(self, "_route_starts", tuple(f"{prefix}." for prefix in self.route_prefixes))

    @property
    def route_starts(self) -> tuple[str, ...]:
        """``"<prefix>."`` for every prefix: a route whose first word is a prefix starts with one of these."""
        return self._route_starts

    def destination(self, prefix: str) -> str:
        return self.destination_names.get(prefix, prefix)

    def profile(self, prefix: str) -> str:
        return self.destination_profiles.get(prefix, DEFAULT_PROFILE)
