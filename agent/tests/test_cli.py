"""CLI and end to end: the real agent on a temp auth.log raises exactly one alert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent import __version__, cli
from defender_agent import agent as agent_mod
from defender_agent.clock import ManualClock
from defender_agent.collectors.common import timestamps
from defender_agent.model import Record, rfc3339

LINES = [
    f"2026-11-27T08:00:0{i}.100000+00:00 gw sshd[90{i}]: Failed password for invalid user "
    f"admin from 10.0.2.2 port 5260{i} ssh2\n"
    for i in range(8)
]


def write_config(tmp_path: Path, extra: str = "") -> Path:
    """A config for the agent as a child process; EXTRA continues [collectors.login]. The
    host's processes and sockets stay out of these tests (test_process.py and
    test_network.py have theirs) unless EXTRA configures those collectors itself."""
    host = (
        ""
        if "[collectors.process]" in extra
        else "[collectors.process]\nenabled = false\n[collectors.network]\nenabled = false\n"
    )
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f"""
[agent]
state_dir = "{tmp_path / "state"}"
device_id = "e2e"
[collectors.login]
auth_logs = ["{tmp_path / "auth.log"}"]
wtmp = ""
btmp = ""
{extra}
{host}"""
    )
    return cfg


def child_env() -> dict[str, str]:
    """The environment for a child agent: this source tree first on its path."""
    src = str(Path(cli.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = child_env()
    return subprocess.run(
        [sys.executable, "-m", "defender_agent", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_end_to_end_eight_failures_one_alert(
    tmp_path: Path, advance_until: Callable[..., bool]
) -> None:
    cfg_path = write_config(tmp_path)
    auth = tmp_path / "auth.log"
    auth.write_text("Nov 27 07:59:00 gw sshd[1]: Server listening on 0.0.0.0 port 22.\n")
    cfg = cli.config.load(str(cfg_path))
    clock = ManualClock(timestamps.iso("2026-11-27T08:00:00Z") or 0.0)
    agent = agent_mod.build(cfg, clock=clock)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    agent.run_once(0)
    events = tmp_path / "state" / "events.jsonl"

    def alert_count() -> int:
        return sum('"type":"alert"' in line for line in events.read_text().splitlines())

    for i, line in enumerate(LINES):
        with open(auth, "a") as fh:
            fh.write(line)
        clock.advance(1.0)  # the lines are 1 s apart, and so is their reading
        agent.run_once(0)
        assert alert_count() == (1 if i >= 4 else 0), f"after line {i + 1}"
    agent.statistics()
    agent.shutdown()
    recs = [json.loads(x) for x in events.read_text().splitlines()]
    stats = [r for r in recs if r["type"] == "statistics"][-1]["payload"]
    assert stats["collectors"]["login"]["emitted"] == 8
    assert stats["detectors"]["brute_force"]["counts"]["alerts"] == 1
    (alert,) = [r for r in recs if r["type"] == "alert"]
    # dated at the crossing line's own stamp, observed when the agent read it
    assert (alert["time"], alert["observed"]) == (
        "2026-11-27T08:00:04.100Z",
        "2026-11-27T08:00:05.000Z",
    )

    res = run_cli("alerts", "--json", "--config", str(cfg_path))
    assert res.returncode == 0, res.stderr
    (alert,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert alert["schema"] == "defender/1" and alert["type"] == "alert"
    assert alert["device_id"] == "e2e" and alert["agent_version"] == __version__
    p = alert["payload"]
    assert (p["name"], p["severity"], p["source"], p["users"], p["count"], p["service"]) == (
        "BruteForce",
        "low",
        "10.0.2.2",
        ["admin"],
        5,
        "sshd",
    )
    table = run_cli("alerts", "--config", str(cfg_path))
    assert "BruteForce" in table.stdout and "10.0.2.2" in table.stdout


def test_alerts_since_reads_rotated_files_oldest_first(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    now = time.time()

    def alert(name: str, age: float) -> str:
        rec = Record(
            "alert",
            {"name": name, "severity": "low", "source": "10.0.2.2", "description": name},
            now - age,
        )
        return rec.to_json("d") + "\n"

    (state / "events.jsonl.2").write_text(alert("old", 7200))
    (state / "events.jsonl.1").write_text(alert("middle", 600) + "{torn line\n")
    (state / "events.jsonl").write_text(alert("new", 5))
    res = run_cli("alerts", "--json", "--config", str(cfg_path))
    assert [json.loads(x)["payload"]["name"] for x in res.stdout.splitlines()] == [
        "old",
        "middle",
        "new",
    ]
    res = run_cli("alerts", "--json", "--since", "30m", "--config", str(cfg_path))
    assert [json.loads(x)["payload"]["name"] for x in res.stdout.splitlines()] == ["middle", "new"]


def test_alerts_without_file(tmp_path: Path) -> None:
    res = run_cli("alerts", "--config", str(write_config(tmp_path)))
    assert (res.returncode, res.stdout.strip()) == (0, "no alerts")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alerts", "--since", "5 minutes"], "--since: '5 minutes' is not a duration"),
        (["frobnicate"], "invalid choice"),
        (["run", "--config", "/nonexistent/agent.toml"], "/nonexistent/agent.toml: file not found"),
    ],
)
def test_user_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_config_error_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "poll_interval = 0\n")
    res = run_cli("check", "--config", str(cfg))
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"{cfg}: collectors.login.poll_interval: 0.0 is below the minimum 0.1"
    )


def test_check_reports_backends_and_exit_codes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    res = run_cli("check", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "event loop: epoll" in res.stdout.splitlines()
    assert "collector login: in build: yes, enabled: yes" in res.stdout
    assert "backend: inotify" in res.stdout
    assert f"{tmp_path / 'auth.log'}: missing (waited for)" in res.stdout
    off = write_config(
        tmp_path,
        "enabled = false\n[collectors.sysinfo]\nenabled = false\n"
        "[collectors.process]\nenabled = false\n"
        "[collectors.network]\nenabled = false\n",
    )
    res = run_cli("check", "--config", str(off))
    assert res.returncode == 1
    assert "nothing can run" in res.stderr


def test_version_and_parse_duration() -> None:
    assert run_cli("version").stdout.strip() == f"defender-agent {__version__}"
    assert [cli.parse_duration(x) for x in ("30s", "10m", "2h", "1d")] == [30, 600, 7200, 86400]


def start_agent(cfg: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """`defender-agent run` as a child; returns once it has written its first record."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "defender_agent", "run", "--config", str(cfg)],
        env=child_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    events = tmp_path / "state" / "events.jsonl"
    deadline = time.monotonic() + 10
    while not (events.exists() and events.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, events


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    proc, events = start_agent(cfg, tmp_path)
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert (tmp_path / "state" / "state.json").exists()
    kinds = [json.loads(x)["type"] for x in events.read_text().splitlines()]
    assert kinds[0] == "heartbeat" and "event" in kinds  # sysinfo at start


def test_rfc3339_format() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1.9996) == "1970-01-01T00:00:02.000Z"
    ts = 1795000000.123
    expected = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
    assert rfc3339(ts) == expected.replace("+00:00", "Z")


