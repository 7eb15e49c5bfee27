"""`defender-agent replay`: parsers and detectors over existing logs, on their own time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from defender_agent import cli
from defender_agent.linux import utmp

ATTACK = [
    f"2026-11-27T08:00:{10 * n:02d}.000000+00:00 gw sshd[{700 + n}]: "
    f"Failed password for root from 203.0.113.9 port {41000 + n} ssh2"
    for n in range(5)
]
SPREAD = [
    f"2026-11-27T{10 + n:02d}:00:00.000000+00:00 gw sshd[{800 + n}]: "
    f"Failed password for root from 198.51.100.3 port {42000 + n} ssh2"
    for n in range(5)
]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "agent.toml"
    if not cfg.exists():
        cfg.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\n')
    src = str(Path(cli.__file__).resolve().parents[1])
    return subprocess.run(
        [sys.executable, "-m", "defender_agent", "replay", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=60,
        check=False,
    )


def records(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_burst_in_last_weeks_log_is_one_alert_in_its_own_time(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("\n".join([*SPREAD, *ATTACK]) + "\n")
    res = run(tmp_path, str(log), "--json")
    assert res.returncode == 0, res.stderr
    got = records(res.stdout)
    assert sum(r["type"] == "event" for r in got) == 10
    (alert,) = [r for r in got if r["type"] == "alert"]
    assert alert["time"] == "2026-11-27T08:00:40.000Z"  # the fifth failure, not "now"
    assert alert["payload"]["source"] == "203.0.113.9"  # the spread-out one raised nothing


def test_the_text_report_groups_what_it_did_not_understand(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    odd = [
        f"2026-11-27T09:00:0{n}.000000+00:00 gw sshd[9{n}]: Server listening on "
        f"192.0.2.{n} port 5{n}000."
        for n in range(3)
    ]
    log.write_text("\n".join([*ATTACK, *odd, "2026-11-27T09:00:09Z gw cron[1]: x"]) + "\n")
    res = run(tmp_path, str(log))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "replayed 9 entries from 1 file(s)" in lines
    assert "events: login-failed 5" in lines and "alerts: 1" in lines
    assert "not understood: 3 line(s) in 1 form(s)" in lines
    assert "       3  sshd: Server listening on A port N." in lines
    assert "skipped: other-program 1" in lines


def test_journal_export_and_utmp_records(tmp_path: Path) -> None:
    journal = tmp_path / "auth.json"
    entries = [
        {
            "SYSLOG_IDENTIFIER": "sshd",
            "_PID": str(900 + n),
            "MESSAGE": f"Failed password for admin from 192.0.2.7 port {43000 + n} ssh2",
            "__REALTIME_TIMESTAMP": str((1_795_000_000 + n) * 1_000_000),
        }
        for n in range(5)
    ]
    journal.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    res = run(tmp_path, str(journal), "--json")
    assert res.returncode == 0, res.stderr
    alerts = [r for r in records(res.stdout) if r["type"] == "alert"]
    assert [a["payload"]["source"] for a in alerts] == ["192.0.2.7"]
    btmp = tmp_path / "btmp"
    layout = utmp.layout_for_machine()
    btmp.write_bytes(
        b"".join(
            utmp.encode(
                utmp.UtmpRecord(
                    utmp.LOGIN_PROCESS,
                    50 + n,
                    "ssh:notty",
                    "",
                    "root",
                    "198.51.100.8",
                    0,
                    1_795_000_100 + n,
                    0,
                    "198.51.100.8",
                ),
                layout,
            )
            for n in range(5)
        )
    )
    res = run(tmp_path, str(btmp), "--json")
    got = records(res.stdout)
    assert sum(r["type"] == "event" for r in got) == 5
    assert [r["payload"]["name"] for r in got if r["type"] == "alert"] == ["BruteForce"]


def test_since_keeps_later_entries_only(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("\n".join([*ATTACK, *SPREAD]) + "\n")
    res = run(tmp_path, str(log), "--since", "2026-11-27T09:30:00Z")
    assert res.returncode == 0, res.stderr
    assert "events: login-failed 5" in res.stdout.splitlines()  # 10:00 to 14:00
    assert "skipped: before-since 5" in res.stdout.splitlines()  # the 08:00 attack


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "auth.json:1: not a JSON journal record"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "auth.json"
    path.write_text(content)
    res = run(tmp_path, str(path), "--format", "journal-json")
    assert res.returncode == 2
    assert res.stderr.strip() == f"defender-agent: {path.parent}/{message}"
    missing = run(tmp_path, str(tmp_path / "nope.log"))
    assert missing.returncode == 2 and "nope.log: cannot read" in missing.stderr
