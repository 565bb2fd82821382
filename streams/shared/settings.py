"""Every process's settings, read in one place.

Precedence: built-in defaults, then an optional TOML file (``TC_TREEHERDER_CONFIG`` or ``--config``), then
environment variables. The variable names are part of the public interface (see docs/configuration.md).
A bad value stops the process at start with a message naming the setting and the form it expects.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streams.core.profiles import PROFILES as _PROFILE_REGISTRY
from streams.core.rules import DEFAULT_PROFILE, DEFAULT_ROUTE_PREFIXES, DestinationRule, Rules
from streams.shared.redact import MASK, redact_text, redact_url

# The jobs exchange of the Pulse user taskcluster-treeherder; a destination's default is exchange/<its user>/v1/jobs.
DEFAULT_JOBS_EXCHANGE = "exchange/taskcluster-treeherder/v1/jobs"
DEFAULT_TASK_EXCHANGE_PREFIX = "exchange/taskcluster-queue/v1/"
# The message profiles this version builds: the core's registry is their one home.
PROFILES: tuple[str, ...] = tuple(_PROFILE_REGISTRY)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names it and the expected form."""


@dataclass(frozen=True, slots=True)
class Destination:
    """One Treeherder deployment's jobs: the route prefixes it takes, the projects and tiers it keeps, and where
    and how they go (a Pulse broker, an exchange, a message profile).

    ``key`` is how the configuration names it (``[destinations.<key>]``, ``TC_TREEHERDER_DESTINATION_<KEY>_...``):
    in the older form, where each route prefix is one destination, the key is that prefix.
    """

    key: str
    name: str
    pulse_url: str
    exchange: str
    enabled: bool = True
    profile: str = "treeherder"
    route_prefixes: tuple[str, ...] = ()  # empty: the key, as a route prefix
    projects: tuple[str, ...] | None = None  # only these projects (None: every project)
    exclude_projects: tuple[str, ...] = ()
    min_tier: int | None = None
    max_tier: int | None = None

    @property
    def route_prefix(self) -> str:
        """The configuration key (the older form's route prefix): ``--destination`` accepts it beside the name."""
        return self.key

    @property
    def prefixes(self) -> tuple[str, ...]:
        return self.route_prefixes or (self.key,)

    def rule(self) -> DestinationRule:
        """What the pure core needs of this destination."""
        return DestinationRule(self.name, self.prefixes, self.profile, self.enabled,
                               None if self.projects is None else frozenset(self.projects),
                               frozenset(self.exclude_projects), self.min_tier, self.max_tier)

    def routing_key(self, project: str) -> str:
        return f"{self.name}.{project}._"

    def shown(self) -> dict[str, Any]:
        """Every field, fit to show: the Pulse URL without its password."""
        return {"key": self.key, "name": self.name, "route_prefixes": list(self.prefixes),
                "pulse_url": redact_url(self.pulse_url), "exchange": self.exchange, "enabled": self.enabled,
                "profile": self.profile, "projects": None if self.projects is None else list(self.projects),
                "exclude_projects": list(self.exclude_projects), "min_tier": self.min_tier,
                "max_tier": self.max_tier}

    def __repr__(self) -> str:  # the Pulse URL may carry a password
        return "Destination(" + ", ".join(f"{name}={value!r}" for name, value in self.shown().items()) + ")"


