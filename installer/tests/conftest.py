"""Shared helpers for the installer tests: run the real CLI, build real packages once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "agent"
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z


def run_installer(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `defender-installer` as a user would: a separate process, real stdout/stderr."""
    script = Path(sys.executable).parent / "defender-installer"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "defender_installer"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def build_deb(out: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Build a .deb from the repository's agent into `out`; returns the --json summary."""
    result = run_installer("build", "--format", "deb", "--out", str(out), "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


@pytest.fixture(scope="session")
def full_deb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A package with every collector, built once for the session."""
    return build_deb(tmp_path_factory.mktemp("full"), env={"SOURCE_DATE_EPOCH": EPOCH})


@pytest.fixture(scope="session")
def login_deb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A source-customized package with only the login collector and no optional output."""
    return build_deb(tmp_path_factory.mktemp("login"), "--collectors", "login", "--outputs", "none")


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(
        ["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture(scope="session")
def dpkg_deb() -> Callable[..., str]:
    """`dpkg-deb ARGS...` -> stdout (the host's dpkg is the reference reader of .debs)."""
    return _dpkg_deb


@pytest.fixture(scope="session")
def installer() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `defender-installer ARGS...` in a subprocess."""
    return run_installer


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def fake_agent(tmp_path: Path) -> Callable[..., Path]:
    """Write a small agent checkout (any checkout must work, not just this repository's)."""

    def make(
        collectors: tuple[str, ...] = ("login", "sysinfo"), registry: str | None = None
    ) -> Path:
        root = tmp_path / "agent"
        package = root / "src" / "defender_agent"
        (package / "collectors").mkdir(parents=True)
        (package / "linux").mkdir()
        (root / "packaging").mkdir()
        (root / "pyproject.toml").write_text(
            '[project]\nname = "defender-agent"\nversion = "2.3.4"\n'
        )
        (package / "__init__.py").write_text('__version__ = "2.3.4"\n')
        (package / "cli.py").write_text("def main() -> int:\n    return 0\n")
        (package / "linux" / "__init__.py").write_text("")
        (package / "linux" / "utmp.py").write_text("RECORD = 384\n")
        (package / "collectors" / "__init__.py").write_text(
            registry
            if registry is not None
            else f"import os\n\nALL_COLLECTORS: tuple[str, ...] = {collectors!r}\n"
        )
        for name in collectors:
            (package / "collectors" / f"{name}.py").write_text(f"NAME = {name!r}\n")
        for name in (
            "defender-agent",
            "defender-agent.service",
            "defender-agent.init",
            "agent.toml",
        ):
            (root / "packaging" / name).write_text(f"# {name}\n")
        (root / "LICENSE").write_text("MIT License\n\nCopyright (c) 2024 Fake authors\n\nText.\n")
        return root

    return make
