"""Treeherder's own rules for which tasks it passes over, where they are more than a route and a config.

Read from ``treeherder/etl/taskcluster_pulse/handler.py`` (``ignore_task``) in the reference backend; see
docs/transform.md, "Treeherder parity", for every rule and how the core matches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The mobile repositories whose tasks Treeherder takes only from the main branch of the main repository.
MOBILE_REPOS = frozenset({"reference-browser", "mozilla-vpn-client", "mozilla-vpn-client-release"})
MAIN_REFS = frozenset({"refs/heads/master", "master", "refs/heads/main", "main"})


def mobile_branch_refusal(task: Mapping[str, Any], project: str) -> str | None:
    """Why Treeherder ignores this task of a mobile repository (a pull request, or a branch other than
    master/main, as its ``MOBILE_*`` environment says), or None.

    Treeherder reads ``payload.env``: when ``MOBILE_BASE_REPOSITORY`` names one of these repositories, a task
    whose head repository differs (a pull request from a fork) or whose head ref is not master/main is
    ignored. A missing head repository or ref leaves the task in, as Treeherder's ``except KeyError`` does.
    Without ``MOBILE_BASE_REPOSITORY`` Treeherder asks the task's decision task instead; that half is not
    matched (it needs a second Queue API call per task).
    """
    if project not in MOBILE_REPOS:
        return None
    payload = task.get("payload")
    env = payload.get("env") if isinstance(payload, Mapping) else None
    if not isinstance(env, Mapping):
        return None
    base = env.get("MOBILE_BASE_REPOSITORY")
    if not isinstance(base, str) or not base or "/" not in base or base.rsplit("/", 1)[1] not in MOBILE_REPOS:
        return None
    if "MOBILE_HEAD_REPOSITORY" not in env:
        return None
    if env["MOBILE_HEAD_REPOSITORY"] != base:
        return (f"task of {project} is for a pull request or a fork (MOBILE_HEAD_REPOSITORY is not "
                f"MOBILE_BASE_REPOSITORY): Treeherder ignores it")
    ref = env.get("MOBILE_HEAD_REF")
    if "MOBILE_HEAD_REF" in env and (not isinstance(ref, str) or ref not in MAIN_REFS):
        return f"task of {project} is for the branch {str(ref)[:100]!r}, not master or main: Treeherder ignores it"
    return None
