"""Pid files and stopping a process by the pid we recorded, never by name.

A pid file alone could point at an unrelated process after a reboot reuses the number, so each check also
reads the process's command line and requires a marker we passed when we started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from devtools.stack import StackError


def is_alive(pid: int) -> bool:
    """True for a running process; a zombie left by an exited child of ours counts as dead (and is reaped)."""
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid recorded in ``pid_file`` if that process is alive and its command line contains ``marker``."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if is_alive(pid) and marker in command_line(pid):
        return pid
    return None


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns True if the process had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return False
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while is_alive(pid):
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (``up`` and test sessions may start the same broker at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_command(command: list[str], timeout: float = 300.0, env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
    """Run a set-up command (apt-get, rabbitmqctl, pg_ctlcluster, manage.py ...), its output captured."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def require(result: subprocess.CompletedProcess[str], what: str, error: type[Exception] = StackError) -> str:
    """The command's standard output; ``error`` with the end of its output when it failed."""
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise error(f"{what} failed (exit {result.returncode}):\n{output}")
    return result.stdout
