"""Login collector through the real agent on virtual time: dedup of auth log + btmp,
Dropbear holds, event times from the sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent.collectors import login as login_mod
from defender_agent.collectors.common import timestamps
from defender_agent.linux import utmp
from defender_agent.model import rfc3339

T0 = timestamps.local(2026, 11, 27, 8, 0, 0) or 0.0  # "Nov 27 08:00:00", as conftest's clock
SSHD_FAIL = (
    "Nov 27 08:00:00 gw sshd[{pid}]: Failed password for {user} from 10.0.2.2 port {port} ssh2\n"
)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def logins(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        r["payload"] for r in records(tmp_path) if r["payload"].get("event", "").startswith("log")
    ]


def alerts(tmp_path: Path) -> list[dict[str, Any]]:
    return [r["payload"] for r in records(tmp_path) if r["type"] == "alert"]


def btmp_record(user: str, pid: int, addr: str | None = "10.0.2.2", when: float = T0 + 1) -> bytes:
    rec = utmp.UtmpRecord(
        type=utmp.LOGIN_PROCESS,
        pid=pid,
        line="ssh:notty",
        id="",
        user=user,
        host=addr or "",
        session=0,
        tv_sec=int(when),
        tv_usec=round(when % 1 * 1e6),
        addr=addr,
    )
    return utmp.encode(rec, utmp.layout_for_machine())


def append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def agent(tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Any) -> Any:
    for name in ("auth.log", "btmp", "wtmp"):
        (tmp_path / name).write_bytes(b"")
    return start_agent(cfg_factory(collectors__login={"dedup_hold": 0.3}))


def test_authlog_then_btmp_is_one_event(tmp_path: Path, agent: Any) -> None:
    append(tmp_path / "auth.log", SSHD_FAIL.format(pid=10, user="root", port=1))
    append(tmp_path / "btmp", btmp_record("root", 10))
    agent.advance(0.6)  # past the hold
    got = logins(tmp_path)
    assert [(e["event"], e["origin"], e["port"]) for e in got] == [("login-failed", "authlog", 1)]
    assert agent.collectors[0].statistics()["merged-failed"] == 1


def test_btmp_then_authlog_is_one_event(
    tmp_path: Path, agent: Any, advance_until: Callable[..., bool]
) -> None:
    append(tmp_path / "btmp", btmp_record("root", 11))
    agent.advance(0.01)
    assert logins(tmp_path) == []  # waits for its auth-log twin
    append(tmp_path / "auth.log", SSHD_FAIL.format(pid=11, user="root", port=2))
    assert advance_until(agent, lambda: len(logins(tmp_path)) == 1, 1.0)
    agent.advance(0.5)
    assert [e["origin"] for e in logins(tmp_path)] == ["authlog"]


def test_btmp_only_failure_is_emitted_after_the_hold(
    tmp_path: Path, agent: Any, clock: Any, advance_until: Callable[..., bool]
) -> None:
    start = clock.monotonic()
    append(tmp_path / "btmp", btmp_record("admin", 12))
    assert advance_until(agent, lambda: len(logins(tmp_path)) == 1, 2.0)
    assert clock.monotonic() - start >= 0.3
    (event,) = logins(tmp_path)
    assert (event["origin"], event["user"], event["source"], event["service"]) == (
        "btmp",
        "admin",
        "10.0.2.2",
        "sshd",
    )


def test_invalid_user_attempts_count_once_despite_two_btmp_records(
    tmp_path: Path, agent: Any
) -> None:
    """OpenSSH 9.2, as seen in the QEMU guest: per attempt on an unknown user it writes a
    btmp record with "Invalid user", then (after PAM's 2 s delay, longer than the hold)
    a second record with "Failed password". Five attempts must be five events."""
    invalid = "Nov 27 08:00:00 gw sshd[{pid}]: Invalid user admin from 10.0.2.2 port {port}\n"
    failed = (
        "Nov 27 08:00:02 gw sshd[{pid}]: "
        "Failed password for invalid user admin from 10.0.2.2 port {port} ssh2\n"
    )
    for n in range(5):
        pid, port = 100 + n, 40000 + n
        append(tmp_path / "btmp", btmp_record("admin", pid))
        agent.advance(0.01)
        append(tmp_path / "auth.log", invalid.format(pid=pid, port=port))
        agent.advance(0.4)  # longer than the 0.3 s hold
        append(tmp_path / "btmp", btmp_record("admin", pid))
        append(tmp_path / "auth.log", failed.format(pid=pid, port=port))
        agent.advance(0.05)
    agent.advance(0.4)
    assert [(e["origin"], e["port"]) for e in logins(tmp_path)] == [
        ("authlog", 40000 + n) for n in range(5)
    ]
    (alert,) = alerts(tmp_path)
    assert (alert["name"], alert["count"], alert["users"]) == ("BruteForce", 5, ["admin"])


def test_each_attempt_counts_once_for_the_detector(
    tmp_path: Path, agent: Any, advance_until: Callable[..., bool]
) -> None:
    for i in range(4):  # 4 attempts reported twice each: must stay below max_failures=5
        append(tmp_path / "btmp", btmp_record("root", 20 + i))
        append(tmp_path / "auth.log", SSHD_FAIL.format(pid=20 + i, user="root", port=i))
    agent.advance(0.6)
    assert len(logins(tmp_path)) == 4
    assert alerts(tmp_path) == []
    append(tmp_path / "auth.log", SSHD_FAIL.format(pid=30, user="root", port=9))
    append(tmp_path / "btmp", btmp_record("root", 30))
    assert advance_until(agent, lambda: len(alerts(tmp_path)) == 1, 1.0)
    agent.advance(0.5)
    assert [a["count"] for a in alerts(tmp_path)] == [5]


def test_dropbear_addressless_nonexistent_user_is_correlated(
    tmp_path: Path, agent: Any, monkeypatch: pytest.MonkeyPatch, advance_until: Callable[..., bool]
) -> None:
    monkeypatch.setattr(login_mod, "DROPBEAR_HOLD", 0.3)
    log = tmp_path / "auth.log"
    # 1: the address comes from the later "Exit before auth" of the same pid
    append(log, "Nov 27 08:00:00 gw dropbear[501]: Login attempt for nonexistent user\n")
    agent.advance(0.01)
    assert logins(tmp_path) == []
    append(
        log,
        "Nov 27 08:00:01 gw dropbear[501]: Exit before auth from <10.0.2.2:40001>: "
        "Max auth tries reached - user 'is invalid' from 10.0.2.2:40001\n",
    )
    assert advance_until(agent, lambda: len(logins(tmp_path)) == 1, 1.0)
    # 2: the address is already known from "Child connection from" of that pid
    append(
        log,
        "Nov 27 08:00:02 gw dropbear[502]: Child connection from 198.51.100.7:40002\n"
        "Nov 27 08:00:02 gw dropbear[502]: Login attempt for nonexistent user\n",
    )
    assert advance_until(agent, lambda: len(logins(tmp_path)) == 2, 1.0)
    # 3: never resolved: flushed with source null after the hold
    append(log, "Nov 27 08:00:03 gw dropbear[503]: Login attempt for nonexistent user\n")
    assert advance_until(agent, lambda: len(logins(tmp_path)) == 3, 2.0)
    got = [(e["source"], e["port"], e["service"]) for e in logins(tmp_path)]
    assert got == [
        ("10.0.2.2", 40001, "dropbear"),
        ("198.51.100.7", 40002, "dropbear"),
        (None, None, "dropbear"),
    ]


def test_wtmp_login_and_logout(tmp_path: Path, agent: Any) -> None:
    layout = utmp.layout_for_machine()
    login_rec = utmp.UtmpRecord(
        utmp.USER_PROCESS,
        600,
        "pts/3",
        "ts/3",
        "alice",
        "10.0.2.2",
        0,
        int(T0),
        0,
        "10.0.2.2",
    )
    append(
        tmp_path / "auth.log",
        "Nov 27 08:00:00 gw sshd[599]: Accepted password for alice from 10.0.2.2 port 7 ssh2\n",
    )
    append(tmp_path / "wtmp", utmp.encode(login_rec, layout))
    append(
        tmp_path / "wtmp",
        utmp.encode(
            login_rec._replace(type=utmp.DEAD_PROCESS, user="", host="", addr=None), layout
        ),
    )
    agent.advance(0.6)
    got = [(e["event"], e["origin"], e["user"]) for e in logins(tmp_path)]
    assert got == [("login", "authlog", "alice"), ("logout", "wtmp", "alice")]


def test_restart_resumes_without_loss_or_duplicates(
    tmp_path: Path,
    cfg_factory: Callable[..., Any],
    start_agent: Any,
    advance_until: Callable[..., bool],
) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    cfg = cfg_factory()
    rt = start_agent(cfg)
    append(log, SSHD_FAIL.format(pid=1, user="a", port=1))
    assert advance_until(rt, lambda: len(logins(tmp_path)) == 1, 1.0)
    rt.shutdown()
    append(log, SSHD_FAIL.format(pid=2, user="b", port=2))  # written while the agent is down
    rt2 = start_agent(cfg)
    append(log, SSHD_FAIL.format(pid=3, user="c", port=3))
    assert advance_until(rt2, lambda: len(logins(tmp_path)) == 3, 1.0)
    rt2.advance(0.2)
    rt2.shutdown()
    assert [e["user"] for e in logins(tmp_path)] == ["a", "b", "c"]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["collectors.login"]["files"][str(log)]["offset"] == log.stat().st_size


def test_btmp_only_system_counts_an_unknown_user_attempt_once(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Any
) -> None:
    """Debian 12 without a syslog daemon has no auth log: btmp is all there is. sshd then
    writes two records per attempt on an unknown user (at "Invalid user", and at the
    failed password) but one per attempt on a real user."""
    for name in ("btmp", "wtmp"):
        (tmp_path / name).write_bytes(b"")
    cfg = cfg_factory(collectors__login={"auth_logs": [str(tmp_path / "no-syslog.log")]})
    rt = start_agent(cfg)
    try:
        rt.advance(0.01)
        for n in range(4):  # 4 attempts on a name no system has: 8 records
            append(tmp_path / "btmp", btmp_record("no-such-user-zq", 200 + n))
            append(tmp_path / "btmp", btmp_record("no-such-user-zq", 200 + n))
        append(tmp_path / "btmp", btmp_record("root", 300))  # a real user: every record counts
        append(tmp_path / "btmp", btmp_record("root", 300))
        rt.advance(0.3)
        got = [(e["user"], e["origin"]) for e in logins(tmp_path)]
        assert got == [("no-such-user-zq", "btmp")] * 4 + [("root", "btmp")] * 2
        (alert,) = alerts(tmp_path)  # crossed at the 5th attempt (root's), not the 3rd
        assert (alert["count"], alert["users"]) == (5, ["no-such-user-zq", "root"])
        assert rt.collectors[0].statistics()["invalid-user-record"] == 4
    finally:
        rt.shutdown()


def _stamped(hour: int, minute: int, second: int, n: int) -> str:
    return (
        f"Nov 27 {hour:02d}:{minute:02d}:{second:02d} gw sshd[{700 + n}]: "
        f"Failed password for root from 198.51.100.23 port {41000 + n} ssh2\n"
    )


def test_backlog_spread_over_hours_raises_no_alert(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Any, clock: Any
) -> None:
    """Five failures stamped 10:00 to 14:00 written in one go (the agent was down, or the
    log was copied in late): five events, each dated in its own hour, and no alert."""
    log = tmp_path / "auth.log"
    log.write_text("")
    clock.step(T0 + 7 * 3600)  # 15:00
    agent = start_agent(cfg_factory())
    append(log, "".join(_stamped(10 + n, 0, 0, n) for n in range(5)))
    agent.advance(1.0)
    got = [r for r in records(tmp_path) if r["payload"].get("event") == "login-failed"]
    assert [r["time"] for r in got] == [rfc3339(T0 + (2 + n) * 3600) for n in range(5)]
    assert all(r["observed"] > r["time"] for r in got)
    assert alerts(tmp_path) == []


def test_burst_read_live_raises_one_alert(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Any, clock: Any
) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    agent = start_agent(cfg_factory())
    for n in range(5):
        append(log, _stamped(8, 0, 10 * n, n))
        agent.advance(10.0)
    (alert,) = [r for r in records(tmp_path) if r["type"] == "alert"]
    assert (alert["payload"]["count"], alert["time"]) == (5, rfc3339(T0 + 40))


def test_burst_written_while_the_agent_was_down_raises_one_alert_in_its_time(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Any, clock: Any
) -> None:
    """Stop the agent, attack (five failures 10 s apart), start it ten minutes later:
    exactly one alert, dated at the fifth failure, observed at the restart."""
    log = tmp_path / "auth.log"
    log.write_text("")
    cfg = cfg_factory()
    first = start_agent(cfg)
    first.shutdown()
    append(log, "".join(_stamped(8, 0, 10 * n, n) for n in range(5)))
    clock.advance(600.0)
    second = start_agent(cfg)
    second.advance(1.0)
    second.shutdown()
    (alert,) = [r for r in records(tmp_path) if r["type"] == "alert"]
    assert alert["time"] == rfc3339(T0 + 40)
    assert alert["observed"] == rfc3339(T0 + 605)  # the clock started at 08:00:05
    assert alert["payload"]["first_seen"] == rfc3339(T0)


def test_init_reaping_a_getty_is_not_a_logout(tmp_path: Path, agent: Any) -> None:
    """sysvinit writes DEAD_PROCESS records without a user for gettys and boot entries
    (host: the kernel release): there was no session, so there is no logout event."""
    layout = utmp.layout_for_machine()
    reaped = utmp.UtmpRecord(
        utmp.DEAD_PROCESS, 721, "", "", "", "6.1.0-57-amd64", 0, int(T0), 0, None
    )
    append(tmp_path / "wtmp", utmp.encode(reaped, layout))
    agent.advance(0.6)
    assert logins(tmp_path) == []
    assert agent.collectors[0].statistics()["dead-process-without-session"] == 1


def _sshd(pid: int, message: str, second: int = 0) -> str:
    return f"Nov 27 08:00:{second:02d} gw sshd[{pid}]: {message}\n"


def test_an_ssh_agent_offering_wrong_keys_first_is_no_failure(tmp_path: Path, agent: Any) -> None:
    """ssh-agent tries every key it holds; the right one comes fifth. One login, no
    failure, no BruteForce: rejected keys of a user who then logs in are not attacks."""
    lines = [
        _sshd(500, f"Failed publickey for alice from 192.0.2.10 port 50000 ssh2: RSA SHA256:k{n}")
        for n in range(5)
    ]
    lines.append(
        _sshd(
            500,
            "Accepted publickey for alice from 192.0.2.10 port 50000 ssh2: ED25519 SHA256:right",
        )
    )
    append(tmp_path / "auth.log", "".join(lines))
    agent.advance(200)
    assert [e["event"] for e in logins(tmp_path)] == ["login"]
    assert alerts(tmp_path) == []
    assert agent.collectors[0].statistics()["publickey-rejected-then-accepted"] == 1


def test_a_pubkey_only_server_still_sees_the_attacker(tmp_path: Path, agent: Any) -> None:
    """With PasswordAuthentication no, an attacker trying names leaves only "Invalid
    user" and a preauth disconnect per connection: each connection is one failure."""
    lines = []
    for n in range(6):
        lines.append(_sshd(600 + n, f"Invalid user u{n} from 203.0.113.5 port {5000 + n}", n))
        lines.append(
            _sshd(
                600 + n,
                f"Connection closed by invalid user u{n} 203.0.113.5 port {5000 + n} [preauth]",
                n,
            )
        )
    append(tmp_path / "auth.log", "".join(lines))
    agent.advance(1)
    got = [(e["event"], e["user"], e["source"]) for e in logins(tmp_path)]
    assert got == [("login-failed", f"u{n}", "203.0.113.5") for n in range(6)]
    brute, enumeration = alerts(tmp_path)
    assert brute["name"] == "BruteForce" and brute["count"] == 5
    assert brute["users"] == [f"u{n}" for n in range(5)]
    assert enumeration["name"] == "UserEnumeration" and enumeration["count"] == 5


def test_one_attempt_per_password_and_at_least_one_per_connection(
    tmp_path: Path, agent: Any
) -> None:
    append(
        tmp_path / "auth.log",
        "".join(
            [
                # an unknown user, two passwords, the disconnect: two failures
                _sshd(700, "Invalid user bob from 198.51.100.1 port 1"),
                _sshd(700, "Failed password for invalid user bob from 198.51.100.1 port 1 ssh2"),
                _sshd(700, "Failed password for invalid user bob from 198.51.100.1 port 1 ssh2"),
                _sshd(700, "Connection closed by invalid user bob 198.51.100.1 port 1 [preauth]"),
                # a real user whose keys were all refused, then gone: one failure
                _sshd(701, "Failed publickey for root from 198.51.100.2 port 2 ssh2: RSA SHA256:x"),
                _sshd(
                    701, "Disconnected from authenticating user root 198.51.100.2 port 2 [preauth]"
                ),
                # too many keys offered: one failure, the disconnect adds none
                _sshd(702, "Failed publickey for root from 198.51.100.3 port 3 ssh2: RSA SHA256:y"),
                _sshd(
                    702,
                    "Disconnecting authenticating user root 198.51.100.3 port 3: "
                    "Too many authentication failures [preauth]",
                ),
                _sshd(
                    702,
                    "Connection closed by authenticating user root 198.51.100.3 port 3 [preauth]",
                ),
            ]
        ),
    )
    agent.advance(1)
    got = [(e["user"], e["source"]) for e in logins(tmp_path)]
    assert got == [
        ("bob", "198.51.100.1"),
        ("bob", "198.51.100.1"),
        ("root", "198.51.100.2"),
        ("root", "198.51.100.3"),
    ]


def test_an_unknown_user_whose_connection_just_ends_counts_once(tmp_path: Path, agent: Any) -> None:
    """No disconnect line at all (the client vanished; LoginGraceTime ends it)."""
    append(tmp_path / "auth.log", _sshd(800, "Invalid user eve from 192.0.2.99 port 9"))
    agent.advance(60)
    assert logins(tmp_path) == []  # still within the login grace time
    agent.advance(80)
    assert [(e["user"], e["source"]) for e in logins(tmp_path)] == [("eve", "192.0.2.99")]
    assert agent.collectors[0].statistics()["counted-at-grace-timeout"] == 1


def test_a_user_sshd_refuses_counts_like_an_unknown_one(tmp_path: Path, agent: Any) -> None:
    append(
        tmp_path / "auth.log",
        "".join(
            [
                _sshd(
                    900,
                    "User root from 198.51.100.20 port 7 not allowed because not "
                    "listed in AllowUsers",
                ),
                _sshd(900, "Connection closed by invalid user root 198.51.100.20 port 7 [preauth]"),
                _sshd(901, "ROOT LOGIN REFUSED FROM 198.51.100.21 port 8"),
                _sshd(901, "Failed password for invalid user root from 198.51.100.21 port 8 ssh2"),
                _sshd(901, "Connection closed by invalid user root 198.51.100.21 port 8 [preauth]"),
            ]
        ),
    )
    agent.advance(1)
    assert [e["source"] for e in logins(tmp_path)] == ["198.51.100.20", "198.51.100.21"]


@pytest.mark.parametrize("mode", ["normal", "aggressive"])
def test_scanners_count_only_in_aggressive_mode(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Any, mode: str
) -> None:
    """Key-exchange probes and `no matching ...` end before any login attempt: fail2ban
    counts them only in its aggressive mode, and so does the agent (once per connection)."""
    (tmp_path / "auth.log").write_text("")
    agent = start_agent(cfg_factory(collectors__login={"mode": mode, "wtmp": "", "btmp": ""}))
    append(
        tmp_path / "auth.log",
        "".join(
            [
                _sshd(950, "error: kex_exchange_identification: Connection closed by remote host"),
                _sshd(950, "Connection closed by 192.0.2.50 port 1"),
                _sshd(
                    951,
                    "Unable to negotiate with 192.0.2.51 port 2: no matching host key "
                    "type found. Their offer: ssh-dss [preauth]",
                ),
                # a password attempt and its disconnect: one failure in either mode
                _sshd(952, "Failed password for root from 192.0.2.52 port 3 ssh2"),
                _sshd(952, "Connection closed by 192.0.2.52 port 3 [preauth]"),
            ]
        ),
    )
    agent.advance(1)
    got = [e["source"] for e in logins(tmp_path)]
    if mode == "normal":
        assert got == ["192.0.2.52"]
    else:
        assert got == ["192.0.2.50", "192.0.2.51", "192.0.2.52"]


def test_a_btmp_record_held_at_a_stop_pairs_with_its_line_after_the_restart(
    tmp_path: Path,
    cfg_factory: Callable[..., Any],
    start_agent: Any,
    advance_until: Callable[..., bool],
) -> None:
    """sshd writes the btmp record and the log line at once, but the line may reach the
    agent later (journald tells readers up to 250 ms late). A stop in between must not
    count the attempt twice: the held record is saved, and pairs after the restart."""
    for name in ("auth.log", "btmp", "wtmp"):
        (tmp_path / name).write_bytes(b"")
    cfg = cfg_factory(collectors__login={"dedup_hold": 2.0})
    first = start_agent(cfg)
    append(tmp_path / "btmp", btmp_record("root", 40))
    first.advance(0.1)
    assert logins(tmp_path) == []  # held for its twin
    first.stop()
    first.shutdown()
    assert logins(tmp_path) == []  # saved, not emitted
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    assert len(saved["collectors.login"]["pending"]) == 1

    append(tmp_path / "auth.log", SSHD_FAIL.format(pid=40, user="root", port=4))
    second = start_agent(cfg)
    assert advance_until(second, lambda: len(logins(tmp_path)) == 1, 1.0)
    second.advance(5)  # past any hold: nothing more comes
    assert [(e["origin"], e["port"]) for e in logins(tmp_path)] == [("authlog", 4)]


def test_a_saved_record_whose_twin_never_comes_is_emitted_after_the_hold(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Any
) -> None:
    for name in ("auth.log", "btmp", "wtmp"):
        (tmp_path / name).write_bytes(b"")
    cfg = cfg_factory(collectors__login={"dedup_hold": 2.0})
    first = start_agent(cfg)
    append(tmp_path / "btmp", btmp_record("admin", 41))
    first.advance(0.1)
    first.stop()
    first.shutdown()
    second = start_agent(cfg)
    second.advance(3)
    assert [(e["origin"], e["user"]) for e in logins(tmp_path)] == [("btmp", "admin")]
