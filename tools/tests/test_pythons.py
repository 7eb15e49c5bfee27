"""`pythons test`: the pure parts (cache key, pytest's summary, the verdict, the commands).

Building the chroots and running the agent's tests in them is `make agent-pythons`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from defender_tools import pythons
from defender_tools.pythons import Counts, SuiteResult, parse_summary, verdict

REPO = Path(__file__).resolve().parents[2]
HOST = [
    "deb http://mirror.example/debian bullseye main",
    "deb http://mirror.example/debian bullseye-updates main",
    "deb http://mirror.example/debian-security bullseye-security main",
]

# --- the chroot's recipe and cache key ------------------------------------------------


def test_rolling_suites_have_no_updates_or_security() -> None:
    sid = [line.replace("bullseye", "sid") for line in HOST]
    assert pythons.suite_mirrors("sid", sid) == ["deb http://mirror.example/debian sid main"]
    assert pythons.suite_mirrors("bullseye", HOST) == HOST


def test_mmdebstrap_command_installs_python_pytest_hypothesis_only() -> None:
    cmd = pythons.mmdebstrap_command("trixie", "/x/rootfs", HOST)
    assert cmd[:3] == ["mmdebstrap", "--mode=root", "--variant=essential"]
    assert "--include=python3,python3-pytest,python3-hypothesis" in cmd
    assert cmd[cmd.index("trixie") :] == ["trixie", "/x/rootfs", *HOST]


def test_cache_key_is_stable_and_follows_every_input() -> None:
    key = pythons.cache_key("bullseye", HOST)
    assert key == pythons.cache_key("bullseye", list(HOST))
    assert len(key) == 64
    others = {
        pythons.cache_key("trixie", HOST),
        pythons.cache_key("bullseye", HOST[:1]),
        pythons.cache_key("bullseye", [*HOST, "deb http://other.example/debian bullseye main"]),
    }
    assert key not in others and len(others) == 3


def test_cache_key_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    key = pythons.cache_key("bullseye", HOST)
    monkeypatch.setattr(pythons, "PACKAGES", (*pythons.PACKAGES, "python3-tomli"))
    assert pythons.cache_key("bullseye", HOST) != key


def test_cache_key_leaves_the_build_path_out() -> None:
    """The key hashes the command with a placeholder, so moving the checkout keeps caches."""
    assert pythons.TARGET in pythons.mmdebstrap_command("sid", pythons.TARGET, HOST)


# --- pytest's closing line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "counts"),
    [
        # pytest 6.0 (Debian 11), default verbosity
        (
            "======================== 202 passed, 1 skipped in 8.34s ========================",
            Counts(passed=202, skipped=1),
        ),
        # pytest 9 with -q: no rule around it
        ("3 failed, 200 passed, 1 skipped in 10.47s", Counts(passed=200, failed=3, skipped=1)),
        # errors, xfail/xpass, deselected and warnings; "1 error" and "2 errors" add up
        (
            "== 1 failed, 5 passed, 2 xfailed, 1 xpassed, 4 deselected, 3 warnings, 1 error"
            " in 1.0s ==",
            Counts(passed=5, failed=1, errors=1, xfailed=2, xpassed=1, deselected=4),
        ),
        ("== 2 errors in 0.31s ==", Counts(errors=2)),
        # a long run shows the clock time too (pytest >= 7)
        ("== 9 passed in 75.20s (0:01:15) ==", Counts(passed=9)),
        (
            "============================ no tests ran in 0.01s =============================",
            Counts(),
        ),
    ],
)
def test_summary_line(line: str, counts: Counts) -> None:
    output = f"collected 9 items\n\nsome/test_x.py ....\n{line}\n"
    assert parse_summary(output) == counts


def test_summary_is_the_last_such_line() -> None:
    output = (
        "test_a.py::test_prints PASSED\n"
        "captured: 1 passed in 0.1s\n"
        "=== short test summary info ===\n"
        "FAILED test_a.py::test_b - assert 1 == 2\n"
        "=== 1 failed, 1 passed in 0.20s ===\n"
    )
    assert parse_summary(output) == Counts(passed=1, failed=1)


def test_no_summary_line() -> None:
    assert parse_summary("") is None
    assert parse_summary("ImportError while loading conftest '/work/agent/tests'\n") is None
    assert parse_summary("slept in 3s\n") is None


# --- the verdict and the exit status --------------------------------------------------


def test_a_suite_passes_when_pytest_exits_0_and_tests_passed() -> None:
    assert verdict(0, Counts(passed=3, skipped=2)) == (True, "ok")


@pytest.mark.parametrize(
    ("code", "counts", "reason"),
    [
        (5, Counts(), "ran no test (pytest exit 5: no tests collected)"),
        (5, None, "ran no test (pytest exit 5: no tests collected)"),
        (0, Counts(skipped=4), "ran no test (none passed)"),
        (0, Counts(), "ran no test (none passed)"),
        (0, None, "pytest printed no summary line"),
        (1, Counts(passed=3, failed=1), "pytest exit 1 (tests failed)"),
        (2, None, "pytest exit 2 (interrupted)"),
        (4, None, "pytest exit 4 (usage error)"),
        (124, None, "pytest exit 124 (killed after 1800 s)"),
        (99, None, "pytest exit 99 (unknown exit status)"),
    ],
)
def test_a_suite_fails(code: int, counts: Counts | None, reason: str) -> None:
    assert verdict(code, counts) == (False, reason)


def result(suite: str, ok: bool) -> SuiteResult:
    return SuiteResult(
        suite=suite,
        python="3.9.2",
        ok=ok,
        reason="ok" if ok else "pytest exit 1 (tests failed)",
        exit_code=0 if ok else 1,
        counts=Counts(passed=10, failed=0 if ok else 1, skipped=1),
        test_seconds=8.25,
        chroot_seconds=31.0,
        chroot_cached=False,
        log=Path("/b/pytest.log"),
    )


def test_exit_status_is_1_when_any_suite_fails_or_none_ran() -> None:
    assert pythons.exit_status([result("bullseye", True), result("sid", True)]) == 0
    assert pythons.exit_status([result("bullseye", True), result("sid", False)]) == 1
    assert pythons.exit_status([]) == 1


def test_result_line_and_json() -> None:
    line = result("bullseye", False).line()
    assert line.startswith("bullseye   Python 3.9.2    10 passed, 1 failed, 1 skipped in 8.2 s")
    assert line.endswith("(chroot built in 31 s)  FAILED: pytest exit 1 (tests failed)")
    data = result("sid", True).to_json()
    assert data["log"] == "/b/pytest.log"
    assert data["counts"] == {
        "passed": 10,
        "failed": 0,
        "skipped": 1,
        "errors": 0,
        "xfailed": 0,
        "xpassed": 0,
        "deselected": 0,
    }


# --- what runs in the chroot ----------------------------------------------------------


def test_pytest_ini_keeps_the_repository_settings_but_the_timeout() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    ini = pythons.pytest_ini(root)
    options = root["tool"]["pytest"]["ini_options"]
    lines = ini.splitlines()
    assert lines[0] == "[pytest]"
    assert lines[1] == f"addopts = {options['addopts']} -p no:cacheprovider"
    for marker in options["markers"]:
        assert f"    {marker}" in lines
    assert any(line.startswith("    timeout(") for line in lines), "timeout is a plain marker"
    assert not any(line.startswith("timeout") for line in lines), "no pytest-timeout setting"


def test_pytest_ini_without_settings() -> None:
    ini = pythons.pytest_ini({})
    assert ini.splitlines()[:2] == ["[pytest]", "addopts = -p no:cacheprovider"]


def test_pytest_command_runs_the_agent_tests_with_a_clean_environment() -> None:
    cmd = pythons.pytest_command(["/work/agent/src", "/work/wheels/tomli-2.0.1-py3-none-any.whl"])
    assert cmd[:2] == ["/usr/bin/env", "-i"]
    assert "PYTHONPATH=/work/agent/src:/work/wheels/tomli-2.0.1-py3-none-any.whl" in cmd
    assert "PYTHONDONTWRITEBYTECODE=1" in cmd
    assert cmd[cmd.index("python3") :] == [
        "python3",
        "-m",
        "pytest",
        "-c",
        "/work/pytest.ini",
        "--rootdir=/work",
        "agent/tests",
    ]


def test_namespace_command_keeps_every_mount_private() -> None:
    cmd = pythons.namespace_command(Path("/b/rootfs"), Path("/b/run"), ["true"])
    assert cmd[: cmd.index("--")] == [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
    ]
    script = cmd[cmd.index("-euc") + 1]
    assert cmd[-4:] == ["sh", "/b/rootfs", "/b/run", "true"]
    for mount in ("proc", "sysfs", "--rbind /dev", "tmpfs", '--bind "$work" "$root/work"'):
        assert mount in script
    # the shell stays PID 1 of the namespace: the tests are not run by exec
    assert not script.splitlines()[-1].startswith("exec ")


def test_python_version_tuple() -> None:
    assert pythons.python_version_tuple("3.9.2") == (3, 9)
    assert pythons.python_version_tuple("3.14.10") == (3, 14)
    assert pythons.python_version_tuple("3.9.2") < pythons.TOMLI_BELOW
    assert pythons.python_version_tuple("3.13.5") >= pythons.TOMLI_BELOW


def test_running_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pythons.os, "geteuid", lambda: 1000)
    with pytest.raises(pythons.UserError, match="needs root"):
        pythons.run_suites(["bullseye"])


def test_a_suite_name_is_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(pythons.UserError, match="not a Debian suite name"):
        pythons.build_chroot("../etc", tmp_path)
    assert list(tmp_path.iterdir()) == []
