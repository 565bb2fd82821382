"""Rules.from_settings reads the deployment's prefixes, destination names, enabled flags and profiles."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streams.core.rules import Rules
from tc_treeherder.settings import load_settings


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
    rules = Rules.from_settings(load_settings(env=env))
    assert rules.route_prefixes == ("tc-treeherder", "tc-treeherder-staging", "custom")
    assert rules.destination("tc-treeherder") == "production"
    assert rules.destination("tc-treeherder-staging") == "tc-treeherder-staging"
    assert rules.disabled_prefixes == {"custom"}


def test_a_profile_this_version_cannot_build_stops_at_start():
    settings = load_settings(env={})
    destinations = (replace(settings.destinations[0], profile="bogus"), *settings.destinations[1:])
    with pytest.raises(ValueError, match="profile 'bogus'"):
        Rules.from_settings(replace(settings, destinations=destinations))


def test_a_legacy_destination_is_accepted():
    settings = load_settings(env={"TC_TREEHERDER_DESTINATION_TC_TREEHERDER_STAGING_PROFILE": "legacy"})
    rules = Rules.from_settings(settings)
    assert rules.profile("tc-treeherder-staging") == "legacy"
    assert rules.profile("tc-treeherder") == "treeherder"
