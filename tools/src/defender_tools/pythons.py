"""`defender-tools pythons test`: the agent's unit tests on the oldest and newest Pythons.

The agent promises Python 3.9+. Devices run Debian 11 (3.9) to Debian 13 (3.13), and
current Buildroot ships 3.14 (Debian sid has it too). The host's own Python is one point
in that range, so each suite gets a chroot built by mmdebstrap from the Debian archive
with python3, python3-pytest and python3-hypothesis, nothing else. A Python older than
3.11 also needs tomli, which Debian 11 does not package: the pure-Python wheel from PyPI
(downloaded by the host's pip) goes into the chroot as it is, a zip Python imports from,
named by a .pth file in the chroot's site-packages. So tomli is there the way a device's
python3-tomli would be, also for the children tests start with their own PYTHONPATH.

Chroots are cached in build/chroots/SUITE, keyed by a hash of their inputs (the
mmdebstrap command line, mirrors included), like the image builder's. Each run copies
the agent (src, tests, packaging) and docs/ into a fresh directory, bind-mounted at /work,
and runs `python3 -m pytest agent/tests` inside `unshare --mount --pid --fork`: /proc, /sys
(read-only), /dev and a tmpfs /tmp are mounted in that private namespace only, and the
kernel tears all of it down, processes and mounts, when the run ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from defender_tools.errors import UserError
from defender_tools.images.debian.sources import host_sources, mirror_lines
from defender_tools.images.debian.steps import (
    kill_group,
    mounts_under,
    remove_work_dir,
    run_in_group,
    tail,
)

# Oldest and newest: Debian 11 (Python 3.9), Debian 13 (3.13), sid (3.14, as Buildroot).
DEFAULT_SUITES = ("bullseye", "trixie", "sid")
PACKAGES = ("python3", "python3-pytest", "python3-hypothesis")
# Suites with no -updates / -security archive.
ROLLING_SUITES = frozenset({"sid", "unstable"})
# Docs and translations are dead weight in a test chroot.
DPKG_OPTS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/info/*",
)
# A mirror may serve a snapshot whose Release files are past their Valid-Until (sid's and
# the security archive's expire within days); signatures are still checked.
APT_OPTS = ('Acquire::Check-Valid-Until "false"',)
TOMLI_BELOW = (3, 11)  # tomllib is in the standard library from 3.11
WHEELS_IN_CHROOT = "/opt/defender-wheels"  # the tomli wheel, put on sys.path by a .pth file
TARGET = "{TARGET}"  # stands for the rootfs path in the command that is hashed
WORK = "/work"  # where the agent copy is mounted inside the chroot
# What a run copies from the repository: the agent, and docs/ (agent tests check docs).
STAGED = (
    "agent/src",
    "agent/tests",
    "agent/packaging",
    "agent/pyproject.toml",
    "agent/README.md",
    "docs",
)
COPY_IGNORE = ("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", "*.egg-info", ".*_cache")
PYTEST_TIMEOUT = 1800
TIMED_OUT = 124  # the exit status reported for a run killed at PYTEST_TIMEOUT
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Runs as PID 1 of a new PID and mount namespace; the private mounts go away with it.
# The last command is not exec'd: the shell stays PID 1, so the tests run as an ordinary
# process (PID 1 ignores signals it has no handler for).
NAMESPACE_SCRIPT = f"""\
root=$1 work=$2
shift 2
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount --bind "$work" "$root{WORK}"
chroot "$root" /bin/sh -c 'cd {WORK} && exec "$@"' sh "$@"
"""
PYTEST_EXIT = {
    0: "all tests passed",
    1: "tests failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no tests collected",
    TIMED_OUT: f"killed after {PYTEST_TIMEOUT} s",  # ours, not pytest's
}

Progress = Callable[[str], None]


# --- pure parts: the chroot's recipe and its cache key, pytest's summary and verdict ------


def suite_mirrors(suite: str, host_lines: list[str]) -> list[str]:
    """The mirror lines for SUITE; rolling suites have no -updates or -security."""
    if suite in ROLLING_SUITES:
        return [line for line in host_lines if line.split()[2] == suite]
    return host_lines


def mmdebstrap_command(suite: str, rootfs: str, mirrors: list[str]) -> list[str]:
    """The mmdebstrap command line that builds SUITE's test chroot in ROOTFS."""
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=essential",
        "--include=" + ",".join(PACKAGES),
        *[f"--dpkgopt={opt}" for opt in DPKG_OPTS],
        *[f"--aptopt={opt}" for opt in APT_OPTS],
        suite,
        rootfs,
        *mirrors,
    ]


