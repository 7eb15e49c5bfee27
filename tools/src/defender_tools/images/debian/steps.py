"""Running the build's external commands, and cleaning up their scratch tree."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from defender_tools.errors import UserError

STOP_SECONDS = 30  # how long a killed process group may take to disappear
OUTPUT_TAIL = 25  # lines of a failed step's output shown in the error


def tail(output: str) -> str:
    return "\n".join(output.strip().splitlines()[-OUTPUT_TAIL:])


def run(
    cmd: list[str], what: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a build step; a failure names the step and shows the tail of its output."""
    proc = subprocess.run(cmd, text=True, capture_output=True, env=env, input=stdin)
    if proc.returncode != 0:
        output = tail(proc.stdout + proc.stderr)
        raise UserError(f"{what} failed (exit {proc.returncode}):\n{output}")
    return proc


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the whole process group and wait until none of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def run_in_group(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run CMD in a process group of its own: on an interrupt it and its children (apt,
    dpkg under mmdebstrap) are stopped before the caller deletes their scratch tree; a
    failure names WHAT with the tail of the output."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate()
    except BaseException:
        kill_group(proc)
        raise
    if proc.returncode != 0:
        raise UserError(f"{what} failed (exit {proc.returncode}):\n{tail(output)}")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below PATH (from /proc/self/mountinfo, octal escapes decoded)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def remove_work_dir(work: Path) -> None:
    """Delete the scratch tree, but never through a mount an interrupted mmdebstrap left behind."""
    for point in sorted(mounts_under(work), reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
    left = mounts_under(work)
    if left:
        raise UserError(f"{work}: still has mounts ({', '.join(left)}); unmount, then delete it")
    shutil.rmtree(work, ignore_errors=True)
