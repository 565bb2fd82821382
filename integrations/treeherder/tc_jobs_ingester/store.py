"""Storing one job message in Treeherder, with Treeherder's own loader, and saying how it went.

This module runs inside a Treeherder deployment: Treeherder's Python, its packages and its Django settings
(``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL``, ...). ``setup_django()`` must run before ``Store`` is built.

``Store.store(job, root_url)`` calls ``JobLoader().process_job(job, root_url)``, the entry point Treeherder's
own Taskcluster ingestion uses, and turns what happened into a ``policy.Outcome``. ``process_job`` returns
nothing both when it stored nothing on purpose (invalid message, unknown or inactive repository) and when
it stored nothing for another reason, so the repository and the push are looked up first, and a message it
still declines is explained by validating it against Treeherder's schema. The push is looked up before the
call because ``process_job`` asks the Queue API about every job whose push is missing (to decide whether
Treeherder would ignore the task anyway): once per retry would be one Queue request per job and delay, and
a Queue that cannot be reached would turn a missing push into an error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .policy import FAILED, MISSING_PUSH, REFUSED, STORED, Outcome

log = logging.getLogger("tc_jobs_ingester.store")

INTEGRITY_RETRIES = 3
REPOSITORY_TTL = 30.0  # seconds a repository's status is reused
PUSHES_KEPT = 10_000  # pushes remembered as existing
DB_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # then 10 s for as long as the database stays away


def setup_django() -> None:
    """Treeherder's Django, ready; the working folder becomes Treeherder's source root when it is elsewhere,
    because Treeherder reads its JSON schemas by a relative path (``schemas/pulse-job.yml``)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "treeherder.config.settings")
    import django
    import treeherder

    root = Path(treeherder.__file__).resolve().parents[1]
    if not Path("schemas", "pulse-job.yml").exists() and (root / "schemas" / "pulse-job.yml").exists():
        os.chdir(root)
    django.setup()


class Store:
    """One per process; ``store`` may be called from several threads (each gets its own DB connection)."""

    def __init__(self, stopping: Any = None) -> None:
        from django import db
        from treeherder.etl.exceptions import MissingPushError
        from treeherder.etl.job_loader import JobLoader
        from treeherder.model.models import Push, Repository

        self._db = db
        self._loader_class = JobLoader
        self._missing_push_error = MissingPushError
        self._push = Push
        self._repository = Repository
        self._stopping = stopping  # a threading.Event: stop retrying a lost database when set
        self._schema: dict[str, Any] | None = None
        # Lookups repeated for nearly every job, kept briefly: a repository's id and status (an operator may
        # change the status: seen within REPOSITORY_TTL), and pushes known to exist (they do not go away).
        self._repositories: dict[str, tuple[float, Any]] = {}
        self._pushes: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def store(self, job: Any, root_url: str) -> Outcome:
        """Store ``job``; retries in place while the database cannot be reached (raises only when stopping)."""
        attempt = 0
        while True:
            try:
                return self._store_once(job, root_url)
            except (self._db.OperationalError, self._db.InterfaceError) as error:
                if self._stopping is not None and self._stopping.is_set():
                    raise
                delay = DB_RETRY_DELAYS[min(attempt, len(DB_RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning("database unavailable (%s: %s); retrying in %.1fs", type(error).__name__,
                            str(error).strip().splitlines()[0] if str(error).strip() else "", delay)
                self._db.connections.close_all()
                time.sleep(delay)

    def _store_once(self, job: Any, root_url: str) -> Outcome:
        if not isinstance(job, dict):
            return Outcome(REFUSED, "not a JSON object")
        origin = job.get("origin")
        project = origin.get("project") if isinstance(origin, dict) else None
        revision = origin.get("revision") if isinstance(origin, dict) else None
        if not isinstance(project, str) or not isinstance(revision, str) or not revision:
            return Outcome(REFUSED, self._invalid_reason(job) or "no origin.project and origin.revision")
        repository = self._repository_named(project)
        if repository is None:
            return Outcome(REFUSED, f"unknown repository {project!r}", project)
        if repository.active_status != "active":
            return Outcome(REFUSED, f"repository {project!r} is not active ({repository.active_status})", project)
        if not self._push_exists(repository, revision):
            return Outcome(MISSING_PUSH, f"no push for revision {revision} in {project}", project)
        try:
            stored = self._process(job, root_url)
        except self._missing_push_error as error:  # the push went away between the lookup and the store
            return Outcome(MISSING_PUSH, str(error), project)
        except (self._db.OperationalError, self._db.InterfaceError):
            raise
        except Exception as error:  # a bug or data Treeherder's code cannot take: parked with the error
            log.exception("storing a job of %s raised", project)
            return Outcome(FAILED, f"{type(error).__name__}: {error}", project)
        if stored:
            return Outcome(STORED, "", project)
        return Outcome(REFUSED, self._invalid_reason(job) or "Treeherder's loader stored nothing (see its log)",
                       project)

    def _repository_named(self, name: str) -> Any:
        now = time.monotonic()
        with self._lock:
            cached = self._repositories.get(name)
        if cached is not None and now - cached[0] < REPOSITORY_TTL:
            return cached[1]
        repository = self._repository.objects.filter(name=name).first()
        with self._lock:
            self._repositories[name] = (now, repository)
        return repository

    def _push_exists(self, repository: Any, revision: str) -> bool:
        key = (repository.name, revision)
        with self._lock:
            if key in self._pushes:
                return True
        field = "revision__startswith" if len(revision) < 40 else "revision"
        if not self._push.objects.filter(repository=repository, **{field: revision}).exists():
            return False
        with self._lock:
            if len(self._pushes) >= PUSHES_KEPT:
                self._pushes.clear()
            self._pushes[key] = time.monotonic()
        return True

    def _process(self, job: dict[str, Any], root_url: str) -> Any:
        """``process_job``, again when it lost a race: two stores that create the same new row at once
        (an option collection, a machine, a job type) make one fail the unique constraint; a second try reads
        the row the other one wrote. ``process_job`` changes the message's ``origin`` (and may cut ``owner``), so
        each try gets a copy of those.
        """
        for attempt in range(INTEGRITY_RETRIES):
            try:
                return self._loader_class().process_job({**job, "origin": dict(job["origin"])}, root_url)
            except self._db.IntegrityError:
                if attempt == INTEGRITY_RETRIES - 1:
                    raise
                log.info("a concurrent store created the same row; trying again")
        return None

    def _invalid_reason(self, job: dict[str, Any]) -> str:
        """Why Treeherder's schema refuses ``job`` (its first error), or '' when it validates."""
        import jsonschema
        from treeherder.etl.schema import get_json_schema

        if self._schema is None:
            self._schema = get_json_schema("pulse-job.yml")
        validator = jsonschema.validators.validator_for(self._schema)(self._schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(job))
        if error is None:
            return ""
        where = "/".join(str(part) for part in error.absolute_path) or "(message)"
        return f"invalid against pulse-job at {where}: {error.message[:300]}"

    def close(self) -> None:
        self._db.connections.close_all()
