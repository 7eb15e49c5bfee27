"""docs/devguide.md's examples are real: applied to a copy of the agent, they work.

The guide marks each change with an HTML comment: `new PATH` (the next code block is a
new file), `registry PATH TUPLE NAME` (NAME joins the registry tuple) and `schema` (the
next code block's keys join SCHEMA). This test applies exactly those to a copy of the
agent, then, in a fresh interpreter that imports the copy, runs the contract test and
the three example plugins together on virtual time. If the guide and the code drift
apart, this fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "devguide.md"
MARK = re.compile(r"<!-- devguide: (.+?) -->\n")
BLOCK = re.compile(r"```python\n(.*?)```", re.S)

RUN_EXAMPLES = """
import io, json, sys
from defender_agent import agent as agent_mod, config
from defender_agent.clock import ManualClock
from defender_agent.model import login_event

data = {
    "agent": {"state_dir": sys.argv[1]},
    "collectors": {"login": {"enabled": False}, "sysinfo": {"enabled": False},
                   "uptime": {"interval": 10}},
    "outputs": {"file": {"enabled": False}, "stderr": {"enabled": True}},
}
cfg = config.validate(data, "example.toml")
sys.stderr = io.StringIO()
agent = agent_mod.build(cfg, clock=ManualClock())
agent.start(heartbeat_interval=3600, statistics_interval=3600)
agent.advance(25)  # uptime events at t = 0, 10, 20
ctx = agent.context("collectors", "test")
ctx.emit(login_event("login-failed", user="root", source="192.0.2.9", port=1, service="sshd",
                     pid=1, tty=None, origin="authlog", time=agent.clock.time() - 5))
agent.run_once(0)
stats = agent.statistics_payload()
agent.shutdown()
lines = [json.loads(x) for x in sys.stderr.getvalue().splitlines() if x.startswith("{")]
print(json.dumps({"alerts": [r["payload"]["name"] for r in lines],
                  "uptime_events": stats["collectors"]["uptime"]["emitted"],
                  "written": stats["outputs"]["stderr"]["counts"]["written"]}))
"""


def apply_guide(target: Path) -> list[str]:
    """Apply every marked change of the guide under TARGET; return the files touched."""
    text = GUIDE.read_text(encoding="utf-8")
    schema_keys: list[str] = []
    touched: list[str] = []
    for mark in MARK.finditer(text):
        words = mark.group(1).split()
        block = BLOCK.search(text, mark.end())
        if words[0] == "new":
            assert block is not None and block.start() - mark.end() < 5, words
            path = target / words[1]
            assert not path.exists(), f"the guide's new file {words[1]} exists already"
            path.write_text(block.group(1), encoding="utf-8")
            touched.append(words[1])
        elif words[0] == "registry":
            path, name, entry = target / words[1], words[2], words[3]
            source = path.read_text(encoding="utf-8")
            edited, n = re.subn(
                rf"({name}: tuple\[str, \.\.\.\] = \([^)]*?)(,?\s*)\)", rf'\1, "{entry}")', source
            )
            assert n == 1, f"{words[1]}: no {name} tuple to extend"
            path.write_text(edited.replace('(, "', '("'), encoding="utf-8")
            touched.append(words[1])
        elif words[0] == "schema":
            assert block is not None and block.start() - mark.end() < 5, words
            schema_keys.append(block.group(1))
        else:
            raise AssertionError(f"unknown devguide mark {words}")
    schema = target / "agent/src/defender_agent/schema.py"
    source = schema.read_text(encoding="utf-8")
    end = source.index("\n)\n\nSECTIONS")
    schema.write_text(source[:end] + "\n" + "".join(schema_keys).rstrip() + source[end:])
    touched.append("agent/src/defender_agent/schema.py")
    return touched


def test_guide_examples_apply_and_run(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(
        ROOT / "agent", copy / "agent", ignore=shutil.ignore_patterns("__pycache__", ".*")
    )
    touched = apply_guide(copy)
    assert sorted(set(touched)) == sorted(
        [
            "agent/src/defender_agent/collectors/__init__.py",
            "agent/src/defender_agent/collectors/uptime.py",
            "agent/src/defender_agent/detectors/__init__.py",
            "agent/src/defender_agent/detectors/root_failure.py",
            "agent/src/defender_agent/outputs/__init__.py",
            "agent/src/defender_agent/outputs/stderr.py",
            "agent/src/defender_agent/schema.py",
        ]
    )
    env = {"PYTHONPATH": str(copy / "agent" / "src"), "PATH": "/usr/bin:/bin"}
    contract = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            str(copy / "agent/tests/test_contracts.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=copy,
        timeout=300,
        check=False,
    )
    assert contract.returncode == 0, contract.stdout[-3000:] + contract.stderr[-2000:]
    for plugin in ("collectors.uptime", "detectors.root_failure", "outputs.stderr"):
        assert f"test_module_contract[{plugin}] PASSED" in contract.stdout, plugin
    run = subprocess.run(
        [sys.executable, "-c", RUN_EXAMPLES, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        env=env,
        cwd=copy,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = run.stdout.strip().splitlines()[-1]
    assert result == '{"alerts": ["RootLoginFailed"], "uptime_events": 3, "written": 1}'
