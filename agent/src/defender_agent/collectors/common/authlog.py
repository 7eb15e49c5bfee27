"""Parse syslog auth lines from OpenSSH, Dropbear and login(1) into facts.

Patterns are data (`_SSHD`, `_DROPBEAR`, `_LOGIN`): one table per program, so new
message forms are one line each. The framing (time, host, program, pid) is syslog.py's.
The parser is stateless; correlation (Dropbear's address-less lines, dedup with btmp)
lives in the login collector.
"""

from __future__ import annotations

import re
from collections import namedtuple

from defender_agent.collectors.common import syslog

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import NamedTuple, Union

    # (kind, the words a matching message may start with, pattern): the first word picks
    # the few patterns worth trying (a dict lookup instead of a dozen failed matches)
    Table = tuple[tuple[str, str, re.Pattern[str]], ...]
    Index = dict[str, tuple[tuple[str, re.Pattern[str]], ...]]

_SSHD_PROGRAMS = frozenset({"sshd", "sshd-session", "sshd-auth"})
_DROPBEAR_PROGRAMS = frozenset({"dropbear"})
_LOGIN_PROGRAMS = frozenset({"login"})

_USER = r"(?P<user>.*?)"
_INVALID = r"(?P<invalid>(?:invalid|illegal) user )?"  # "illegal": OpenSSH before 3.9
_ADDR = r"(?P<source>[0-9A-Fa-f:.]{1,64}|\S{1,255}?)"

# OpenSSH: message (after "error: " / " [preauth]" are stripped) -> kind
_SSHD: Table = (
    (
        "failed",
        "Failed",
        re.compile(
            rf"Failed (?P<method>\S{{1,64}}) for {_INVALID}{_USER} from {_ADDR}"
            r"(?: port (?P<port>\d{1,5}))?(?: ssh\d?)?(?::.*)?$"
        ),
    ),
    (
        "accepted",
        "Accepted",
        re.compile(
            rf"Accepted (?P<method>\S{{1,64}}) for {_USER} from {_ADDR}"
            r"(?: port (?P<port>\d{1,5}))?(?: ssh\d?)?(?::.*)?$"
        ),
    ),
    (
        "invalid-user",  # "Illegal user": OpenSSH before 3.9
        "Invalid Illegal",
        re.compile(
            rf"(?:Invalid|Illegal) user {_USER} from {_ADDR}(?: port (?P<port>\d{{1,5}}))?$"
        ),
    ),
    # PAM's verdict, logged by sshd before its own "Failed keyboard-interactive/pam" line
    # for the same attempt (the collector counts the pair once); OpenSSH 3.x-4.x wrote it
    # without "PAM: ".
    (
        "pam-failed",
        "PAM: Authentication authentication User",
        re.compile(
            r"(?:PAM: )?(?:[Aa]uthentication (?:failure|error)|User not known to the underlying "
            rf"authentication module) for (?P<invalid>(?:illegal|invalid) user )?{_USER} from "
            rf"{_ADDR}(?: via \S{{1,255}})?$"
        ),
    ),
    # AllowUsers/DenyUsers/AllowGroups/DenyGroups, a missing shell: sshd treats the user
    # as invalid for the rest of the connection
    (
        "not-allowed",
        "User",
        re.compile(
            rf"User {_USER} from {_ADDR}(?: port (?P<port>\d{{1,5}}))? not allowed because "
            r"[a-z' ]{1,80}.{0,200}$"
        ),
    ),
    (
        "not-allowed",
        "ROOT",
        re.compile(rf"ROOT LOGIN REFUSED FROM {_ADDR}(?: port (?P<port>\d{{1,5}}))?$"),
    ),
    (
        "preauth-close",
        "Connection Disconnected",
        re.compile(
            r"(?:Connection (?:closed|reset) by|Disconnected from) (?:authenticating|invalid) "
            rf"user {_USER} {_ADDR} "
            r"port (?P<port>\d{1,5})$"
        ),
    ),
    (
        "max-attempts",
        "maximum",
        re.compile(
            rf"maximum authentication attempts exceeded for {_INVALID}{_USER} "
            rf"from {_ADDR} port (?P<port>\d{{1,5}})(?: ssh\d?)?$"
        ),
    ),
    (
        "max-attempts",
        "Disconnecting",
        re.compile(
            rf"Disconnecting (?:authenticating|invalid) user {_USER} {_ADDR} "
            r"port (?P<port>\d{1,5}): Too many authentication failures$"
        ),
    ),
    # OpenSSH 5.x-7.x: no user, no address; the collector takes both from the same
    # connection's earlier lines
    (
        "max-attempts",
        "Disconnecting:",
        re.compile(r"Disconnecting: Too many authentication failures(?: for .*)?$"),
    ),
    # OpenSSH 4.x-6.x: the client gave up after failures ("3: ... Auth fail")
    (
        "preauth-close",
        "Received",
        re.compile(
            rf"Received disconnect from {_ADDR}(?: port (?P<port>\d{{1,5}}))?: ?3: "
            r".{0,200}: Auth fail$"
        ),
    ),
    (
        "logout",
        "Disconnected",
        re.compile(rf"Disconnected from user {_USER} {_ADDR} port (?P<port>\d{{1,5}})$"),
    ),
    # Connections that end before any authentication attempt: scanners and kex probes.
    # Failures only in the login collector's aggressive mode (fail2ban's `aggressive`).
    (
        "scan",
        "Connection",
        re.compile(rf"Connection (?:closed|reset) by {_ADDR} port (?P<port>\d{{1,5}})$"),
    ),
    # tcp_wrappers (hosts.deny) refusing the connection before sshd speaks
    ("scan", "refused", re.compile(rf"refused connect from \S{{1,255}} \({_ADDR}\)$")),
    (
        "scan",
        "Unable",
        re.compile(rf"Unable to negotiate with {_ADDR} port (?P<port>\d{{1,5}}): no matching .*$"),
    ),
    (
        "scan",
        "Received",
        re.compile(
            rf"Received disconnect from {_ADDR} port (?P<port>\d{{1,5}}):14: "
            r"No supported authentication methods available$"
        ),
    ),
    (
        "scan",
        "Did",
        re.compile(
            rf"Did not receive identification string from {_ADDR}(?: port (?P<port>\d{{1,5}}))?$"
        ),
    ),
    (
        "logout",
        "pam_unix(sshd:session):",
        re.compile(r"pam_unix\(sshd:session\): session closed for user (?P<user>\S+)$"),
    ),
    ("ignored", "pam_unix(sshd:auth):", re.compile(r"pam_unix\(sshd:auth\)")),
)

