"""Settings.rules() reads the deployment's prefixes, destination names, enabled flags and profiles."""

from __future__ import annotations

import pytest

from streams.core.rules import Rules
from streams.shared.settings import SettingsError, load_settings


def test_defaults_answer_to_both_prefixes_under_their_own_names():
    rules = Rules()
    assert rules.route_prefixes == ("tc-treeherder", "tc-treeherder-staging")
    assert rules.destination("tc-treeherder-staging") == "tc-treeherder-staging"
    assert rules.profile("tc-treeherder") == "treeherder"


def test_from_settings():
    env = {
        "TC_TREEHERDER_ROUTE_PREFIXES": "tc-treeherder,tc-treeherder-staging,custom",
        "TC_TREEHERDER_DESTINATION_TC_TREEHERDER_NAME": "production",
        "TC_TREEHERDER_DESTINATION_CUSTOM_ENABLED": "false",
    }
    rules = load_settings(env=env).rules()
    assert rules.route_prefixes == ("tc-treeherder", "tc-treeherder-staging", "custom")
    assert rules.destination("tc-treeherder") == "production"
    assert rules.destination("tc-treeherder-staging") == "tc-treeherder-staging"
    assert rules.switched_off == {"custom"}


def test_a_profile_this_version_cannot_build_stops_at_start():
    with pytest.raises(SettingsError, match="PROFILE") as caught:
        load_settings(env={"TC_TREEHERDER_DESTINATION_TC_TREEHERDER_PROFILE": "bogus"})
    assert "treeherder or legacy" in str(caught.value)


def test_a_legacy_destination_is_accepted():
    settings = load_settings(env={"TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PROFILE": "legacy"})
    rules = settings.rules()
    assert rules.profile("tc-treeherder-staging") == "legacy"
    assert rules.profile("tc-treeherder") == "treeherder"