@dataclass(frozen=True, slots=True)
class Deployment:
    """One Taskcluster deployment the service reads (Firefox CI, community, ...): its Pulse, its Queue API and
    the route prefixes its source binds. Each runs its own ``tc-treeherder source --deployment <name>``; all
    write to the one task-events topic, each envelope with its deployment's root URL."""

    name: str
    pulse_url: str
    root_url: str
    route_prefixes: tuple[str, ...]
    task_exchange_prefix: str = DEFAULT_TASK_EXCHANGE_PREFIX

    def shown(self) -> dict[str, Any]:
        return {"name": self.name, "pulse_url": redact_url(self.pulse_url), "root_url": self.root_url,
                "route_prefixes": list(self.route_prefixes), "task_exchange_prefix": self.task_exchange_prefix}

    def __repr__(self) -> str:  # the Pulse URL may carry a password
        return "Deployment(" + ", ".join(f"{name}={value!r}" for name, value in self.shown().items()) + ")"


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    pulse_url: str = "amqp://guest:guest@localhost:5672/"
    taskcluster_root_url: str = "https://firefox-ci-tc.services.mozilla.com"
    namespace: str = ""
    route_prefixes: tuple[str, ...] = DEFAULT_ROUTE_PREFIXES
    destinations: tuple[Destination, ...] = ()
    # Several Taskcluster deployments, each read by its own source; empty: the one of pulse_url and
    # taskcluster_root_url. ``deployment`` names the one a source process reads ("" for that implicit one).
    deployments: tuple[Deployment, ...] = ()
    deployment: str = ""
    task_exchange_prefix: str = DEFAULT_TASK_EXCHANGE_PREFIX
    partitions: int = 8
    replication_factor: int = 1
    events_retention_days: float = 30.0
    queue_timeout: float = 10.0
    queue_retries: int = 5
    max_body_bytes: int = 1_048_576
    store: str = "rocksdb://"
    data_dir: Path = field(default_factory=lambda: _state_home() / "worker")
    state_dir: Path = field(default_factory=lambda: _state_home())
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    source_web_port: int = 0  # /metrics and /healthz of the source; 0: off
    sink_web_port: int = 0  # /metrics and /healthz of the sink; 0: off
    source_prefetch: int = 500
    pulse_naming_rules: str = "auto"  # auto: Pulse's exchange/queue naming rules on every broker that is not local
    pulse_bindings_api: str = "auto"  # where the source lists its queue's bindings to remove stale ones
    sink_max_in_flight: int = 1000
    # Seconds before the group gives a silent worker's partitions to the others (streams/worker/membership.py).
    worker_session_timeout: float = 6.0
    # The same for the sinks of one destination (connectors/pulse_sink.py).
    sink_session_timeout: float = 6.0
    # Kafka security (see docs/security.md); streams/kafka_config.py turns these into client arguments.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""

    def redacted(self) -> dict[str, Any]:
        """Every setting by name, fit to show (status page, logs): URL passwords and secrets masked."""
        shown: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in SECRET_FIELDS:
                value = MASK if value else ""
            elif name in ("destinations", "deployments"):
                value = [d.shown() for d in value]
            elif isinstance(value, str):
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            shown[name] = value
        return shown

    def secrets(self) -> tuple[str, ...]:
        """The secret values themselves, for ``redact_text`` over messages that might quote them."""
        return tuple(value for value in (self.kafka_sasl_password,) if value)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{name}={value!r}" for name, value in self.redacted().items()) + ")"

    # Names under the namespace: several instances may share one pair of brokers.

    def topic(self, base: str) -> str:
        """Kafka topic (and consumer group) name for ``base``, e.g. ``task-events``."""
        return f"{self.namespace}.tc-treeherder.{base}" if self.namespace else f"tc-treeherder.{base}"

    @property
    def app_id(self) -> str:
        """Faust application id: prefixes the worker's consumer group and table changelogs."""
        return f"{self.namespace}.tc-treeherder" if self.namespace else "tc-treeherder"

    def pulse_queue(self, base: str) -> str:
        """A durable Pulse queue, ``queue/<user>/<namespace>/<base>`` as Pulse's permissions expect."""
        user = pulse_user(self.pulse_url)
        middle = f"{self.namespace}/" if self.namespace else ""
        deployment = f"{self.deployment}/" if self.deployment else ""
        return f"queue/{user}/{middle}tc-treeherder/{deployment}{base}"

    @property
    def root_urls(self) -> tuple[str, ...]:
        """The Queue APIs of every deployment read, the default first when there is only the one."""
        return tuple(d.root_url for d in self.deployments) or (self.taskcluster_root_url,)

    def for_deployment(self, name: str | None) -> Settings:
        """The settings a source of deployment ``name`` runs with: its Pulse, root URL, prefixes and exchanges,
        and its own queue (``queue/<user>/[<namespace>/]tc-treeherder/<name>/task-events``)."""
        if not self.deployments:
            if name:
                raise SettingsError(f"--deployment {name}: no deployments are configured (TC_TREEHERDER_DEPLOYMENTS)")
            return self
        if name is None:
            if len(self.deployments) > 1:
                raise SettingsError("several Taskcluster deployments are configured: run one source for each, "
                                    "with --deployment " + " or ".join(d.name for d in self.deployments))
            name = self.deployments[0].name
        chosen = next((d for d in self.deployments if d.name == name), None)
        if chosen is None:
            raise SettingsError(f"--deployment {name}: not configured; configured: "
                                f"{', '.join(d.name for d in self.deployments)}")
        return replace(self, pulse_url=chosen.pulse_url, taskcluster_root_url=chosen.root_url,
                       route_prefixes=chosen.route_prefixes, task_exchange_prefix=chosen.task_exchange_prefix,
                       deployment=chosen.name)

    def task_exchange(self, kind: str) -> str:
        """The Queue's exchange for one event kind (defined, pending, running, ...)."""
        return f"{self.task_exchange_prefix}task-{kind}"

    def rules(self) -> Rules:
        """The deployment's choices the pure core depends on: route prefixes and the destinations that take them,
        with their names, switches, profiles and filters. Profiles were checked against the core's registry when
        the settings were loaded."""
        return Rules(route_prefixes=self.route_prefixes, destinations=tuple(d.rule() for d in self.destinations))

    def destination_for(self, route_prefix: str) -> Destination:
        """The first destination that takes ``route_prefix`` (the only one, without fan-out)."""
        for destination in self.destinations:
            if route_prefix in destination.prefixes:
                return destination
        raise KeyError(route_prefix)

    def destination_named(self, name: str) -> Destination | None:
        """A destination by its name, else by its configuration key."""
        return next((d for d in self.destinations if d.name == name), None) or next(
            (d for d in self.destinations if d.key == name), None)

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        return host or "localhost", int(port)

    @property
    def pulse_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.pulse_url)
        default = 5671 if parts.scheme == "amqps" else 5672
        return parts.hostname or "localhost", parts.port or default


