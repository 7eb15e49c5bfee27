"""agent/packaging: the one copy of the unit, init script, launcher and default config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from defender_agent import __version__, cli

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
SRC = Path(cli.__file__).resolve().parents[1]


def test_launcher_runs_the_cli_from_usr_lib(tmp_path: Path) -> None:
    launcher = (PACKAGING / "defender-agent").read_text()
    assert launcher.startswith("#!/usr/bin/python3\n")
    assert 'sys.path.insert(0, "/usr/lib/defender-agent")' in launcher
    assert os.access(PACKAGING / "defender-agent", os.X_OK)
    # same launcher, pointed at a copy of the package laid out as in the .deb
    lib = tmp_path / "usr-lib-defender-agent"
    shutil.copytree(SRC / "defender_agent", lib / "defender_agent")
    local = tmp_path / "defender-agent"
    local.write_text(launcher.replace("/usr/lib/defender-agent", str(lib)))
    res = subprocess.run(
        [sys.executable, "-I", str(local), "version"], capture_output=True, text=True, check=False
    )
    assert (res.returncode, res.stdout.strip()) == (0, f"defender-agent {__version__}"), res.stderr


def test_systemd_unit_is_hardened() -> None:
    unit = (PACKAGING / "defender-agent.service").read_text()
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    one = {key: values[-1] for key, values in settings.items()}
    assert one["ExecStart"] == "/usr/bin/defender-agent run"
    assert one["Restart"] == "on-failure"
    assert one["StateDirectory"] == "defender-agent"
    assert (one["User"], one["Group"]) == ("defender-agent", "defender-agent")
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RemoveIPC",
    ):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict" and one["ProtectProc"] == "invisible"
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert one["IPAddressDeny"] == "any"
    assert one["MemoryMax"] == "64M"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    res = subprocess.run(
        ["systemd-analyze", "verify", str(PACKAGING / "defender-agent.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = [line for line in res.stderr.splitlines() if "is not executable" not in line]
    assert problems == [], res.stderr


def test_init_script_start_status_stop(tmp_path: Path) -> None:
    init = PACKAGING / "defender-agent.init"
    assert subprocess.run(["sh", "-n", str(init)], check=False).returncode == 0
    daemon = tmp_path / "daemon"
    daemon.write_text(
        f'#!/bin/sh\nPYTHONPATH={SRC}:$PYTHONPATH exec {sys.executable} -m defender_agent "$@"\n'
    )
    daemon.chmod(0o755)
    (tmp_path / "auth.log").write_text("")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[collectors.login]\n'
        f'auth_logs = ["{tmp_path / "auth.log"}"]\nwtmp = ""\nbtmp = ""\n'
    )
    env = {
        **os.environ,
        "DAEMON": str(daemon),
        "PIDFILE": str(tmp_path / "pid"),
        "LOGFILE": str(tmp_path / "log"),
        "STATEDIR": str(tmp_path / "state"),
        "DAEMON_ARGS": f"run --config {cfg}",
        "AGENT_USER": "no-such-user-zq",  # as root in CI: stays root, and says so in the log
    }

    def svc(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(init), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    try:
        assert svc("start").returncode == 0
        status = svc("status")
        assert status.returncode == 0 and "is running" in status.stdout
    finally:
        assert svc("stop").returncode == 0
    assert svc("status").returncode == 3
    log = (tmp_path / "log").read_text()
    assert "stopped" in log and "no user no-such-user-zq; running as root" in log


def test_init_script_sources_lsb_functions_only_where_they_exist() -> None:
    """Debian's hook redirects to the hardened unit under systemd; BusyBox systems have none."""
    lines = (PACKAGING / "defender-agent.init").read_text().splitlines()
    sourcing = [line for line in lines if "/lib/lsb/init-functions" in line and "." in line]
    assert sourcing == ["[ -r /lib/lsb/init-functions ] && . /lib/lsb/init-functions"]
    # after the settings, before any action: the hook reads the action from "$1"
    assert lines.index(sourcing[0]) < lines.index('case "$1" in')


def test_manual_page_names_every_command() -> None:
    page = (PACKAGING / "defender-agent.1").read_text()
    section = page.split("\n.SH COMMANDS\n", 1)[1].split("\n.SH ", 1)[0].splitlines()
    documented = [
        section[i + 1].removeprefix(".B ") for i, line in enumerate(section) if line == ".TP"
    ]
    parser = cli.make_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert documented == list(subparsers.choices)  # type: ignore[attr-defined]
