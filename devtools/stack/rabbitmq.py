"""A real RabbitMQ node from the Debian package, standing in for Pulse on loopback.

The package is installed when missing (as root), the node is named ``rabbit@localhost`` so that boot does
not depend on the machine's host name resolving, and the management plugin is enabled for its UI and HTTP
API. ``stop`` only stops a node that ``start`` (or the install it ran) brought up: a marker under
``<state_dir>/rabbitmq`` records that, with the node's pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devtools.stack import StackError
from devtools.stack.probe import amqp_answers, wait_until
from devtools.stack.process import command_line, file_lock, is_alive, stop_pid

NODENAME = "rabbit@localhost"
ETC = Path("/etc/rabbitmq")
SBIN = Path("/usr/sbin")
LOG_DIR = Path("/var/log/rabbitmq")
MANAGEMENT_PORT = 15672
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class RabbitNode:
    """The broker behind one Pulse URL, and where we remember having started it."""

    home: Path  # <state_dir>/rabbitmq
    host: str
    port: int

    @classmethod
    def for_url(cls, pulse_url: str, state_dir: Path) -> RabbitNode:
        parts = urlsplit(pulse_url)
        default = 5671 if parts.scheme == "amqps" else 5672
        return cls(home=Path(state_dir) / "rabbitmq", host=parts.hostname or "localhost",
                   port=parts.port or default)

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    @property
    def marker(self) -> Path:
        return self.home / "started-by-tc-treeherder"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{MANAGEMENT_PORT}/"



def installed() -> bool:
    return (SBIN / "rabbitmq-server").exists() and (SBIN / "rabbitmqctl").exists()


def _run(command: list[str], timeout: float = 300.0, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _require(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise StackError(f"{what} failed (exit {result.returncode}):\n{output}")


def _write_env_conf() -> None:
    """Name the node rabbit@localhost: a host name that does not resolve makes boot fail (epmd nxdomain)."""
    conf = ETC / "rabbitmq-env.conf"
    text = conf.read_text() if conf.exists() else ""
    if f"NODENAME={NODENAME}" in text.splitlines():
        return
    ETC.mkdir(parents=True, exist_ok=True)
    kept = [line for line in text.splitlines() if not line.startswith("NODENAME=")]
    conf.write_text("\n".join([*kept, f"NODENAME={NODENAME}"]) + "\n")


def install(log: Log = _quiet) -> None:
    """Install Debian's rabbitmq-server (root only); the env file is written first so any auto-start works."""
    if os.geteuid() != 0:
        raise StackError("RabbitMQ is not installed and this user cannot install it. Install it once with "
                         "`sudo apt-get install -y rabbitmq-server` (Debian/Ubuntu), or point "
                         "TC_TREEHERDER_PULSE_URL at a running RabbitMQ.")
    if shutil.which("apt-get") is None:
        raise StackError("RabbitMQ is not installed and apt-get is missing: install rabbitmq-server with this "
                         "system's package manager, or point TC_TREEHERDER_PULSE_URL at a running RabbitMQ.")
    _write_env_conf()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("installing rabbitmq-server with apt-get (once)")
    _require(_run(["apt-get", "update", "-q"], env=env), "apt-get update")
    _require(_run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                   "-o", "Dpkg::Options::=--force-confold", "rabbitmq-server"], timeout=900, env=env),
             "apt-get install rabbitmq-server")


def _enable_management(log: Log) -> None:
    enabled = ETC / "enabled_plugins"
    if enabled.exists() and "rabbitmq_management" in enabled.read_text():
        return
    if os.geteuid() != 0:
        log("management plugin not enabled (needs root: rabbitmq-plugins enable rabbitmq_management)")
        return
    log("enabling the RabbitMQ management plugin")
    _require(_run([str(SBIN / "rabbitmq-plugins"), "enable", "--offline", "rabbitmq_management"], timeout=120),
             "rabbitmq-plugins enable --offline rabbitmq_management")


def is_rabbit_node(command: str) -> bool:
    """A RabbitMQ node's Erlang VM: beam.smp booting the ``rabbit`` application (its name is not on the line)."""
    program = command.split(" ", 1)[0]
    return program.endswith("/beam.smp") and " -s rabbit boot " in f"{command} "


def node_pid() -> int | None:
    """The pid of the machine's RabbitMQ node, read from /proc (the package's node writes no pid file we can
    rely on). Only one node can hold the AMQP port, so the first match is the one that answers."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_rabbit_node(command_line(int(entry.name))):
            return int(entry.name)
    return None


def started_by_us(node: RabbitNode) -> int | None:
    """The pid recorded in our marker if that node still runs."""
    try:
        pid = int(node.marker.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_alive(pid) and is_rabbit_node(command_line(pid)) else None


def _answers(node: RabbitNode, timeout: float = 2.0) -> bool:
    return amqp_answers(node.host, node.port, timeout=timeout)


def start(node: RabbitNode, *, log: Log = _quiet, timeout: float = 90.0) -> str:
    """Make RabbitMQ answer at ``node``: 'reused' (someone else's), 'running' (ours) or 'started'."""
    if _answers(node):
        return "running" if started_by_us(node) else "reused"
    if not node.is_local:
        raise StackError(f"no AMQP broker answers at {node.host}:{node.port}, and only a RabbitMQ on this "
                         "machine (localhost) can be started; check TC_TREEHERDER_PULSE_URL")
    with file_lock(node.home / "start.lock"):
        if _answers(node):
            return "running" if started_by_us(node) else "reused"
        if not installed():
            install(log)
            if wait_until(lambda: _answers(node, 1.0), timeout=5):  # the package started a node itself
                node.marker.write_text(f"{node_pid() or ''}\n")
                return "started"
        if os.geteuid() == 0:
            _write_env_conf()
        _enable_management(log)
        if node_pid() is None:
            log(f"starting RabbitMQ ({NODENAME}, logs: {LOG_DIR})")
            _require(_run([str(SBIN / "rabbitmq-server"), "-detached"], timeout=60), "rabbitmq-server -detached")
        else:
            log("RabbitMQ node is booting; waiting for it")
        if not wait_until(lambda: _answers(node, 1.0), timeout, interval=0.5):
            raise StackError(f"RabbitMQ did not answer on {node.host}:{node.port} within {timeout:.0f}s; "
                             f"see {LOG_DIR}/{NODENAME}.log")
        _require(_run([str(SBIN / "rabbitmqctl"), "-q", "await_startup", "--timeout", "60"], timeout=90),
                 "rabbitmqctl await_startup")
        node.marker.parent.mkdir(parents=True, exist_ok=True)
        node.marker.write_text(f"{node_pid() or ''}\n")
        return "started"


def stop(node: RabbitNode, timeout: float = 60.0) -> str:
    """Stop the node only if we started it: 'stopped', 'killed' or 'not running' (nothing of ours)."""
    with file_lock(node.home / "start.lock"):
        pid = started_by_us(node)
        node.marker.unlink(missing_ok=True)
        if pid is None:
            return "not running"
        result = _run([str(SBIN / "rabbitmqctl"), "-q", "shutdown", "--timeout", str(int(timeout))],
                      timeout=timeout + 30)
        if result.returncode == 0 and not is_alive(pid):
            return "stopped"
        return "killed" if stop_pid(pid, timeout=15) else "stopped"