SECRET_FIELDS = frozenset({"kafka_sasl_password"})
# Variables whose value may be given as a file instead (``<VARIABLE>_FILE=/run/secrets/...``), as container
# platforms mount secrets; destination and deployment Pulse URLs (TC_TREEHERDER_DESTINATION_<NAME>_PULSE_URL) too.
SECRET_VARIABLES = ("TC_TREEHERDER_PULSE_URL", "TC_TREEHERDER_JOBS_PULSE_URL", "TC_TREEHERDER_KAFKA_SASL_PASSWORD")
_SECRET_VARIABLE = re.compile(r"^TC_TREEHERDER_(DESTINATION|DEPLOYMENT)_[A-Z0-9_]+_PULSE_URL$")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tc-treeherder"


# Parsers: each returns the typed value or raises ValueError with the expected form.


def _positive_int(text: Any) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(text: Any) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _session_timeout(text: Any) -> float:
    value = float(text)
    if not 6.0 <= value <= 300.0:
        raise ValueError(value)
    return value


def _positive_float(text: Any) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


def _bootstrap(text: Any) -> str:
    text = str(text).strip()
    for server in text.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError
    return text


def _amqp_url(text: Any) -> str:
    parts = urlsplit(str(text))
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError
    return str(text)


def _http_url(text: Any) -> str:
    parts = urlsplit(str(text))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    return str(text).rstrip("/")


def _namespace(text: Any) -> str:
    text = str(text)
    if text and not _NAME.match(text):
        raise ValueError
    return text


def _prefixes(text: Any) -> tuple[str, ...]:
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    prefixes = tuple(str(item).strip() for item in items if str(item).strip())
    if not prefixes or any(not _NAME.match(p) or "." in p for p in prefixes):
        raise ValueError
    return prefixes


def _store(text: Any) -> str:
    if str(text) not in ("memory://", "rocksdb://"):
        raise ValueError
    return str(text)


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _profile(text: Any) -> str:
    if str(text) not in PROFILES:
        raise ValueError
    return str(text)


def _exchange(text: Any) -> str:
    text = str(text)
    if not text or len(text) > 255:
        raise ValueError
    return text


def _auto_or_off(text: Any) -> str:
    value = str(text).strip().lower()
    if value not in ("auto", "off"):
        raise ValueError
    return value


def _bindings_api(text: Any) -> str:
    value = str(text).strip()
    if value.lower() in ("auto", "off"):
        return value.lower()
    return _http_url(value)


def _port(text: Any) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise ValueError
    return value


