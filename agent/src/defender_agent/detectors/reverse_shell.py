"""Reverse-shell detector: a shell that talks to the network, by its sockets and by its
command line.

Two findings raise `ReverseShell` (high), both from `process-exec` events:

- Live sockets: a program in `shells` (sh, bash, busybox's sh applet, python, perl, ...)
  whose stdin and its stdout or stderr are an Internet socket with a peer. At the exec
  event the detector reads /proc/PID/fd/{0,1,2} under `proc`; a `socket:[INODE]` link is
  looked up in the process's own network namespace (/proc/PID/net/tcp, tcp6, udp, udp6,
  read with linux/proc_net.py and at most `max_socket_rows` rows each) for its peer and
  whether it came in (a bind shell: its local port is listened on) or went out. A socket
  found in none of them is a Unix socket (systemd connects services' stdout to journald
  with one) and is no finding. A process gone before the look leaves only its command
  line; one whose /proc/PID/exe is no longer the event's program (the pid was reused) is
  not looked at. The parents in `allow_parents` (an inetd that runs a shell script as a
  service) are trusted with it.
- Command lines: `patterns`, as data. Each is `NAME: TERM TERM ...`, every term must
  hold, and a term is `KIND=ALT,ALT,...` (any alternative holds):
  `has` (a substring of the command line, lower-cased, runs of blanks made one space),
  `prog` (a name the program goes by, commands.program(); `python*` by prefix),
  `arg` (an argument after the program, exactly), `opt` (an option after the program:
  `e` a short option letter alone or in a cluster like `-lvpe`, `--exec` a long one, also
  as `--exec=...`). In an alternative `%20` is a space, `%2C` a comma, `%25` a percent.
  Matching is substring and word comparisons over at most 4096 characters: linear.

Findings of one process tree are one incident: a finding for a pid, or for the child of a
pid, that raised one within `quiet` seconds (event time) is counted into it. Otherwise
the incident's key is the peer (an outgoing connection's address and port, an incoming
one's address and the local port) or, from a command line, the pattern and the command
line: a reverse shell that cron starts again every minute is one incident with a count.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from defender_agent.detectors import commands
from defender_agent.detectors.incidents import Incidents
from defender_agent.linux import inet, proc_net
from defender_agent.plugins import Quiet

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.model import Record
    from defender_agent.plugins import Context

    Term = tuple[str, tuple[str, ...]]
    Pattern = tuple[str, list[Term]]

NAME = "reverse_shell"
ALERT = "ReverseShell"
SEVERITY = "high"
MAX_TREES = 1024  # pids remembered as part of an incident (their children join it)
MAX_PATTERNS = 256
MAX_PATTERN_TEXT = 1024
TCP_LISTEN, TCP_CLOSE = 10, 7  # include/net/tcp_states.h
MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96: an IPv4 peer of an IPv6 socket
SOCKET_LINK = proc_net.SOCKET_LINK
KINDS = ("has", "prog", "arg", "opt")
REMEDIATION = (
    "Kill the process and its parent (the pid and ppid in the alert), block the remote "
    "address, and find what started it (the parent command line, cron, a web server's "
    "CGI, an exposed service). Treat the device as compromised: someone ran commands on "
    "it; change its credentials and reinstall it from a trusted image."
)


class PatternError(ValueError):
    """A pattern that cannot be read."""


def _unquote(text: str) -> str:
    """%XX escapes (hex) in an alternative: a space or a comma cannot be written plainly."""
    if "%" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and _is_hex(text[i + 1 : i + 3]):
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _blanks(text: str) -> str:
    """Runs of blanks made one space, as in the command line they are looked for in."""
    out = " ".join(text.split())
    if text[:1].isspace():
        out = " " + out
    if text[-1:].isspace() and out != " ":
        out += " "
    return out


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def parse_patterns(entries: list[str]) -> list[Pattern]:
    """`NAME: KIND=ALT,ALT KIND=...` entries; PatternError names the first bad one."""
    if len(entries) > MAX_PATTERNS:
        raise PatternError(f"at most {MAX_PATTERNS} patterns, got {len(entries)}")
    out: list[Pattern] = []
    for number, entry in enumerate(entries, 1):
        where = f"pattern {number} {entry[:60]!r}"
        name, sep, body = entry.partition(":")
        name = name.strip()
        if not sep or not name or len(entry) > MAX_PATTERN_TEXT or " " in name:
            raise PatternError(f"{where}: write it as `NAME: KIND=ALT,ALT ...`")
        terms: list[Term] = []
        for word in body.split():
            kind, eq, alts = word.partition("=")
            if kind not in KINDS or not eq:
                raise PatternError(
                    f"{where}: {word[:40]!r}: a term is KIND=ALT,... with KIND one of "
                    + ", ".join(KINDS)
                )
            values = tuple(_unquote(a) for a in alts.split(",") if a)
            if not values:
                raise PatternError(f"{where}: {word[:40]!r} has no alternative")
            if kind == "has":
                values = tuple(_blanks(v.lower()) for v in values)
            if kind == "opt" and any(len(v) != 1 and not v.startswith("--") for v in values):
                raise PatternError(f"{where}: opt= takes single letters or --long options")
            terms.append((kind, values))
        if not terms:
            raise PatternError(f"{where}: no terms")
        terms.sort(key=lambda t: t[0] != "prog")  # the cheap, selective test first
        out.append((name, terms))
    return out


def _option(args: list[str], values: tuple[str, ...]) -> bool:
    for arg in args:
        if arg.startswith("--"):
            for v in values:
                if v.startswith("--") and (arg == v or arg.startswith(v + "=")):
                    return True
        elif arg.startswith("-") and len(arg) > 1:
            cluster = arg[1:]
            if any(len(v) == 1 and v in cluster for v in values):
                return True
    return False


def matches(pattern: Pattern, names: set[str], args: list[str], lowered: str) -> bool:
    for kind, values in pattern[1]:
        if kind == "prog":
            ok = commands.named(names, values) is not None
        elif kind == "has":
            ok = any(v in lowered for v in values)
        elif kind == "arg":
            ok = any(a in values for a in args)
        else:
            ok = _option(args, values)
        if not ok:
            return False
    return True


def _dev_tcp(lowered: str) -> tuple[str, int] | None:
    """The peer named by `/dev/tcp/HOST/PORT` (or udp) in a command line."""
    for marker in ("/dev/tcp/", "/dev/udp/"):
        at = lowered.find(marker)
        if at < 0:
            continue
        tail = lowered[at + len(marker) : at + len(marker) + 300]
        host, _sep, rest = tail.partition("/")
        digits = ""
        for ch in rest:
            if ch not in "0123456789" or len(digits) >= 5:
                break
            digits += ch
        if host and digits and len(host) <= 255 and 0 < int(digits) < 65536:
            return host, int(digits)
    return None


class ReverseShellDetector(Quiet):
    name = NAME

    def __init__(
        self,
        ctx: Context,
        shells: list[str] | tuple[str, ...],
        patterns: list[str] | tuple[str, ...],
        allow_parents: list[str] | tuple[str, ...] = (),
        proc: str = "/proc",
        max_socket_rows: int = 4096,
        quiet: float = 3600.0,
        update_every: float = 300.0,
        max_incidents: int = 256,
    ) -> None:
        self.ctx = ctx
        self.shells = tuple(shells)
        self.patterns = parse_patterns(list(patterns))
        self.allow_parents = frozenset(allow_parents)
        self.proc = proc.rstrip("/") or "/"
        self.max_socket_rows = max_socket_rows
        self.incidents = Incidents(quiet, update_every, max_incidents)
        self._trees: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self.counts = {
            "execs": 0,
            "shells-looked-at": 0,
            "stdio-network": 0,
            "stdio-other-socket": 0,
            "gone-before-look": 0,
            "access-denied": 0,
            "pid-reused": 0,
            "socket-table-cut": 0,
            "pattern-hits": 0,
            "allowed-parent": 0,
            "trees-forgotten": 0,
        }

    # --- plugin contract (start, stop, save_state: Quiet's) -------------------------
    def statistics(self) -> dict[str, int]:
        return {**self.counts, **self.incidents.counts, "incidents-open": len(self.incidents)}

    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        if payload.get("event") != "process-exec":
            return []
        pid = payload.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return []
        self.counts["execs"] += 1
        when = record.time if record.time is not None else self.ctx.clock.time()
        cmdline = commands.text(payload.get("cmdline"))
        args = commands.split(cmdline)
        executable = payload.get("executable")
        names, rest = commands.program(executable, args)
        lowered = _blanks(f" {cmdline.lower()} ")  # spaced at both ends: " nc " at the start
        hits = [p[0] for p in self.patterns if matches(p, names, rest, lowered)]
        if hits:
            self.counts["pattern-hits"] += 1
        stdio = None
        shell = commands.named(names, self.shells)
        if shell is not None or hits:
            stdio = self._stdio(pid, executable)
        if stdio is not None and not hits:
            parent = payload.get("parent_executable")
            if isinstance(parent, str) and parent in self.allow_parents:
                self.counts["allowed-parent"] += 1
                stdio = None
        if stdio is None and not hits:
            return []
        return self._found(payload, pid, when, cmdline, lowered, hits, stdio)

    def _found(
        self,
        payload: dict[str, Any],
        pid: int,
        when: float,
        cmdline: str,
        lowered: str,
        hits: list[str],
        stdio: dict[str, Any] | None,
    ) -> list[Record]:
        evidence: dict[str, Any] = {
            **commands.process(payload, cmdline),
            "patterns": hits,
            "stdio_sockets": [],
            "protocol": None,
            "direction": None,
            "local_address": None,
            "local_port": None,
            "remote_address": None,
            "remote_port": None,
            "remote_from": None,
        }
        program = commands.basename(str(payload.get("executable") or "")) or "a program"
        if stdio is not None:
            self.counts["stdio-network"] += 1
            evidence.update(stdio)
            evidence["remote_from"] = "socket"
            peer = f"{stdio['remote_address']}:{stdio['remote_port']}"
            if stdio["direction"] == "in":
                key = f"in {stdio['remote_address']} {stdio['local_port']}"
            else:
                key = f"out {peer}"
            text = (
                f"{program} (pid {pid}) has its {_and(stdio['stdio_sockets'])} on a "
                f"{stdio['protocol'].upper()} connection "
                f"{'from' if stdio['direction'] == 'in' else 'to'} {peer}"
            )
        else:
            named = _dev_tcp(lowered)
            if named is not None:
                evidence["remote_address"], evidence["remote_port"] = named
                evidence["remote_from"] = "command line"
            key = f"cmd {hits[0]} {cmdline}"
            text = (
                f"{program} (pid {pid}) was started with a reverse-shell command line "
                f"({', '.join(hits)})"
            )
        key = self._tree(pid, payload.get("ppid"), key, when)
        return self.incidents.found(ALERT, key, when, SEVERITY, text, REMEDIATION, evidence)

    def _tree(self, pid: int, ppid: Any, key: str, when: float) -> str:
        """The incident of the pid or its parent when one is open: one per process tree."""
        for member in (pid, ppid):
            known = self._trees.get(member) if isinstance(member, int) else None
            if known is not None and abs(when - known[1]) <= self.incidents.quiet:
                key = known[0]
                break
        self._trees[pid] = (key, when)
        self._trees.move_to_end(pid)
        while len(self._trees) > MAX_TREES:
            self._trees.popitem(last=False)
            self.counts["trees-forgotten"] += 1
        return key

    # --- /proc --------------------------------------------------------------------
    def _stdio(self, pid: int, executable: Any) -> dict[str, Any] | None:
        """The network peer of the process's stdin when stdin and stdout or stderr are
        Internet sockets; None otherwise (or when it cannot be known)."""
        base = f"{self.proc}/{pid}"
        self.counts["shells-looked-at"] += 1
        inodes: dict[str, int] = {}
        for fd, label in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
            try:
                link = os.readlink(f"{base}/fd/{fd}")
            except FileNotFoundError:
                if fd == 0 and not os.path.isdir(f"{base}/fd"):
                    self.counts["gone-before-look"] += 1
                    return None
                continue  # that descriptor is closed
            except PermissionError:
                self.counts["access-denied"] += 1
                return None
            except OSError:
                return None
            if link.startswith(SOCKET_LINK) and link.endswith("]"):
                try:
                    inodes[label] = int(link[len(SOCKET_LINK) : -1])
                except ValueError:
                    continue
        stdin = inodes.get("stdin")
        same = [label for label, inode in inodes.items() if inode == stdin]
        if stdin is None or len(same) < 2:
            return None
        if not self._same_program(base, executable):
            self.counts["pid-reused"] += 1
            return None
        found = self._peer(base, inodes["stdin"])
        if found is None:
            self.counts["stdio-other-socket"] += 1
            return None
        found["stdio_sockets"] = same
        return found

    @staticmethod
    def _same_program(base: str, executable: Any) -> bool:
        """False when /proc/PID/exe names another program than the event did."""
        if not isinstance(executable, str):
            return True
        try:
            now = os.readlink(os.fsencode(f"{base}/exe")).decode("utf-8", "backslashreplace")
        except OSError:
            return True  # unreadable: the descriptors were readable, so it is the same look
        if now.endswith(commands.DELETED):
            now = now[: -len(commands.DELETED)]
        return now == executable or executable.endswith("…")

    def _peer(self, base: str, inode: int) -> dict[str, Any] | None:
        """The socket `inode` in the process's own tables: protocol, ends, direction."""
        for protocol, tables in (("tcp", ("tcp", "tcp6")), ("udp", ("udp", "udp6"))):
            for table in tables:
                try:
                    rows, _garbage, complete = proc_net.read_table(
                        f"{base}/net/{table}", self.max_socket_rows
                    )
                except OSError:
                    continue
                if not complete:
                    self.counts["socket-table-cut"] += 1
                for row in rows:
                    if row[7] != inode:
                        continue
                    _family, state, laddr, lport, raddr, rport, _uid, _inode = row
                    if rport == 0 or (protocol == "tcp" and state in (TCP_LISTEN, TCP_CLOSE)):
                        return None  # not connected: an inetd `wait` service's socket
                    incoming = protocol == "tcp" and any(
                        r[1] == TCP_LISTEN and r[3] == lport for r in rows
                    )
                    return {
                        "protocol": protocol,
                        "direction": "in" if incoming else "out",
                        "local_address": _text(laddr),
                        "local_port": lport,
                        "remote_address": _text(raddr),
                        "remote_port": rport,
                    }
        return None


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _text(raw: bytes) -> str:
    return inet.ntop(raw[12:] if len(raw) == 16 and raw.startswith(MAPPED) else raw)


