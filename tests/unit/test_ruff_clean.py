"""The tree passes ruff with the project's settings (pyproject.toml), so CI, which runs the tests, holds every
change to them, as ``make lint`` does on a developer's machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")


def test_the_tree_is_ruff_clean() -> None:
    result = subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