def _security_protocol(text: Any) -> str:
    value = str(text).strip().upper()
    if value not in KAFKA_SECURITY_PROTOCOLS:
        raise ValueError
    return value


def _sasl_mechanism(text: Any) -> str:
    value = str(text).strip().upper()
    if value and value not in KAFKA_SASL_MECHANISMS:
        raise ValueError
    return value


def _readable_file(text: Any) -> str:
    value = str(text)
    if value and not Path(value).is_file():
        raise ValueError
    return value


# (field, environment variable, TOML key, parser, expected form)
_SCALARS: tuple[tuple[str, str, str, Callable[[Any], Any], str], ...] = (
    ("kafka_bootstrap", "TC_TREEHERDER_KAFKA_BOOTSTRAP", "kafka_bootstrap", _bootstrap,
     "host:port[,host:port...]"),
    ("pulse_url", "TC_TREEHERDER_PULSE_URL", "pulse_url", _amqp_url, "an amqp:// or amqps:// URL"),
    ("taskcluster_root_url", "TASKCLUSTER_ROOT_URL", "taskcluster_root_url", _http_url,
     "an http:// or https:// URL"),
    ("namespace", "TC_TREEHERDER_NAMESPACE", "namespace", _namespace,
     "letters, digits, '_', '.', '-' (or empty)"),
    ("route_prefixes", "TC_TREEHERDER_ROUTE_PREFIXES", "route_prefixes", _prefixes,
     "comma-separated route prefixes without dots, e.g. tc-treeherder,tc-treeherder-staging"),
    ("task_exchange_prefix", "TC_TREEHERDER_TASK_EXCHANGE_PREFIX", "task_exchange_prefix", _exchange,
     "an exchange name prefix such as exchange/taskcluster-queue/v1/"),
    ("partitions", "TC_TREEHERDER_PARTITIONS", "partitions", _positive_int, "a positive integer"),
    ("replication_factor", "TC_TREEHERDER_REPLICATION_FACTOR", "replication_factor", _positive_int,
     "a positive integer"),
    ("events_retention_days", "TC_TREEHERDER_EVENTS_RETENTION_DAYS", "events_retention_days",
     _positive_float, "a positive number of days"),
    ("queue_timeout", "TC_TREEHERDER_QUEUE_TIMEOUT", "queue_timeout", _positive_float,
     "a positive number of seconds"),
    ("queue_retries", "TC_TREEHERDER_QUEUE_RETRIES", "queue_retries", _non_negative_int,
     "a non-negative integer"),
    ("max_body_bytes", "TC_TREEHERDER_MAX_BODY_BYTES", "max_body_bytes", _positive_int,
     "a positive number of bytes"),
    ("store", "TC_TREEHERDER_STORE", "store", _store, "rocksdb:// or memory://"),
    ("data_dir", "TC_TREEHERDER_DATA_DIR", "data_dir", Path, "a directory path"),
    ("state_dir", "TC_TREEHERDER_STATE_DIR", "state_dir", Path, "a directory path"),
    ("web_host", "TC_TREEHERDER_WEB_HOST", "web_host", str, "a host name or address"),
    ("web_port", "TC_TREEHERDER_WEB_PORT", "web_port", _port, "a port number (0 picks a free one)"),
    ("source_web_port", "TC_TREEHERDER_SOURCE_WEB_PORT", "source_web_port", _port, "a port number (0: off)"),
    ("sink_web_port", "TC_TREEHERDER_SINK_WEB_PORT", "sink_web_port", _port, "a port number (0: off)"),
    ("source_prefetch", "TC_TREEHERDER_SOURCE_PREFETCH", "source_prefetch", _positive_int,
     "a positive integer"),
    ("sink_max_in_flight", "TC_TREEHERDER_SINK_MAX_IN_FLIGHT", "sink_max_in_flight", _positive_int,
     "a positive integer"),
    ("pulse_naming_rules", "TC_TREEHERDER_PULSE_NAMING_RULES", "pulse_naming_rules", _auto_or_off,
     "auto (enforced on brokers that are not local) or off"),
    ("pulse_bindings_api", "TC_TREEHERDER_PULSE_BINDINGS_API", "pulse_bindings_api", _bindings_api,
     "auto, off, or the http(s) URL of a RabbitMQ management API or of Pulse Guardian"),
    ("worker_session_timeout", "TC_TREEHERDER_WORKER_SESSION_TIMEOUT", "worker_session_timeout",
     _session_timeout, "a number of seconds from 6 (Kafka's least by default) to 300"),
    ("sink_session_timeout", "TC_TREEHERDER_SINK_SESSION_TIMEOUT", "sink_session_timeout",
     _session_timeout, "a number of seconds from 6 (Kafka's least by default) to 300"),
    ("kafka_security_protocol", "TC_TREEHERDER_KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol",
     _security_protocol, " or ".join(KAFKA_SECURITY_PROTOCOLS)),
    ("kafka_sasl_mechanism", "TC_TREEHERDER_KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism", _sasl_mechanism,
     " or ".join(KAFKA_SASL_MECHANISMS)),
    ("kafka_sasl_username", "TC_TREEHERDER_KAFKA_SASL_USERNAME", "kafka_sasl_username", str, "a user name"),
    ("kafka_sasl_password", "TC_TREEHERDER_KAFKA_SASL_PASSWORD", "kafka_sasl_password", str, "a password"),
    ("kafka_ssl_cafile", "TC_TREEHERDER_KAFKA_SSL_CAFILE", "kafka_ssl_cafile", _readable_file,
     "the path of a readable CA bundle (PEM)"),
)


