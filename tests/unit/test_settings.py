"""Settings: defaults, TOML under environment, and start-up errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.shared.settings import DEFAULT_JOBS_EXCHANGE, SettingsError, load_settings, pulse_user


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tc-treeherder.toml"
    path.write_text(text)
    return path


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings(env={})
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.pulse_url == "amqp://guest:guest@localhost:5672/"
    assert settings.kafka_host_port == ("localhost", 9092)
    assert settings.pulse_host_port == ("localhost", 5672)
    assert settings.namespace == ""
    assert settings.topic("task-events") == "tc-treeherder.task-events"
    assert settings.task_exchange("pending") == "exchange/taskcluster-queue/v1/task-pending"
    assert [d.route_prefix for d in settings.destinations] == ["tc-treeherder", "tc-treeherder-staging"]
    assert all(d.exchange == "exchange/guest/v1/jobs" for d in settings.destinations)  # the Pulse user's
    assert settings.data_dir == settings.state_dir / "worker"


def test_environment_wins_over_the_toml_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'kafka_bootstrap = "kafka-a:9092"\npartitions = 3\nnamespace = "ci"\n')
    settings = load_settings(env={"TC_TREEHERDER_CONFIG": str(config), "TC_TREEHERDER_PARTITIONS": "5"})
    assert settings.kafka_bootstrap == "kafka-a:9092"  # from TOML
    assert settings.partitions == 5  # environment over TOML
    assert settings.namespace == "ci"


def test_state_dir_moves_the_default_data_dir_with_it(tmp_path: Path) -> None:
    settings = load_settings(env={"TC_TREEHERDER_STATE_DIR": str(tmp_path)})
    assert settings.state_dir == tmp_path
    assert settings.data_dir == tmp_path / "worker"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TC_TREEHERDER_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("TC_TREEHERDER_KAFKA_BOOTSTRAP", "localhost:99999", "host:port"),
        ("TC_TREEHERDER_PULSE_URL", "http://localhost:5672/", "amqp://"),
        ("TASKCLUSTER_ROOT_URL", "firefox-ci-tc.services.mozilla.com", "http:// or https://"),
        ("TC_TREEHERDER_PARTITIONS", "0", "a positive integer"),
        ("TC_TREEHERDER_PARTITIONS", "eight", "a positive integer"),
        ("TC_TREEHERDER_STORE", "redis://", "rocksdb:// or memory://"),
        ("TC_TREEHERDER_NAMESPACE", "has space", "letters, digits"),
        ("TC_TREEHERDER_ROUTE_PREFIXES", "tc.treeherder", "without dots"),
        ("TC_TREEHERDER_WEB_PORT", "70000", "a port number"),
        ("TC_TREEHERDER_WORKER_SESSION_TIMEOUT", "5", "from 6"),
        ("TC_TREEHERDER_SINK_SESSION_TIMEOUT", "301", "from 6"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_expected_form(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(env={variable: value})
    message = str(raised.value)
    assert variable in message
    assert expected in message
    assert repr(value) in message


def test_a_bad_toml_value_names_the_file_and_key(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "partitions = -1\n")
    with pytest.raises(SettingsError, match=r"tc-treeherder\.toml: partitions: expected a positive integer"):
        load_settings(env={"TC_TREEHERDER_CONFIG": str(config)})


def test_unknown_toml_keys_and_unreadable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="unknown settings"):
        load_settings(env={}, config_file=write_toml(tmp_path, "kafka_bootstrp = 'x:1'\n"))
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(env={}, config_file=tmp_path / "missing.toml")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(env={}, config_file=write_toml(tmp_path, "partitions = \n"))


def test_namespace_prefixes_every_shared_name() -> None:
    settings = load_settings(env={"TC_TREEHERDER_NAMESPACE": "t1a2b3c4d",
                                  "TC_TREEHERDER_PULSE_URL": "amqp://bridge:secret@pulse.example:5671/"})
    assert settings.topic("task-events") == "t1a2b3c4d.tc-treeherder.task-events"
    assert settings.app_id == "t1a2b3c4d.tc-treeherder"
    # Pulse only lets a user read queues under queue/<user>/, so the namespace goes after the user.
    assert settings.pulse_queue("task-events") == "queue/bridge/t1a2b3c4d/tc-treeherder/task-events"
    assert {d.exchange for d in settings.destinations} == {"exchange/bridge/t1a2b3c4d/v1/jobs"}


@pytest.mark.parametrize("name", ["t1a2b3c4d", "ci-run_7", "team.a"])
def test_namespaces_of_letters_digits_and_separators_are_accepted(name: str) -> None:
    assert load_settings(env={"TC_TREEHERDER_NAMESPACE": name}).namespace == name


@pytest.mark.parametrize("name", ["-leading-dash", ".dot", "a/b", "a b", "ü"])
def test_namespaces_that_would_break_topic_or_queue_names_are_refused(name: str) -> None:
    with pytest.raises(SettingsError, match="TC_TREEHERDER_NAMESPACE"):
        load_settings(env={"TC_TREEHERDER_NAMESPACE": name})


def test_destinations_come_from_toml_and_environment(tmp_path: Path) -> None:
    config = write_toml(tmp_path, """
