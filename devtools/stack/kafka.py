"""A real single-node Apache Kafka (KRaft, combined broker+controller) run from Maven Central jars.

There is no Kafka distribution to download on the machines this project targets, but every broker jar is on
Maven Central. The jars are resolved once, with the project's own tiny POM, into a cache outside the work
tree; data, logs and the pid file live under ``<state_dir>/kafka``. We start the JVM ourselves, so we know
its pid and stop exactly that process.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from devtools.stack import StackError
from devtools.stack.probe import kafka_answers, wait_until
from devtools.stack.process import file_lock, read_pid, stop_pid

# Tried in order: the newest 3.9 patch release first, the previous one if it does not resolve.
KAFKA_VERSIONS = ("3.9.2", "3.9.1")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
# Jars that bind slf4j to a backend: exactly one may be on the broker's classpath.
SLF4J_BINDINGS = ("slf4j-reload4j-", "slf4j-log4j12-", "slf4j-simple-", "slf4j-jdk14-", "slf4j-nop-",
                  "logback-classic-", "log4j-slf4j-impl-", "log4j-slf4j2-impl-")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
JVM_OPTIONS = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
               "-Djava.awt.headless=true")
COMPLETE_MARKER = ".complete"

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/tc-treeherder`` (default ``~/.cache/tc-treeherder``): shared by every clone."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tc-treeherder"


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """Where one local broker listens and keeps its files."""

    home: Path  # <state_dir>/kafka
    host: str
    port: int
    controller_port: int

    @classmethod
    def for_bootstrap(cls, bootstrap: str, state_dir: Path) -> KafkaNode:
        first = bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return cls(home=Path(state_dir) / "kafka", host=host or "localhost", port=int(port),
                   controller_port=int(port) + 1)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "log4j.properties"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def console_file(self) -> Path:
        return self.logs_dir / "console.out"


def render_server_properties(node: KafkaNode, *, offsets_partitions: int = 4) -> str:
    """server.properties for one combined broker+controller on loopback, sized for a laptop."""
    advertised = node.host if node.host != "::1" else "[::1]"
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{node.controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        # Clients reconnect to what the broker advertises: the same host they bootstrapped with.
        "advertised.listeners": f"PLAINTEXT://{advertised}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(node.data_dir),
        # One node: internal topics cannot have more replicas, or consumers never find a group coordinator.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": str(offsets_partitions),
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": str(offsets_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created explicitly with their partition counts; Faust declares its own internal topics.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "delete.topic.enable": "true",
    }
    header = "# Written by tc-treeherder (devtools/stack/kafka.py) at every start; edits are overwritten.\n"
    return header + "".join(f"{key}={value}\n" for key, value in lines.items())


def render_log4j(node: KafkaNode) -> str:
    """Broker logs go to a size-capped file under the node's logs folder, nothing to the terminal."""
    return f"""# Written by tc-treeherder at every start.
log4j.rootLogger=INFO, server
log4j.appender.server=org.apache.log4j.RollingFileAppender
log4j.appender.server.File={node.logs_dir / "server.log"}
log4j.appender.server.MaxFileSize=10MB
log4j.appender.server.MaxBackupIndex=2
log4j.appender.server.layout=org.apache.log4j.PatternLayout
log4j.appender.server.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.controller=INFO
"""


