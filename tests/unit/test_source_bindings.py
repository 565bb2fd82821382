"""Where the source lists its queue's bindings, to remove those the configuration no longer asks for."""

from __future__ import annotations

import pytest

from connectors.pulse_source import bindings_api
from streams.shared.settings import load_settings


@pytest.mark.parametrize(("env", "api"), [
    ({}, "http://localhost:15672/"),
    ({"TC_TREEHERDER_PULSE_URL": "amqps://u:p@pulse.mozilla.org:5671/"}, "https://pulseguardian.mozilla.org/"),
    ({"TC_TREEHERDER_PULSE_URL": "amqps://u:p@rabbit.example.com:5671/"}, "http://rabbit.example.com:15672/"),
    ({"TC_TREEHERDER_PULSE_BINDINGS_API": "https://mgmt.example.com:443"}, "https://mgmt.example.com:443/"),
    ({"TC_TREEHERDER_PULSE_BINDINGS_API": "off"}, None),
])
def test_where_the_source_lists_its_bindings(env: dict[str, str], api: str | None) -> None:
    assert bindings_api(load_settings(env=env)) == api