route_prefixes = ["tc-treeherder", "tc-treeherder-staging"]
jobs_pulse_url = "amqp://jobs:pw@jobs.example:5672/"

[destinations.tc-treeherder-staging]
name = "staging"
profile = "legacy"
enabled = false
""")
    settings = load_settings(env={
        "TC_TREEHERDER_CONFIG": str(config),
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_ENABLED": "true",
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_EXCHANGE": "exchange/jobs/other/v1/jobs",
    })
    production = settings.destination_for("tc-treeherder")
    staging = settings.destination_for("tc-treeherder-staging")
    assert production.exchange == "exchange/jobs/other/v1/jobs"
    assert production.pulse_url == "amqp://jobs:pw@jobs.example:5672/"
    assert (staging.name, staging.profile, staging.enabled) == ("staging", "legacy", True)
    assert staging.routing_key("mozilla-central") == "staging.mozilla-central._"
    with pytest.raises(KeyError):
        settings.destination_for("not-configured")


def test_a_destination_for_an_unknown_prefix_or_a_bad_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not among the route prefixes"):
        load_settings(env={}, config_file=write_toml(tmp_path, "[destinations.elsewhere]\nname = 'x'\n"))
    with pytest.raises(SettingsError, match="TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PROFILE"):
        load_settings(env={"TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PROFILE": "fancy"})


THREE_TREEHERDERS = """
[destinations.production]
route_prefixes = ["tc-treeherder"]
[destinations.stage]
route_prefixes = ["tc-treeherder", "tc-treeherder-staging"]
[destinations.dev]
route_prefixes = ["tc-treeherder"]
projects = ["autoland", "try"]
"""


def test_named_destinations_share_a_route_prefix(tmp_path: Path) -> None:
    settings = load_settings(env={}, config_file=write_toml(tmp_path, THREE_TREEHERDERS))
    assert [(d.name, d.prefixes, d.projects) for d in settings.destinations] == [
        ("production", ("tc-treeherder",), None),
        ("stage", ("tc-treeherder", "tc-treeherder-staging"), None),
        ("dev", ("tc-treeherder",), ("autoland", "try")),
    ]  # every prefix is taken: no destination named after one
    rules = settings.rules()
    assert [d.name for d in rules.targets("tc-treeherder")] == ["production", "stage", "dev"]
    assert [d.name for d in rules.targets("tc-treeherder-staging")] == ["stage"]
    assert rules.targets("tc-treeherder")[2].projects == frozenset({"autoland", "try"})


def test_the_same_destinations_from_the_environment_alone() -> None:
    settings = load_settings(env={
        "TC_TREEHERDER_DESTINATIONS": "production,stage,dev",
        "TC_TREEHERDER_DESTINATION_PRODUCTION_ROUTE_PREFIXES": "tc-treeherder",
        "TC_TREEHERDER_DESTINATION_STAGE_ROUTE_PREFIXES": "tc-treeherder,tc-treeherder-staging",
        "TC_TREEHERDER_DESTINATION_DEV_ROUTE_PREFIXES": "tc-treeherder",
        "TC_TREEHERDER_DESTINATION_DEV_PROJECTS": "autoland,try",
        "TC_TREEHERDER_DESTINATION_DEV_EXCLUDE_PROJECTS": "try",
        "TC_TREEHERDER_DESTINATION_DEV_MIN_TIER": "1",
        "TC_TREEHERDER_DESTINATION_DEV_MAX_TIER": "2",
    })
    dev = settings.destination_named("dev")
    assert [d.name for d in settings.destinations] == ["production", "stage", "dev"]
    assert (dev.projects, dev.exclude_projects, dev.min_tier, dev.max_tier) == (("autoland", "try"), ("try",), 1, 2)
    assert settings.redacted()["destinations"][2]["projects"] == ["autoland", "try"]


def test_a_prefix_no_named_destination_takes_keeps_its_own(tmp_path: Path) -> None:
    settings = load_settings(env={}, config_file=write_toml(
        tmp_path, '[destinations.production]\nroute_prefixes = ["tc-treeherder"]\n'))
    assert [(d.key, d.name) for d in settings.destinations] == [
        ("production", "production"), ("tc-treeherder-staging", "tc-treeherder-staging")]


@pytest.mark.parametrize(("toml", "env", "named"), [
    ('[destinations.dev]\nroute_prefixes = ["nope"]\n', {}, "destinations.dev.route_prefixes"),
    ('[destinations.dev]\nroute_prefixes = ["tc-treeherder"]\nmin_tier = 3\nmax_tier = 1\n', {},
     "TC_TREEHERDER_DESTINATION_DEV_MIN_TIER"),
    ('[destinations.dev]\nroute_prefixes = ["tc-treeherder"]\nmax_tier = 4\n', {}, "destinations.dev.max_tier"),
    ('[destinations.dev]\nroute_prefixes = ["tc-treeherder"]\nprojects = ["a.b"]\n', {},
     "TC_TREEHERDER_DESTINATION_DEV_PROJECTS"),
    ('[destinations.dev]\nroute_prefixes = ["tc-treeherder"]\nname = "tc-treeherder-staging"\n', {},
     "is also the name of destinations.dev"),
    ('[destinations.dev]\nroute_prefixes = ["tc-treeherder"]\nwhatever = 1\n', {}, "unknown keys"),
    ("", {"TC_TREEHERDER_DESTINATIONS": "dev"}, "TC_TREEHERDER_DESTINATION_DEV_ROUTE_PREFIXES"),
])
def test_bad_destinations_are_refused_naming_the_setting(tmp_path: Path, toml: str, env: dict[str, str],
                                                        named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env=env, config_file=write_toml(tmp_path, toml))
    assert named in str(refused.value)


def test_the_default_jobs_exchange_is_the_destinations_pulse_users() -> None:
    settings = load_settings(env={
        "TC_TREEHERDER_PULSE_URL": "amqps://taskcluster-treeherder:pw@pulse.mozilla.org:5671/",
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PULSE_URL": "amqps://th-stage:pw@pulse.mozilla.org:5671/"})
    production, staging = settings.destinations
    assert production.exchange == DEFAULT_JOBS_EXCHANGE  # today's name, for the user of that name
    assert staging.exchange == "exchange/th-stage/v1/jobs"
    assert settings.pulse_queue("task-events") == "queue/taskcluster-treeherder/tc-treeherder/task-events"
    assert pulse_user("amqp://localhost/") == "guest"


def test_a_name_pulse_would_refuse_stops_the_process_naming_the_setting() -> None:
    env = {"TC_TREEHERDER_PULSE_URL": "amqps://alice:pw@pulse.mozilla.org:5671/",
           "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_EXCHANGE": "exchange/taskcluster-treeherder/v1/jobs"}
    with pytest.raises(SettingsError) as refused:
        load_settings(env=env)
    message = str(refused.value)
    assert "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_EXCHANGE" in message and "exchange/alice/" in message
    assert "pw" not in message
    assert load_settings(env={**env, "TC_TREEHERDER_PULSE_NAMING_RULES": "off"}).destinations[0].exchange == (
        "exchange/taskcluster-treeherder/v1/jobs")
    local = {**env, "TC_TREEHERDER_PULSE_URL": "amqp://alice:pw@localhost:5672/"}
    assert load_settings(env=local).destinations[0].exchange == "exchange/taskcluster-treeherder/v1/jobs"


def test_several_taskcluster_deployments_each_with_its_source_settings(tmp_path: Path) -> None:
    settings = load_settings(env={}, config_file=write_toml(tmp_path, """