# Dropbear writes "<ip>:<port>" and, in exit messages, "<<ip>:<port>>"; IPv6 too.
_DB_ADDR = r"(?P<source>[^\s<>]{1,255}):(?P<port>\d{1,5})"
# Dropbear 2012-2013 wrote its messages in lower case ("bad password attempt", "exit
# before auth (user 'U', N fails): Max auth tries reached - user 'U' from A:P"); later
# versions capitalise them and put the address first ("Exit before auth from <A:P>: ...").
_DROPBEAR: Table = (
    (
        "failed",
        "Bad bad",
        re.compile(rf"[Bb]ad (?:PAM )?password attempt for '{_USER}' from {_DB_ADDR}$"),
    ),
    (
        "failed",
        "Login login",
        re.compile(rf"[Ll]ogin attempt for nonexistent user(?: '{_USER}')? from {_DB_ADDR}$"),
    ),
    (
        "nonexistent-user",
        "Login login",
        re.compile(r"[Ll]ogin attempt for nonexistent user(?: '(?P<user>.*)')?$"),
    ),
    (
        "accepted",
        "Password password Pubkey pubkey",
        re.compile(
            rf"(?P<method>[Pp]assword|[Pp]ubkey) auth succeeded for '{_USER}'"
            rf"(?: with \S{{1,64}} key(?: \S{{1,160}}){{1,2}})? from {_DB_ADDR}$"
        ),
    ),
    (
        "accepted",
        "Auth",
        re.compile(rf"Auth succeeded with blank password for '{_USER}' from {_DB_ADDR}$"),
    ),
    ("child-connection", "Child child", re.compile(rf"[Cc]hild connection from {_DB_ADDR}$")),
    (
        "exit-before-auth",
        "Exit exit",
        re.compile(
            rf"[Ee]xit before auth from <{_DB_ADDR}>: ?"
            rf"(?:\(user '{_USER}', (?P<fails>\d{{1,6}}) fails\): )?(?P<reason>.*)$"
        ),
    ),
    (
        "exit-before-auth",
        "Exit exit",
        re.compile(
            rf"[Ee]xit before auth(?: \(user '{_USER}', (?P<fails>\d{{1,6}}) fails\))?: "
            rf"(?P<reason>Max auth tries reached - user '.*' from {_DB_ADDR}|.*)$"
        ),
    ),
    ("logout", "Exit", re.compile(rf"Exit \({_USER}\) from <{_DB_ADDR}>: .*$")),
    ("logout", "exit", re.compile(rf"exit after auth \({_USER}\): .*$")),
)

# shadow login: "FAILED LOGIN (1) on '/dev/tty1' FOR 'root', Authentication failure";
# util-linux: "FAILED LOGIN 1 FROM host FOR root, ..."; busybox: "invalid password for 'root'"
_LOGIN: Table = (
    (
        "local-failed",
        "FAILED",
        re.compile(
            r"FAILED LOGIN \(?\d+\)?(?: on '(?P<tty>[^']*)')?(?: from '(?P<source>[^']*)')? "
            r"FOR '(?P<user>.*)', .*$"
        ),
    ),
    (
        "local-failed",
        "FAILED",
        re.compile(
            r"FAILED LOGIN \d+ (?:ON (?P<tty>\S+)|FROM (?P<source>\S+)) FOR (?P<user>.*?), .*$"
        ),
    ),
    (
        "local-failed",
        "invalid",
        re.compile(
            r"invalid password for '(?P<user>[^']*)'(?: on '(?P<tty>[^']*)')?"
            r"(?: from '(?P<source>[^']*)')?$"
        ),
    ),
)


