"""A real RabbitMQ node from the Debian package, standing in for Pulse on loopback.

The package is installed when missing (as root), the node is named ``rabbit@localhost`` so that boot does
not depend on the machine's host name resolving, and the management plugin is enabled for its UI and HTTP
API. Debian's node listens on every interface, with the guest account; the configuration written here binds
every port it opens to 127.0.0.1 instead, like the local Kafka: AMQP and management in ``rabbitmq.conf``,
the Erlang distribution port and epmd in ``rabbitmq-env.conf`` (RabbitMQ's networking guide).

``stop`` only stops a node that ``start`` (or the install it ran) brought up: a marker under
``<state_dir>/rabbitmq`` records that, with the node's pid.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devtools.stack import StackError
from devtools.stack.probe import amqp_answers, wait_until
from devtools.stack.process import command_line, file_lock, is_alive, require, run_command, stop_pid

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




# rabbitmq-env.conf is sourced by the node's start script (names without the RABBITMQ_ prefix).
# NODENAME: a host name that does not resolve makes boot fail (epmd nxdomain). ERL_EPMD_ADDRESS: the address
# epmd binds when the node starts it (exported, so epmd inherits it). SERVER_ADDITIONAL_ERL_ARGS: the
# interface of the node's Erlang distribution listener (25672).
ENV_SETTINGS = {
    "NODENAME": NODENAME,
    "export ERL_EPMD_ADDRESS": "127.0.0.1",
    "SERVER_ADDITIONAL_ERL_ARGS": '"-kernel inet_dist_use_interface {127,0,0,1}"',
}
# rabbitmq.conf (sysctl format): AMQP and the management UI on loopback only. ``listeners.tcp.local``
# replaces the default listener (``listeners.tcp.default = 5672``, every interface).
def conf_settings(port: int = 5672) -> dict[str, str]:
    return {"listeners.tcp.local": f"127.0.0.1:{port}", "management.tcp.ip": "127.0.0.1",
            "management.tcp.port": str(MANAGEMENT_PORT)}


def set_lines(text: str, settings: dict[str, str], separator: str) -> str:
    """``text`` with one ``key<separator>value`` line per setting (replacing any line that sets the key, and
    ``listeners.tcp.<name>`` lines of other names, which would open more listeners); other lines are kept."""
    def owned(line: str) -> bool:
        key = line.split(separator.strip(), 1)[0].strip()
        return key in settings or (key.startswith("listeners.tcp.") and "listeners.tcp.local" in settings)

    kept = [line for line in text.splitlines() if not owned(line)]
    return "\n".join([*kept, *(f"{key}{separator}{value}" for key, value in settings.items())]) + "\n"


def _write_conf(path: Path, settings: dict[str, str], separator: str) -> bool:
    """Make ``path`` hold ``settings``; True when it had to change."""
    text = path.read_text() if path.exists() else ""
    wanted = set_lines(text, settings, separator)
    if wanted == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wanted)
    return True


def _write_env_conf(port: int = 5672) -> bool:
    """The node's name and loopback-only configuration; True when a file changed (a running node keeps the
    old settings until it restarts)."""
    changed = _write_conf(ETC / "rabbitmq-env.conf", ENV_SETTINGS, "=")
    return _write_conf(ETC / "rabbitmq.conf", conf_settings(port), " = ") or changed


def install(log: Log = _quiet, port: int = 5672) -> None:
    """Install Debian's rabbitmq-server (root only); the env file is written first so any auto-start works."""
    if os.geteuid() != 0:
        raise StackError("RabbitMQ is not installed and this user cannot install it. Install it once with "
                         "`sudo apt-get install -y rabbitmq-server` (Debian/Ubuntu), or point "
                         "TC_TREEHERDER_PULSE_URL at a running RabbitMQ.")
    if shutil.which("apt-get") is None:
        raise StackError("RabbitMQ is not installed and apt-get is missing: install rabbitmq-server with this "
                         "system's package manager, or point TC_TREEHERDER_PULSE_URL at a running RabbitMQ.")
    _write_env_conf(port)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("installing rabbitmq-server with apt-get (once)")
    require(run_command(["apt-get", "update", "-q"], env=env), "apt-get update")
    require(run_command(["apt-get", "install", "-y", "-q", "--no-install-recommends",
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
    require(run_command([str(SBIN / "rabbitmq-plugins"), "enable", "--offline", "rabbitmq_management"], timeout=120),
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
            install(log, node.port)
            if wait_until(lambda: _answers(node, 1.0), timeout=5):  # the package started a node itself
                node.marker.write_text(f"{node_pid() or ''}\n")
                return "started"
        if os.geteuid() == 0:
            _write_env_conf(node.port)
        else:
            log("not root: /etc/rabbitmq is left as it is (the node may listen on every interface)")
        _enable_management(log)
        if node_pid() is None:
            _stop_idle_epmd()  # one left by an earlier node keeps its old address; the node starts a new one
            log(f"starting RabbitMQ ({NODENAME}, logs: {LOG_DIR})")
            require(run_command([str(SBIN / "rabbitmq-server"), "-detached"], timeout=60), "rabbitmq-server -detached")
        else:
            log("RabbitMQ node is booting; waiting for it")
        if not wait_until(lambda: _answers(node, 1.0), timeout, interval=0.5):
            raise StackError(f"RabbitMQ did not answer on {node.host}:{node.port} within {timeout:.0f}s; "
                             f"see {LOG_DIR}/{NODENAME}.log")
        require(run_command([str(SBIN / "rabbitmqctl"), "-q", "await_startup", "--timeout", "60"], timeout=90),
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
        result = run_command([str(SBIN / "rabbitmqctl"), "-q", "shutdown", "--timeout", str(int(timeout))],
                      timeout=timeout + 30)
        killed = not (result.returncode == 0 and not is_alive(pid)) and stop_pid(pid, timeout=15)
        _stop_idle_epmd()
        return "killed" if killed else "stopped"


def _stop_idle_epmd() -> None:
    """Stop epmd (Erlang's port mapper, which a node starts and leaves running) when no node is registered
    with it: ``epmd -kill`` refuses while any node is. An epmd outlives the node that started it, with the
    address it was started with, so a node configured for loopback would otherwise keep an old epmd that
    listens on every interface."""
    epmd = shutil.which("epmd")
    if epmd is None:
        return
    names = run_command([epmd, "-names"], timeout=10)
    if names.returncode == 0 and "\nname " not in f"\n{names.stdout}":
        run_command([epmd, "-kill"], timeout=10)