[deployments.firefox-ci]
pulse_url = "amqps://tc-treeherder:pw@pulse.mozilla.org:5671/"
root_url = "https://firefox-ci-tc.services.mozilla.com"
[deployments.community]
pulse_url = "amqps://tc-treeherder:pw@pulse.mozilla.org:5671/"
root_url = "https://community-tc.services.mozilla.com/"
route_prefixes = ["tc-treeherder"]
"""))
    assert settings.root_urls == ("https://firefox-ci-tc.services.mozilla.com", "https://community-tc.services.mozilla.com")
    community = settings.for_deployment("community")
    assert (community.taskcluster_root_url, community.route_prefixes) == (
        "https://community-tc.services.mozilla.com", ("tc-treeherder",))
    assert community.pulse_queue("task-events") == "queue/tc-treeherder/tc-treeherder/community/task-events"
    assert settings.for_deployment("firefox-ci").route_prefixes == ("tc-treeherder", "tc-treeherder-staging")
    assert "pw" not in repr(settings)
    with pytest.raises(SettingsError, match="--deployment firefox-ci or community"):
        settings.for_deployment(None)
    with pytest.raises(SettingsError, match="not configured"):
        settings.for_deployment("elsewhere")
    plain = load_settings(env={})
    assert plain.for_deployment(None) is plain and plain.root_urls == (plain.taskcluster_root_url,)
    assert plain.pulse_queue("task-events") == "queue/guest/tc-treeherder/task-events"  # today's name


@pytest.mark.parametrize(("env", "named"), [
    ({"TC_TREEHERDER_DEPLOYMENTS": "a"}, "TC_TREEHERDER_DEPLOYMENT_A_PULSE_URL"),
    ({"TC_TREEHERDER_DEPLOYMENTS": "a", "TC_TREEHERDER_DEPLOYMENT_A_PULSE_URL": "amqp://localhost/",
      "TC_TREEHERDER_DEPLOYMENT_A_ROOT_URL": "ftp://x"}, "TC_TREEHERDER_DEPLOYMENT_A_ROOT_URL"),
    ({"TC_TREEHERDER_DEPLOYMENTS": "a", "TC_TREEHERDER_DEPLOYMENT_A_PULSE_URL": "amqp://localhost/",
      "TC_TREEHERDER_DEPLOYMENT_A_ROOT_URL": "https://x", "TC_TREEHERDER_DEPLOYMENT_A_ROUTE_PREFIXES": "nope"},
     "TC_TREEHERDER_DEPLOYMENT_A_ROUTE_PREFIXES"),
    ({"TC_TREEHERDER_DEPLOYMENTS": "a,b", "TC_TREEHERDER_DEPLOYMENT_A_PULSE_URL": "amqp://localhost/",
      "TC_TREEHERDER_DEPLOYMENT_A_ROOT_URL": "https://x", "TC_TREEHERDER_DEPLOYMENT_B_PULSE_URL": "amqp://localhost/",
      "TC_TREEHERDER_DEPLOYMENT_B_ROOT_URL": "https://x/"}, "deployments.b.root_url"),
])
def test_bad_deployments_are_refused_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env=env)
    assert named in str(refused.value)


def test_a_deployments_pulse_url_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pulse-url"
    secret.write_text("amqps://community:pw@pulse.mozilla.org:5671/\n")
    settings = load_settings(env={"TC_TREEHERDER_DEPLOYMENTS": "community",
                                  "TC_TREEHERDER_DEPLOYMENT_COMMUNITY_PULSE_URL_FILE": str(secret),
                                  "TC_TREEHERDER_DEPLOYMENT_COMMUNITY_ROOT_URL": "https://community-tc.example.com"})
    assert settings.deployments[0].pulse_url == "amqps://community:pw@pulse.mozilla.org:5671/"


def test_the_cli_exits_2_naming_the_setting_pulse_would_refuse(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tc_treeherder import cli

    monkeypatch.setenv("TC_TREEHERDER_JOBS_PULSE_URL", "amqps://alice:pw@pulse.mozilla.org:5671/")
    monkeypatch.setenv("TC_TREEHERDER_DESTINATION_TC_TREEHERDER_EXCHANGE", "exchange/bob/v1/jobs")
    assert cli.main(["sink"]) == 2
    assert "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_EXCHANGE" in capsys.readouterr().err


@pytest.mark.parametrize("variable", [
    "TC_TREEHERDER_DESTINATION_DEV_PROJECTS",  # dev is not configured
    "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PROJECT",  # a typo in the option
    "TC_TREEHERDER_DEPLOYMENT_COMMUNITY_ROOT_URL",  # no deployment of that name
])
def test_a_variable_no_destination_or_deployment_reads_is_refused(variable: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env={variable: "x"})
    assert str(refused.value).startswith(f"{variable}: no configured")


def test_the_sinks_session_timeout_is_their_own() -> None:
    settings = load_settings(env={"TC_TREEHERDER_SINK_SESSION_TIMEOUT": "30"})
    assert (settings.sink_session_timeout, settings.worker_session_timeout) == (30.0, 6.0)
