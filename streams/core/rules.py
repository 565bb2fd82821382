"""Which route prefixes the service answers to, and where each one's jobs go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_PROFILE = "treeherder"


def _frozen(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Rules:
    """The deployment's choices the transform depends on; everything else comes from the event and the task.

    ``destination_names`` maps a route prefix to the destination name used in routing keys (default: the
    prefix). Prefixes in ``disabled_prefixes`` still claim their tasks, which are then ignored with a reason.
    ``destination_profiles`` names the message format per prefix (default ``treeherder``, the pulse-job form).
    """

    route_prefixes: tuple[str, ...] = ("tc-treeherder", "tc-treeherder-staging")
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

    @classmethod
    def from_settings(cls, settings: Any) -> Rules:
        """Rules from ``Settings`` (duck-typed: ``route_prefixes`` and ``destinations``)."""
        destinations = tuple(getattr(settings, "destinations", ()) or ())
        from streams.core.profiles import PROFILES  # the profile registry depends on the job builders

        for destination in destinations:
            profile = getattr(destination, "profile", DEFAULT_PROFILE)
            if profile not in PROFILES:
                raise ValueError(
                    f"destination {destination.name!r} asks for message profile {profile!r}; "
                    f"this version builds only {sorted(PROFILES)}"
                )
        return cls(
            route_prefixes=tuple(settings.route_prefixes),
            destination_names={d.route_prefix: d.name for d in destinations},
            disabled_prefixes=frozenset(d.route_prefix for d in destinations if not d.enabled),
            destination_profiles={d.route_prefix: getattr(d, "profile", DEFAULT_PROFILE) for d in destinations},
        )