def cache_key(suite: str, mirrors: list[str]) -> str:
    """Hash of every input of SUITE's chroot: the whole mmdebstrap command, path left out."""
    inputs = {
        "suite": suite,
        "command": mmdebstrap_command(suite, TARGET, mirrors),
        "tomli": [list(TOMLI_BELOW), WHEELS_IN_CHROOT, "site-packages .pth"],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Counts:
    """pytest's closing line, as numbers."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    xfailed: int = 0
    xpassed: int = 0
    deselected: int = 0


_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b")
_SECONDS = re.compile(r"\bin \d+(?:\.\d+)?s\b")


def parse_summary(output: str) -> Counts | None:
    """Counts from pytest's closing line (`== 3 passed, 1 skipped in 0.52s ==`), if any.

    Works for pytest 6 to 9, with or without -q; "no tests ran in 0.01s" is all zeros.
    """
    for line in reversed(output.splitlines()):
        text = line.strip().strip("=").strip()
        if not _SECONDS.search(text):
            continue
        found = _COUNT.findall(text)
        if not found and not text.startswith("no tests ran"):
            continue
        values: dict[str, int] = {}
        for number, kind in found:
            key = "errors" if kind.startswith("error") else kind
            values[key] = values.get(key, 0) + int(number)
        return Counts(**values)
    return None


def verdict(exit_code: int, counts: Counts | None) -> tuple[bool, str]:
    """(passed?, why): a suite passes only when pytest exits 0 AND some test passed.

    pytest's exit 5 (no tests collected) and a run whose tests were all skipped are
    failures: a suite that ran nothing proves nothing.
    """
    if exit_code == 5:
        return False, "ran no test (pytest exit 5: no tests collected)"
    if exit_code != 0:
        what = PYTEST_EXIT.get(exit_code, "unknown exit status")
        return False, f"pytest exit {exit_code} ({what})"
    if counts is None:
        return False, "pytest printed no summary line"
    if counts.failed or counts.errors:
        return False, f"{counts.failed} failed, {counts.errors} errors"
    if counts.passed == 0:
        return False, "ran no test (none passed)"
    return True, "ok"


def pytest_ini(root_pyproject: Mapping[str, Any]) -> str:
    """A pytest.ini for the chroot from the repository's [tool.pytest.ini_options].

    Keeps addopts and markers; drops what needs plugins the chroot lacks (`timeout` is
    pytest-timeout's), and registers `timeout` as a plain marker so that a test marked
    with it still runs (without the time limit) under --strict-markers.
    """
    options = root_pyproject.get("tool", {}).get("pytest", {}).get("ini_options", {})
    addopts = options.get("addopts", "")
    if isinstance(addopts, list):
        addopts = " ".join(addopts)
    markers = [m for m in options.get("markers", []) if not m.startswith("timeout")]
    markers.append("timeout(seconds): pytest-timeout's marker; a no-op in this chroot")
    addopts = " ".join(part for part in (addopts, "-p no:cacheprovider") if part)
    lines = ["[pytest]", f"addopts = {addopts}", "markers ="]
    lines += [f"    {marker}" for marker in markers]
    return "\n".join(lines) + "\n"


def pytest_command(python_path: Iterable[str]) -> list[str]:
    """The command run inside the chroot, from /work, with a clean environment."""
    return [
        "/usr/bin/env",
        "-i",
        f"PATH={CHROOT_PATH}",
        "HOME=/root",
        "LANG=C.UTF-8",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONPATH=" + ":".join(python_path),
        "python3",
        "-m",
        "pytest",
        "-c",
        f"{WORK}/pytest.ini",
        f"--rootdir={WORK}",
        "agent/tests",
    ]


def namespace_command(rootfs: Path, work: Path, inner: list[str]) -> list[str]:
    """INNER in ROOTFS, in a private mount + PID namespace with WORK mounted at /work."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--",
        "sh",
        "-euc",
        NAMESPACE_SCRIPT,
        "sh",
        str(rootfs),
        str(work),
        *inner,
    ]


def python_version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


# --- the chroot ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chroot:
    suite: str
    dir: Path
    python: str  # e.g. "3.9.2"
    cached: bool
    seconds: float

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"


def _needs_root() -> None:
    """Building a chroot and running in one both need root and these tools."""
    if os.geteuid() != 0:
        raise UserError("pythons test needs root (mmdebstrap --mode=root, chroot, mounts)")
    for tool in ("mmdebstrap", "unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} not found on PATH (apt-get install it, or make sysdeps)")


def _mmdebstrap(cmd: list[str]) -> None:
    run_in_group(cmd, "mmdebstrap")


def _chroot_python(rootfs: Path, code: str) -> str:
    """CODE's output, run by the chroot's python3."""
    proc = subprocess.run(
        ["chroot", str(rootfs), "python3", "-c", code], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise UserError(f"{rootfs}: python3 -c {code!r} failed:\n{tail(proc.stdout + proc.stderr)}")
    return proc.stdout.strip()


def _install_tomli(rootfs: Path, python: str) -> None:
    """tomli's wheel in WHEELS_IN_CHROOT, on sys.path through a .pth in site-packages."""
    wheels = rootfs / WHEELS_IN_CHROOT.lstrip("/")
    wheels.mkdir(parents=True)
    _download_tomli(python, wheels)
    (wheel,) = wheels.glob("*.whl")
    site = _chroot_python(rootfs, "import site; print(site.getsitepackages()[0])")
    site_dir = rootfs / site.lstrip("/")
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "defender-tomli.pth").write_text(f"{WHEELS_IN_CHROOT}/{wheel.name}\n")
    _chroot_python(rootfs, "import tomli")


def _download_tomli(python: str, dest: Path) -> None:
    """tomli's pure-Python wheel for PYTHON (never a compiled one: it is imported from a zip)."""
    major, minor = python_version_tuple(python)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "tomli",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation=py",
        "--abi=none",
        "--platform=any",
        f"--python-version={major}.{minor}",
        "--dest",
        str(dest),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = list(dest.glob("tomli-*-py3-none-any.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise UserError(f"downloading tomli for Python {python} failed:\n{tail(proc.stderr)}")


def build_chroot(
    suite: str, chroots: Path, rebuild: bool = False, progress: Progress | None = None
) -> Chroot:
    """SUITE's test chroot in CHROOTS/SUITE: reused when its cache key matches."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
        raise UserError(f"--suite {suite!r}: not a Debian suite name")
    mirrors = suite_mirrors(suite, mirror_lines(suite, host_sources()))
    key = cache_key(suite, mirrors)
    final = chroots / suite
    stored = (final / "cachekey").read_text().strip() if (final / "cachekey").is_file() else ""
    if not rebuild and stored == key and (final / "python-version").is_file():
        python = (final / "python-version").read_text().strip()
        return Chroot(suite, final, python, True, round(time.monotonic() - started, 2))

    _needs_root()
    chroots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{suite}-", dir=chroots))
    try:
        say(f"{suite}: mmdebstrap {', '.join(PACKAGES)}")
        _mmdebstrap(mmdebstrap_command(suite, str(work / "rootfs"), mirrors))
        (work / "rootfs" / WORK.lstrip("/")).mkdir()
        python = _chroot_python(
            work / "rootfs", "import platform; print(platform.python_version())"
        )
        if python_version_tuple(python) < TOMLI_BELOW:
            say(f"{suite}: tomli wheel for Python {python}")
            _install_tomli(work / "rootfs", python)
        (work / "python-version").write_text(python + "\n")
        (work / "cachekey").write_text(key + "\n")
        if final.exists():
            remove_work_dir(final)
        work.rename(final)
    finally:
        if work.exists():
            remove_work_dir(work)
    return Chroot(suite, final, python, False, round(time.monotonic() - started, 2))


# --- running the tests ---------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    python: str
    ok: bool
    reason: str
    exit_code: int
    counts: Counts | None
    test_seconds: float
    chroot_seconds: float
    chroot_cached: bool
    log: Path

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["log"] = str(self.log)
        return data

    def line(self) -> str:
        counts = self.counts or Counts()
        chroot = "cached" if self.chroot_cached else f"built in {self.chroot_seconds:.0f} s"
        state = "ok" if self.ok else f"FAILED: {self.reason}"
        return (
            f"{self.suite:<10} Python {self.python:<8} {counts.passed} passed, "
            f"{counts.failed} failed, {counts.skipped} skipped in {self.test_seconds:.1f} s "
            f"(chroot {chroot})  {state}"
        )


def _stage(repo: Path, chroot: Chroot, ini: str, chroots: Path) -> Path:
    """A fresh copy of the agent (and docs/) for one run."""
    stage = Path(tempfile.mkdtemp(prefix=f".{chroot.suite}-run-", dir=chroots))
    stage.chmod(0o755)
    ignore = shutil.ignore_patterns(*COPY_IGNORE)
    for part in STAGED:
        source, target = repo / part, stage / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore, symlinks=True)
        elif source.is_file():
            shutil.copy2(source, target)
    (stage / "pytest.ini").write_text(ini, encoding="utf-8")
    return stage


def run_suite(repo: Path, chroot: Chroot, ini: str, chroots: Path) -> SuiteResult:
    """`python3 -m pytest agent/tests` in CHROOT; the full output goes to CHROOT/pytest.log."""
    stage = _stage(repo, chroot, ini, chroots)
    log = chroot.dir / "pytest.log"
    started = time.monotonic()
    try:
        cmd = namespace_command(chroot.rootfs, stage, pytest_command([f"{WORK}/agent/src"]))
        proc = subprocess.Popen(
            cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=PYTEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            output, code = f"pytest did not finish in {PYTEST_TIMEOUT} s\n", TIMED_OUT
        except BaseException:
            kill_group(proc)
            raise
        else:
            code = proc.returncode
    finally:
        seconds = round(time.monotonic() - started, 2)
        left = mounts_under(chroot.rootfs)
        remove_work_dir(stage)
    if left:  # never expected: the mounts live in the namespace that just ended
        raise UserError(f"{chroot.rootfs}: mounts left behind: {', '.join(left)}")
    log.write_text(output, encoding="utf-8")
    counts = parse_summary(output)
    ok, reason = verdict(code, counts)
    return SuiteResult(
        suite=chroot.suite,
        python=chroot.python,
        ok=ok,
        reason=reason,
        exit_code=code,
        counts=counts,
        test_seconds=seconds,
        chroot_seconds=chroot.seconds,
        chroot_cached=chroot.cached,
        log=log,
    )


def repository() -> Path:
    """The checkout holding agent/: the current directory, else the one we are installed from."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "agent" / "tests").is_dir() and (root / "pyproject.toml").is_file():
            return root
    raise UserError("cannot find the repository (agent/tests); run from the checkout")


def run_suites(
    suites: Iterable[str], rebuild: bool = False, progress: Progress | None = None
) -> list[SuiteResult]:
    """Build (or reuse) each suite's chroot and run the agent's tests in it, in order."""
    _needs_root()
    repo = repository()
    chroots = repo / "build" / "chroots"
    root_pyproject = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    ini = pytest_ini(root_pyproject)
    results = []
    for suite in dict.fromkeys(suites):
        chroot = build_chroot(suite, chroots, rebuild=rebuild, progress=progress)
        if progress:
            progress(f"{suite}: pytest agent/tests on Python {chroot.python}")
        results.append(run_suite(repo, chroot, ini, chroots))
    return results


def exit_status(results: list[SuiteResult]) -> int:
    """0 when every suite passed, 1 otherwise (no suite at all is a failure too)."""
    return 0 if results and all(r.ok for r in results) else 1


# --- command line --------------------------------------------------------------------------

app = typer.Typer(
    help="Run the agent's unit tests on other Pythons (Debian chroots).", no_args_is_help=True
)


@app.command("test")
def run_tests_command(
    suite: Annotated[
        list[str] | None,
        typer.Option(
            "--suite",
            help="Debian suite (repeatable); default: bullseye (3.9), trixie (3.13), sid (3.14).",
        ),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Rebuild the chroots even when cached.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Run `pytest agent/tests` in a Debian chroot per suite; exit 1 if any suite fails."""
    err = Console(stderr=True)
    with err.status("pythons") as status:
        results = run_suites(
            suite or list(DEFAULT_SUITES), rebuild=rebuild, progress=lambda m: status.update(m)
        )
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for result in results:
            typer.echo(result.line())
        for result in results:
            if not result.ok:
                err.print(f"[red]{result.suite}[/red]: {result.reason}; full output: {result.log}")
                err.print(tail(result.log.read_text(encoding="utf-8")), markup=False)
    raise typer.Exit(exit_status(results))
