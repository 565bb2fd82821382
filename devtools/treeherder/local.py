"""One local Treeherder: its database, its API server, the jobs ingesters beside it, and its REST API.

An ``Instance`` is a database name, an API port and a state folder (pid files, logs). ``prepare`` makes
everything below the processes ready (code, venv, Postgres, Redis, the migrated database with Treeherder's
initial data); ``start_api`` and ``start_ingester`` start the processes when they do not run yet; ``down``
stops, by pid, what was started. All of it is idempotent: a second ``up`` finds everything running and
returns in about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devtools.stack.probe import wait_until
from devtools.stack.process import file_lock, is_alive, read_pid, stop_pid
from devtools.treeherder import TreeherderError, install, services
from streams.shared.settings import Destination, Settings

Log = Callable[[str], None]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
DEFAULT_PORT = 8000
PORT_VARIABLE = "TC_TREEHERDER_TREEHERDER_PORT"
USER_AGENT = "tc-treeherder-devtools"  # Treeherder refuses python-urllib's default agent (403)


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Instance:
    state: Path
    database: str = "treeherder"
    api_port: int = DEFAULT_PORT
    redis_port: int = 6379
    redis_db: int = 0  # its own Redis database: Treeherder caches lookups there (see clear_cache)

    @classmethod
    def from_settings(cls, settings: Settings, port: int | None = None) -> Instance:
        port = port or int(os.environ.get(PORT_VARIABLE) or DEFAULT_PORT)
        return cls(state=settings.state_dir / "treeherder", api_port=port)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_pid_file(self) -> Path:
        return self.state / f"api-{self.api_port}.pid"

    def ingester_pid_file(self, name: str) -> Path:
        return self.state / "ingesters" / f"{name.replace('/', '_')}.pid"


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything below the processes, ready: the code, its venv, the database URL, the environment."""

    installation: install.Installation
    cluster: services.Cluster
    env: dict[str, str]
    steps: list[tuple[str, str, float]] = field(default_factory=list)  # (what, outcome, seconds)

    def python(self, *args: str) -> list[str]:
        return [str(self.installation.python), *args]


def treeherder_env(installation: install.Installation, instance: Instance, database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TC_TREEHERDER_", "DJANGO_", "TREEHERDER_")) and key not in ("PYTHONPATH",)}
    home = instance.state / "home"  # mozci reads its configuration under $HOME
    home.mkdir(parents=True, exist_ok=True)
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{instance.redis_port}/{instance.redis_db}",
        "BROKER_URL": "memory://",  # celery tasks (log parsing, ...) are queued in memory and never run
        "SITE_URL": f"http://localhost:{instance.api_port}",
        "DJANGO_SETTINGS_MODULE": "treeherder.config.settings",
        "HOME": str(home),
        "PYTHONPATH": f"{installation.source}{os.pathsep}{install.INGESTER_PATH}",
        "PYTHONUNBUFFERED": "1",
        "LOGGING_LEVEL": os.environ.get("TC_TREEHERDER_TREEHERDER_LOGGING_LEVEL", "WARNING"),
    })
    return env


def _timed(steps: list[tuple[str, str, float]], what: str, action: Callable[[], str]) -> str:
    began = time.monotonic()
    outcome = action()
    steps.append((what, outcome, time.monotonic() - began))
    return outcome


