"""The house in layers holds: import-linter's contracts (pyproject.toml) pass on the tree as it is, and they
catch an upward import and a cycle when one is added. The wheel ships the runtime and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "connectors", "tc_treeherder", "devtools")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)}, check=False)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The packages and pyproject.toml, copied so a test can break them."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_tree_keeps_every_layer_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tree_copy: Path):
    model = tree_copy / "streams" / "core" / "model.py"
    model.write_text(model.read_text() + "\nimport streams.shared.settings  # noqa\n")
    result = lint_imports(tree_copy)
    assert result.returncode == 1
    assert "streams.core.model -> streams.shared.settings" in result.stdout


def test_the_runtime_may_not_import_dev_tooling(tree_copy: Path):
    sink = tree_copy / "connectors" / "pulse_sink.py"
    sink.write_text(sink.read_text() + "\nimport devtools.harness  # noqa\n")
    result = lint_imports(tree_copy)
    assert result.returncode == 1
    assert "connectors.pulse_sink -> devtools.harness" in result.stdout


def test_a_cycle_inside_a_package_breaks_the_contract(tree_copy: Path):
    plan = tree_copy / "streams" / "replay" / "plan.py"
    plan.write_text(plan.read_text() + "\nimport streams.replay.runner  # noqa\n")
    result = lint_imports(tree_copy)
    assert result.returncode == 1
    assert "No cycles are allowed in streams.replay" in result.stdout


def test_the_wheel_holds_the_runtime_and_its_schemas_but_no_test_or_dev_code(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("tc_treeherder-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if "/" in name and ".dist-info" not in name}
    assert tops == {"streams", "connectors", "tc_treeherder"}
    assert "streams/schemas/pulse-job.json" in names
    assert "streams/core/transform.py" in names and "streams/worker/app.py" in names
    assert not [name for name in names if "devtools" in name or "test" in name.split("/")[0] or "benchmarks" in name]