def _parse(parser: Callable[[Any], Any], raw: Any, where: str, expected: str) -> Any:
    try:
        return parser(raw)
    except (TypeError, ValueError):
        shown = MASK if "PASSWORD" in where.upper() else redact_text(repr(raw))
        raise SettingsError(f"{where}: expected {expected}, got {shown}") from None


def _with_secret_files(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with each ``<SECRET VARIABLE>_FILE`` read into ``<SECRET VARIABLE>`` (trailing newline dropped)."""
    resolved = dict(env)
    for key, path in env.items():
        variable = key.removesuffix("_FILE")
        if variable == key or not (variable in SECRET_VARIABLES or _SECRET_VARIABLE.match(variable)):
            continue
        if variable in env:
            raise SettingsError(f"{variable} and {key} are both set; use one")
        try:
            resolved[variable] = Path(path).read_text().rstrip("\r\n")
        except OSError as error:
            raise SettingsError(f"{key}: cannot read {path}: {error.strerror}") from None
    return resolved


def _env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


_DESTINATION_OPTIONS = ("name", "pulse_url", "exchange", "enabled", "profile", "route_prefixes", "projects",
                        "exclude_projects", "min_tier", "max_tier")
_PROJECT = re.compile(r"^[A-Za-z0-9_-]+$")


def _project_list(text: Any) -> tuple[str, ...]:
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    projects = tuple(str(item).strip() for item in items if str(item).strip())
    if any(not _PROJECT.match(p) for p in projects):
        raise ValueError
    return projects


def _tier(text: Any) -> int:
    value = int(text)
    if isinstance(text, bool) or not 1 <= value <= 3:
        raise ValueError
    return value


def _destination_keys(settings: Settings, table: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """Every configured destination: the TOML tables, ``TC_TREEHERDER_DESTINATIONS``, and each route prefix no
    configured destination takes (one destination named after it, as before fan-out)."""
    listed = _parse(_prefixes, env["TC_TREEHERDER_DESTINATIONS"], "TC_TREEHERDER_DESTINATIONS",
                    "comma-separated destination names, e.g. production,stage,dev") \
        if env.get("TC_TREEHERDER_DESTINATIONS", "").strip() else ()
    keys = list(dict.fromkeys([*table, *listed]))
    taken: set[str] = set()
    for key in keys:
        raw = table.get(key, {})
        variable = f"TC_TREEHERDER_DESTINATION_{_env_key(key)}_ROUTE_PREFIXES"
        prefixes = env.get(variable, raw.get("route_prefixes") if isinstance(raw, Mapping) else None)
        if prefixes is None:
            taken.add(key)
        else:
            taken.update(_parse(_prefixes, prefixes, f"destinations.{key}.route_prefixes ({variable})",
                                "a list of route prefixes without dots"))
    return keys + [prefix for prefix in settings.route_prefixes if prefix not in taken]


def _options(raw: Any, section: str, name: str, variable: str, known: Sequence[str],
             env: Mapping[str, str]) -> tuple[dict[str, Any], str, str]:
    """The options of ``[<section>.<name>]``, each overridden by ``<variable>_<NAME>_<OPTION>`` when set; an
    option nothing reads is refused. Returns the options, where they came from and the variables' prefix."""
    where = f"{section}.{name}"
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where}: expected a table of options, got {type(raw).__name__}")
    options = dict(raw)
    prefix = f"{variable}_{_env_key(name)}_"
    for option in known:
        if prefix + option.upper() in env:
            options[option] = env[prefix + option.upper()]
    extra = set(options) - set(known)
    if extra:
        raise SettingsError(f"{where}: unknown keys {sorted(extra)}; known: {', '.join(known)}")
    return options, where, prefix


