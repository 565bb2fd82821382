"""Realistic Taskcluster task lifecycles, generated without any I/O and reproducible from a seed.

The simulator, the fault harness and the benchmarks all drive the pipeline with this workload, so it has to be
fast (tens of thousands of events per second), deterministic (same seed, same bytes) and honest about what the
pipeline should make of it: every (taskId, runId) carries an expected outcome computed here by a few plain
rules, independently of the transform core, so that counting jobs against it actually tests something.

Shapes follow the Queue: task definitions as ``task(taskId)`` returns them, message bodies as the task
exchanges carry them (``status`` with ``runs[]``, ``runId``, ``workerGroup``/``workerId``, ``takenUntil``),
the primary routing key and one ``route.<route>`` CC key per task route.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.core.rules import DEFAULT_ROUTE_PREFIXES
from streams.shared.gc_pause import collector_paused
from streams.shared.settings import DEFAULT_TASK_EXCHANGE_PREFIX

Envelope = dict[str, Any]

KINDS = ("defined", "pending", "running", "completed", "failed", "exception")
DEFAULT_ROOT_URL = "https://firefox-ci-tc.services.mozilla.com"
# 2024-05-06T08:00:00Z: a fixed start keeps the output identical across runs of one seed.
DEFAULT_START_MS = 1_714_982_400_000
# listArtifacts answers at most 1000 artifacts per page unless asked for fewer.
QUEUE_PAGE_SIZE = 1000
_DEADLINE_MS = 86_400_000  # a day after creation, as Firefox CI sets it


_LIFECYCLE_FRACTIONS = ("retry_fraction", "failed_fraction", "canceled_fraction", "superseded_fraction",
                        "exception_fraction", "deadline_fraction", "rerun_fraction", "unfinished_fraction")
_CONFIG_FRACTIONS = ("no_route_fraction", "no_config_fraction", "bad_config_fraction")


class Lifecycle(StrEnum):
    """How a task's runs unfold."""

    COMPLETED = "completed"  # pending, running, completed
    FAILED = "failed"  # pending, running, failed
    RETRIED = "retried"  # automatic retries (worker-shutdown, claim-expired, intermittent-task), then resolved
    CANCELED = "canceled"  # exception/canceled while pending or running
    SUPERSEDED = "superseded"  # exception/superseded while running
    EXCEPTION = "exception"  # malformed-payload, internal-error, resource-unavailable, deadline while pending
    DEADLINE_UNSCHEDULED = "deadline-unscheduled"  # deadline passed before any run: reasonCreated exception
    RERUN = "rerun"  # resolved, then rerun by hand (reasonCreated rerun): a second run with its own job
    UNFINISHED = "unfinished"  # the workload ends while the task is still pending or running


class Config(StrEnum):
    """Whether a task is for Treeherder and whether its Treeherder data is usable."""

    VALID = "valid"
    NO_ROUTE = "no-route"  # no treeherder route: never delivered to a queue bound with route.<prefix>.#
    NO_CONFIG = "no-config"  # treeherder route, no extra.treeherder: ignored
    BAD_CONFIG = "bad-config"  # extra.treeherder of the wrong types: rejected
    BAD_ROUTE = "bad-route"  # a malformed treeherder route, or two of them: rejected


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    """What to generate. Fractions are probabilities per task group (staging, github) or per task."""

    tasks: int = 1000
    events: int | None = None  # when set: generate whole task groups until at least this many events
    seed: int = 0
    root_url: str = DEFAULT_ROOT_URL
    start_ms: int = DEFAULT_START_MS
    task_exchange: Callable[[str], str] = field(default=lambda kind: f"{DEFAULT_TASK_EXCHANGE_PREFIX}task-{kind}")
    production_prefix: str = DEFAULT_ROUTE_PREFIXES[0]
    staging_prefix: str = DEFAULT_ROUTE_PREFIXES[1]
    staging_fraction: float = 0.15
    github_fraction: float = 0.2
    bad_config_fraction: float = 0.02  # split 3:1 between bad extra.treeherder and malformed routes
    no_config_fraction: float = 0.02
    no_route_fraction: float = 0.05
    retry_fraction: float = 0.06
    failed_fraction: float = 0.12
    canceled_fraction: float = 0.03
    superseded_fraction: float = 0.02
    exception_fraction: float = 0.02
    deadline_fraction: float = 0.01
    rerun_fraction: float = 0.01
    unfinished_fraction: float = 0.02
    large_listing_fraction: float = 0.003  # resolved runs whose artifact listing spans two pages
    large_listing_size: int = QUEUE_PAGE_SIZE + 37
    max_group_size: int = 120

    def __post_init__(self) -> None:
        """Reject a mix that cannot hold (a fraction outside [0, 1], or per-task fractions adding up past 1)."""
        fractions = {name: getattr(self, name) for name in self.__dataclass_fields__ if name.endswith("_fraction")}
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        for group in (_LIFECYCLE_FRACTIONS, _CONFIG_FRACTIONS):
            total = sum(fractions[name] for name in group)
            if total > 1.0 + 1e-9:
                raise ValueError(f"{' + '.join(group)} add up to {total:.3f}, more than 1")
        if self.tasks < 0 or (self.events is not None and self.events < 0) or self.max_group_size < 1:
            raise ValueError("tasks, events and max_group_size must not be negative")


