"""Treeherder's own UI for the local Treeherder, when a checkout of Treeherder's repository is at hand.

The backend tarball leaves the UI out and the UI is not a package on the npm registry, so it is built from a
checkout (``--ui PATH`` or ``TC_TREEHERDER_TREEHERDER_UI_SOURCE``; the commit should match the tarball's): its
``ui/`` folder and build files are copied into ``<cache>/treeherder-ui/src-<digest>/``, the packages come from
the npm registry (``pnpm install --frozen-lockfile`` with the pnpm version the checkout names, lifecycle
scripts off as its ``.npmrc`` says), and ``pnpm build`` (rspack) writes ``.build/``, about a minute and a half
in all, once per digest. Treeherder serves ``<source>/.build`` at its root (WhiteNoise, read at start), so the
build is linked there and the API restarted: the UI then talks to the API on the same origin.

``screenshot`` takes a picture of a page with Debian's headless Chromium.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from devtools.stack.process import file_lock
from devtools.treeherder import TreeherderError
from devtools.treeherder.install import treeherder_cache

Log = Callable[[str], None]
UI_VARIABLE = "TC_TREEHERDER_TREEHERDER_UI_SOURCE"
BUILD_INPUTS = ("package.json", "pnpm-lock.yaml", "rspack.config.js", "babel.config.json", ".npmrc")


def _quiet(_: str) -> None:
    pass


def _digest(checkout: Path) -> str:
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        path = checkout / name
        digest.update(name.encode() + (path.read_bytes() if path.exists() else b""))
    for path in sorted((checkout / "ui").rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(checkout)}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def _run(command: list[str], cwd: Path, what: str, timeout: float) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise TreeherderError(f"{what} failed (exit {result.returncode}):\n{output}")


def build(checkout: Path, log: Log = _quiet) -> Path:
    """The built UI (a ``.build`` folder) for the Treeherder checkout at ``checkout``; built once per digest."""
    if not (checkout / "ui").is_dir() or not (checkout / "package.json").is_file():
        raise TreeherderError(f"{checkout} is not a checkout of Treeherder's repository (no ui/ and package.json)")
    if shutil.which("npx") is None:
        raise TreeherderError("building Treeherder's UI needs Node.js 20+ with npm: apt-get install -y nodejs npm")
    root = treeherder_cache().parent / "treeherder-ui" / f"src-{_digest(checkout)}"
    with file_lock(root.parent / "build.lock"):
        if (root / ".build" / "index.html").exists():
            return root / ".build"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for name in BUILD_INPUTS:
            if (checkout / name).exists():
                shutil.copy2(checkout / name, root / name)
        shutil.copytree(checkout / "ui", root / "ui")
        manager = json.loads((root / "package.json").read_text()).get("packageManager", "pnpm@10")
        log(f"building Treeherder's UI with {manager} from the npm registry (once; about a minute and a half)")
        _run(["npx", "-y", manager, "install", "--frozen-lockfile"], root, f"{manager} install", 1200)
        _run(["npx", "-y", manager, "build"], root, f"{manager} build", 1200)
        if not (root / ".build" / "index.html").exists():
            raise TreeherderError(f"the UI build wrote no {root / '.build' / 'index.html'}")
        return root / ".build"


def link(source: Path, built: Path) -> bool:
    """Serve ``built`` from the unpacked backend at ``source``; True when the link changed (restart the API)."""
    target = source / ".build"
    if target.is_symlink() and target.resolve() == built.resolve():
        return False
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.symlink_to(built)
    return True


def screenshot(url: str, out: Path, width: int = 1400, height: int = 370) -> None:
    """A PNG of ``url`` as headless Chromium renders it after up to 20 s of the page's own time."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise TreeherderError("a screenshot needs Chromium: apt-get install -y chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [chromium, "--headless=new", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
               "--virtual-time-budget=20000", f"--screenshot={out}", url]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    _run(command, out.parent, "chromium --screenshot", 120)
    if not out.exists():
        raise TreeherderError(f"Chromium wrote no {out}")
