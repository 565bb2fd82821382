"""Keep passwords out of everything a person or a log can read: URLs, messages, reprs.

Credentials reach the service only through settings (the environment or ``*_FILE`` secrets files); every
place that shows a URL or an error that may quote one passes it through here first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"

# scheme://user:password@host  (the password may hold anything but '@', '/' and whitespace)
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@/\s]+)(?=@)")


def redact_url(url: str) -> str:
    """``amqps://user:secret@host/vhost`` -> ``amqps://user:***@host/vhost``; a URL without one is unchanged."""
    return _URL_PASSWORD.sub(lambda m: m["head"] + MASK, url)


def public_url(url: str) -> str:
    """The URL with its password removed altogether, for printing addresses: ``amqp://user@host:5672/``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL password masked, and each of ``secrets`` (e.g. a SASL password) too."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