def _manage(ready: Ready, *args: str, timeout: float = 600) -> str:
    result = subprocess.run(ready.python("manage.py", *args), cwd=ready.installation.source, env=ready.env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise TreeherderError(f"manage.py {' '.join(args)} failed (exit {result.returncode}):\n{output}")
    return result.stdout


def prepare(instance: Instance, log: Log = _quiet, *, fresh: bool = False) -> Ready:
    """Code, venv, Postgres, Redis and a migrated database with Treeherder's initial data.

    ``fresh``: start from an empty database (Treeherder's initial data only), copied in about a second from a
    template made by the first migration; the tests use it so that no job of an earlier run can pass for theirs.
    """
    steps: list[tuple[str, str, float]] = []
    instance.state.mkdir(parents=True, exist_ok=True)
    installation_box: list[install.Installation] = []

    def code() -> str:
        installation_box.append(install.install(log))
        return "venv built" if installation_box[0].built else "cached"

    _timed(steps, "Treeherder code and venv", code)
    installation = installation_box[0]
    cluster_box: list[services.Cluster] = []

    def postgres() -> str:
        cluster, outcome = services.start_postgres(instance.state, log)
        cluster_box.append(cluster)
        return outcome

    _timed(steps, "Postgres", postgres)
    cluster = cluster_box[0]
    _timed(steps, "Redis", lambda: services.start_redis(instance.state, instance.redis_port, log))
    env = treeherder_env(installation, instance, services.database_url(cluster, instance.database))
    ready = Ready(installation, cluster, env, steps)

    def database() -> str:
        with file_lock(instance.state / f"database-{instance.database}.lock"):
            return _ensure_database(ready, instance, cluster, fresh, log)

    _timed(steps, f"database {instance.database}", database)
    return ready


def _ensure_database(ready: Ready, instance: Instance, cluster: services.Cluster, fresh: bool, log: Log) -> str:
    template = f"{instance.database}_template"
    if fresh and _has_initial_data(cluster, template):
        services.drop_database(cluster, instance.database)
        services._psql(cluster, f'CREATE DATABASE "{instance.database}" OWNER {services.ROLE} TEMPLATE "{template}"')
        return "fresh (from template)"
    if fresh:
        services.drop_database(cluster, instance.database)
    services.ensure_database(cluster, instance.database)
    if _has_initial_data(cluster, instance.database):
        return "ready"
    log(f"migrating database {instance.database} and loading Treeherder's initial data (once)")
    _manage(ready, "migrate", "--noinput")
    _manage(ready, "load_initial_data")
    _manage(ready, "createcachetable")
    if fresh:  # keep this state as the template of the next fresh database
        services.drop_database(cluster, template)
        services._psql(cluster, f'CREATE DATABASE "{template}" OWNER {services.ROLE} TEMPLATE "{instance.database}"')
    return "migrated"


def _has_initial_data(cluster: services.Cluster, database: str) -> bool:
    try:
        return services._psql(cluster, "SELECT count(*) FROM repository", database) not in ("", "0")
    except TreeherderError:
        return False


# The API server.


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _request(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})


def api_answers(instance: Instance) -> bool:
    return _http_ok(f"{instance.api_url}/api/repository/")


def _spawn(command: list[str], *, cwd: Path, env: dict[str, str], log_file: Path, pid_file: Path) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def start_api(ready: Ready, instance: Instance, log: Log = _quiet, timeout: float = 90) -> str:
    marker = f"runserver 127.0.0.1:{instance.api_port}"
    with file_lock(instance.state / "api.lock"):
        if read_pid(instance.api_pid_file, marker):
            if wait_until(lambda: api_answers(instance), timeout):
                return "running"
        elif api_answers(instance):
            return "reused"
        log_file = instance.state / f"api-{instance.api_port}.log"
        log(f"starting Treeherder's API on {instance.api_url} (log: {log_file})")
        pid = _spawn(ready.python("manage.py", "runserver", f"127.0.0.1:{instance.api_port}", "--noreload"),
                     cwd=ready.installation.source, env=ready.env, log_file=log_file,
                     pid_file=instance.api_pid_file)
        if not wait_until(lambda: api_answers(instance), timeout, interval=0.3, still_hopeful=lambda: is_alive(pid)):
            tail = _tail(log_file)
            stop_pid(pid, 5)
            raise TreeherderError(f"Treeherder's API did not answer on {instance.api_url} within {timeout:.0f}s:\n"
                                  f"{tail}")
        return "started"


def stop_api(instance: Instance) -> str:
    pid = read_pid(instance.api_pid_file, f"runserver 127.0.0.1:{instance.api_port}")
    instance.api_pid_file.unlink(missing_ok=True)
    if pid is None:
        return "not running"
    return "killed" if stop_pid(pid, 15) else "stopped"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# The jobs ingester (integrations/treeherder/tc_jobs_ingester), one per destination it reads.


