"""Split one syslog line into its time, host, program, pid and message.

Three framings reach files on devices:
- RFC 3164 as rsyslog, busybox syslogd and sysklogd write it: `Dec  2 01:14:04 host
  sshd[339]: msg` (busybox may add `auth.info` after the host; a forwarder may keep the
  `<PRI>` in front);
- the same with an RFC 3339 stamp (rsyslog's default on Debian 12 and others):
  `2026-12-02T01:14:04.832485+00:00 host sshd[339]: msg`;
- RFC 5424: `<38>1 2019-07-08T17:40:16-04:00 host sshd 57915 - - msg`, with nil values
  (`-`), structured data (`[id k="v"]...`) and an optional BOM before the message.

The time is read from the line (timestamps.py); a line whose stamp cannot be read keeps
time None and is dated with the observed time. Every pattern is anchored and linear.
"""

from __future__ import annotations

import re
from collections import namedtuple

from defender_agent.collectors.common import timestamps

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import NamedTuple

    class SyslogLine(NamedTuple):
        time: float | None
        host: str | None
        program: str
        pid: int | None
        message: str

else:
    SyslogLine = namedtuple("SyslogLine", "time host program pid message")

_RFC3164 = re.compile(
    r"(?:<\d{1,3}>)?"
    r"(?:(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)(?P<frac>\.\d{1,9})?"
    r"|(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d(?::?\d\d)?)?))"
    r" (?:(?P<host>\S+) )?"
    r"(?:[a-z0-9]+\.(?:emerg|alert|crit|err|error|warn|warning|notice|info|debug) )?"
    r"(?P<prog>[^\s\[\]:]+)(?:\[(?P<pid>\d{1,10})\])?: (?P<msg>.*)$"
)
_RFC5424 = re.compile(
    r"<\d{1,3}>\d{1,2} (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) \S+ (?P<rest>.*)$"
)
_BOM = "\ufeff"


def parse(line: str, now: float) -> SyslogLine | None:
    """The parts of one line (without its newline), or None if it is not syslog.

    `now` (the runtime clock's wall time) only decides the year of a year-less stamp.
    """
    if line.startswith("<"):
        m5 = _RFC5424.match(line)
        if m5 is not None:
            return _rfc5424(m5)
    m = _RFC3164.match(line)
    if m is None:
        return None
    if m.group("iso"):
        stamp = timestamps.iso(m.group("iso"))
    else:
        stamp = timestamps.bsd(
            m.group("mon"), int(m.group("day")), m.group("hms"), m.group("frac"), now
        )
    pid = m.group("pid")
    return SyslogLine(stamp, m.group("host"), m.group("prog"), int(pid) if pid else None, m["msg"])


def _rfc5424(m: re.Match[str]) -> SyslogLine | None:
    rest = m.group("rest")
    if rest.startswith("-"):
        message = rest[2:]
    elif rest.startswith("["):
        end = structured_data_end(rest)
        if end < 0 or (end < len(rest) and rest[end] != " "):
            return None
        message = rest[end + 1 :]
    else:
        return None
    if message.startswith(_BOM):
        message = message[1:]
    ts = m.group("ts")
    procid = m.group("procid")
    app = m.group("app")
    return SyslogLine(
        None if ts == "-" else timestamps.iso(ts),
        None if m.group("host") == "-" else m.group("host"),
        "" if app == "-" else app,
        int(procid) if procid.isdigit() and len(procid) <= 10 else None,
        message,
    )


def structured_data_end(text: str) -> int:
    """Index just past RFC 5424 STRUCTURED-DATA (one or more `[...]`), -1 if malformed.

    Inside a quoted PARAM-VALUE, `\\]`, `\\"` and `\\\\` are escapes; one pass, no regex.
    """
    i = 0
    n = len(text)
    while i < n and text[i] == "[":
        i += 1
        quoted = False
        while i < n:
            c = text[i]
            if quoted:
                if c == "\\":
                    i += 1
                elif c == '"':
                    quoted = False
            elif c == '"':
                quoted = True
            elif c == "]":
                break
            i += 1
        if i >= n:
            return -1
        i += 1
    return i
