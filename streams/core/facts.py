"""What the rules establish about an event, in a form any job message profile can build from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import taskcluster_urls

from streams.core.fast import new_tuple
from streams.core.model import ListingFailed, TaskEvent
from streams.core.routes import TreeherderRoute

LIVE_LOG = "public/logs/live_backing.log"
RETRY_REASONS = frozenset({"retry", "task-retry"})


class ArtifactLink(NamedTuple):
    text: str  # the basename, with " (n)" when the basename was seen n times before
    url: str


class JobFacts(NamedTuple):
    """One event that passed the rules: the task, its Treeherder route and config, the run, the artifacts.

    A NamedTuple rather than a frozen dataclass: it is built once per event on the hot path.
    """

    event: TaskEvent
    task: Mapping[str, Any]
    route: TreeherderRoute
    destination: str
    config: Mapping[str, Any]
    run_id: int
    run: Mapping[str, Any] | None  # None only for task-defined before any run exists
    artifact_links: tuple[ArtifactLink, ...]
    listing_failure: str | None

    @property
    def is_retried(self) -> bool:
        """An exception whose next run was created as an automatic retry."""
        runs = self.event.status["runs"]
        following = self.run_id + 1
        return following < len(runs) and runs[following]["reasonCreated"] in RETRY_REASONS

    def artifact_url(self, name: str) -> str:
        return run_artifact_url(self.event.root_url, self.event.task_id, self.run_id, name)

    @property
    def log_url(self) -> str:
        return self.artifact_url(LIVE_LOG)


def run_artifact_url(root_url: str, task_id: str, run_id: int, name: str) -> str:
    return taskcluster_urls.api(root_url, "queue", "v1", f"task/{task_id}/runs/{run_id}/artifacts/{name}")


class BadListing(ValueError):
    """An artifact listing entry without a usable name."""


def artifact_links(
    root_url: str, task_id: str, run_id: int, artifacts: Sequence[Mapping[str, Any]] | ListingFailed | None
) -> tuple[ArtifactLink, ...]:
    """Every artifact of the run, in listing order, as links; directory entries (names ending in /) skipped."""
    if artifacts is None or isinstance(artifacts, ListingFailed):
        return ()
    links = []
    seen: dict[str, int] = {}
    prefix = run_artifact_url(root_url, task_id, run_id, "")  # the URL helper's layout, computed once per run
    for index, artifact in enumerate(artifacts):
        name = artifact.get("name") if type(artifact) is dict or isinstance(artifact, Mapping) else None
        if not isinstance(name, str) or not name:
            raise BadListing(f"artifacts[{index}].name: expected a non-empty string, got {name!r}")
        if name[-1] == "/":
            continue
        base = name.rpartition("/")[2]
        uses = seen.get(base, 0)
        seen[base] = uses + 1
        links.append(new_tuple(ArtifactLink, (f"{base} ({uses})" if uses else base, prefix + name)))
    return tuple(links)
