"""The pure half of ``tc-treeherder replay``: what to read, what to keep, where jobs go, and what to report.

Nothing here touches a broker: the replay runner (``streams.replay.runner``) asks Kafka for offsets and records and
hands them to these functions, so the decisions (range, destination and project filters, re-targeting, the
local state guard, the closing report, the diff against the jobs emitted at the time) are tested alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from streams.core import state_guard
from streams.core.model import JobMessage
from streams.core.routes import RouteProblem, select_route
from streams.core.rules import DestinationRule, Rules
from streams.shared.settings import Destination, Settings


class ReplayUsageError(ValueError):
    """The replay was asked for something it cannot do; the message says what and how to ask instead."""


# --- Range ----------------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC. ``2024-05-01``, ``2024-05-01T10:00``, ``...Z`` all work."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReplayUsageError(f"{text!r} is not an ISO 8601 time such as 2024-05-01T10:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_offsets(text: str, partitions: int) -> dict[int, int]:
    """``"120"`` (every partition) or ``"0:120,1:88"`` (those partitions) -> {partition: offset}."""
    text = text.strip()
    if text.isdigit():
        return dict.fromkeys(range(partitions), int(text))
    offsets: dict[int, int] = {}
    for part in text.split(","):
        partition, colon, offset = part.strip().partition(":")
        if not colon or not partition.isdigit() or not offset.isdigit():
            raise ReplayUsageError(f"offsets {text!r}: expected OFFSET or PARTITION:OFFSET[,PARTITION:OFFSET...]")
        if int(partition) >= partitions:
            raise ReplayUsageError(f"offsets {text!r}: partition {partition} does not exist "
                                   f"(the topics have {partitions})")
        offsets[int(partition)] = int(offset)
    return offsets


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def resolve_range(
    low: Mapping[int, int],
    high: Mapping[int, int],
    *,
    since: Mapping[int, int | None] | None = None,
    until: Mapping[int, int | None] | None = None,
    from_offsets: Mapping[int, int] | None = None,
    to_offsets: Mapping[int, int] | None = None,
) -> list[PartitionRange]:
    """Per partition, the offsets to read, clamped to what the topic still holds.

    ``since``/``until`` are Kafka's answers to "first offset at or after this time" (None: no record that late,
    so the range starts, or ends, at the partition's end). ``from_offsets``/``to_offsets`` give offsets
    directly; a partition they do not name is read from its start, or to its end. With ``from_offsets``,
    partitions it does not name are left out entirely.
    """
    ranges = []
    for partition in sorted(high):
        first, last = low.get(partition, 0), high[partition]
        start, end = first, last
        if since is not None:
            found = since.get(partition)
            start = last if found is None else found
        if from_offsets is not None:
            if partition not in from_offsets:
                continue
            start = from_offsets[partition]
        if until is not None:
            found = until.get(partition)
            end = last if found is None else found
        if to_offsets is not None and partition in to_offsets:
            end = to_offsets[partition]
        start, end = min(max(start, first), last), min(max(end, first), last)
        if end > start:
            ranges.append(PartitionRange(partition, start, end))
    return ranges


# --- Selection: which jobs, to which destination -------------------------------------------------------


def find_destination(settings: Settings, name: str) -> Destination:
    """A destination by its name or its configuration key (in the older form, its route prefix)."""
    destination = settings.destination_named(name)
    if destination is None:
        known = ", ".join(d.name for d in settings.destinations)
        raise ReplayUsageError(f"unknown destination {name!r}; configured: {known}")
    return destination


@dataclass(frozen=True)
class Selection:
    """Which destinations and projects are replayed, and the destination their jobs go to instead, if any.

    ``prefixes`` are the route prefixes the chosen destinations take: an event of any other prefix is not
    re-run for them. ``destinations`` names the chosen ones: the destinations the jobs went to at the time.
    """

    prefixes: frozenset[str]
    projects: frozenset[str] = frozenset()
    target: Destination | None = None
    rules: Rules = field(default_factory=Rules)  # the deployment's rules: what the jobs were at the time
    replay_rules: Rules = field(default_factory=Rules)  # only the chosen destinations, or the target instead
    destinations: frozenset[str] = frozenset()

    def wants_prefix(self, prefix: str | None) -> bool:
        return prefix is not None and prefix in self.prefixes

    def wants_project(self, project: str) -> bool:
        return not self.projects or project in self.projects

    def original_destination(self, prefix: str) -> str:
        """The chosen destination the live worker gave this prefix's jobs (the diff matches on it); with several
        chosen destinations of one prefix, the first."""
        for rule in self.rules.targets(prefix):
            if rule.name in self.destinations:
                return rule.name
        return self.rules.destination(prefix)


def select(settings: Settings, destinations: Sequence[str] = (), to: str | None = None,
           projects: Iterable[str] = (), *, ignore_filters: bool = False) -> Selection:
    """The selection for ``--destination``/``--to``/``--project``/``--ignore-filters``.

    Without ``--destination``, every enabled destination is replayed, each with its own filters as live. A
    disabled destination may be replayed only when re-targeted (``--to``), and the target must be enabled: no
    sink delivers to a disabled one, so its jobs would wait in the topic for nothing. Re-targeted, the events of
    the chosen destinations' route prefixes become the target's jobs, in its profile, and only those its own
    filters (projects, tiers) take, unless ``ignore_filters``.
    """
    rules = settings.rules()
    chosen = list(dict.fromkeys(find_destination(settings, name) for name in destinations))
    target = find_destination(settings, to) if to else None
    if target is not None and not target.enabled:
        raise ReplayUsageError(f"--to {target.name}: the destination is disabled in the settings")
    if ignore_filters and target is None:
        raise ReplayUsageError("--ignore-filters goes with --to: without it each destination's own filters apply")
    if not chosen:
        chosen = [d for d in settings.destinations if d.enabled]
    elif target is None:
        disabled = [d.name for d in chosen if not d.enabled]
        if disabled:
            raise ReplayUsageError(f"destination(s) {', '.join(disabled)} are disabled in the settings; enable "
                                   "them, or send their jobs elsewhere with --to")
    prefixes = frozenset(p for d in chosen for p in d.prefixes)
    names = frozenset(d.name for d in chosen)
    if target is None:
        replay_rules = rules.only(names)
    else:
        rule = target.rule()
        taken = tuple(p for p in rules.route_prefixes if p in prefixes)
        rule = DestinationRule(rule.name, taken, rule.profile) if ignore_filters else replace(
            rule, route_prefixes=taken, enabled=True)
        replay_rules = Rules(route_prefixes=rules.route_prefixes, destinations=(rule,)).only([rule.name])
    return Selection(prefixes=prefixes, projects=frozenset(projects), target=target, rules=rules,
                     replay_rules=replay_rules, destinations=names)


def route_prefix(task: Any, rules: Rules) -> str | None:
    """The route prefix a task reports by, or None when it has no single, well-formed Treeherder route."""
    routes = task.get("routes") if isinstance(task, Mapping) else None
    if type(routes) is not list:
        return None
    try:
        return select_route(routes, rules).prefix
    except RouteProblem:
        return None


class LocalGuard:
    """The state guard, local to one replay: a replayed run never goes backwards within the replay itself.

    The live guard's table is not read or written: the replay must not rewind live state, and a resend is
    meant to repeat jobs Treeherder already has (it treats a repeat as an update of the same job).
    """

    def __init__(self) -> None:
        self._ranks: dict[str, int] = {}
        self.suppressed = 0

    def admit(self, message: JobMessage) -> bool:
        key = state_guard.guard_key(message.destination, message.job)
        previous = self._ranks.get(key)
        if state_guard.moves_backwards(previous, message.job):
            self.suppressed += 1
            return False
        rank = state_guard.rank(message.job)
        if previous is None or rank > previous:
            self._ranks[key] = rank
        return True


# --- Report -----------------------------------------------------------------------------------------------



@dataclass(slots=True)
class ReplayReport:
    """What one replay read, emitted and turned down."""

    source_topic: str = ""
    dry_run: bool = False
    events: int = 0  # records read in the range
    jobs: Counter[str] = field(default_factory=Counter)  # per destination: emitted (or would be, dry run)
    rejected: Counter[str] = field(default_factory=Counter)  # per reason class
    ignored: Counter[str] = field(default_factory=Counter)  # per reason class
    other_destination: int = 0  # events whose task reports to a destination not selected
    other_project: int = 0  # jobs of a project not selected
    skipped_records: Counter[str] = field(default_factory=Counter)  # rejected-topic records not re-run, why
    suppressed: int = 0  # held back by the replay's own state guard
    from_tables: int = 0  # definitions and listings found in the worker's changelogs
    queue_fetches: int = 0  # definitions and listings asked of the Queue API
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        verb = "would emit" if self.dry_run else "emitted"
        total = sum(self.jobs.values())
        out = [f"replay of {self.source_topic}{' (dry run: nothing written)' if self.dry_run else ''}",
               f"  events read: {self.events} in {self.seconds:.1f}s ({self.rate:,.0f} events/s)",
               f"  jobs {verb}: {total}"]
        out += [f"    {name}: {count}" for name, count in sorted(self.jobs.items())]
        for title, counter in (("rejected", self.rejected), ("ignored", self.ignored),
                               ("records not re-run", self.skipped_records)):
            if counter:
                out.append(f"  {title}: {sum(counter.values())}")
                out += [f"    {count:>6}  {reason}" for reason, count in counter.most_common()]
        if self.other_destination or self.other_project:
            out.append(f"  not selected: {self.other_destination} events of other destinations, "
                       f"{self.other_project} jobs of other projects")
        if self.suppressed:
            out.append(f"  held back by the state guard (run would go backwards): {self.suppressed}")
        out.append(f"  definitions and listings: {self.from_tables} from the worker's tables, "
                   f"{self.queue_fetches} from the Queue API")
        return out


# --- Progress ---------------------------------------------------------------------------------------------


def progress_line(done: int, total: int, seconds: float, *, width: int = 30) -> str:
    """``[######......]  41%  12,345/30,000 events  8,120/s  ETA 0:02``."""
    fraction = min(1.0, done / total) if total else 1.0
    filled = int(width * fraction)
    rate = done / seconds if seconds > 0 else 0.0
    eta = "0:00" if total <= done else "-:--"
    if rate > 0 and total > done:
        eta = _clock(math.ceil((total - done) / rate))
    return (f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}  {done:,}/{total:,} events  "
            f"{rate:,.0f}/s  ETA {eta}")


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --- Diff against the jobs emitted at the time ---------------------------------------------------------