@dataclass(frozen=True, slots=True)
class ExpectedRun:
    """What the pipeline should make of one run: the oracle the fault harness counts against.

    ``events`` counts the Queue events about this run (task-defined counts for run 0); ``jobs`` how many job
    messages they become when every event is delivered once and in order; ``state``/``result``/``is_retried``
    describe the last of those jobs. ``delivered`` is False for tasks no queue bound with the treeherder route
    prefixes receives.
    """

    task_id: str
    run_id: int
    task_group_id: str
    lifecycle: Lifecycle
    config: Config
    delivered: bool
    outcome: str  # "jobs", "ignored" or "rejected"
    reason: str | None
    destination: str | None
    project: str | None
    events: int
    jobs: int
    state: str | None
    result: str | None
    is_retried: bool

    def to_record(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "runId": self.run_id,
            "taskGroupId": self.task_group_id,
            "lifecycle": str(self.lifecycle),
            "config": str(self.config),
            "delivered": self.delivered,
            "outcome": self.outcome,
            "reason": self.reason,
            "destination": self.destination,
            "project": self.project,
            "events": self.events,
            "jobs": self.jobs,
            "state": self.state,
            "result": self.result,
            "isRetried": self.is_retried,
        }


@dataclass(slots=True)
class SimulatedTask:
    """One task: its definition (as the Queue API serves it), artifact listings per resolved run, the oracle."""

    task_id: str
    definition: dict[str, Any]
    lifecycle: Lifecycle
    config: Config
    artifacts: dict[int, list[dict[str, Any]]]
    expected: list[ExpectedRun]


@dataclass(slots=True)
class TaskGroup:
    """One push: its tasks and all their events, interleaved in time (each task's own events stay in order)."""

    task_group_id: str
    project: str
    revision: str
    push_id: int | None
    tasks: list[SimulatedTask]
    events: list[Envelope]


@dataclass(slots=True)
class Workload:
    groups: list[TaskGroup]

    @property
    def tasks(self) -> list[SimulatedTask]:
        return [task for group in self.groups for task in group.tasks]

    @property
    def events(self) -> list[Envelope]:
        return [event for group in self.groups for event in group.events]

    @property
    def expected(self) -> list[ExpectedRun]:
        return [run for group in self.groups for task in group.tasks for run in task.expected]


def generate(options: WorkloadOptions) -> Workload:
    """The whole workload in memory; use :func:`iter_groups` to stream large ones."""
    with collector_paused():
        return Workload(list(iter_groups(options)))


def iter_groups(options: WorkloadOptions) -> Iterator[TaskGroup]:
    """Task groups one after another, until ``options.tasks`` tasks (or ``options.events`` events) are made."""
    generator = _Generator(options)
    tasks_left = options.tasks
    events_made = 0
    while True:
        if options.events is not None:
            if events_made >= options.events:
                return
            limit = options.max_group_size
        else:
            if tasks_left <= 0:
                return
            limit = min(tasks_left, options.max_group_size)
        with collector_paused():
            group = generator.group(limit)
        tasks_left -= len(group.tasks)
        events_made += len(group.events)
        yield group


def event_kind(envelope: Envelope) -> str:
    """The event kind (defined, pending, ...) from an envelope's exchange name."""
    return envelope["exchange"].rpartition("task-")[2]


# Realistic names, taken from the shapes of Firefox CI and its GitHub projects.

_HG_PROJECTS = (("try", 1, 0.3), ("autoland", 3, 0.45), ("mozilla-central", 3, 0.15), ("mozilla-beta", 3, 0.1))
_GITHUB_PROJECTS = ("mozilla-mobile/fenix", "mozilla/application-services", "mozilla-mobile/reference-browser")


def _mobile_env(context: _GroupContext) -> dict[str, str]:
    """A GitHub project's tasks come from pushes to its main branch, as their environment says: Treeherder
    ignores a mobile repository's tasks from pull requests and other branches (streams/core/parity.py), and
    the oracle expects every simulated task's jobs."""
    if not context.github:
        return {}
    repository = f"https://github.com/{context.project}"
    return {"MOBILE_BASE_REPOSITORY": repository, "MOBILE_HEAD_REPOSITORY": repository, "MOBILE_HEAD_REF": "main"}
