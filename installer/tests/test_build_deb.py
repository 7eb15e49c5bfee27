"""Build real .debs from the repository's agent with nfpm and read them back with dpkg-deb."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from defender_agent._version import __version__ as VERSION

from defender_installer.agent_source import read_collectors

Run = Callable[..., subprocess.CompletedProcess[str]]
LIB = "./usr/lib/defender-agent/defender_agent/"


def _listing(dpkg_deb: Callable[..., str], deb: object) -> dict[str, str]:
    """path -> mode string, from `dpkg-deb -c`."""
    entries = {}
    for line in dpkg_deb("-c", str(deb)).splitlines():
        fields = line.split()
        entries[fields[-1].rstrip("/") if fields[-1] != "./" else "."] = fields[0]
    return entries


def _source_modules(repo: Path, skip: set[str]) -> set[str]:
    package = repo / "agent" / "src" / "defender_agent"
    return {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts and path.relative_to(package).as_posix() not in skip
    }


def _registered(repo: Path) -> tuple[str, ...]:
    return read_collectors(repo / "agent/src/defender_agent/collectors/__init__.py")


def test_control_fields(full_deb: dict[str, object], dpkg_deb: Callable[..., str]) -> None:
    deb = str(full_deb["path"])
    assert Path(deb).name == f"defender-agent_{VERSION}_all.deb"
    assert dpkg_deb("-f", deb, "Package").strip() == "defender-agent"
    assert dpkg_deb("-f", deb, "Version").strip() == VERSION
    assert dpkg_deb("-f", deb, "Architecture").strip() == "all"
    depends = [d.strip() for d in dpkg_deb("-f", deb, "Depends").split(",")]
    assert depends == ["python3 (>= 3.9)", "python3 (>= 3.11) | python3-tomli"]
    assert "conffiles" in dpkg_deb("-I", deb)
    # every file under /etc is a conffile (Debian policy 10.7.2)
    assert sorted(dpkg_deb("-I", deb, "conffiles").split()) == [
        "/etc/defender-agent/agent.toml",
        "/etc/defender-agent/threat-intel.txt",  # the ThreatIntel detector's list
        "/etc/init.d/defender-agent",
    ]


def test_full_package_has_every_module_and_the_service_files(
    full_deb: dict[str, object], dpkg_deb: Callable[..., str], repo: Path
) -> None:
    listing = _listing(dpkg_deb, full_deb["path"])
    packaged = {path.removeprefix(LIB) for path in listing if path.startswith(LIB)}
    assert _source_modules(repo, skip=set()) <= packaged
    assert not [p for p in listing if "__pycache__" in p or p.endswith(".pyc") or "/tests" in p]
    assert listing["./usr/bin/defender-agent"] == "-rwxr-xr-x"
    assert listing["./etc/init.d/defender-agent"] == "-rwxr-xr-x"
    assert listing["./lib/systemd/system/defender-agent.service"] == "-rw-r--r--"
    assert listing["./etc/defender-agent/agent.toml"] == "-rw-r--r--"
    assert listing["./var/lib/defender-agent"] == "drwxr-x---"
    assert full_deb["collectors"] == list(_registered(repo))
    assert full_deb["outputs"] == ["syslog"] and "outputs/syslog.py" in packaged
    # the collectors that need more than the base unit bring their drop-ins
    dropins = sorted(p.rsplit("/", 1)[1] for p in listing if "/defender-agent.service.d/" in p)
    assert dropins == ["network.conf", "process.conf"]


def test_collector_selection_leaves_the_others_out(
    login_deb: dict[str, object], dpkg_deb: Callable[..., str], repo: Path, tmp_path: Path
) -> None:
    listing = _listing(dpkg_deb, login_deb["path"])
    packaged = {path.removeprefix(LIB) for path in listing if path.startswith(LIB + "")}
    assert "collectors/login.py" in packaged
    others = {f"collectors/{name}.py" for name in _registered(repo) if name != "login"}
    others.add("outputs/syslog.py")  # --outputs none: the optional outputs are left out too
    assert not others & packaged
    assert {"outputs/file.py", "outputs/stdout.py"} <= packaged
    # Everything else (the core) is still there.
    assert _source_modules(repo, skip=others) <= packaged
    assert login_deb["collectors"] == ["login"]
    assert not [p for p in listing if "defender-agent.service.d" in p]  # no extra privileges

    dpkg_deb("-x", str(login_deb["path"]), str(tmp_path))
    info = json.loads((tmp_path / "usr/lib/defender-agent/BUILD-INFO.json").read_text())
    assert info["collectors"] == ["login"]
    assert info["outputs"] == []
    assert info["version"] == VERSION
    assert info["format"] == "deb"


def test_maintainer_scripts_are_valid_posix_sh(
    full_deb: dict[str, object], dpkg_deb: Callable[..., str], tmp_path: Path
) -> None:
    dpkg_deb("-e", str(full_deb["path"]), str(tmp_path))
    for name in ("postinst", "prerm", "postrm"):
        script = tmp_path / name
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n"), name
        assert script.stat().st_mode & 0o111, name
        for shell in ("sh", "dash", "bash"):
            checked = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
            assert checked.returncode == 0, f"{shell} -n {name}: {checked.stderr}"
    postinst = (tmp_path / "postinst").read_text()
    assert "python3 -m compileall -q /usr/lib/defender-agent/defender_agent" in postinst
    assert "[ -d /run/systemd/system ]" in postinst
    assert "update-rc.d defender-agent defaults" in postinst
    assert "invoke-rc.d" in postinst
    assert "rm -rf /var/lib/defender-agent /etc/defender-agent" in (tmp_path / "postrm").read_text()


def test_json_summary_matches_the_file(full_deb: dict[str, object]) -> None:
    path = Path(str(full_deb["path"]))
    data = path.read_bytes()
    assert full_deb["format"] == "deb"
    assert full_deb["version"] == VERSION
    assert full_deb["size"] == len(data)
    assert full_deb["sha256"] == hashlib.sha256(data).hexdigest()


def test_source_date_epoch_makes_builds_repeatable(
    installer: Run, full_deb: dict[str, object], tmp_path: Path, dpkg_deb: Callable[..., str]
) -> None:
    again = installer(
        "build", "--out", str(tmp_path), "--json", env={"SOURCE_DATE_EPOCH": "1700000000"}
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["sha256"] == full_deb["sha256"]
    dpkg_deb("-x", str(full_deb["path"]), str(tmp_path / "x"))
    info = json.loads((tmp_path / "x/usr/lib/defender-agent/BUILD-INFO.json").read_text())
    assert info["build_time"] == "2023-11-14T22:13:20Z"
    listing = dpkg_deb("-c", str(full_deb["path"]))
    assert all(" 2023-11-14 22:13 " in line for line in listing.splitlines()), listing


def test_plain_output_is_the_path_and_version_override(installer: Run, tmp_path: Path) -> None:
    result = installer("build", "--out", str(tmp_path), "--version", "0.1.0+dev1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "defender-agent_0.1.0+dev1_all.deb")
    assert Path(result.stdout.strip()).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["defender-agent_0.1.0+dev1_all.deb"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--collectors", "login,nope"], "unknown collector 'nope'; valid: login, "),
        (["--collectors", "login,,sysinfo"], "empty name in list"),
        (["--format", "rpm"], "--format 'rpm': not supported; supported formats: deb"),
        (["--version", "v1.0"], "--version 'v1.0': not a valid deb version"),
        (["--agent-src", "/nonexistent"], "--agent-src /nonexistent: no defender_agent package"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    installer: Run, tmp_path: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.deb").write_bytes(b"an earlier build")
    result = installer("build", "--out", str(out), *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("defender-installer: error: ")
    assert expected in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.deb"]
    assert (out / "keep.deb").read_bytes() == b"an earlier build"


def test_out_that_is_a_file_is_refused(installer: Run, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("mine")
    result = installer("build", "--out", str(target))
    assert result.returncode == 2
    assert "exists and is not a directory" in result.stderr
    assert target.read_text() == "mine"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "SOURCE_DATE_EPOCH='yesterday': must be a whole number of seconds"),
        ("99999999999999999999", "SOURCE_DATE_EPOCH='99999999999999999999': after the year 9999"),
    ],
)
def test_bad_source_date_epoch(installer: Run, tmp_path: Path, value: str, message: str) -> None:
    result = installer("build", "--out", str(tmp_path), env={"SOURCE_DATE_EPOCH": value})
    assert result.returncode == 2
    assert result.stderr.strip() == f"defender-installer: error: {message}"
