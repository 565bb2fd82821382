"""The ``legacy`` profile: a job message as the original taskcluster-treeherder service published it.

Some consumers still read that older form. It differs from the current pulse-job in three places only:
``origin`` says where the push lives (``kind`` ``hg.mozilla.org`` with ``pushLogID``, or ``github.com`` with
``owner`` and ``pullRequestID``), the task log is named ``builds-4h``, and job names are cut to 100
characters. Everything else is built by the ``treeherder`` profile, so both stay in step. The message is
checked against ``schemas/legacy-pulse-job.json``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from streams.core import pulse_job
from streams.core.facts import JobFacts
from streams.core.routes import TreeherderRoute
from streams.core.schemas import load_schema
from streams.core.validation import SchemaCheck

JOB_NAME_LIMIT = 100
LOG_NAME = "builds-4h"
HG = "hg.mozilla.org"
GITHUB = "github.com"


def legacy_origin(route: TreeherderRoute) -> dict[str, Any]:
    """``origin`` for a route: a GitHub push when the project is ``<owner>/<project>``, else an hg push.

    The push id goes out only when the route names one (the legacy service left it out otherwise).
    """
    words = route.route.split(".")
    has_push_id = len(words) == 5
    owner, slash, _ = words[2].rpartition("/")
    origin: dict[str, Any] = {"kind": GITHUB if slash else HG, "project": route.project, "revision": route.revision}
    if slash:
        origin["owner"] = owner
        if has_push_id:
            origin["pullRequestID"] = route.push_id
    elif has_push_id:
        origin["pushLogID"] = route.push_id
    return origin


def build_legacy_job(facts: JobFacts) -> dict[str, Any]:
    """The legacy job message for ``facts`` (validated by the caller)."""
    job = pulse_job.build_job(facts)
    job["display"]["jobName"] = facts.task["metadata"]["name"][:JOB_NAME_LIMIT]
    job["origin"] = legacy_origin(facts.route)
    logs = job.get("logs")
    if logs:
        job["logs"] = [{**log, "name": LOG_NAME} for log in logs]
    return job


@cache
def _check() -> SchemaCheck:
    return SchemaCheck(load_schema("legacy-pulse-job"))


def legacy_job_errors(job: Any) -> str | None:
    """Why ``job`` is not a valid legacy job message, with the field path, or None."""
    return _check().errors(job)
