"""Following the systemd journal: real journal files, the real journalctl.

Journal files are written by systemd-journal-remote from the journal export format (the
way journald's own tests make them); the agent reads them through journalctl --follow
--directory, as it reads the system journal on a device. The agent runs on virtual time;
only journalctl, a real process, is waited for (a bounded real wait, never a window).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent.collectors import login as login_mod
from defender_agent.collectors.common import journal
from defender_agent.linux import utmp

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_795_766_400.0  # 2026-11-27 08:00:00 UTC: entries' own time

pytestmark = [
    pytest.mark.skipif(
        not os.access(JOURNAL_REMOTE, os.X_OK),
        reason=f"{JOURNAL_REMOTE} is not installed (Debian: systemd-journal-remote; "
        "make test installs it)",
    ),
    pytest.mark.skipif(journal.find_program("journalctl") is None, reason="no journalctl"),
]


class Journal:
    """A journal directory that entries are appended to, as journald would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        self.seq = 0
        # journalctl exits at once on a directory without journal files; journald's has
        # its first entries from boot
        self.append({"SYSLOG_IDENTIFIER": "kernel", "MESSAGE": "Linux version 6.1.0"})

    def append(self, *entries: dict[str, Any]) -> None:
        stream = b""
        for fields in entries:
            self.seq += 1
            when = int(fields.pop("time", T0 + self.seq) * 1e6)
            fields = {
                "__REALTIME_TIMESTAMP": str(when),
                "__MONOTONIC_TIMESTAMP": str(self.seq),
                "_BOOT_ID": BOOT_ID,
                **fields,
            }
            for name, value in fields.items():
                data = value if isinstance(value, bytes) else str(value).encode()
                if b"\n" in data or not _is_utf8(data):  # the export format's binary form
                    stream += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
                else:
                    stream += name.encode() + b"=" + data + b"\n"
            stream += b"\n"
        subprocess.run(
            [JOURNAL_REMOTE, f"--output={self.directory / 'system.journal'}", "-"],
            input=stream,
            check=True,
            capture_output=True,
        )


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sshd(message: str | bytes, pid: int = 500, **extra: Any) -> dict[str, Any]:
    return {"SYSLOG_IDENTIFIER": "sshd", "_PID": pid, "MESSAGE": message, **extra}


def failed(n: int, user: str = "admin") -> dict[str, Any]:
    return sshd(f"Failed password for {user} from 192.0.2.7 port {40000 + n} ssh2", pid=600 + n)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def events(tmp_path: Path, kind: str = "login-failed") -> list[dict[str, Any]]:
    return [r["payload"] for r in records(tmp_path) if r["payload"].get("event") == kind]


def alerts(tmp_path: Path) -> list[dict[str, Any]]:
    return [r["payload"] for r in records(tmp_path) if r["type"] == "alert"]