def test_sysinfo_payload_is_complete() -> None:
    from defender_agent.collectors import sysinfo

    info: dict[str, Any] = sysinfo.collect()
    assert info["event"] == "system-information"
    assert info["kernel"] == os.uname().release and info["cpu_count"] == os.cpu_count()
    assert info["memory_total_kib"] > 0
    lo = [n for n in info["nics"] if n["name"] == "lo"]
    assert lo and lo[0]["ipv4"] == ["127.0.0.1"] and lo[0]["type"] == "loopback"
    assert info["agent"] == {"type": "defender-agent", "version": __version__}


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "--config", "/etc/x.toml"],
        ["run", "--config=/etc/x.toml", "--stdout"],
        ["run", "--stdout", "--config", "a b.toml"],
        ["run", "--user", "defender-agent"],
        ["run", "--user=defender-agent", "--config", "x.toml"],
    ],
)
def test_fast_run_parse_matches_argparse(argv: list[str]) -> None:
    fast = cli._parse_run_fast(argv)
    full = cli.make_parser().parse_args(argv)
    assert fast is not None
    for name in ("config", "stdout", "duration", "user", "func"):
        assert getattr(fast, name) == getattr(full, name)


@pytest.mark.parametrize(
    "argv", [["run", "--config"], ["run", "--bogus"], ["run", "-h"], ["check"], []]
)
def test_fast_run_parse_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert cli._parse_run_fast(argv) is None


def test_sighup_reopens_the_events_file(tmp_path: Path) -> None:
    import signal

    cfg = write_config(tmp_path)
    auth = tmp_path / "auth.log"
    auth.write_text("")
    proc, events = start_agent(cfg, tmp_path)
    events.rename(tmp_path / "state" / "moved-by-logrotate.jsonl")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    with open(auth, "a") as fh:
        fh.write(
            "Nov 27 08:00:00 gw sshd[1]: Accepted password for root from 10.0.2.2 port 1 ssh2\n"
        )
    deadline = time.monotonic() + 10
    while not (events.exists() and events.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    login, last = (json.loads(line) for line in events.read_text().splitlines())
    assert login["payload"]["event"] == "login"
    assert last["type"] == "statistics"  # written at the stop: the counts of its last period


@pytest.mark.parametrize("since", ["99999999999999d", "9" * 400 + "s"])
def test_alerts_since_longer_than_the_epoch_shows_everything(tmp_path: Path, since: str) -> None:
    # A duration reaching before 1970 must mean "all alerts", not a gmtime() traceback.
    events = tmp_path / "events.jsonl"
    events.write_text(Record("alert", {"name": "BruteForce"}, time.time() - 60).to_json("d") + "\n")
    found = cli.read_alerts(str(events), cli.parse_duration(since))
    assert [a["payload"]["name"] for a in found] == ["BruteForce"]
