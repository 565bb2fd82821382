"""The local Treeherder's set-up says what to install when a piece is missing (devtools/treeherder/install.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.treeherder import TreeherderError, install


def test_a_missing_tarball_names_the_folder_and_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(install.TARBALL_VARIABLE, str(tmp_path / "nope.tar.gz"))
    with pytest.raises(TreeherderError, match=f"{install.TARBALL_VARIABLE}=.*no such file"):
        install.find_tarball()
    monkeypatch.delenv(install.TARBALL_VARIABLE)
    monkeypatch.setattr(install, "REPO", tmp_path / "clone")
    with pytest.raises(TreeherderError, match=r"shared/reference/treeherder.*TC_TREEHERDER_TREEHERDER_TARBALL"):
        install.find_tarball()


def test_a_python_that_is_not_3_12_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv(install.PYTHON_VARIABLE, str(tmp_path / "python9"))
    with pytest.raises(TreeherderError, match=r"not a working Python 3\.12"):
        install.find_python()
    monkeypatch.delenv(install.PYTHON_VARIABLE)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setattr(install, "_python_version", lambda python: None)
    with pytest.raises(TreeherderError, match=r"pyenv install 3\.12"):
        install.find_python()


def test_the_venv_is_keyed_by_the_requirements(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    first.write_text("django==6.0.3\n")
    second = tmp_path / "b.txt"
    second.write_text("django==6.0.4\n")
    assert install._digest(first) != install._digest(second)
    assert install._digest(first) == install._digest(first) and len(install._digest(first)) == 16