JobKey = tuple[int, int, str]  # (task-events partition, offset, destination name at the time)


def job_differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Every field that differs, as ``path: old -> new`` (``(absent)`` for a missing field)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append(f"{where}: {_short(old[key])} -> (absent)")
            elif key not in old:
                out.append(f"{where}: (absent) -> {_short(new[key])}")
            else:
                out += job_differences(old[key], new[key], where)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new, strict=True))
                for line in job_differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path or '(job)'}: {_short(old)} -> {_short(new)}"]


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class JobDiff:
    """The replay's jobs beside the ones emitted at the time for the same task event and destination."""

    unchanged: int = 0
    changed: list[tuple[JobKey, list[str]]] = field(default_factory=list)
    new_only: list[JobKey] = field(default_factory=list)  # no job at the time (e.g. it was rejected)
    old_only: list[JobKey] = field(default_factory=list)  # a job at the time, none now

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"diff against the jobs emitted at the time: {self.unchanged} unchanged, {len(self.changed)} "
               f"changed, {len(self.new_only)} new (no job at the time), {len(self.old_only)} no longer emitted"]
        for (partition, offset, destination), differences in self.changed[:limit]:
            out.append(f"  changed  {destination} event {partition}:{offset}")
            out += [f"      {line}" for line in differences]
        for title, keys in (("new     ", self.new_only), ("dropped ", self.old_only)):
            out += [f"  {title} {d} event {p}:{o}" for p, o, d in keys[:limit]]
        shown = min(len(self.changed), limit) + min(len(self.new_only), limit) + min(len(self.old_only), limit)
        hidden = len(self.changed) + len(self.new_only) + len(self.old_only) - shown
        if hidden > 0:
            out.append(f"  ... and {hidden} more (raise --diff-limit)")
        return out


def diff_jobs(old: Mapping[JobKey, Mapping[str, Any]], new: Mapping[JobKey, Mapping[str, Any]]) -> JobDiff:
    diff = JobDiff()
    for key in sorted(new):
        if key not in old:
            diff.new_only.append(key)
            continue
        differences = job_differences(old[key], new[key])
        if differences:
            diff.changed.append((key, differences))
        else:
            diff.unchanged += 1
    diff.old_only = sorted(key for key in old if key not in new)
    return diff