def _destination(settings: Settings, key: str, raw: Any, env: Mapping[str, str], jobs_pulse_url: str) -> Destination:
    """One destination: its TOML table ``raw`` under its ``TC_TREEHERDER_DESTINATION_<KEY>_...`` variables."""
    raw, where, prefix = _options(raw, "destinations", key, "TC_TREEHERDER_DESTINATION", _DESTINATION_OPTIONS, env)

    def value(option: str, parser: Callable[[Any], Any], default: Any, expected: str) -> Any:
        if option not in raw:
            return default
        return _parse(parser, raw[option], f"{where}.{option} ({prefix}{option.upper()})", expected)

    prefixes = value("route_prefixes", _prefixes, (), "a list of route prefixes without dots")
    if not prefixes and key not in settings.route_prefixes:
        raise SettingsError(
            f"{where}: {key!r} is not among the route prefixes {list(settings.route_prefixes)} and the "
            f"destination lists none: set {where}.route_prefixes ({prefix}ROUTE_PREFIXES)")
    strange = [p for p in prefixes if p not in settings.route_prefixes]
    if strange:
        raise SettingsError(
            f"{where}.route_prefixes ({prefix}ROUTE_PREFIXES): {strange} are not among the route prefixes "
            f"{list(settings.route_prefixes)} (route_prefixes, TC_TREEHERDER_ROUTE_PREFIXES): the source "
            "would never receive their tasks")
    pulse_url = value("pulse_url", _amqp_url, jobs_pulse_url, "an amqp:// or amqps:// URL")
    destination = Destination(
        key=key,
        name=value("name", _namespace, key, "letters, digits, '_', '.', '-'"),
        pulse_url=pulse_url,
        exchange=value("exchange", _exchange, _namespaced_exchange(settings.namespace, pulse_user(pulse_url)),
                       "an exchange name"),
        enabled=value("enabled", _bool, True, "true or false"),
        profile=value("profile", _profile, DEFAULT_PROFILE, " or ".join(PROFILES)),
        route_prefixes=prefixes,
        projects=value("projects", _project_list, None, "a list of project names"),
        exclude_projects=value("exclude_projects", _project_list, (), "a list of project names"),
        min_tier=value("min_tier", _tier, None, "a tier, 1 to 3"),
        max_tier=value("max_tier", _tier, None, "a tier, 1 to 3"),
    )
    if destination.min_tier is not None and destination.max_tier is not None \
            and destination.min_tier > destination.max_tier:
        raise SettingsError(f"{where}: min_tier {destination.min_tier} is above max_tier "
                            f"{destination.max_tier} ({prefix}MIN_TIER, {prefix}MAX_TIER): it would take nothing")
    return destination


def _destinations(settings: Settings, table: Mapping[str, Any], env: Mapping[str, str],
                  jobs_pulse_url: str) -> tuple[Destination, ...]:
    """The destinations; TOML ``[destinations.<key>]`` and ``TC_TREEHERDER_DESTINATION_<KEY>_...`` override the
    defaults. A destination takes the route prefixes it lists, or else the prefix it is named after."""
    result = [_destination(settings, key, table.get(key, {}), env, jobs_pulse_url)
              for key in _destination_keys(settings, table, env)]
    names: dict[str, str] = {}
    for destination in result:
        if destination.name in names:
            raise SettingsError(
                f"destinations.{destination.key}.name: {destination.name!r} is also the name of "
                f"destinations.{names[destination.name]}; each destination needs its own name (it names its "
                "routing keys, its state and its sink's consumer group)")
        names[destination.name] = destination.key
    order = {prefix: index for index, prefix in enumerate(settings.route_prefixes)}
    return tuple(sorted(result, key=lambda d: order[d.prefixes[0]]))  # stable: configuration order within a prefix


