"""Threat-intelligence detector: connections to or from addresses on a list file.

The list is a text file, one entry per line: an IPv4 or IPv6 address or CIDR
(`198.51.100.7`, `203.0.113.0/24`, `2001:db8:bad::/48`). Blank lines and everything
after `#` or `;` are comments, so Spamhaus DROP (`192.0.2.0/24 ; SBL123456`) and FireHOL
`.netset` files (`#` headers, one CIDR a line) are read as they are published; text after
the first word of a line is ignored. A line that is not an entry (or longer than
LINE_MAX bytes) is counted as `malformed`, never fatal; a CIDR with host bits set is
read as its network and counted. At most `max_entries` entries are kept (the rest
counted as `over-cap`).

Entries become sorted ranges, one array per family, looked up with bisect: no set of
addresses however big a CIDR. Entries are CIDRs, so two either nest or are apart: a
nested one is dropped (counted as `covered`) and the range it is in keeps the line it
came from, which the alert quotes (read again from the file, still the same one, only
for a new incident). The file is looked at every `check_interval` seconds of the
runtime clock and read again when its (inode, size, mtime) changed; a file that went
away empties the list, one that cannot be read keeps the last one.

Both directions raise the alert: an outbound connection to a listed address (command
and control, a miner's pool, a payload download) and, with `inbound`, a connection a
listed address made to one of the device's services. Attempts to closed ports
(`connection-attempt`) are left to the port-scan detector. Domains (names resolved
through the device's resolver log) are not looked at: no resolver logs queries by
default, and following one is a collector of its own.
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_right

from defender_agent.detectors.incidents import Incidents
from defender_agent.linux import inet
from defender_agent.plugins import Timed

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, BinaryIO

    from defender_agent.loop import Timer
    from defender_agent.model import Record
    from defender_agent.plugins import Context

NAME = "threat_intel"
ALERT = "ThreatIntel"
SEVERITY = "high"
LINE_MAX = 1024  # bytes of one list line; a longer one is malformed
MAX_SHOWN = 200  # characters of the list line quoted in an alert
MAX_QUOTES = 256  # list lines kept for alerts (a new incident reads its line once)
MASK32 = (1 << 32) - 1
MASK128 = (1 << 128) - 1
MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96: an IPv4 peer of an IPv6 socket
REMEDIATION = (
    "Find the process (pid, executable) and why it talks to this address; block the "
    "address at the firewall; if the device started the connection, treat it as "
    "compromised (reinstall from a known image, change its credentials)."
)


def parse_entry(text: str) -> tuple[int, int, int, bool]:
    """`a.b.c.d[/n]` or an IPv6 address `[/n]` -> (family, first, last, host bits were
    set); ValueError when it is not one."""
    address, slash, length = text.partition("/")
    raw = inet.pton(address)
    bits = 8 * len(raw)
    if not slash:
        prefix = bits
    elif length.isdigit() and length.isascii() and len(length) <= 3:
        prefix = int(length)
    else:
        raise ValueError(f"{text!r}: bad prefix length")
    if prefix > bits:
        raise ValueError(f"{text!r}: prefix length over {bits}")
    number = int.from_bytes(raw, "big")
    host = (1 << (bits - prefix)) - 1
    return (4 if bits == 32 else 6), number & ~host, number | host, bool(number & host)


def _lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number from 1, the line; None for one longer than LINE_MAX)."""
    number = 0
    while True:
        line = fh.readline(LINE_MAX)
        if not line:
            return
        number += 1
        if not line.endswith(b"\n") and len(line) == LINE_MAX:
            while line and not line.endswith(b"\n"):  # skip the rest of it
                line = fh.readline(LINE_MAX)
            yield number, None
            continue
        yield number, line


def _entry_text(line: bytes) -> str:
    """The entry of a line, comments cut off ("" for a comment or blank line)."""
    text = line.decode("ascii", "replace")
    for mark in ("#", ";"):
        text = text.partition(mark)[0]
    words = text.split(None, 1)
    return words[0] if words else ""