_OWNERS = ("ahal@mozilla.com", "jmaher@mozilla.com", "jmuizelaar@mozilla.com", "sheriffs@mozilla.org",
           "dev@example.com", "ffxbld@mozilla.com")

# (platform, os, architecture, build workerType suffix, test provisioner, test workerType, labels)
_PLATFORMS = (
    ("linux64", "linux", "x86_64", "b-linux", "aws-provisioner-v1", "gecko-t-linux-large", ("opt", "debug", "asan")),
    ("linux64-qr", "linux", "x86_64", "b-linux", "aws-provisioner-v1", "gecko-t-linux-large", ("opt", "debug")),
    ("windows10-64", "windows", "x86_64", "b-win2012", "aws-provisioner-v1", "gecko-t-win10-64", ("opt", "debug")),
    ("windows7-32", "windows", "x86", "b-win2012", "aws-provisioner-v1", "gecko-t-win7-32", ("opt", "debug")),
    ("macosx1014-64-shippable", "macosx", "x86_64", "b-macosx64", "releng-hardware", "gecko-t-osx-1014",
     ("opt",)),
    ("android-em-7-0-x86_64", "android", "x86_64", "b-android", "terraform-packet", "gecko-t-linux",
     ("opt", "debug")),
    ("android-hw-p2-8-0-android-aarch64", "android", "aarch64", "b-android", "proj-autophone",
     "gecko-t-bitbar-gw-perf-p2", ("opt",)),
)

# (suite, group symbol, group name, symbol prefix, chunks, tier)
_SUITES = (
    ("mochitest-e10s", "M", "Mochitests", "", 16, 1),
    ("mochitest-browser-chrome-e10s", "M", "Mochitests", "bc", 16, 1),
    ("mochitest-devtools-chrome-e10s", "M", "Mochitests", "dt", 10, 1),
    ("mochitest-a11y-1proc", "M-1proc", "Mochitests without e10s", "a11y", 1, 1),
    ("mochitest-media-spi-e10s", "M-spi", "Mochitests with socket process", "mda", 3, 1),
    ("reftest-e10s", "R", "Reftests", "R", 8, 1),
    ("crashtest-e10s", "R", "Reftests", "C", 1, 1),
    ("xpcshell", "X", "Xpcshell tests", "X", 6, 1),
    ("web-platform-tests-e10s", "W", "web-platform-tests", "wpt", 16, 1),
    ("web-platform-tests-reftests-e10s", "W", "web-platform-tests", "Wr", 6, 1),
    ("marionette-e10s", None, None, "Mn", 1, 1),
    ("gtest-1proc", None, None, "GTest", 1, 1),
    ("raptor-tp6-firefox-e10s", "Rap", "Raptor performance tests on Firefox", "tp6-", 10, 2),
    ("test-verify-e10s", None, None, "TV", 1, 2),
)

# GitHub projects: (name, symbol, group symbol, jobKind, chunks)
_GITHUB_JOBS = (
    ("build-debug", "B", None, "build", 1),
    ("build-nightly", "N", None, "build", 1),
    ("ui-test", "ui", "ui-test", "test", 4),
    ("unit-test", "unit", None, "test", 1),
    ("lint-detekt", "detekt", "lint", "test", 1),
    ("lint-ktlint", "ktlint", "lint", "test", 1),
)

# Wrong types and values for extra.treeherder, each invalid against task-treeherder-config.
_BAD_CONFIGS: tuple[Callable[[dict[str, Any]], Any], ...] = (
    lambda th: {**th, "tier": str(th.get("tier", 1))},
    lambda th: {**th, "symbol": 7},
    lambda th: {**th, "machine": {"platform": "linux 64 bit"}},
    lambda th: {**th, "labels": "opt"},
    lambda th: {k: v for k, v in th.items() if k != "symbol"},
    lambda th: {**th, "jobKind": "unit"},
    lambda th: {**th, "tier": 7},
    lambda th: th["machine"]["platform"],
)

_STATE_RESULT = {
    "completed": ("completed", "success"),
    "failed": ("completed", "fail"),
    "pending": ("pending", "unknown"),
    "running": ("running", "unknown"),
}


@dataclass(slots=True)
class _Run:
    """The plan of one run: why it exists, whether a worker claimed it, how it ends (None: not yet)."""

    reason_created: str
    claimed: bool
    ends: str | None  # completed, failed, exception, or None while pending/running
    reason_resolved: str | None = None


