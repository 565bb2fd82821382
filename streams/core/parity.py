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
    Without ``MOBILE_BASE_REPOSITORY`` Treeherder asks the task's decision task instead:
    ``decision_refusal``.
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


def needs_decision_task(task: Mapping[str, Any], project: str) -> str | None:
    """The taskId of the decision task Treeherder would ask about this task (its ``taskGroupId``), or None.

    A task of a mobile repository without ``MOBILE_BASE_REPOSITORY`` in its environment: Treeherder fetches
    the decision task and keeps the task only when that tells it is for master or main.
    """
    if project not in MOBILE_REPOS:
        return None
    payload = task.get("payload")
    env = payload.get("env") if isinstance(payload, Mapping) else None
    if isinstance(env, Mapping) and env.get("MOBILE_BASE_REPOSITORY"):
        return None
    group = task.get("taskGroupId")
    return group if isinstance(group, str) and group else None


def decision_refusal(project: str, decision: Mapping[str, Any]) -> str | None:
    """Why Treeherder ignores a mobile task, judged by its decision task, or None when it keeps it.

    Treeherder keeps the task when a route of the decision task contains ``master`` or ``main`` (e.g.
    ``index.mobile.v2.fenix.branch.master.latest.taskgraph.decision-nightly``). It also means to keep it when
    the decision task's scopes name ``branch:master``/``branch:main``, but reads them from
    ``metadata.source``, a URL, one character at a time, so that test never succeeds; the routes decide.
    """
    routes = decision.get("routes")
    if isinstance(routes, list) and any(isinstance(r, str) and ("master" in r or "main" in r) for r in routes):
        return None
    return (f"task of {project} comes from a decision task with no master or main route (a pull request or "
            "another branch): Treeherder ignores it")
