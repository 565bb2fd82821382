"""Treeherder's code and Python: the tarball unpacked into the cache, a venv of its own built once.

- The tarball: ``TC_TREEHERDER_TREEHERDER_TARBALL`` (a file), else the newest ``treeherder-*.tar.gz`` in
  ``<repo>/../shared/reference/treeherder/`` (CI and the other clones keep ``shared/`` beside the repo).
- It is unpacked into ``<cache>/treeherder/src-<tarball digest>/`` (never into the work tree) once.
- The venv, ``<cache>/treeherder/venv-<digest of requirements/common.txt>/``, is built with Python 3.12+
  (``TC_TREEHERDER_TREEHERDER_PYTHON``, else ``python3.12`` on PATH, else pyenv's 3.12) by
  ``pip install --require-hashes -r requirements/common.txt`` (about a minute), in a ``.partial`` folder
  renamed when complete: an interrupted build is never taken for a finished one. The same requirements reuse
  it, from any clone; changed requirements build a new one beside it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devtools.stack.kafka import cache_root
from devtools.stack.process import file_lock
from devtools.treeherder import TreeherderError

Log = Callable[[str], None]
REPO = Path(__file__).resolve().parents[2]
INGESTER_PATH = REPO / "integrations" / "treeherder"  # on PYTHONPATH: the tc_jobs_ingester package
TARBALL_VARIABLE = "TC_TREEHERDER_TREEHERDER_TARBALL"
PYTHON_VARIABLE = "TC_TREEHERDER_TREEHERDER_PYTHON"
PIP_VERSION = "pip>=24"  # pip 23 refuses an extra's dependency in --require-hashes mode (googleapis-common-protos)


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Installation:
    source: Path  # the unpacked tree: manage.py, treeherder/, requirements/
    venv: Path
    built: bool = False  # the venv was built by this call (else reused)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def treeherder_cache() -> Path:
    return cache_root() / "treeherder"


def find_tarball() -> Path:
    explicit = os.environ.get(TARBALL_VARIABLE)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise TreeherderError(f"{TARBALL_VARIABLE}={explicit}: no such file")
        return path
    folder = (REPO / ".." / "shared" / "reference" / "treeherder").resolve()
    found = sorted(folder.glob("treeherder-*.tar.gz"))
    if not found:
        raise TreeherderError(
            f"Treeherder's source tarball is missing: no treeherder-*.tar.gz in {folder}. Put the reference "
            f"tarball there (shared/reference/treeherder/ beside the repository) or set {TARBALL_VARIABLE} to "
            "a treeherder-<commit>.tar.gz of github.com/mozilla/treeherder's backend.")
    return found[-1]


def _digest(path: Path, length: int = 16) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:length]


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        result = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                                text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    major, minor = result.stdout.split()
    return int(major), int(minor)


def find_python() -> str:
    """A Python 3.12 or 3.13 interpreter for Treeherder (Django 6), or a message saying how to get one."""
    explicit = os.environ.get(PYTHON_VARIABLE)
    if explicit:
        if (_python_version(explicit) or (0, 0)) < (3, 12):
            raise TreeherderError(f"{PYTHON_VARIABLE}={explicit} is not a working Python 3.12+")
        return explicit
    candidates = [shutil.which("python3.12"), shutil.which("python3.13")]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True)
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.13*/bin/python3.13"), reverse=True)
    candidates += ["/usr/bin/python3.12", "/usr/local/bin/python3.12", "/usr/bin/python3.13"]
    for candidate in candidates:
        if candidate and Path(candidate).exists() and (_python_version(candidate) or (0, 0)) >= (3, 12):
            return candidate
    raise TreeherderError(
        "Treeherder needs Python 3.12 or 3.13 (Django 6) and none was found: install one (`pyenv install "
        "3.12`, or `apt-get install python3.12 python3.12-venv` where the distribution has it) or set "
        f"{PYTHON_VARIABLE} to its path.")


def unpack(tarball: Path, log: Log = _quiet) -> Path:
    """The unpacked source tree for ``tarball`` (unpacked once per tarball digest)."""
    root = treeherder_cache() / f"src-{_digest(tarball, 12)}"
    with file_lock(treeherder_cache() / "unpack.lock"):
        done = root / ".complete"
        if not done.exists():
            log(f"unpacking {tarball.name} into {root}")
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            with tarfile.open(tarball) as archive:
                archive.extractall(root, filter="data")
            done.write_text(f"{tarball}\n")
    tops = [p for p in root.iterdir() if (p / "manage.py").exists()]
    if not tops:
        raise TreeherderError(f"{tarball} holds no manage.py at its top level: not Treeherder's backend")
    return tops[0]


def _run(command: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise TreeherderError(f"{what} failed (exit {result.returncode}):\n{output}")


def ensure_venv(source: Path, log: Log = _quiet) -> tuple[Path, bool]:
    """Treeherder's venv for ``source``'s requirements: reused when built, else built once (about a minute)."""
    requirements = source / "requirements" / "common.txt"
    venv = treeherder_cache() / f"venv-{_digest(requirements)}"
    with file_lock(treeherder_cache() / "venv.lock"):
        if (venv / "bin" / "python").exists() and _python_version(str(venv / "bin" / "python")):
            return venv, False
        python = find_python()
        partial = venv.with_name(venv.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        began = time.monotonic()
        log(f"building Treeherder's venv with {python} (once per requirements; about a minute): {venv}")
        _run([python, "-m", "venv", str(partial)], f"{python} -m venv", 300)
        pip = [str(partial / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run([*pip, "--upgrade", PIP_VERSION], "upgrading pip in Treeherder's venv", 600)
        _run([*pip, "--require-hashes", "-r", str(requirements)],
             f"pip install -r {requirements} (needs the PyPI registry)", 1800)
        partial.rename(venv)  # python and pip are called as venv/bin/python -m ..., so the move is safe
        log(f"Treeherder's venv built in {time.monotonic() - began:.0f}s")
        return venv, True


def install(log: Log = _quiet) -> Installation:
    source = unpack(find_tarball(), log)
    venv, built = ensure_venv(source, log)
    return Installation(source=source, venv=venv, built=built)