def _index(table: Table) -> Index:
    """First word -> (kind, pattern) pairs, in table order."""
    index: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    for kind, words, pattern in table:
        for word in words.split():
            index.setdefault(word, []).append((kind, pattern))
    return {word: tuple(pairs) for word, pairs in index.items()}


_INDEX_SSHD, _INDEX_DROPBEAR, _INDEX_LOGIN = _index(_SSHD), _index(_DROPBEAR), _index(_LOGIN)

_REPEAT = re.compile(r"message repeated (?P<n>\d{1,9}) times: \[ ?(?P<msg>.*)\]$")


if TYPE_CHECKING:

    class AuthFact(NamedTuple):
        """One parsed auth line. `kind` says what happened; missing fields are None."""

        kind: str
        service: str
        user: str | None = None
        source: str | None = None
        port: int | None = None
        pid: int | None = None
        tty: str | None = None
        method: str | None = None
        invalid_user: bool = False
        fails: int | None = None
        repeat: int = 1
        time: float | None = None  # from the line's own timestamp; None: unreadable

    ParseResult = Union[AuthFact, str]
else:
    AuthFact = namedtuple(
        "AuthFact",
        "kind service user source port pid tty method invalid_user fails repeat time",
        defaults=(None, None, None, None, None, None, False, None, 1, None),
    )


# reasons a line yields no fact
SKIP_NO_PREFIX = "no-syslog-prefix"
SKIP_OTHER_PROGRAM = "other-program"
SKIP_UNKNOWN = "unknown-message"
SKIP_IGNORED = "ignored-message"


def parse_line(line: str, now: float) -> ParseResult:
    """Return an AuthFact, or the reason (a string) the line is skipped. Never raises.

    `now` is the runtime clock's wall time: it places a year-less stamp in its year.
    """
    framed = syslog.parse(line.rstrip("\r\n"), now)
    if framed is None:
        return SKIP_NO_PREFIX
    return parse_entry(framed.program, framed.pid, framed.message, framed.time)


_SOLARIS_ID = re.compile(r"\[ID \d{1,10} [a-z0-9]{1,10}\.[a-z]{1,10}\] ")


def parse_entry(program: str, pid: int | None, message: str, when: float | None) -> ParseResult:
    """One log entry already split from its framing (a syslog line's, or a journal
    record's SYSLOG_IDENTIFIER, _PID, MESSAGE and realtime stamp)."""
    if message.startswith("[ID "):  # Solaris/illumos syslog: "[ID 800047 auth.info] ..."
        tag = _SOLARIS_ID.match(message)
        if tag is not None:
            message = message[tag.end() :]
    if program in _SSHD_PROGRAMS:
        table, service = _INDEX_SSHD, "sshd"
    elif program in _DROPBEAR_PROGRAMS:
        table, service = _INDEX_DROPBEAR, "dropbear"
    elif program in _LOGIN_PROGRAMS:
        table, service = _INDEX_LOGIN, "login"
    else:
        return SKIP_OTHER_PROGRAM
    repeat = 1
    rm = _REPEAT.match(message) if message.startswith("message repeated") else None
    if rm is not None:
        repeat, message = max(1, min(int(rm.group("n")), 1000)), rm.group("msg").rstrip()
    fact = parse_message(message, service, table, pid, repeat)
    if isinstance(fact, str) or when is None:
        return fact
    return fact._replace(time=when)


MAX_USER = 64  # user names are attacker-chosen: longer ones are cut (and marked)
MAX_HOST = 255  # a DNS name's limit
MAX_TTY = 64
TRUNCATED = "\u2026"  # what ends a cut field


def cap(text: str | None, limit: int) -> str | None:
    """An attacker-chosen field, at most `limit` characters (+ the mark when cut)."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED


def parse_message(
    msg: str,
    service: str,
    table: Index,
    pid: int | None,
    repeat: int = 1,
) -> ParseResult:
    if msg.startswith("error: "):
        msg = msg[7:]
    if msg.endswith(" [preauth]"):
        msg = msg[:-10]
    for kind, pattern in table.get(msg.split(" ", 1)[0], ()):
        pm = pattern.match(msg)
        if pm is None:
            continue
        if kind == "ignored":
            return SKIP_IGNORED
        groups = pm.groupdict()
        method = groups.get("method")
        if kind == "failed" and method == "none":
            return SKIP_IGNORED  # clients probe with "none" before a real method
        port = groups.get("port")
        fails = groups.get("fails")
        return AuthFact(
            kind=kind,
            service=service,
            user=cap(groups.get("user"), MAX_USER),
            source=cap(groups.get("source"), MAX_HOST) or None,
            port=int(port) if port and len(port) <= 5 else None,
            pid=pid,
            tty=cap(groups.get("tty"), MAX_TTY) or None,
            method=method.lower() if method else None,
            invalid_user=bool(groups.get("invalid")),
            fails=int(fails) if fails and len(fails) <= 6 else None,
            repeat=repeat,
        )
    return SKIP_UNKNOWN