def _range_text(family: int, first: int, last: int) -> str:
    bits = 32 if family == 4 else 128
    prefix = bits - (last - first).bit_length()
    address = inet.ntop(first.to_bytes(bits // 8, "big"))
    return address if prefix == bits else f"{address}/{prefix}"


class ThreatList:
    """The ranges of one list file, per family, sorted, non-overlapping."""

    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self.starts4 = array("I")
        self.ends4 = array("I")
        self.lines4 = array("I")
        self.starts6: list[int] = []
        self.ends6: list[int] = []
        self.lines6 = array("I")
        self.signature: tuple[int, int, int] | None = None
        self.counts = {"malformed": 0, "over-cap": 0, "covered": 0, "host-bits": 0}

    def __len__(self) -> int:
        return len(self.starts4) + len(self.starts6)

    def load(self, path: str, signature: tuple[int, int, int] | None = None) -> None:
        """Read the file (OSError when it cannot be read; then nothing changes)."""
        counts = {"malformed": 0, "over-cap": 0, "covered": 0, "host-bits": 0}
        keys4: list[int] = []  # start << 64 | (MASK32 - end) << 32 | line: sorts by start,
        keys6: list[int] = []  # the widest first, as one int each (a tuple costs 3x)
        with open(path, "rb") as fh:
            if signature is None:
                signature = _signature(os.fstat(fh.fileno()))
            for number, line in _lines(fh):
                if line is None:
                    counts["malformed"] += 1
                    continue
                text = _entry_text(line)
                if not text:
                    continue
                try:
                    family, first, last, host = parse_entry(text)
                except ValueError:
                    counts["malformed"] += 1
                    continue
                if len(keys4) + len(keys6) >= self.max_entries:
                    counts["over-cap"] += 1
                    continue
                counts["host-bits"] += host
                if family == 4:
                    keys4.append(first << 64 | (MASK32 - last) << 32 | number)
                else:
                    keys6.append(first << 160 | (MASK128 - last) << 32 | number)
        keys4.sort()
        keys6.sort()
        starts4, ends4, lines4 = array("I"), array("I"), array("I")
        for key in keys4:
            first, last = key >> 64, MASK32 - (key >> 32 & MASK32)
            if ends4 and first <= ends4[-1]:
                counts["covered"] += 1  # inside (or equal to) the range before it
                continue
            starts4.append(first)
            ends4.append(last)
            lines4.append(key & MASK32)
        del keys4
        starts6: list[int] = []
        ends6: list[int] = []
        lines6 = array("I")
        for key in keys6:
            first, last = key >> 160, MASK128 - (key >> 32 & MASK128)
            if ends6 and first <= ends6[-1]:
                counts["covered"] += 1
                continue
            starts6.append(first)
            ends6.append(last)
            lines6.append(key & MASK32)
        self.starts4, self.ends4, self.lines4 = starts4, ends4, lines4
        self.starts6, self.ends6, self.lines6 = starts6, ends6, lines6
        self.signature = signature
        self.counts = counts

    def clear(self) -> None:
        self.starts4, self.ends4, self.lines4 = array("I"), array("I"), array("I")
        self.starts6, self.ends6, self.lines6 = [], [], array("I")
        self.signature = None

    def lookup(self, address: str) -> tuple[str, int] | None:
        """(the listed range, its line) holding `address`; None when none does or it is
        not an address."""
        try:
            raw = inet.pton(address)
        except ValueError:
            return None
        if len(raw) == 16 and raw[:12] == MAPPED:
            raw = raw[12:]
        number = int.from_bytes(raw, "big")
        if len(raw) == 4:
            at = bisect_right(self.starts4, number) - 1
            if at >= 0 and number <= self.ends4[at]:
                return _range_text(4, self.starts4[at], self.ends4[at]), self.lines4[at]
            return None
        at = bisect_right(self.starts6, number) - 1
        if at >= 0 and number <= self.ends6[at]:
            return _range_text(6, self.starts6[at], self.ends6[at]), self.lines6[at]
        return None


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ThreatIntelDetector(Timed):
    name = NAME

    def __init__(
        self,
        ctx: Context,
        path: str,
        max_entries: int = 65536,
        check_interval: float = 60.0,
        inbound: bool = True,
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.check_interval = check_interval
        self.inbound = inbound
        self.list = ThreatList(max_entries)
        # a beacon every few minutes is one incident; written again at most every 10 min
        self.incidents = Incidents(quiet=3600.0, update_every=600.0)
        self._timer: Timer | None = None
        self._quotes: dict[int, str | None] = {}  # list line -> its text, for alerts
        self.counts = {
            "loads": 0,
            "load-errors": 0,
            "list-missing": 0,
            "matches": 0,
            "not-an-address": 0,
        }

    # --- plugin contract ----------------------------------------------------------
    def start(self) -> None:
        self.check()
        self._timer = self.ctx.call_every(self.check_interval, self.check)

    def statistics(self) -> dict[str, int]:
        return {
            **self.counts,
            **self.list.counts,
            **self.incidents.counts,
            "entries": len(self.list),
        }

    def check(self) -> None:
        """Read the list again when the file changed (inode, size, mtime) or went away."""
        try:
            signature = _signature(os.stat(self.path))
        except FileNotFoundError:
            self.list.clear()  # taken away: nothing is listed any more
            self._quotes.clear()
            self.counts["list-missing"] = 1
            return
        except OSError:
            self.counts["load-errors"] += 1
            return
        self.counts["list-missing"] = 0
        if signature == self.list.signature:
            return
        try:
            self.list.load(self.path)
        except OSError:
            self.counts["load-errors"] += 1  # keep the last list
            return
        self._quotes.clear()
        self.counts["loads"] += 1

    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        if payload.get("event") != "connection" or not len(self.list):
            return []
        direction = payload.get("direction")
        if direction == "in" and not self.inbound:
            return []
        remote = payload.get("remote_address")
        if not isinstance(remote, str) or len(remote) > 64:
            self.counts["not-an-address"] += 1
            return []
        found = self.list.lookup(remote)
        if found is None:
            return []
        self.counts["matches"] += 1
        entry, line = found
        when = record.time if record.time is not None else self.ctx.clock.time()
        key = f"{remote} {direction}"
        quoted = None
        if not self.incidents.is_open(ALERT, key, when):
            if line not in self._quotes:
                if len(self._quotes) >= MAX_QUOTES:
                    self._quotes.clear()
                self._quotes[line] = self._quote(line)
            quoted = self._quotes[line]
        exe = payload.get("executable")
        exe = exe[:512] if isinstance(exe, str) else None
        port = payload.get("remote_port") if direction != "in" else payload.get("local_port")
        if direction == "in":
            text = f"{remote} (listed: {entry}) connected to this device on port {port}"
        else:
            who = exe or "a process"
            text = f"{who} connected to {remote} port {port}, listed as {entry}"
        evidence = {
            "direction": direction,
            "protocol": payload.get("protocol"),
            "remote_address": remote,
            "remote_port": payload.get("remote_port"),
            "local_address": payload.get("local_address"),
            "local_port": payload.get("local_port"),
            "pid": payload.get("pid"),
            "executable": exe,
            "list_entry": entry,
            "list_file": self.path,
            "list_line": line,
        }
        if quoted is not None:
            evidence["list_text"] = quoted
        return self.incidents.found(ALERT, key, when, SEVERITY, text, REMEDIATION, evidence)

    def _quote(self, line: int) -> str | None:
        """The list's line `line` as it was loaded (None when the file changed since)."""
        try:
            with open(self.path, "rb") as fh:
                if _signature(os.fstat(fh.fileno())) != self.list.signature:
                    return None
                for number, text in _lines(fh):
                    if number == line:
                        if text is None:
                            return None
                        return text.decode("utf-8", "replace").strip()[:MAX_SHOWN]
        except OSError:
            return None
        return None


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> ThreatIntelDetector:
    return ThreatIntelDetector(
        ctx,
        path=str(section["path"]),
        max_entries=int(section["max_entries"]),
        check_interval=float(section["check_interval"]),
        inbound=bool(section["inbound"]),
    )


def describe(section: dict[str, Any]) -> list[str]:
    path = str(section["path"])
    listed = ThreatList(int(section["max_entries"]))
    try:
        listed.load(path)
        loaded = (
            f"{len(listed)} ranges ({listed.counts['malformed']} malformed lines, "
            f"{listed.counts['over-cap']} over the cap of {section['max_entries']})"
        )
    except OSError as exc:
        loaded = f"not readable now ({exc.strerror or exc}): no alerts until it is"
    directions = "to or from" if section["inbound"] else "to"
    return [
        f"ThreatIntel: connections {directions} addresses listed in {path}: {loaded}",
        f"the list is re-read when it changes, checked every {section['check_interval']:g} s",
    ]