_DEPLOYMENT_OPTIONS = ("pulse_url", "root_url", "route_prefixes", "task_exchange_prefix")


def _deployments(settings: Settings, table: Any, env: Mapping[str, str]) -> tuple[Deployment, ...]:
    """``[deployments.<name>]`` and ``TC_TREEHERDER_DEPLOYMENTS`` + ``TC_TREEHERDER_DEPLOYMENT_<NAME>_...``."""
    if not isinstance(table, Mapping):
        raise SettingsError("deployments must be a table of [deployments.<name>]")
    listed = _parse(_prefixes, env["TC_TREEHERDER_DEPLOYMENTS"], "TC_TREEHERDER_DEPLOYMENTS",
                    "comma-separated deployment names, e.g. firefox-ci,community") \
        if env.get("TC_TREEHERDER_DEPLOYMENTS", "").strip() else ()
    result = []
    for name in dict.fromkeys([*table, *listed]):
        raw, where, prefix = _options(table.get(name, {}), "deployments", name, "TC_TREEHERDER_DEPLOYMENT",
                                      _DEPLOYMENT_OPTIONS, env)
        for option in ("pulse_url", "root_url"):
            if option not in raw:
                raise SettingsError(f"{where}.{option} ({prefix}{option.upper()}) is required")
        _parse(_namespace, name, f"{where} (TC_TREEHERDER_DEPLOYMENTS)", "letters, digits, '_', '.', '-'")
        prefixes = _parse(_prefixes, raw.get("route_prefixes", list(settings.route_prefixes)),
                          f"{where}.route_prefixes ({prefix}ROUTE_PREFIXES)", "a list of route prefixes without dots")
        strange = [p for p in prefixes if p not in settings.route_prefixes]
        if strange:
            raise SettingsError(f"{where}.route_prefixes ({prefix}ROUTE_PREFIXES): {strange} are not among the "
                                f"route prefixes {list(settings.route_prefixes)} (TC_TREEHERDER_ROUTE_PREFIXES)")
        result.append(Deployment(
            name=name,
            pulse_url=_parse(_amqp_url, raw["pulse_url"], f"{where}.pulse_url ({prefix}PULSE_URL)",
                             "an amqp:// or amqps:// URL"),
            root_url=_parse(_http_url, raw["root_url"], f"{where}.root_url ({prefix}ROOT_URL)",
                            "an http:// or https:// URL"),
            route_prefixes=prefixes,
            task_exchange_prefix=_parse(_exchange, raw.get("task_exchange_prefix", settings.task_exchange_prefix),
                                        f"{where}.task_exchange_prefix ({prefix}TASK_EXCHANGE_PREFIX)",
                                        "an exchange name prefix"),
        ))
    roots: dict[str, str] = {}
    for deployment in result:
        if deployment.root_url in roots:
            raise SettingsError(f"deployments.{deployment.name}.root_url: {deployment.root_url} is also the root URL "
                                f"of deployments.{roots[deployment.root_url]}; one source per deployment")
        roots[deployment.root_url] = deployment.name
    return tuple(result)


def _unclaimed_variables(env: Mapping[str, str], start: str, keys: list[str], options: tuple[str, ...],
                         listed_in: str) -> None:
    """Refuse a ``<start><KEY>_<OPTION>`` variable that no configured destination (or deployment) reads: a typo
    in its name or option, or one not listed, would otherwise be passed over without a word."""
    known = {f"{start}{_env_key(key)}_{option.upper()}" for key in keys for option in options}
    for variable in sorted(env):
        if not variable.startswith(start) or variable in known:
            continue
        if variable.endswith("_FILE") and variable.removesuffix("_FILE") in known:
            continue  # a secret given as a file: read into its variable already
        raise SettingsError(f"{variable}: no configured {start.removeprefix('TC_TREEHERDER_').rstrip('_').lower()} "
                            f"reads it (options: {', '.join(o.upper() for o in options)}); configured: "
                            f"{', '.join(keys) or 'none'}, listed in {listed_in}")


