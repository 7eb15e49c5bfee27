"""The service's import footprint: heavy stdlib modules stay out of `defender-agent run`.

Each of these costs RSS for the agent's whole life on a small device (logging ~3 MiB,
socket ~1.5 MiB, importlib.util ~0.9 MiB, ...). The child runs the real `run` path for
about a second, stops on SIGTERM like the service does, and reports what it imported.
(A config that sets values needs tomllib, which brings typing, warnings and datetime;
the packaged, comments-only config skips the parser.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from defender_agent import cli

HEAVY = (
    "logging",
    "socket",
    "importlib.util",
    "importlib",
    "threading",
    "selectors",
    "argparse",
    "traceback",
    "dataclasses",
    "subprocess",
    "ctypes",  # 0.45 MiB (0.8 MiB with sysconfig and threading on 3.14): linux/libc.py instead
    "sysconfig",
)

CHILD = """
import os, signal, sys
sys.path[:0] = {paths!r}
from defender_agent.cli import main
signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
signal.alarm(1)
rc = main(["run", "--config", {config!r}])
print("MODULES", ",".join(sorted(sys.modules)))
sys.exit(rc)
"""


def test_run_path_imports_nothing_heavy(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
state_dir = "{tmp_path / "state"}"
log_level = "debug"
[collectors.login]
auth_logs = ["{tmp_path / "auth.log"}"]
wtmp = "{tmp_path / "wtmp"}"
btmp = "{tmp_path / "btmp"}"
[collectors.sysinfo]
enabled = true
"""
    )
    paths = [str(Path(cli.__file__).resolve().parents[1])]
    if sys.version_info < (3, 11):  # -S hides site-packages, where tomli lives
        import tomli  # type: ignore[import-not-found,unused-ignore]

        paths.append(str(Path(tomli.__file__).resolve().parents[1]))
    code = CHILD.format(paths=paths, config=str(config))
    # -I -S: no site packages or .pth hooks, so only the agent's own imports count
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "defender-agent: INFO: started (version" in proc.stderr
    assert "defender-agent: INFO: stopped" in proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES "))
    modules = set(line.split(" ", 1)[1].split(","))
    assert {"defender_agent.collectors.login", "defender_agent.collectors.sysinfo"} <= modules
    assert "defender_agent.collectors.network" in modules  # on by default: it polled at start
    assert sorted(modules & set(HEAVY)) == []
    events = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    payloads = [json.loads(ln)["payload"] for ln in events]
    sysinfo = [p for p in payloads if p.get("event") == "system-information"]
    assert sysinfo and any(n["name"] == "lo" for n in sysinfo[0]["nics"])