@dataclass(frozen=True, slots=True)
class IngesterSpec:
    """What one ingester reads: a destination's jobs exchange, through its own durable queue."""

    pulse_url: str
    exchange: str
    name: str  # queue/<user>/<name>
    bindings: tuple[str, ...]
    metrics_port: int
    default_root_url: str = ""
    concurrency: int = 4
    prefetch: int = 64
    delays: str = "1,2,5,10,30,60,120,300"
    park_after: float = 3600.0

    @classmethod
    def for_destination(cls, settings: Settings, destination: Destination, metrics_port: int,
                        **options: Any) -> IngesterSpec:
        prefix = f"{settings.namespace}/" if settings.namespace else ""
        return cls(pulse_url=destination.pulse_url, exchange=destination.exchange,
                   name=f"{prefix}tc-treeherder/treeherder-{destination.name}", bindings=(f"{destination.name}.#",),
                   metrics_port=metrics_port, default_root_url=settings.taskcluster_root_url, **options)

    def queues(self) -> list[str]:
        """Every queue the ingester declares (to delete a test's or a demo's afterwards)."""
        user = urlsplit(self.pulse_url).username or "guest"
        base = f"queue/{user}/{self.name}"
        delays = [float(d) for d in self.delays.split(",") if d.strip()]
        return [base, f"{base}/parked", *(f"{base}/delay-{_delay_label(d)}" for d in delays)]

    @property
    def retry_exchange(self) -> str:
        user = urlsplit(self.pulse_url).username or "guest"
        return f"exchange/{user}/{self.name}/retry"

    def env(self, ready: Ready) -> dict[str, str]:
        """Treeherder's environment plus the Pulse URL, which stays off the command line (it may hold a password)."""
        return {**ready.env, "TC_TREEHERDER_INGEST_PULSE_URL": self.pulse_url}

    def command(self, ready: Ready) -> list[str]:
        command = ready.python("-m", "tc_jobs_ingester", "run", "--name", self.name,
                               "--exchange", self.exchange, "--concurrency", str(self.concurrency),
                               "--prefetch", str(self.prefetch), "--delays", self.delays,
                               "--park-after", str(self.park_after), "--metrics-port", str(self.metrics_port),
                               "--declare-exchange")
        for binding in self.bindings:
            command += ["--binding", binding]
        if self.default_root_url:
            command += ["--default-root-url", self.default_root_url]
        return command


def _delay_label(seconds: float) -> str:
    """As tc_jobs_ingester.policy.delay_label names a delay queue (that package runs in Treeherder's Python)."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def ingester_status(spec: IngesterSpec) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{spec.metrics_port}/status.json", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def start_ingester(ready: Ready, instance: Instance, spec: IngesterSpec, log: Log = _quiet,
                   timeout: float = 60) -> tuple[int, str]:
    """Start the ingester for ``spec`` unless it runs; returns its pid and 'started' or 'running'.

    Ready means consuming: its queue is declared and bound, so a job published from now on reaches it.
    """
    pid_file = instance.ingester_pid_file(spec.name)
    marker = f"--name {spec.name} "
    with file_lock(instance.state / "ingesters.lock"):
        pid = read_pid(pid_file, "tc_jobs_ingester")
        if pid is not None and marker.strip() in _cmdline(pid):
            return pid, "running"
        log_file = pid_file.with_suffix(".log")
        log(f"starting the jobs ingester for {spec.exchange} ({spec.name}; log: {log_file})")
        pid = _spawn(spec.command(ready), cwd=ready.installation.source, env=spec.env(ready), log_file=log_file,
                     pid_file=pid_file)

        def consuming() -> bool:
            status = ingester_status(spec)
            return bool(status and status.get("consuming"))

        if not wait_until(consuming, timeout, interval=0.2, still_hopeful=lambda: is_alive(pid)):
            tail = _tail(log_file)
            stop_pid(pid, 5)
            raise TreeherderError(f"the jobs ingester did not start consuming within {timeout:.0f}s:\n{tail}")
        return pid, "started"


def ingester_command(ready: Ready, spec: IngesterSpec, action: str) -> list[str]:
    """``python -m tc_jobs_ingester parked|redrive`` for ``spec``'s queues, as an operator runs it; its lines."""
    command = ready.python("-m", "tc_jobs_ingester", action, "--name", spec.name, "--exchange", spec.exchange,
                           "--delays", spec.delays)
    result = subprocess.run(command, env=spec.env(ready), capture_output=True, text=True, timeout=120, check=False,
                            cwd=ready.installation.source)
    if result.returncode != 0:
        raise TreeherderError(f"tc_jobs_ingester {action} failed (exit {result.returncode}):\n"
                              f"{result.stderr.strip()[-2000:]}")
    return [line for line in result.stdout.splitlines() if line.strip()]