def _namespaced_exchange(namespace: str, user: str) -> str:
    """The jobs exchange of a destination whose Pulse user is ``user``: Pulse lets a user create only
    ``exchange/<user>/...``. A namespace goes after the user so Pulse's permissions still match."""
    if not namespace:
        return f"exchange/{user}/v1/jobs"
    return f"exchange/{user}/{namespace}/v1/jobs"


def pulse_user(url: str) -> str:
    """The user of a Pulse URL (``guest`` when it names none, as the AMQP client then logs in)."""
    return urlsplit(url).username or "guest"


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_local_broker(url: str) -> bool:
    """Whether a broker is on this machine (a local stack or a test), where Pulse's naming rules do not apply."""
    host = (urlsplit(url).hostname or "localhost").lower()
    return host in LOCAL_HOSTS or host.endswith(".localhost")


def _pulse_names(settings: Settings) -> None:
    """Refuse, on a broker that is not local, a name that Pulse would refuse: a user may create only exchanges
    ``exchange/<user>/...`` and queues ``queue/<user>/...`` (the source's queue always is). A RabbitMQ of one's
    own that is not Pulse may turn this off (``pulse_naming_rules = "off"``)."""
    if settings.pulse_naming_rules == "off":
        return
    for destination in settings.destinations:
        if not destination.enabled or is_local_broker(destination.pulse_url):
            continue
        user = pulse_user(destination.pulse_url)
        if not destination.exchange.startswith(f"exchange/{user}/"):
            variable = f"TC_TREEHERDER_DESTINATION_{_env_key(destination.key)}_EXCHANGE"
            raise SettingsError(
                f"destinations.{destination.key}.exchange ({variable}): {destination.exchange!r} breaks Pulse's "
                f"naming rule: the user {user!r} of {redact_url(destination.pulse_url)} may only create "
                f"exchanges named exchange/{user}/...; leave it unset for exchange/{user}/v1/jobs (on a broker "
                "that is not Pulse, TC_TREEHERDER_PULSE_NAMING_RULES=off lifts the rule)")


def load_settings(env: Mapping[str, str] | None = None, config_file: str | Path | None = None) -> Settings:
    """Build the settings from defaults, the TOML file and the environment; raise SettingsError if bad."""
    env = _with_secret_files(os.environ if env is None else env)
    path = config_file or env.get("TC_TREEHERDER_CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as error:
            raise SettingsError(f"TC_TREEHERDER_CONFIG: cannot read {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"TC_TREEHERDER_CONFIG: {path} is not valid TOML: {error}") from None
    known = {toml_key for _, _, toml_key, _, _ in _SCALARS} | {"destinations", "jobs_pulse_url", "deployments"}
    unknown = set(data) - known
    if unknown:
        raise SettingsError(f"{path}: unknown settings {sorted(unknown)}; see docs/configuration.md")

    values: dict[str, Any] = {}
    for attr, variable, toml_key, parser, expected in _SCALARS:
        if variable in env:
            values[attr] = _parse(parser, env[variable], variable, expected)
        elif toml_key in data:
            values[attr] = _parse(parser, data[toml_key], f"{path}: {toml_key}", expected)
    settings = Settings(**values)
    if "data_dir" not in values:
        settings = replace(settings, data_dir=settings.state_dir / "worker")

    jobs_pulse_url = env.get("TC_TREEHERDER_JOBS_PULSE_URL", data.get("jobs_pulse_url", settings.pulse_url))
    jobs_pulse_url = _parse(_amqp_url, jobs_pulse_url, "TC_TREEHERDER_JOBS_PULSE_URL", "an amqp:// URL")
    table = data.get("destinations", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: destinations must be a table of [destinations.<name>]")
    settings = replace(settings, destinations=_destinations(settings, table, env, jobs_pulse_url),
                       deployments=_deployments(settings, data.get("deployments", {}), env))
    _unclaimed_variables(env, "TC_TREEHERDER_DESTINATION_", [d.key for d in settings.destinations],
                         _DESTINATION_OPTIONS, "TC_TREEHERDER_DESTINATIONS or [destinations.<name>]")
    _unclaimed_variables(env, "TC_TREEHERDER_DEPLOYMENT_", [d.name for d in settings.deployments],
                         _DEPLOYMENT_OPTIONS, "TC_TREEHERDER_DEPLOYMENTS or [deployments.<name>]")
    _pulse_names(settings)
    return settings
