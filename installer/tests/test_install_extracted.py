"""Unpack a built .deb into a throwaway root and run the agent exactly as packaged."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from defender_agent._version import __version__ as VERSION

# Runs the packaged launcher with the unpacked /usr/lib/defender-agent first on sys.path,
# and proves the agent came from the package, not from a checkout or a virtualenv.
WRAPPER = """
import runpy, sys
lib, launcher, *args = sys.argv[1:]
sys.path.insert(0, lib)
import defender_agent
assert defender_agent.__file__.startswith(lib + "/"), defender_agent.__file__
sys.argv = [launcher, *args]
runpy.run_path(launcher, run_name="__main__")
"""
Unpack = Callable[[object], Path]
DEVICE_PYTHON = shutil.which("python3", path="/usr/bin") or sys.executable


@pytest.fixture
def unpack(tmp_path: Path, dpkg_deb: Callable[..., str]) -> Callable[[object], Path]:
    def run(deb: object) -> Path:
        root = tmp_path / "root"
        dpkg_deb("-x", str(deb), str(root))
        return root

    return run


def agent(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            DEVICE_PYTHON,
            "-I",
            "-c",
            WRAPPER,
            str(root / "usr/lib/defender-agent"),
            str(root / "usr/bin/defender-agent"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def local_config(root: Path, tmp_path: Path) -> Path:
    """The packaged agent.toml with its state directory moved under tmp_path."""
    text = (root / "etc/defender-agent/agent.toml").read_text()
    state = tmp_path / "state"
    state.mkdir()
    setting = f'state_dir = "{state}"'
    if re.search(r"(?m)^#?\s*state_dir\s*=.*$", text):
        text = re.sub(r"(?m)^#?\s*state_dir\s*=.*$", setting, text, count=1)
    elif re.search(r"(?m)^\[agent\]\s*$", text):
        text = re.sub(r"(?m)^\[agent\]\s*$", f"[agent]\n{setting}", text, count=1)
    else:
        text = f"[agent]\n{setting}\n\n{text}"
    config = tmp_path / "agent.toml"
    config.write_text(text)
    return config


def test_launcher_is_the_packaged_one(login_deb: dict[str, object], unpack: Unpack) -> None:
    root = unpack(login_deb["path"])
    launcher = (root / "usr/bin/defender-agent").read_text()
    assert launcher.startswith("#!/usr/bin/python3\n")
    assert "/usr/lib/defender-agent" in launcher


def test_installed_agent_reports_its_version(login_deb: dict[str, object], unpack: Unpack) -> None:
    result = agent(unpack(login_deb["path"]), "version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"defender-agent {VERSION}"


def test_installed_agent_checks_the_shipped_config(
    login_deb: dict[str, object], unpack: Unpack, tmp_path: Path
) -> None:
    root = unpack(login_deb["path"])
    result = agent(root, "check", "--config", str(local_config(root, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "login" in result.stdout


def test_collector_left_out_of_the_build_cannot_be_enabled(
    login_deb: dict[str, object], unpack: Unpack, tmp_path: Path
) -> None:
    root = unpack(login_deb["path"])
    config = local_config(root, tmp_path)
    text = config.read_text()
    table = "[collectors.sysinfo]\n"
    config.write_text(
        text.replace(table, table + "enabled = true\n")
        if table in text
        else text + "\n" + table + "enabled = true\n"
    )
    result = agent(root, "check", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "sysinfo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
