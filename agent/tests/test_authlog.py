"""Auth-log parser on real OpenSSH, Dropbear and login(1) lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defender_agent.collectors.common import authlog, timestamps
from defender_agent.collectors.common.authlog import AuthFact

BSD = "Nov 27 08:00:00 gw "
ISO = "2026-11-27T08:00:00.123456+00:00 gw "
NOW = (timestamps.local(2026, 11, 27, 8, 0, 30) or 0.0) + 0.0  # the clock when lines are read


def parse_line(line: str) -> authlog.ParseResult:
    return authlog.parse_line(line, NOW)


def fact(line: str) -> AuthFact:
    """The fact of LINE without its time (times have their own tests below)."""
    result = parse_line(line)
    assert isinstance(result, AuthFact), result
    assert result.time is not None, "every test line carries a readable stamp"
    return result._replace(time=None)


@pytest.mark.parametrize("prefix", [BSD, ISO, "Nov  7 08:00:00 gw ", "2026-11-27T08:00:00Z gw "])
def test_openssh_failed_password_both_timestamp_forms(prefix: str) -> None:
    f = fact(prefix + "sshd[1234]: Failed password for root from 10.0.2.2 port 52712 ssh2")
    assert f == AuthFact(
        kind="failed",
        service="sshd",
        user="root",
        source="10.0.2.2",
        port=52712,
        pid=1234,
        method="password",
    )


def test_openssh_failure_forms() -> None:
    f = fact(BSD + "sshd[99]: Failed password for invalid user admin from 10.0.2.2 port 4 ssh2")
    assert (f.kind, f.user, f.invalid_user, f.source, f.port) == (
        "failed",
        "admin",
        True,
        "10.0.2.2",
        4,
    )
    f = fact(
        ISO + "sshd[99]: Failed publickey for git from 2001:db8::7 port 40022 ssh2: "
        "ED25519 SHA256:Vy0xbq5ZVMoO7qQf2sC7rUXv4r7Zq4lK3p8a9ULLVGc"
    )
    assert (f.kind, f.user, f.source, f.method) == ("failed", "git", "2001:db8::7", "publickey")
    f = fact(
        BSD + "sshd[99]: Failed keyboard-interactive/pam for invalid user pi from 198.51.100.4 "
        "port 1022 ssh2"
    )
    assert (f.kind, f.method, f.user) == ("failed", "keyboard-interactive/pam", "pi")
    # OpenSSH 9.8+ runs the per-connection process as sshd-session
    f = fact(ISO + "sshd-session[77]: Failed password for root from 10.0.2.2 port 5 ssh2")
    assert (f.service, f.pid) == ("sshd", 77)
    # "none" is the client's probe, not an attempt
    assert parse_line(
        BSD + "sshd[9]: Failed none for invalid user x from 10.0.2.2 port 5 ssh2"
    ) == (authlog.SKIP_IGNORED)
    # PAM repeats the failure; the "Failed password" line is the one that counts
    line = (
        BSD + "sshd[9]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
        "tty=ssh ruser= rhost=10.0.2.2  user=root"
    )
    assert parse_line(line) == authlog.SKIP_IGNORED


def test_openssh_success_logout_and_facts() -> None:
    f = fact(BSD + "sshd[5]: Accepted password for root from 10.0.2.2 port 52712 ssh2")
    assert (f.kind, f.user, f.source, f.port) == ("accepted", "root", "10.0.2.2", 52712)
    f = fact(
        ISO + "sshd[5]: Accepted publickey for admin from 10.0.2.2 port 3 ssh2: "
        "RSA SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    )
    assert (f.kind, f.method) == ("accepted", "publickey")
    f = fact(BSD + "sshd[5]: Invalid user oracle from 203.0.113.9 port 40000")
    assert (f.kind, f.user, f.source) == ("invalid-user", "oracle", "203.0.113.9")
    f = fact(
        BSD + "sshd[5]: Connection closed by authenticating user root 10.0.2.2 port 9 [preauth]"
    )
    assert (f.kind, f.user, f.port) == ("preauth-close", "root", 9)
    f = fact(
        BSD + "sshd[5]: error: maximum authentication attempts exceeded for invalid user admin "
        "from 10.0.2.2 port 52712 ssh2 [preauth]"
    )
    assert (f.kind, f.user, f.invalid_user) == ("max-attempts", "admin", True)
    f = fact(BSD + "sshd[5]: Disconnected from user root 10.0.2.2 port 52712")
    assert (f.kind, f.user, f.source) == ("logout", "root", "10.0.2.2")
    f = fact(BSD + "sshd[5]: pam_unix(sshd:session): session closed for user root")
    assert (f.kind, f.user, f.source) == ("logout", "root", None)


def test_rsyslog_repeat_and_busybox_facility() -> None:
    f = fact(
        BSD + "sshd[8]: message repeated 3 times: [ Failed password for root from 10.0.2.2 "
        "port 22 ssh2]"
    )
    assert (f.kind, f.repeat, f.source) == ("failed", 3, "10.0.2.2")
    f = fact(
        "Nov 27 08:00:00 gw authpriv.info dropbear[7]: "
        "Bad password attempt for 'root' from 10.0.2.2:5"
    )
    assert (f.kind, f.service, f.source, f.port) == ("failed", "dropbear", "10.0.2.2", 5)


def test_dropbear_lines() -> None:
    f = fact(BSD + "dropbear[311]: Bad password attempt for 'admin' from 10.0.2.2:53514")
    assert f == AuthFact(
        kind="failed", service="dropbear", user="admin", source="10.0.2.2", port=53514, pid=311
    )
    f = fact(ISO + "dropbear[311]: Bad PAM password attempt for 'root' from 2001:db8::2:40000")
    assert (f.kind, f.user, f.source, f.port) == ("failed", "root", "2001:db8::2", 40000)
    f = fact(BSD + "dropbear[311]: Login attempt for nonexistent user from 10.0.2.2:53514")
    assert (f.kind, f.user, f.source) == ("failed", None, "10.0.2.2")
    f = fact(BSD + "dropbear[312]: Login attempt for nonexistent user")
    assert (f.kind, f.pid, f.source) == ("nonexistent-user", 312, None)
    f = fact(
        BSD + "dropbear[312]: Exit before auth from <10.0.2.2:53600>: (user 'root', 3 fails): "
        "Max auth tries reached - user 'root' from 10.0.2.2:53600"
    )
    assert (f.kind, f.user, f.fails, f.source, f.port) == (
        "exit-before-auth",
        "root",
        3,
        "10.0.2.2",
        53600,
    )
    f = fact(BSD + "dropbear[312]: Exit before auth from <10.0.2.2:53600>: Exited normally")
    assert (f.kind, f.user, f.source) == ("exit-before-auth", None, "10.0.2.2")
    f = fact(BSD + "dropbear[400]: Password auth succeeded for 'root' from 10.0.2.2:53514")
    assert (f.kind, f.user, f.method) == ("accepted", "root", "password")
    f = fact(
        BSD + "dropbear[400]: Pubkey auth succeeded for 'root' with ssh-ed25519 key "
        "SHA256:3p8a9ULLVGcVy0xbq5ZVMoO7 from 10.0.2.2:53514"
    )
    assert (f.kind, f.method, f.source, f.port) == ("accepted", "pubkey", "10.0.2.2", 53514)
    f = fact(BSD + "dropbear[400]: Child connection from 10.0.2.2:53514")
    assert (f.kind, f.source, f.pid) == ("child-connection", "10.0.2.2", 400)
    f = fact(BSD + "dropbear[400]: Exit (root) from <10.0.2.2:53514>: Disconnect received")
    assert (f.kind, f.user, f.source) == ("logout", "root", "10.0.2.2")


def test_local_login_failures() -> None:
    f = fact(BSD + "login[812]: FAILED LOGIN (1) on '/dev/tty1' FOR 'root', Authentication failure")
    assert (f.kind, f.service, f.user, f.tty, f.source) == (
        "local-failed",
        "login",
        "root",
        "/dev/tty1",
        None,
    )
    f = fact(BSD + "login[812]: FAILED LOGIN 2 FROM 192.0.2.5 FOR admin, Authentication failure")
    assert (f.kind, f.user, f.source) == ("local-failed", "admin", "192.0.2.5")
    f = fact(BSD + "login[812]: invalid password for 'root' on 'ttyS0'")
    assert (f.kind, f.user, f.tty) == ("local-failed", "root", "ttyS0")


def test_skips_are_reasons() -> None:
    assert parse_line("garbage") == authlog.SKIP_NO_PREFIX
    assert (
        parse_line(BSD + "CRON[1]: pam_unix(cron:session): session opened")
        == authlog.SKIP_OTHER_PROGRAM
    )
    assert parse_line(BSD + "sshd[1]: Server listening on 0.0.0.0 port 22.") == authlog.SKIP_UNKNOWN


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_string_never_raises(text: str) -> None:
    result = parse_line(text)
    assert isinstance(result, (str, AuthFact))


@settings(max_examples=300, deadline=None)
@given(
    prog=st.sampled_from(["sshd", "dropbear", "login", "sshd-session"]),
    msg=st.text(max_size=200),
)
def test_any_message_of_known_programs_never_raises(prog: str, msg: str) -> None:
    result = parse_line(f"{BSD}{prog}[42]: {msg}")
    assert isinstance(result, (str, AuthFact))
