"""Message profiles: how JobFacts become the message a destination expects, and how that message is checked.

A profile is chosen per destination (``Rules.profile``). The rules that decide whether an event becomes a
job live in ``transform``; a new format only adds an entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from streams.core import legacy_job, pulse_job
from streams.core.facts import JobFacts


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    build: Callable[[JobFacts], dict[str, Any]]
    errors: Callable[[Any], str | None]  # None when the built message is valid, else a reason with the field path


PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "treeherder": Profile("treeherder", pulse_job.build_job, pulse_job.built_job_errors),
        "legacy": Profile("legacy", legacy_job.build_legacy_job, legacy_job.legacy_job_errors),
    }
)
