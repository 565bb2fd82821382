"""Which route prefixes the service answers to, which destinations take each one, and what each destination takes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_PROFILE = "treeherder"
# The route prefixes Taskcluster deployments use for Treeherder; settings default to these.
DEFAULT_ROUTE_PREFIXES: tuple[str, ...] = ("tc-treeherder", "tc-treeherder-staging")



@dataclass(frozen=True)
class DestinationRule:
    """One destination as the core sees it: the route prefixes it takes, its message profile, its switch and
    its filters (a Treeherder deployment's ``PROJECTS_TO_INGEST``, and more).

    ``projects``: only these projects (None: every project); ``exclude_projects``: never these; ``min_tier`` /
    ``max_tier``: only jobs whose ``extra.treeherder.tier`` (default 1) lies in that range.
    """

    name: str
    route_prefixes: tuple[str, ...]
    profile: str = DEFAULT_PROFILE
    enabled: bool = True
    projects: frozenset[str] | None = None
    exclude_projects: frozenset[str] = frozenset()
    min_tier: int | None = None
    max_tier: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "route_prefixes", tuple(self.route_prefixes))
        if self.projects is not None:
            object.__setattr__(self, "projects", frozenset(self.projects))
        object.__setattr__(self, "exclude_projects", frozenset(self.exclude_projects))

    @property
    def filters(self) -> bool:
        """Whether the destination takes only some of its prefixes' jobs."""
        return bool(self.projects is not None or self.exclude_projects or self.min_tier is not None
                    or self.max_tier is not None)

    def refusal(self, project: str, tier: object) -> str | None:
        """Why this destination does not take a job of ``project`` at ``tier``, or None when it takes it."""
        if (self.projects is not None and project not in self.projects) or project in self.exclude_projects:
            return f"project {project!r} is not taken by destination {self.name!r}"
        if (self.min_tier is not None or self.max_tier is not None) and type(tier) is int:
            low = self.min_tier if self.min_tier is not None else tier
            high = self.max_tier if self.max_tier is not None else tier
            if not low <= tier <= high:
                return f"tier {tier} is not taken by destination {self.name!r} ({_tiers(self)})"
        return None


def _tiers(rule: DestinationRule) -> str:
    if rule.min_tier is not None and rule.max_tier is not None:
        return f"it takes tiers {rule.min_tier} to {rule.max_tier}"
    if rule.min_tier is not None:
        return f"it takes tier {rule.min_tier} and above"
    return f"it takes tier {rule.max_tier} and below"


@dataclass(frozen=True)
class Rules:
    """The deployment's choices the transform depends on; everything else comes from the event and the task.

    ``destinations`` lists every destination with the prefixes it takes: one prefix may feed several, each
    getting the job built in its own profile. A prefix no destination takes is a destination of its own name,
    switched on, in the ``treeherder`` (pulse-job) profile. A switched-off destination still claims its tasks,
    which are then ignored with a reason.
    """

    route_prefixes: tuple[str, ...] = DEFAULT_ROUTE_PREFIXES
    destinations: tuple[DestinationRule, ...] = ()

    def __post_init__(self) -> None:
        destinations = tuple(self.destinations)
        prefixes = tuple(self.route_prefixes)
        for rule in destinations:  # a destination's prefixes are prefixes the service answers to
            prefixes += tuple(p for p in rule.route_prefixes if p not in prefixes)
        taken = {p for rule in destinations for p in rule.route_prefixes}
        destinations += tuple(DestinationRule(p, (p,)) for p in prefixes if p not in taken)
        object.__setattr__(self, "route_prefixes", prefixes)
        object.__setattr__(self, "destinations", destinations)
        targets: dict[str, tuple[DestinationRule, ...]] = {p: () for p in prefixes}
        for rule in destinations:
            for prefix in rule.route_prefixes:
                targets[prefix] += (rule,)
        object.__setattr__(self, "_targets", MappingProxyType(targets))
        object.__setattr__(self, "filtering", any(rule.filters for rule in destinations))
        object.__setattr__(self, "switched_off", frozenset(
            p for p, rules in targets.items() if not any(rule.enabled for rule in rules)))
        object.__setattr__(self, "_route_starts", tuple(f"{prefix}." for prefix in prefixes))

    filtering: bool = field(init=False, default=False)  # some destination takes only some projects or tiers
    switched_off: frozenset[str] = field(init=False, default=frozenset())  # prefixes whose every destination is off

    @property
    def route_starts(self) -> tuple[str, ...]:
        """``"<prefix>."`` for every prefix: a route whose first word is a prefix starts with one of these."""
        return self._route_starts  # type: ignore[attr-defined,no-any-return]

    def targets(self, prefix: str) -> tuple[DestinationRule, ...]:
        """The destinations that take ``prefix``, in configuration order."""
        return self._targets.get(prefix, ())  # type: ignore[attr-defined,no-any-return]

    def destination(self, prefix: str) -> str:
        """The name of the first destination taking ``prefix`` (the only one, without fan-out)."""
        targets = self.targets(prefix)
        return targets[0].name if targets else prefix

    def profile(self, prefix: str) -> str:
        targets = self.targets(prefix)
        return targets[0].profile if targets else DEFAULT_PROFILE

    def named(self, name: str) -> DestinationRule | None:
        return next((rule for rule in self.destinations if rule.name == name), None)

    def only(self, names: Iterable[str]) -> Rules:
        """The same rules with only the destinations named (the others' prefixes still claim their tasks)."""
        wanted = set(names)
        kept = tuple(rule for rule in self.destinations if rule.name in wanted)
        return Rules(route_prefixes=self.route_prefixes, destinations=kept + tuple(
            DestinationRule(_UNTAKEN, (p,), enabled=False) for p in self.route_prefixes
            if not any(p in rule.route_prefixes for rule in kept)))


# The name of the stand-in destination ``Rules.only`` gives a prefix none of the kept destinations takes: its
# tasks still belong to Treeherder, and are ignored as "destination '(not selected)' is disabled".
_UNTAKEN = "(not selected)"