def wait_real(agent: Any, until: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Run the agent's loop until `until()` holds, for at most `seconds` of real time
    (journalctl is a real process: its output arrives in real time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        agent.run_once(0)
        if until():
            return True
        time.sleep(0.02)
    return False


def collector(agent: Any) -> login_mod.LoginCollector:
    return next(c for c in agent.collectors if c.name == "login")


@pytest.fixture
def jdir(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal")


@pytest.fixture
def journal_cfg(cfg_factory: Callable[..., Any], jdir: Journal) -> Any:
    return cfg_factory(
        collectors__login={"journal": "on", "journal_directory": str(jdir.directory)}
    )


def ready(agent: Any, jdir: Journal) -> None:
    """Wait until journalctl follows the journal's end: a line the parser does not know
    is appended until the collector has seen one."""
    login = collector(agent)
    for _ in range(100):
        jdir.append(sshd("Server listening on 0.0.0.0 port 22."))
        if wait_real(agent, lambda: login.counts.get("unknown-message", 0) > 0, 0.3):
            return
    raise AssertionError("journalctl never delivered an entry")


def test_first_start_follows_from_the_end_and_alerts_on_entry_time(
    tmp_path: Path, jdir: Journal, journal_cfg: Any, start_agent: Any
) -> None:
    jdir.append(*(failed(n, "old") for n in range(5)))  # history: not an attack now
    agent = start_agent(journal_cfg)
    assert collector(agent).source == "journal"
    ready(agent, jdir)
    jdir.append(*(failed(n) for n in range(5)))
    assert wait_real(agent, lambda: len(alerts(tmp_path)) == 1)
    got = events(tmp_path)
    assert [e["user"] for e in got] == ["admin"] * 5
    assert alerts(tmp_path)[0]["name"] == "BruteForce"
    # each event carries the journal entry's own time, not the reading time
    entry_times = [r["time"] for r in records(tmp_path) if r["payload"].get("user") == "admin"]
    assert len(set(entry_times)) == 5


def test_a_restart_resumes_after_the_saved_cursor(
    tmp_path: Path, jdir: Journal, journal_cfg: Any, start_agent: Any
) -> None:
    agent = start_agent(journal_cfg)
    ready(agent, jdir)
    jdir.append(failed(1), failed(2), failed(3))
    assert wait_real(agent, lambda: len(events(tmp_path)) == 3)
    agent.stop()
    agent.shutdown()
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    assert journal.valid_cursor(saved["collectors.login"]["journal"]["cursor"])

    jdir.append(*(failed(n) for n in range(4, 9)))  # written while the agent was down
    agent = start_agent(journal_cfg)
    assert wait_real(agent, lambda: len(events(tmp_path)) >= 8)
    wait_real(agent, lambda: False, 0.5)  # and nothing more comes
    assert [e["port"] - 40000 for e in events(tmp_path)] == list(range(1, 9))
    assert [a["name"] for a in alerts(tmp_path)] == ["BruteForce"]


def test_a_journalctl_that_dies_is_restarted_from_the_cursor(
    tmp_path: Path, jdir: Journal, journal_cfg: Any, start_agent: Any
) -> None:
    agent = start_agent(journal_cfg)
    ready(agent, jdir)
    jdir.append(failed(1))
    assert wait_real(agent, lambda: len(events(tmp_path)) == 1)
    follower = collector(agent).journal
    assert follower is not None and follower.pid is not None
    os.kill(follower.pid, signal.SIGKILL)
    assert wait_real(agent, lambda: not follower.running)
    jdir.append(failed(2), failed(3))
    agent.advance(journal.RESTART_MIN)  # the restart delay, on virtual time
    assert wait_real(agent, lambda: len(events(tmp_path)) == 3)
    assert [e["port"] for e in events(tmp_path)] == [40001, 40002, 40003]
    stats = collector(agent).statistics()
    # after the kill: one journalctl reads the backlog after the cursor, then one follows
    assert stats["journalctl-started"] == 3 and stats["journalctl-exited"] == 1


def test_non_utf8_and_hostile_messages(
    tmp_path: Path, jdir: Journal, journal_cfg: Any, start_agent: Any
) -> None:
    agent = start_agent(journal_cfg)
    ready(agent, jdir)
    jdir.append(
        sshd(b"Failed password for r\xffot from 192.0.2.8 port 1 ssh2", pid=700),
        sshd("Failed password for " + "x" * 5000 + " from 192.0.2.8 port 2 ssh2", pid=701),
        {"SYSLOG_IDENTIFIER": "cron", "_PID": 9, "MESSAGE": "not ours"},  # filtered out
        # a local user's `logger -t sshd`: journald records the sender's uid
        sshd("Failed password for root from 192.0.2.9 port 3 ssh2", pid=702, _UID=1000),
        sshd("Accepted password for root from 192.0.2.10 port 4 ssh2", pid=703, _UID=0),
    )
    assert wait_real(agent, lambda: len(events(tmp_path, "login")) == 1)
    assert collector(agent).statistics()["journal-untrusted-sender"] == 1
    users = [e["user"] for e in events(tmp_path)]
    assert users[0] == "r\ufffdot"
    assert len(users[1]) == 65 and users[1].endswith("\u2026")


def test_a_missing_journalctl_is_reported_and_nothing_breaks(
    tmp_path: Path, cfg_factory: Callable[..., Any], jdir: Journal, start_agent: Any, capfd: Any
) -> None:
    cfg = cfg_factory(
        collectors__login={
            "journal": "on",
            "journal_directory": str(jdir.directory),
            "journalctl": str(tmp_path / "no-such-journalctl"),
        }
    )
    agent = start_agent(cfg)
    agent.advance(journal.RESTART_MAX + 1)
    stats = collector(agent).statistics()
    assert stats["journalctl-unavailable"] == 2
    complaint = "no-such-journalctl: No such file or directory; retrying in 60 s"
    assert complaint in capfd.readouterr().err


def test_auto_chooses_the_journal_only_without_auth_logs(
    tmp_path: Path, cfg_factory: Callable[..., Any], jdir: Journal
) -> None:
    cfg = cfg_factory(collectors__login={"journal_directory": str(jdir.directory)})
    section = cfg.section("collectors.login")
    assert login_mod.auth_source(section)[0] == "journal"
    assert "through journalctl --follow" in "\n".join(login_mod.describe(section))
    (tmp_path / "auth.log").write_text("")
    assert login_mod.auth_source(section) == ("files", f"{tmp_path / 'auth.log'} exists")
    off = cfg_factory(collectors__login={"journal": "off"}).section("collectors.login")
    (tmp_path / "auth.log").unlink()
    assert login_mod.auth_source(off)[0] == "files"


def btmp_record(user: str, pid: int, when: float) -> bytes:
    rec = utmp.UtmpRecord(
        type=utmp.LOGIN_PROCESS,
        pid=pid,
        line="ssh:notty",
        id="",
        user=user,
        host="192.0.2.50",
        session=0,
        tv_sec=int(when),
        tv_usec=0,
        addr="192.0.2.50",
    )
    return utmp.encode(rec, utmp.layout_for_machine())


def test_btmp_records_written_while_down_pair_with_their_journal_twins(
    tmp_path: Path, jdir: Journal, journal_cfg: Any, start_agent: Any
) -> None:
    """OpenSSH writes each failure twice, to the journal and to btmp. After a restart
    both backlogs are read; however late journalctl delivers its part, each attempt is
    one event: btmp records wait while the journal backlog is read."""
    (tmp_path / "btmp").write_bytes(b"")  # followed from its start: its position is saved
    agent = start_agent(journal_cfg)
    ready(agent, jdir)
    agent.stop()
    agent.shutdown()
    entries, records = [], b""
    for n in range(3):
        when = T0 + 100 + n
        message = f"Failed password for root from 192.0.2.50 port {50000 + n} ssh2"
        entries.append(sshd(message, pid=800 + n, time=when))
        records += btmp_record("root", 800 + n, when)
    jdir.append(*entries)
    with open(tmp_path / "btmp", "ab") as fh:
        fh.write(records)

    agent = start_agent(journal_cfg)
    agent.advance(10)  # past dedup_hold, whether or not the journal has caught up yet
    assert wait_real(agent, lambda: len(events(tmp_path)) >= 3)
    agent.advance(journal.RESTART_MIN + 60)
    wait_real(agent, lambda: False, 0.5)
    assert [e["port"] for e in events(tmp_path)] == [50000, 50001, 50002]
    assert collector(agent).statistics()["merged-failed"] == 3