@dataclass(slots=True)
class _Job:
    """What one task will run as, before it is turned into a definition."""

    name: str
    description: str
    symbol: str
    group_symbol: str | None
    group_name: str | None
    platform: str
    os: str
    architecture: str
    label: str
    tier: int
    job_kind: str
    provisioner_id: str
    worker_type: str
    kind: str
    duration_s: tuple[int, int]


class _Generator:
    """Holds the random source and counters; everything it makes follows from the seed."""

    def __init__(self, options: WorkloadOptions) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.clock_ms = options.start_ms
        self.push_ids = {name: 40_000 + 1000 * i for i, (name, _, _) in enumerate(_HG_PROJECTS)}
        self.seq = 0
        self.exchanges = {kind: options.task_exchange(kind) for kind in KINDS}
        self._iso_cache: dict[int, str] = {}
        self._lifecycle_table = self._cumulative(
            [
                (Lifecycle.RETRIED, options.retry_fraction),
                (Lifecycle.FAILED, options.failed_fraction),
                (Lifecycle.CANCELED, options.canceled_fraction),
                (Lifecycle.SUPERSEDED, options.superseded_fraction),
                (Lifecycle.EXCEPTION, options.exception_fraction),
                (Lifecycle.DEADLINE_UNSCHEDULED, options.deadline_fraction),
                (Lifecycle.RERUN, options.rerun_fraction),
                (Lifecycle.UNFINISHED, options.unfinished_fraction),
            ],
            Lifecycle.COMPLETED,
        )
        self._config_table = self._cumulative(
            [
                (Config.NO_ROUTE, options.no_route_fraction),
                (Config.NO_CONFIG, options.no_config_fraction),
                (Config.BAD_CONFIG, options.bad_config_fraction * 0.75),
                (Config.BAD_ROUTE, options.bad_config_fraction * 0.25),
            ],
            Config.VALID,
        )

    @staticmethod
    def _cumulative(table: list[tuple[Any, float]], rest: Any) -> list[tuple[float, Any]]:
        total = 0.0
        cumulative = []
        for value, fraction in table:
            total += max(fraction, 0.0)
            cumulative.append((total, value))
        if total > 1.0:
            raise ValueError(f"fractions add up to {total:.3f}, more than 1")
        cumulative.append((1.0, rest))
        return cumulative

    def between(self, low: int, high: int) -> int:
        """An integer in [low, high): random.randrange's distribution, a fraction of its cost."""
        return low + int(self.rng.random() * (high - low))

    def _pick(self, table: list[tuple[float, Any]]) -> Any:
        draw = self.rng.random()
        for bound, value in table:
            if draw < bound:
                return value
        return table[-1][1]

    # Identifiers and times

    def slug(self) -> str:
        """A v4 slugid in its "nice" form (first bit clear, so it never starts with '-')."""
        raw = bytearray(self.rng.getrandbits(128).to_bytes(16, "big"))
        raw[0] &= 0x7F
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        return base64.urlsafe_b64encode(raw)[:22].decode()

    def iso(self, ms: int) -> str:
        minutes, rest = divmod(ms, 60_000)
        prefix = self._iso_cache.get(minutes)
        if prefix is None:
            if len(self._iso_cache) > 4096:
                self._iso_cache.clear()
            prefix = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minutes * 60))
            self._iso_cache[minutes] = prefix
        return f"{prefix}{rest // 1000:02d}.{rest % 1000:03d}Z"

    # Task groups

    def group(self, limit: int) -> TaskGroup:
        rng = self.rng
        options = self.options
        github = rng.random() < options.github_fraction
        staging = rng.random() < options.staging_fraction
        prefix = options.staging_prefix if staging else options.production_prefix
        if github:
            project = rng.choice(_GITHUB_PROJECTS)
            level = 3
            push_id = None if rng.random() < 0.7 else self.between(1, 5000)
        else:
            draw, project, level = rng.random(), "try", 1
            for name, lvl, weight in _HG_PROJECTS:
                if draw < weight:
                    project, level = name, lvl
                    break
                draw -= weight
            self.push_ids[project] += 1
            push_id = None if rng.random() < 0.05 else self.push_ids[project]
        revision = f"{rng.getrandbits(160):040x}"
        group_id = self.slug()
        route = f"{prefix}.v2.{project}.{revision}" + ("" if push_id is None else f".{push_id}")
        self.clock_ms += self.between(5_000, 90_000)
        base_ms = self.clock_ms

        size = limit if limit <= 3 else min(limit, self.between(3, self.options.max_group_size + 1))
        jobs = self._jobs(github, project, level, size - 1)
        context = _GroupContext(group_id, project, revision, push_id, route, prefix, level, github)

        decision_id = group_id  # the decision task's taskId is the taskGroupId, as in Firefox CI
        timed: list[tuple[int, int, Envelope]] = []
        tasks = [self._task(context, decision_id, self._decision_job(github, level), base_ms, True, timed, [])]
        decision_started = base_ms + self.between(5_000, 60_000)
        build_ids: list[str] = []
        for job in jobs:
            created = decision_started + self.between(20_000, 120_000)
            deps = [decision_id] + (build_ids[-1:] if job.job_kind == "test" else [])
            task = self._task(context, self.slug(), job, created, False, timed, deps)
            if job.job_kind == "build":
                build_ids.append(task.task_id)
            tasks.append(task)
        timed.sort(key=_time_and_seq)
        return TaskGroup(group_id, project, revision, push_id, tasks, [envelope for _, _, envelope in timed])

    def _decision_job(self, github: bool, level: int) -> _Job:
        name = "Decision Task" if github else "Gecko Decision Task"
        return _Job(name, "Create the push's task graph", "D", None, None, "gecko-decision", "linux", "x86_64",
                    "opt", 1, "other", "aws-provisioner-v1", f"gecko-{level}-decision", "decision", (60, 400))

    def _jobs(self, github: bool, project: str, level: int, count: int) -> list[_Job]:
        rng = self.rng
        jobs: list[_Job] = []
        if count <= 0:
            return jobs
        if github:
            repo = project.partition("/")[2]
            while len(jobs) < count:
                name, symbol, group, kind, chunks = rng.choice(_GITHUB_JOBS)
                for chunk in range(1, chunks + 1):
                    full = f"{name}-{chunk}" if chunks > 1 else name
                    jobs.append(_Job(f"{repo}: {full}", f"Run {full} for {repo}",
                                     f"{symbol}{chunk}" if chunks > 1 else symbol, group, None, "android-all",
                                     "android", "aarch64", rng.choice(("debug", "opt")), 1, kind,
                                     f"mobile-{level}", "b-android" if kind == "build" else "t-android",
                                     kind, (120, 1800)))
            return jobs[:count]
        while len(jobs) < count:
            platform, os_name, arch, build_worker, test_prov, test_worker, labels = rng.choice(_PLATFORMS)
            label = rng.choice(labels)
            jobs.append(_Job(f"build-{platform}/{label}", f"Build {platform} {label}", "B", None, None, platform,
                             os_name, arch, label, 1, "build", "aws-provisioner-v1",
                             f"gecko-{level}-{build_worker}", "build", (900, 3600)))
            for suite, group, group_name, prefix, chunks, tier in rng.sample(_SUITES, self.between(2, 6)):
                picked = sorted(rng.sample(range(1, chunks + 1), min(chunks, self.between(1, 6))))
                for chunk in picked:
                    name = f"test-{platform}/{label}-{suite}" + (f"-{chunk}" if chunks > 1 else "")
                    symbol = f"{prefix}{chunk}" if chunks > 1 else prefix
                    jobs.append(_Job(name, f"{suite} run, chunk {chunk} of {chunks}", symbol, group, group_name,
                                     platform, os_name, arch, label, tier, "test", test_prov, test_worker, "test",
                                     (300, 2400)))
        return jobs[:count]

    # One task: definition, plan, events, artifacts, expectation

    def _task(self, context: _GroupContext, task_id: str, job: _Job, created_ms: int, decision: bool,
              timed: list[tuple[int, int, Envelope]], dependencies: list[str]) -> SimulatedTask:
        rng = self.rng
        if decision:
            lifecycle = Lifecycle.COMPLETED if rng.random() < 0.95 else rng.choice(
                (Lifecycle.RETRIED, Lifecycle.FAILED))
            config = Config.VALID
        else:
            lifecycle = self._pick(self._lifecycle_table)
            config = self._pick(self._config_table)
        routes, destination = self._routes(context, config, job)
        definition = self._definition(context, task_id, job, created_ms, routes, config, dependencies)
        plan = self._plan(lifecycle)
        cc_routes = [f"route.{route}" for route in routes]
        status_base = {
            "taskId": task_id,
            "provisionerId": job.provisioner_id,
            "workerType": job.worker_type,
            "taskQueueId": f"{job.provisioner_id}/{job.worker_type}",
            "schedulerId": definition["schedulerId"],
            "projectId": "none",
            "taskGroupId": context.group_id,
            "deadline": definition["deadline"],
            "expires": definition["expires"],
        }
        key_tail = f"{job.provisioner_id}.{job.worker_type}.{definition['schedulerId']}.{context.group_id}._"
        task_tags = {"tags": definition["tags"]}
        artifacts: dict[int, list[dict[str, Any]]] = {}
        runs: list[dict[str, Any]] = []
        retries_left = definition["retries"]
        # per run: [events, jobs, last kind, last reason, retried]
        tally: list[list[Any]] = []
        now = created_ms

        def emit(kind: str, run_id: int | None, extra: dict[str, Any], worker: tuple[str, str] | None) -> None:
            status = dict(status_base)
            status["retriesLeft"] = retries_left
            status["state"] = runs[-1]["state"] if runs else "unscheduled"
            status["runs"] = [dict(run) for run in runs]
            body: dict[str, Any] = {"version": 1, "status": status}
            if run_id is not None:
                body["runId"] = run_id
            body.update(extra)
            body["task"] = task_tags
            group, worker_id = worker if worker else ("_", "_")
            run_word = "_" if run_id is None else str(run_id)
            key = f"primary.{task_id}.{run_word}.{group}.{worker_id}.{key_tail}"
            self.seq += 1
            timed.append((now, self.seq, {"exchange": self.exchanges[kind], "routingKey": key,
                                          "ccRoutes": cc_routes, "payload": body}))

        emit("defined", None, {}, None)
        tally.append([1, 1, "defined", None, False])
        now += self.between(200, 2_000)
        if not decision and job.job_kind == "test":
            now += self.between(60_000, 1_200_000)  # waits for its build
        low, high = job.duration_s
        for run_id, run in enumerate(plan):
            if run_id > 0 and run.reason_created == "rerun":
                now += self.between(300_000, 3_600_000)
                runs.append({"runId": run_id, "state": "pending", "reasonCreated": "rerun",
                             "scheduled": self.iso(now)})
                tally.append([0, 0, None, None, False])
            elif run_id == 0:
                runs.append({"runId": 0, "state": "pending" if run.reason_created != "exception" else "exception",
                             "reasonCreated": run.reason_created, "scheduled": self.iso(now)})
            counts = tally[run_id]
            if run.reason_created != "exception":
                emit("pending", run_id, {}, None)
                counts[0] += 1
                counts[1] += 1
                counts[2] = "pending"
            worker = None
            if run.claimed:
                now += self.between(1_000, 180_000)
                worker = (self._worker_group(job), self._worker_id(job))
                taken_until = self.iso(now + 1_200_000)
                runs[run_id].update(state="running", workerGroup=worker[0], workerId=worker[1],
                                    takenUntil=taken_until, started=self.iso(now))
                emit("running", run_id, {"workerGroup": worker[0], "workerId": worker[1],
                                         "takenUntil": taken_until}, worker)
                counts[0] += 1
                counts[1] += 1
                counts[2] = "running"
            if run.ends is None:
                break
            if run.reason_resolved == "deadline-exceeded":
                now = max(now + 1, created_ms + _DEADLINE_MS)
            else:
                now += self.between(low * 1000, high * 1000) if run.claimed else self.between(1_000, 600_000)
            record = runs[run_id]
            record["state"] = run.ends
            record["reasonResolved"] = run.reason_resolved
            record["resolved"] = self.iso(now)
            retried = False
            if run_id + 1 < len(plan) and plan[run_id + 1].reason_created in ("retry", "task-retry"):
                retries_left -= 1
                runs.append({"runId": run_id + 1, "state": "pending",
                             "reasonCreated": plan[run_id + 1].reason_created, "scheduled": record["resolved"]})
                tally.append([0, 0, None, None, False])
                retried = True
            if run.reason_created == "exception":
                record["scheduled"] = record["resolved"]
            extra = {"workerGroup": worker[0], "workerId": worker[1]} if worker else {}
            emit(run.ends, run_id, extra, worker)
            counts[0] += 1
            if run.reason_created != "exception":
                counts[1] += 1
                counts[2] = run.ends
                counts[3] = run.reason_resolved
                counts[4] = retried
            artifacts[run_id] = self._artifacts(job, run, definition["expires"]) if run.claimed else []
            now += 1

        expected = self._expected(context, task_id, lifecycle, config, destination, tally)
        return SimulatedTask(task_id, definition, lifecycle, config, artifacts, expected)

    def _plan(self, lifecycle: Lifecycle) -> list[_Run]:
        rng = self.rng
        if lifecycle is Lifecycle.COMPLETED:
            return [_Run("scheduled", True, "completed", "completed")]
        if lifecycle is Lifecycle.FAILED:
            return [_Run("scheduled", True, "failed", "failed")]
        if lifecycle is Lifecycle.RETRIED:
            plan = []
            reason_created = "scheduled"
            for _ in range(1 if rng.random() < 0.8 else 2):
                reason = rng.choice(("worker-shutdown", "claim-expired", "intermittent-task"))
                plan.append(_Run(reason_created, True, "exception", reason))
                reason_created = "task-retry" if reason == "intermittent-task" else "retry"
            ends = "completed" if rng.random() < 0.8 else "failed"
            plan.append(_Run(reason_created, True, ends, ends))
            return plan
        if lifecycle is Lifecycle.CANCELED:
            return [_Run("scheduled", rng.random() < 0.5, "exception", "canceled")]
        if lifecycle is Lifecycle.SUPERSEDED:
            return [_Run("scheduled", True, "exception", "superseded")]
        if lifecycle is Lifecycle.EXCEPTION:
            reason = rng.choice(("malformed-payload", "internal-error", "resource-unavailable", "deadline-exceeded"))
            return [_Run("scheduled", reason != "deadline-exceeded", "exception", reason)]
        if lifecycle is Lifecycle.DEADLINE_UNSCHEDULED:
            return [_Run("exception", False, "exception", "deadline-exceeded")]
        if lifecycle is Lifecycle.RERUN:
            first = "failed" if rng.random() < 0.7 else "completed"
            return [_Run("scheduled", True, first, first), _Run("rerun", True, "completed", "completed")]
        return [_Run("scheduled", rng.random() < 0.5, None)]  # UNFINISHED

    def _routes(self, context: _GroupContext, config: Config, job: _Job) -> tuple[list[str], str | None]:
        """The task's routes and the destination (route prefix) its jobs go to, if any."""
        index = f"index.gecko.v2.{context.project}.revision.{context.revision}.{job.kind}.{job.platform}-{job.label}"
        if config is Config.NO_ROUTE:
            return ([index] if self.rng.random() < 0.7 else []), None
        if config is Config.BAD_ROUTE:
            options = self.options
            variant = self.between(0, 3)
            if variant == 0:  # the retired three-word v1 form
                return [f"{context.prefix}.{context.project}.{context.revision}", index], None
            if variant == 1:  # project and nothing else
                return [f"{context.prefix}.v2.{context.project}"], None
            valid = f"{options.production_prefix}.v2.{context.project}.{context.revision}"
            return [valid, f"{options.staging_prefix}.v2.{context.project}.{context.revision}"], None
        routes = [context.route]
        if job.kind == "build":
            routes.append(index)
        elif job.kind == "test" and not context.github:
            routes.append(f"coalesce.v1.{context.project}.{self.rng.getrandbits(80):020x}")
        return routes, context.prefix

    def _definition(self, context: _GroupContext, task_id: str, job: _Job, created_ms: int, routes: list[str],
                    config: Config, dependencies: list[str]) -> dict[str, Any]:
        rng = self.rng
        owner = rng.choice(_OWNERS)
        level = context.level
        if context.github:
            source = f"https://github.com/{context.project}/blob/{context.revision}/taskcluster/ci"
            scheduler = f"{context.project.partition('/')[2]}-level-{level}"
        else:
            repo = "try" if context.project == "try" else f"integration/{context.project}"
            if context.project.startswith("mozilla-"):
                repo = context.project if context.project == "mozilla-central" else f"releases/{context.project}"
            source = f"https://hg.mozilla.org/{repo}/file/{context.revision}/taskcluster/ci/{job.kind}"
            scheduler = f"gecko-level-{level}"
        treeherder: dict[str, Any] = {
            "symbol": job.symbol,
            "machine": {"platform": job.platform},
            "tier": job.tier,
            "jobKind": job.job_kind,
        }
        shape = rng.random()
        if shape < 0.7:
            treeherder["collection"] = {job.label: True}
        elif shape < 0.9:
            treeherder["labels"] = [job.label]
        if job.group_symbol:
            treeherder["groupSymbol"] = job.group_symbol
        if job.group_name:
            treeherder["groupName"] = job.group_name
        if rng.random() < 0.3:
            treeherder["machine"] = {"platform": job.platform, "os": job.os, "architecture": job.architecture}
        if rng.random() < 0.2:
            treeherder["productName"] = "fenix" if context.github else "firefox"
        if rng.random() < 0.1:
            treeherder["reason"] = "scheduled"
        extra: dict[str, Any] = {"treeherder-platform": f"{job.platform}/{job.label}", "parent": context.group_id}
        if config is Config.BAD_CONFIG:
            extra["treeherder"] = rng.choice(_BAD_CONFIGS)(treeherder)
        elif config is not Config.NO_CONFIG:
            extra["treeherder"] = treeherder
        push = f"revision={context.revision}"
        return {
            "provisionerId": job.provisioner_id,
            "workerType": job.worker_type,
            "taskQueueId": f"{job.provisioner_id}/{job.worker_type}",
            "schedulerId": scheduler,
            "projectId": "none",
            "taskGroupId": context.group_id,
            "dependencies": dependencies,
            "requires": "all-completed",
            "routes": routes,
            "priority": "very-low" if context.project == "try" else "low",
            "retries": 5,
            "created": self.iso(created_ms),
            "deadline": self.iso(created_ms + _DEADLINE_MS),
            "expires": self.iso(created_ms + 28 * 86_400_000),
            "scopes": [],
            "payload": {
                "maxRunTime": job.duration_s[1] + 600,
                "command": ["/builds/worker/bin/run-task", "--", "./mach", job.kind],
                "env": {"GECKO_HEAD_REV": context.revision, "MOZ_AUTOMATION": "1", **_mobile_env(context)},
            },
            "metadata": {
                "owner": owner,
                "source": source,
                "description": f"{job.description} ([Treeherder push](https://treeherder.mozilla.org/#/jobs?"
                               f"repo={context.project.rpartition('/')[2]}&{push}))",
                "name": job.name,
            },
            "tags": {"createdForUser": owner, "kind": job.kind, "label": job.name, "os": job.os,
                     "worker-implementation": "docker-worker" if job.os == "linux" else "generic-worker"},
            "extra": extra,
        }

    def _worker_group(self, job: _Job) -> str:
        return "mdc1" if job.provisioner_id == "releng-hardware" else self.rng.choice(
            ("us-west-1", "us-east-1", "us-central1"))

    def _worker_id(self, job: _Job) -> str:
        if job.provisioner_id == "releng-hardware":
            return f"t-mojave-r7-{self.between(1, 480):03d}"
        return f"i-{self.rng.getrandbits(64):017x}"

    def _artifacts(self, job: _Job, run: _Run, expires: str) -> list[dict[str, Any]]:
        """One run's listing in the Queue's listArtifacts order: logs, then the job's own files."""
        rng = self.rng
        listing = [
            {"storageType": "s3", "name": "public/logs/live_backing.log", "expires": expires,
             "contentType": "text/plain; charset=utf-8"},
            {"storageType": "reference", "name": "public/logs/live.log", "expires": expires,
             "contentType": "text/plain; charset=utf-8"},
        ]
        if run.ends == "exception":
            return listing
        if job.job_kind == "build":
            names = ["public/build/target.tar.bz2", "public/build/target.json", "public/build/resource-usage.json"]
        else:
            names = ["public/test_info/resource-usage.json", "public/test_info/errorsummary.log"]
        draw = rng.random()
        if draw < 0.15:
            names.append("public/logs/resource-usage.json")  # a basename seen before
        elif draw < 0.25:
            names.append("public/test_info/")  # a directory entry
        if rng.random() < self.options.large_listing_fraction:
            names.extend(f"public/test_info/screenshot-{i:04d}.png" for i in range(self.options.large_listing_size))
        for name in names:
            listing.append({"storageType": "s3", "name": name, "expires": expires,
                            "contentType": _content_type(name)})
        return listing

    def _expected(self, context: _GroupContext, task_id: str, lifecycle: Lifecycle, config: Config,
                  destination: str | None, tally: list[list[Any]]) -> list[ExpectedRun]:
        """The oracle: a handful of rules from the design, written out independently of the transform core."""
        delivered = config is not Config.NO_ROUTE
        project = context.project.rpartition("/")[2] if destination else None
        if config is Config.VALID:
            outcome, reason = "jobs", None
        elif config in (Config.NO_ROUTE, Config.NO_CONFIG):
            outcome, reason = "ignored", str(config)
        else:
            outcome, reason = "rejected", str(config)
        expected = []
        for run_id, (events, jobs, last, reason_resolved, retried) in enumerate(tally):
            if outcome != "jobs":
                expected.append(ExpectedRun(task_id, run_id, context.group_id, lifecycle, config, delivered, outcome,
                                            reason, None, None, events, 0, None, None, False))
                continue
            if last == "defined":
                state, result = "unscheduled", "unknown"
            elif last == "exception":
                state = "completed"
                result = reason_resolved if reason_resolved in ("canceled", "superseded") else "exception"
            else:
                state, result = _STATE_RESULT[last]
            expected.append(ExpectedRun(task_id, run_id, context.group_id, lifecycle, config, delivered, outcome,
                                        None, destination, project, events, jobs, state, result, retried))
        return expected


@dataclass(frozen=True, slots=True)
class _GroupContext:
    group_id: str
    project: str
    revision: str
    push_id: int | None
    route: str
    prefix: str
    level: int
    github: bool


def _time_and_seq(item: tuple[int, int, Envelope]) -> tuple[int, int]:
    return item[0], item[1]


def _content_type(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".png"):
        return "image/png"
    if name.endswith(".tar.bz2"):
        return "application/x-bzip2"
    return "text/plain; charset=utf-8"
