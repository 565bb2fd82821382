"""The core does no I/O: importing it brings in no network, async or client module."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import streams.core

FORBIDDEN = (
    "socket",
    "ssl",
    "asyncio",
    "aiohttp",
    "aiokafka",
    "aio_pika",
    "faust",
    "requests",
    "taskcluster",
    "urllib.request",
    "http.client",
    "http",
    "selectors",
)
CORE_DIR = Path(streams.core.__file__).parent
MODULES = sorted(f"streams.core.{m.name}" for m in pkgutil.iter_modules([str(CORE_DIR)]))


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_no_core_module_imports_an_io_module():
    for path in CORE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            assert not [n for n in names if _forbidden(n)], f"{path.name} imports {names}"


def test_importing_the_core_pulls_in_no_io_module():
    # jsonschema-rs's extension loads email.utils (for its email format), and email.utils imports socket
    # without using it. That stdlib module is loaded first; everything the core adds on top is checked.
    code = (
        "import sys, email.utils\n"
        "before = set(sys.modules)\n"
        f"for name in {MODULES!r}: __import__(name)\n"
        "from streams.core.validation import job_check, config_check, event_check, envelope_check\n"
        "job_check(); config_check(); envelope_check(); event_check('pending')\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=CORE_DIR.parents[1]
    )
    added = result.stdout.split()
    assert "streams.core.transform" in added
    assert [name for name in added if _forbidden(name)] == []
