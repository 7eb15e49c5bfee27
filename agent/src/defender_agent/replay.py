"""`defender-agent replay`: the collectors' parsers and the detectors over existing logs.

Like fail2ban-regex: for forensics on last week's logs and for testing rules. Entries
are replayed on their own timestamps: a virtual clock follows them, so detectors window
exactly as they would have live, and the login collector's correlation (OpenSSH's btmp
twins, Dropbear's address-less lines) waits in log time, not in replay time. Lines the
parser does not understand are grouped by form (numbers, addresses and quoted names
masked), so a new form can be reported in one paste.

Formats: `syslog` (any framing the agent follows: RFC 3164, RFC 3339 stamps, RFC 5424),
`journal-json` (`journalctl -o json`: SYSLOG_IDENTIFIER, _PID, MESSAGE,
__REALTIME_TIMESTAMP), `utmp` (wtmp or btmp records; a file whose name contains `btmp`
holds failures). `auto` decides by content.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

from defender_agent.clock import ManualClock
from defender_agent.collectors.common import authlog, journal
from defender_agent.model import Record
from defender_agent.plugins import QuietOutput

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import BinaryIO, Callable

    from defender_agent.agent import Agent
    from defender_agent.config import Config
    from defender_agent.plugins import Context

FORMATS = ("auto", "syslog", "journal-json", "utmp")
# seconds of log time after the last entry: holds expire, bursts close, and an SSH
# connection the log leaves open ends as it would live, at LoginGraceTime (login.SSH_GRACE)
SETTLE = 140.0
MAX_FORMS = 50  # unknown forms kept (the rest are counted together)
LINE_MAX = 65536  # a longer "line" is read in pieces: memory stays bounded
RECORD_MAX = 1 << 20  # one journal record in JSON
_MASKS = (
    (re.compile(r"'[^']*'"), "'U'"),
    (re.compile(r"\b[0-9a-fA-F]*:[0-9a-fA-F:.]+\b"), "A"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "A"),
    (re.compile(r"\d+"), "N"),
)


class ReplayError(Exception):
    """A file that cannot be replayed: one line, exit status 2."""


class _Collect(QuietOutput):
    """The replay's output: events counted by kind and alerts kept, or, with `echo`, every
    event and alert handed on as its JSON line as it happens (nothing kept: a million
    lines replay in constant memory)."""

    name = "replay"

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo
        self.needs_line = echo is not None  # serialise records only to print them
        self.events: Counter[str] = Counter()
        self.alerts: list[Record] = []

    def write(self, record: Record, line: str) -> None:
        if record.type == "event":
            self.events[str(record.payload.get("event"))] += 1
        elif record.type == "alert":
            self.alerts.append(record)
        else:
            return
        if self.echo is not None:
            self.echo(line)

    def statistics(self) -> dict[str, int]:
        return {"alerts": len(self.alerts), **self.events}


def form_of(program: str, message: str) -> str:
    """A message with its variable parts masked: one key per kind of line."""
    text = message[:200]
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return f"{program}: {text}"


class Replay:
    """Feed entries to a login collector and the configured detectors on log time."""

    def __init__(
        self,
        cfg: Config,
        since: float | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        from defender_agent import agent as agent_mod
        from defender_agent.plugins import registries

        if "login" not in registries()["collectors"].available():
            raise ReplayError("this build has no login collector: replay runs its parsers")
        from defender_agent.collectors import login

        self.clock = ManualClock(0.0)
        self.agent: Agent = agent_mod.Agent("replay", self.clock)
        self.output = _Collect(echo)
        self.agent.add("outputs", self.output)
        detectors = registries()["detectors"]
        for name in detectors.available():
            if cfg.enabled("detectors", name, detectors.available()):
                section = cfg.section(f"detectors.{name}")
                plugin = detectors.load(name).create(
                    self.agent.context("detectors", name), section, {}
                )
                self.agent.add("detectors", plugin)
        section = dict(cfg.section("collectors.login"), auth_logs=[], wtmp="", btmp="")
        ctx: Context = self.agent.context("collectors", "login")
        self.login = login.LoginCollector(ctx, section, {})
        self.agent.add("collectors", self.login)
        self.since = since
        self.started = False
        self.lines = 0
        self.skipped: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def _at(self, when: float | None) -> None:
        """Move log time forward to WHEN (never back), firing what falls due on the way."""
        if when is None:
            return
        if not self.started:
            self.clock.step(when)
            self.agent.start(heartbeat_interval=86400, statistics_interval=604800)
            self.started = True
        elif when > self.clock.time():
            # Jump the clock, then run what fell due (a held btmp record, say) before the
            # entry itself: the order live reading would have had, without a syscall per
            # entry (Agent.advance polls the event loop at every timer).
            self.clock.advance(when - self.clock.time())
            deadline = self.agent.loop.next_deadline()
            if deadline is not None and deadline <= self.clock.monotonic():
                self.agent.loop.run_timers()
                self.agent.pipeline.drain()

    def fact(self, fact: authlog.ParseResult, program: str, message: str) -> None:
        self.lines += 1
        if isinstance(fact, str):
            self.skipped[fact] += 1
            if fact == authlog.SKIP_UNKNOWN:
                form = form_of(program, message)
                if form in self.unknown or len(self.unknown) < MAX_FORMS:
                    self.unknown[form] += 1
                    self.examples.setdefault(form, message[:300])
                else:
                    self.unknown["(other forms)"] += 1
            return
        if self.since is not None and (fact.time or 0.0) < self.since:
            self.skipped["before-since"] += 1
            return
        self._at(fact.time)
        if not self.started:
            self._at(self.clock.time())  # no time at all: start at the epoch
        self.login.feed_fact(fact)
        self.agent.pipeline.drain()

    # --- formats ------------------------------------------------------------------
    def syslog_file(self, path: str, data: BinaryIO) -> None:
        from defender_agent.collectors.common import syslog

        now = os.stat(path).st_mtime  # year-less stamps: the year before the file's end
        for raw in iter(lambda: data.readline(LINE_MAX), b""):
            line = raw.rstrip(b"\r\n")[:8192].decode("utf-8", errors="replace")
            framed = syslog.parse(line, now)
            if framed is None:
                self.fact(authlog.SKIP_NO_PREFIX, "", line)
                continue
            result = authlog.parse_entry(framed.program, framed.pid, framed.message, framed.time)
            self.fact(result, framed.program, framed.message)

    def journal_file(self, path: str, data: BinaryIO) -> None:
        for number, raw in enumerate(iter(lambda: data.readline(RECORD_MAX), b""), 1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                raise ReplayError(f"{path}:{number}: not a JSON journal record") from None
            if not isinstance(entry, dict):
                raise ReplayError(f"{path}:{number}: not a JSON journal record")
            program, pid, message, when = journal.entry_fields(entry)
            self.fact(authlog.parse_entry(program, pid, message, when), program, message)

    def utmp_file(self, path: str, data: BinaryIO) -> None:
        from defender_agent.collectors.common import timestamps
        from defender_agent.linux import utmp

        layout = self.login.layout
        size = utmp.LAYOUTS[layout].size
        failed = "btmp" in os.path.basename(path)
        while True:
            chunk = data.read(size)
            if len(chunk) < size:
                break
            records, garbage = utmp.decode(chunk, layout)
            if garbage:
                self.skipped["garbage-record"] += garbage
                continue
            self.lines += 1
            when = timestamps.utmp(records[0].tv_sec, records[0].tv_usec)
            if self.since is not None and (when or 0.0) < self.since:
                self.skipped["before-since"] += 1
                continue
            self._at(when)
            self.login.feed_utmp(chunk, failed)
            self.agent.pipeline.drain()

    def file(self, path: str, fmt: str) -> None:
        readers = {
            "syslog": self.syslog_file,
            "journal-json": self.journal_file,
            "utmp": self.utmp_file,
        }
        try:
            with open(path, "rb") as fh:  # streamed: a log of any size in constant memory
                if fmt == "auto":
                    fmt = guess_format(path, fh.peek(4096)[:4096])
                readers[fmt](path, fh)
        except OSError as exc:
            raise ReplayError(f"{path}: cannot read: {exc.strerror}") from None

    def finish(self) -> _Collect:
        """Let log time run on past the last entry (holds expire), then stop."""
        if self.started:
            self.agent.advance(SETTLE)
        self.agent.shutdown()
        return self.output


def guess_format(path: str, data: bytes) -> str:
    head = data[:4096].lstrip()
    if head.startswith(b"{"):
        return "journal-json"
    name = os.path.basename(path)
    if "wtmp" in name or "btmp" in name or (head and b"\n" not in head[:400] and b"\0" in head):
        return "utmp"
    return "syslog"