def _checked(section: dict[str, Any]) -> list[Pattern]:
    try:
        return parse_patterns(list(section["patterns"]))
    except PatternError as exc:
        from defender_agent.config import ConfigError

        raise ConfigError(f"detectors.{NAME}.patterns: {exc}") from None


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> ReverseShellDetector:
    _checked(section)
    return ReverseShellDetector(
        ctx,
        shells=list(section["shells"]),
        patterns=list(section["patterns"]),
        allow_parents=list(section["allow_parents"]),
        proc=str(section["proc"]),
        max_socket_rows=int(section["max_socket_rows"]),
        quiet=float(section["quiet"]),
        update_every=float(section["update_every"]),
        max_incidents=int(section["max_incidents"]),
    )


def describe(section: dict[str, Any]) -> list[str]:
    patterns = _checked(section)
    allowed = len(section["allow_parents"])
    return [
        f"ReverseShell by sockets: one of {len(section['shells'])} shells and interpreters "
        f"with stdin and stdout or stderr on a TCP/UDP connection (read from "
        f"{section['proc']}; {allowed} parent(s) allowed)",
        f"ReverseShell by command line: {len(patterns)} patterns "
        f"({', '.join(p[0] for p in patterns[:8])}{', ...' if len(patterns) > 8 else ''})",
        f"one alert per process tree or peer; updated every {section['update_every']:g} s, "
        f"over after {section['quiet']:g} s quiet (event time)",
    ]
