"""Postgres and Redis for the local Treeherder, from Debian's packages, on loopback.

Postgres: the machine's cluster (``pg_lsclusters``), started with ``pg_ctlcluster`` when it is down (and then
stopped again by ``down``), with a role and databases of our own, so the cluster's other users and the
``postgres`` password are left alone. Redis: one that answers on the port is reused; else a
``redis-server`` of ours, no persistence, its pid file under the state folder. A missing package is installed
with apt-get when running as root; otherwise the message says what to install.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devtools.stack.probe import wait_until
from devtools.stack.process import command_line, file_lock, read_pid, require, run_command, stop_pid
from devtools.treeherder import TreeherderError

Log = Callable[[str], None]
ROLE = "tc_treeherder"
PASSWORD = "tc-treeherder-local"  # a loopback-only database of throwaway data


def _quiet(_: str) -> None:
    pass


def _require(result: subprocess.CompletedProcess[str], what: str) -> str:
    return require(result, what, TreeherderError)


def apt_install(package: str, why: str, log: Log) -> None:
    if shutil.which("apt-get") is None:
        raise TreeherderError(f"{why} is missing and apt-get is not available: install {package} with this "
                              "system's package manager.")
    if os.geteuid() != 0:
        raise TreeherderError(f"{why} is missing and this user cannot install it: run "
                              f"`sudo apt-get install -y {package}` once.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {package} with apt-get (once)")
    with file_lock(Path("/tmp/tc-treeherder-apt.lock")):
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        if run_command(install, 900, env).returncode != 0:
            _require(run_command(["apt-get", "update", "-q"], 600, env), "apt-get update")
            _require(run_command(install, 900, env),
                     f"apt-get install {package}")


# Postgres.


@dataclass(frozen=True, slots=True)
class Cluster:
    version: str
    name: str
    port: int
    online: bool


def clusters() -> list[Cluster]:
    found = []
    for line in _require(run_command(["pg_lsclusters", "--no-header"]), "pg_lsclusters").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2].isdigit():
            found.append(Cluster(parts[0], parts[1], int(parts[2]), parts[3].startswith("online")))
    return found


def _psql(cluster: Cluster, sql: str, database: str = "postgres") -> str:
    command = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-p", str(cluster.port), "-d", database,
               "-c", sql]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return _require(run_command(command), f"psql: {sql.split()[0]} ...").strip()


def start_postgres(state: Path, log: Log = _quiet) -> tuple[Cluster, str]:
    """The machine's Postgres, started when down; returns the cluster and 'started', 'running' or 'reused'."""
    if shutil.which("pg_lsclusters") is None:
        apt_install("postgresql", "Postgres (pg_lsclusters)", log)
    found = clusters()
    if not found:
        raise TreeherderError("Postgres is installed but has no cluster: create one with "
                              "`pg_createcluster 15 main` (as root).")
    cluster = found[0]
    marker = state / "postgres-started-by-tc-treeherder"
    if cluster.online:
        return cluster, "running" if marker.exists() else "reused"
    if os.geteuid() != 0:
        raise TreeherderError(f"Postgres {cluster.version}/{cluster.name} is down and this user cannot start it: "
                              f"run `sudo pg_ctlcluster {cluster.version} {cluster.name} start`.")
    log(f"starting Postgres {cluster.version}/{cluster.name} on port {cluster.port}")
    _require(run_command(["pg_ctlcluster", cluster.version, cluster.name, "start"], 120), "pg_ctlcluster start")
    state.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{cluster.version} {cluster.name}\n")
    return Cluster(cluster.version, cluster.name, cluster.port, True), "started"


def stop_postgres(state: Path) -> str:
    marker = state / "postgres-started-by-tc-treeherder"
    if not marker.exists():
        return "not ours"
    version, name = marker.read_text().split()
    marker.unlink()
    result = run_command(["pg_ctlcluster", version, name, "stop"], 120)
    return "stopped" if result.returncode == 0 else f"stop failed: {result.stderr.strip()[:200]}"


def ensure_database(cluster: Cluster, database: str) -> None:
    """Our role (login, password) and ``database`` owned by it; nothing else in the cluster changes."""
    _psql(cluster, f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
                   f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'; END IF; END $$;")
    if _psql(cluster, f"SELECT 1 FROM pg_database WHERE datname = '{database}'") != "1":
        _psql(cluster, f'CREATE DATABASE "{database}" OWNER {ROLE}')


def drop_database(cluster: Cluster, database: str) -> None:
    _psql(cluster, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def database_url(cluster: Cluster, database: str) -> str:
    return f"psql://{ROLE}:{PASSWORD}@127.0.0.1:{cluster.port}/{database}"


# Redis.


def redis_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(state: Path, port: int, log: Log = _quiet) -> str:
    home = state / "redis"
    pid_file = home / "redis.pid"
    with file_lock(state / "redis.lock"):
        if redis_answers(port):
            return "running" if read_pid(pid_file, "redis-server") else "reused"
        if shutil.which("redis-server") is None:
            apt_install("redis-server", "Redis (redis-server)", log)
            if redis_answers(port):  # the package started its own service
                return "reused"
        home.mkdir(parents=True, exist_ok=True)
        log(f"starting redis-server on 127.0.0.1:{port}")
        _require(run_command(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
                       "--pidfile", str(pid_file), "--dir", str(home), "--logfile", str(home / "redis.log"),
                       "--save", "", "--appendonly", "no"]), "redis-server")
        if not wait_until(lambda: redis_answers(port), timeout=20):
            raise TreeherderError(f"redis-server did not answer on 127.0.0.1:{port}; see {home / 'redis.log'}")
        return "started"


def stop_redis(state: Path) -> str:
    pid = read_pid(state / "redis" / "redis.pid", "redis-server")
    if pid is None:
        return "not ours"
    assert "redis-server" in command_line(pid)
    return "killed" if stop_pid(pid, timeout=10) else "stopped"