def _cmdline(pid: int) -> str:
    from devtools.stack.process import command_line

    return command_line(pid)


def stop_ingesters(instance: Instance) -> list[tuple[str, str]]:
    stopped = []
    folder = instance.state / "ingesters"
    for pid_file in sorted(folder.glob("*.pid")) if folder.exists() else []:
        pid = read_pid(pid_file, "tc_jobs_ingester")
        pid_file.unlink(missing_ok=True)
        if pid is not None:
            stopped.append((pid_file.stem, "killed" if stop_pid(pid, 40) else "stopped"))
    return stopped


# Pushes and the REST API.


def clear_cache(instance: Instance) -> None:
    """Empty the instance's Redis database: Treeherder's API caches some lookups for five minutes (the option
    collections behind ``platform_option``, for one), so a job stored after the first API call may be listed
    with a stale lookup until the cache expires. Tests clear it before they compare."""
    import socket

    with socket.create_connection(("127.0.0.1", instance.redis_port), timeout=5) as sock:
        sock.sendall(f"SELECT {instance.redis_db}\r\nFLUSHDB\r\n".encode())
        answer = b""
        while answer.count(b"\r\n") < 2:
            chunk = sock.recv(64)
            if not chunk:
                break
            answer += chunk
    if answer.count(b"+OK") < 2:
        raise TreeherderError(f"Redis did not clear database {instance.redis_db}: {answer!r}")


def register_pushes(ready: Ready, pushes: Iterable[tuple[str, str]], author: str = "tc-treeherder@example.com",
                    ) -> list[dict[str, Any]]:
    """Create a Push row per (project, revision), as Treeherder's push ingestion does; returns their ids."""
    payload = json.dumps([{"project": p, "revision": r, "author": author} for p, r in pushes])
    result = subprocess.run(ready.python(str(SCRIPTS / "register_push.py")), input=payload, env=ready.env,
                            cwd=ready.installation.source, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise TreeherderError(f"registering pushes failed:\n{(result.stdout + result.stderr).strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def api_get(instance: Instance, path: str, timeout: float = 30) -> Any:
    url = f"{instance.api_url}{path}"
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise TreeherderError(f"GET {url}: HTTP {error.code}: {error.read()[:500]!r}") from error
    except (OSError, urllib.error.URLError) as error:
        raise TreeherderError(f"GET {url}: {error}") from error


def jobs(instance: Instance, project: str, **filters: Any) -> list[dict[str, Any]]:
    """Every job ``/api/project/<project>/jobs/`` lists for ``filters``, all pages, as dicts by field name."""
    found: list[dict[str, Any]] = []
    offset, count = 0, 2000
    while True:
        query = "&".join(f"{key}={value}" for key, value in {**filters, "count": count, "offset": offset}.items())
        page = api_get(instance, f"/api/project/{project}/jobs/?{query}")
        names = page.get("job_property_names")
        results = page.get("results", [])
        found += [dict(zip(names, row, strict=False)) if names else row for row in results]
        if len(results) < count:
            return found
        offset += count


# Up and down.


def pick_destination(settings: Settings, wanted: str | None) -> Destination:
    enabled = [d for d in settings.destinations if d.enabled]
    if wanted:
        for destination in settings.destinations:
            if wanted in (destination.name, destination.route_prefix):
                return destination
        names = ", ".join(d.name for d in settings.destinations)
        raise TreeherderError(f"no destination {wanted!r}; configured: {names}")
    if not enabled:
        raise TreeherderError("no enabled destination to read jobs from (see docs/configuration.md#destinations)")
    return enabled[0]


def down(instance: Instance, *, services_too: bool = True) -> list[tuple[str, str]]:
    steps = [(f"ingester {name}", outcome) for name, outcome in stop_ingesters(instance)]
    steps.append((f"API {instance.api_url}", stop_api(instance)))
    if services_too:
        steps.append(("Redis", services.stop_redis(instance.state)))
        steps.append(("Postgres", services.stop_postgres(instance.state)))
    return steps


def print_steps(steps: Iterable[tuple[str, str, float]]) -> None:
    for what, outcome, seconds in steps:
        print(f"{what:<34} {outcome:<40} {seconds:6.1f}s", file=sys.stdout)