def new_cluster_id() -> str:
    """A Kafka Uuid in its text form (URL-safe base64 of 16 random bytes, no padding, not starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def slf4j_bindings(libs: Path) -> list[str]:
    return sorted(p.name for p in libs.glob("*.jar") if p.name.startswith(SLF4J_BINDINGS))


def ensure_jars(log: Log = _quiet, versions: tuple[str, ...] = KAFKA_VERSIONS) -> tuple[str, Path]:
    """The version and libs folder of the first Kafka release in ``versions`` that is cached or resolves."""
    root = cache_root()
    for version in versions:
        libs = root / f"kafka-{version}" / "libs"
        if (libs / COMPLETE_MARKER).exists():
            return version, libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise StackError("Kafka needs Java 17+ and Maven (mvn) to fetch its jars once: "
                         "apt-get install -y openjdk-17-jre-headless maven")
    with file_lock(root / "kafka-fetch.lock"):
        errors = []
        for version in versions:
            libs = root / f"kafka-{version}" / "libs"
            if (libs / COMPLETE_MARKER).exists():  # another process fetched it while we waited
                return version, libs
            log(f"fetching Kafka {version} broker jars from Maven Central into {libs} (once)")
            error = _fetch(version, libs)
            if error is None:
                return version, libs
            errors.append(f"{version}: {error}")
        raise StackError("could not fetch the Kafka broker jars with Maven:\n" + "\n".join(errors))


def _fetch(version: str, libs: Path) -> str | None:
    """Resolve one version into ``libs`` (atomically); None on success, else the tail of Maven's output."""
    work = libs.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    template = resources.files("devtools.stack").joinpath("kafka-pom.xml").read_text()
    (work / "pom.xml").write_text(template.replace("@KAFKA_VERSION@", version))
    staging = work / "libs"
    command = ["mvn", "-B", "-q", f"-Dmaven.repo.local={work / 'repository'}", DEPENDENCY_PLUGIN,
               "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        return (result.stdout + result.stderr).strip()[-2000:] or f"mvn exited with {result.returncode}"
    bindings = slf4j_bindings(staging)
    if len(bindings) != 1:
        shutil.rmtree(work, ignore_errors=True)
        return f"expected exactly one slf4j binding, found {bindings or 'none'}"
    (staging / COMPLETE_MARKER).write_text(version + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    shutil.rmtree(work, ignore_errors=True)  # the private Maven repository is a second copy of the jars
    return None


def running_pid(node: KafkaNode) -> int | None:
    """The pid of the broker we started for this node, if it still runs."""
    return read_pid(node.pid_file, str(node.properties_file))


def _java(libs: Path, main: str, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
    return ["java", *jvm, "-cp", f"{libs}/*", main, *args]


def start(node: KafkaNode, *, log: Log = _quiet, fresh: bool = False, timeout: float = 120.0) -> str:
    """Make a broker answer at ``node``: 'reused' (someone else's), 'running' (ours, already up) or 'started'.

    ``fresh`` wipes our data folder before starting (test sessions begin with no topics).
    """
    if kafka_answers(node.host, node.port):
        return "running" if running_pid(node) else "reused"
    if not node.is_local:
        raise StackError(f"no Kafka answers at {node.bootstrap}, and only a broker on this machine "
                         "(localhost) can be started; check TC_TREEHERDER_KAFKA_BOOTSTRAP")
    version, libs = ensure_jars(log)
    with file_lock(node.home / "start.lock"):
        if kafka_answers(node.host, node.port):
            return "running" if running_pid(node) else "reused"
        pid = running_pid(node)
        if pid is not None:  # ours, but not answering (still booting or wedged): start over
            stop_pid(pid, timeout=15)
        if fresh:
            shutil.rmtree(node.data_dir, ignore_errors=True)
        node.logs_dir.mkdir(parents=True, exist_ok=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.properties_file.write_text(render_server_properties(node))
        node.log4j_file.write_text(render_log4j(node))
        log_options = (f"-Dlog4j.configuration=file:{node.log4j_file}", f"-Dkafka.logs.dir={node.logs_dir}")
        if not (node.data_dir / "meta.properties").exists():
            log(f"formatting Kafka {version} storage in {node.data_dir}")
            fmt = subprocess.run(
                _java(libs, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c",
                      str(node.properties_file), "-g", jvm=log_options),
                capture_output=True, text=True, check=False)
            if fmt.returncode != 0:
                raise StackError(f"Kafka storage format failed:\n{(fmt.stdout + fmt.stderr).strip()[-2000:]}")
        log(f"starting Kafka {version} on {node.bootstrap} (logs: {node.logs_dir})")
        with node.console_file.open("ab") as console:
            process = subprocess.Popen(
                _java(libs, "kafka.Kafka", str(node.properties_file), jvm=(*JVM_OPTIONS, *log_options)),
                cwd=node.home, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `tc-treeherder up`, and Ctrl-C in a shell does not reach it
            )
        node.pid_file.write_text(f"{process.pid}\n")
        ready = wait_until(lambda: kafka_answers(node.host, node.port, timeout=1.0), timeout,
                           still_hopeful=lambda: process.poll() is None)
        if not ready:
            if process.poll() is None:
                stop_pid(process.pid, timeout=10)
            node.pid_file.unlink(missing_ok=True)
            raise StackError(f"Kafka did not answer at {node.bootstrap} within {timeout:.0f}s; "
                             f"see {node.logs_dir / 'server.log'} and {node.console_file}:\n{_tail(node)}")
        return "started"


def stop(node: KafkaNode, timeout: float = 30.0) -> str:
    """Stop the broker we started for ``node``: 'stopped', 'killed' or 'not running' (nothing of ours)."""
    with file_lock(node.home / "start.lock"):
        pid = running_pid(node)
        node.pid_file.unlink(missing_ok=True)
        if pid is None:
            return "not running"
        return "killed" if stop_pid(pid, timeout) else "stopped"


def _tail(node: KafkaNode, lines: int = 20) -> str:
    for path in (node.logs_dir / "server.log", node.console_file):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            return "\n".join(text.splitlines()[-lines:])
    return "(no log output)"


def wait_gone(node: KafkaNode, timeout: float = 10.0) -> bool:
    """True once nothing answers at the node's address (ports free for the next start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not kafka_answers(node.host, node.port, timeout=0.5):
            return True
        time.sleep(0.1)
    return False
