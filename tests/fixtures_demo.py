"""Reusable pytest fixtures of the demo area (registered in tests/conftest.py).

* ``stac_browser_build`` (session): the STAC Browser build (``browser/dist``), built with
  ``browser/build.sh`` when missing (cached; skipped when Node.js is not installed).
* ``chromium`` (session): path of Debian's Chromium, installed with apt-get when missing
  (``scripts/ensure-browser-deps.sh``, as ``make browser-deps`` does).
* ``run_cli``: run ``tessera-stac ARGS`` in a child process with extra environment.
* ``cli_has``: whether the installed CLI has a command (``cli_has("sample", "tiles")``).
* ``ARTIFACTS``: ``test-artifacts/`` (git-ignored) for screenshots and logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_DIR = ROOT / "browser"
CLI_MODULE = "tessera_stac.cli.main"


@pytest.fixture(scope="session")
def stac_browser_build() -> Path:
    """The STAC Browser build served at /browser/ (built when missing; cached)."""
    dist = BROWSER_DIR / "dist"
    if not (dist / "index.html").is_file() or os.environ.get("TESSERA_STAC_REBUILD_BROWSER"):
        if shutil.which("npm") is None:
            pytest.skip("Node.js/npm missing: `make browser` installs it and builds STAC Browser")
        subprocess.run(["bash", str(BROWSER_DIR / "build.sh")], check=True)
    return dist


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium executable (installed with apt-get when missing)."""
    path = os.environ.get("TESSERA_STAC_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-browser-deps.sh")], check=True)
    assert os.access(path, os.X_OK), f"{path} still missing after installing chromium"
    return path


@pytest.fixture(scope="session")
def playwright_installed(stac_browser_build: Path) -> Path:
    """browser/node_modules with playwright-core (installed by the STAC Browser build)."""
    module = BROWSER_DIR / "node_modules" / "playwright-core"
    assert module.is_dir(), "playwright-core missing: run `make browser`"
    return module


def cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``tessera-stac ARGS`` in a child process; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", CLI_MODULE, *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(args, env=None, cwd=None)`` -> CompletedProcess (text, captured)."""
    return cli


@pytest.fixture(scope="session")
def cli_has() -> Callable[..., bool]:
    """``cli_has("sample", "tiles")``: whether the installed CLI has that command."""
    from tessera_stac.cli.demo_run import cli_commands

    commands = cli_commands()

    def has(*path: str) -> bool:
        return tuple(path) in commands

    return has
