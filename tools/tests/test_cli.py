"""The command line: registered commands, and user mistakes as one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from defender_agent._version import __version__ as agent_version

from defender_tools import cli


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "defender_tools", *args], capture_output=True, text=True
    )


def test_every_command_module_is_registered() -> None:
    names = [m.__name__.rsplit(".", 1)[-1] for m in cli.COMMANDS]
    assert names == ["image", "qemu", "demo", "bench", "pythons"]
    help_text = _run("--help").stdout
    for name in names:
        assert name in help_text


def test_version() -> None:
    assert _run("--version").stdout.strip() == agent_version


def test_missing_package_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _run("image", "debian", "--out", str(tmp_path / "img"), "--package", "/nope/x.deb")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "defender-tools: error: /nope/x.deb: package file not found"
    ]
    assert not (tmp_path / "img").exists()


def test_boot_of_missing_conf_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _run("qemu", "boot", str(tmp_path / "gone.qemuboot.conf"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"defender-tools: error: {tmp_path / 'gone.qemuboot.conf'}: qemuboot.conf not found"
    )


def test_boot_dry_run_prints_the_restricted_command(tmp_path: Path) -> None:
    from defender_tools import qemuboot
    from defender_tools.images.debian import _conf_values

    qemuboot.write_conf(tmp_path / "q.qemuboot.conf", _conf_values("q"))
    for name in ("q.vmlinuz", "q.cpio.gz", "q.id_ed25519"):
        (tmp_path / name).write_bytes(b"x")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "defender_tools",
            "qemu",
            "boot",
            "--dry-run",
            "--ssh-port",
            "41000",
            str(tmp_path / "q.qemuboot.conf"),
        ],
        capture_output=True,
        text=True,
        env={"DEFENDER_QEMU_ACCEL": "tcg", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:41000-:22" in proc.stdout
    assert "-accel tcg" in proc.stdout


def test_unknown_profile_is_one_line_exit_2(tmp_path: Path) -> None:
    for args in (
        ("image", "debian", "--out", str(tmp_path / "img"), "--profile", "tiny"),
        (
            "demo",
            "--out",
            str(tmp_path / "img"),
            "--dist",
            str(tmp_path / "d"),
            "--profile",
            "tiny",
        ),
    ):
        proc = _run(*args)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            "defender-tools: error: --profile 'tiny': unknown profile "
            "(choose one of: standard, embedded)"
        ]
    assert not (tmp_path / "img").exists()
    assert not (tmp_path / "d").exists()  # the demo refused before building the package
