"""Network collector: a `connection` event for each TCP connection (and connected UDP
socket) that appeared since the last look, and a `listen` snapshot of what listens where.

The kernel's socket tables are read every `poll_interval` seconds, through sock_diag
(linux/inet_diag.py: binary, no capability) for each protocol the kernel's sock_diag
handles, else from /proc/net/{tcp,udp}{,6} (linux/proc_net.py). Raw sockets always come
from /proc/net/raw{,6}: raw_diag (CONFIG_INET_RAW_DIAG) is rarely built, and raw
sockets are few. Both sources give the same rows, so a table that falls back from one to
the other in the middle of a run reports nothing twice.

A polled table has no creation times: an event's `time` is the poll that first saw the
socket. A connection opened and closed between two polls is seen only if one of its ends
still lingers (TIME_WAIT, kept 60 s by the side that closed first), then without owner.

Connections are known by (protocol, local address and port, remote address and port)
and their inode. An inode of 0 (a connection not yet accept()ed, a socket its process
has closed, TIME_WAIT) matches the same addresses under any inode, so one connection
that gets or loses its owner is still one event; a different non-zero inode on the same
addresses is a new connection.

Owners: the tables give a socket's uid and inode, not its process. /proc/PID/fd links
("socket:[INODE]") do, at the cost of one readlink per open descriptor of the system, so
a scan runs only in a poll in which a socket appeared whose inode was never looked up
(at most one scan a poll), looks for those inodes alone and stops when it has them all.
"""

from __future__ import annotations

import os
import struct

from defender_agent import log as _log
from defender_agent.linux import inet, inet_diag, proc_net
from defender_agent.model import Record

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Optional

    from defender_agent.linux.inet_diag import Row
    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

    Table = Optional[tuple[list[Row], str, bool]]  # rows, source, complete; None: unreadable
    ListenKey = tuple[bytes, int, int]  # packed protocol, port, address; inode; table
    Owner = tuple[Optional[int], Optional[str]]
    Fresh = tuple[bytes, int, int, int, int, str]  # key, state, uid, inode, table, source

log = _log.get(__name__)

NAME = "network"
MAX_SCAN_FDS = 65536  # descriptors one owner scan reads at most
# another user's /proc/PID/fd: DAC_READ_SEARCH opens the directory (mode 0500), SYS_PTRACE
# reads its links and exe (and shows the process at all under hidepid)
OWNER_CAPABILITIES = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19}
TCP, UDP, RAW = 6, 17, 255  # IPPROTO_*; /proc/net/raw's sockets are keyed as IPPROTO_RAW
PROTOCOLS = {TCP: "tcp", UDP: "udp", RAW: "raw"}
# the /proc/net tables, in the order they are read: (name, address family, protocol)
TABLES = (
    ("tcp", inet_diag.AF_INET, TCP),
    ("tcp6", inet_diag.AF_INET6, TCP),
    ("udp", inet_diag.AF_INET, UDP),
    ("udp6", inet_diag.AF_INET6, UDP),
    ("raw", inet_diag.AF_INET, RAW),
    ("raw6", inet_diag.AF_INET6, RAW),
)
# include/net/tcp_states.h; UDP uses ESTABLISHED (connected) and CLOSE (not connected)
ESTABLISHED, SYN_SENT, SYN_RECV, CLOSE, LISTEN, NEW_SYN_RECV = 1, 2, 3, 7, 10, 12
STATES = {
    1: "established",
    2: "syn-sent",
    3: "syn-recv",
    4: "fin-wait-1",
    5: "fin-wait-2",
    6: "time-wait",
    7: "close",
    8: "close-wait",
    9: "last-ack",
    10: "listen",
    11: "closing",
    12: "syn-recv",  # TCP_NEW_SYN_RECV: a request socket, before the handshake ends
    13: "bound-inactive",
}
_KEY = struct.Struct(">BHH")  # protocol, local port, remote port; then the two addresses
_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d, an IPv4 peer of an IPv6 socket


def _canonical(addr: bytes) -> bytes:
    """An IPv4-mapped IPv6 address is the IPv4 address it maps."""
    return addr[12:] if len(addr) == 16 and addr[:12] == _MAPPED else addr


def _kind(protocol: int, state: int, lport: int) -> str:
    """What a row is: "listen", "connection" or "" (a TCP socket bound, not yet used)."""
    if protocol == TCP:
        return "listen" if state == LISTEN else "" if state == CLOSE else "connection"
    if protocol == UDP:
        if state == ESTABLISHED:
            return "connection"
        return "listen" if lport else ""
    return "listen"  # a raw socket receives every packet of its protocol


def _state_name(protocol: int, state: int) -> str:
    if protocol == UDP:
        return "established" if state == ESTABLISHED else "unconnected"
    return STATES.get(state, f"state-{state}")


def _addresses(key: bytes) -> tuple[int, int, int, bytes, bytes]:
    """A connection key back into (protocol, local port, remote port, local, remote)."""
    protocol, lport, rport = _KEY.unpack_from(key)
    half = (len(key) - _KEY.size) // 2
    return protocol, lport, rport, key[_KEY.size : _KEY.size + half], key[_KEY.size + half :]


def choose_sources(backend: str) -> tuple[dict[str, str], str]:
    """Where each table comes from ({table: "sock_diag" | "proc"}) and why, in words.
    `auto` probes sock_diag once per protocol; the probe's socket is not kept."""
    usable = {TCP: backend == "sock_diag", UDP: backend == "sock_diag"}
    notes = []
    if backend != "proc":
        for protocol, error in inet_diag.probe((TCP, UDP)).items():
            if backend == "auto":
                usable[protocol] = not error
            if error:
                notes.append(f"{PROTOCOLS[protocol]}: {error}")
    sources = {name: "sock_diag" if usable.get(proto) else "proc" for name, _f, proto in TABLES}
    diag = [PROTOCOLS[p] for p in (TCP, UDP) if usable[p]]
    proc = [PROTOCOLS[p] for p in (TCP, UDP) if not usable[p]] + ["raw"]
    words = f"sock_diag for {', '.join(diag)}; " if diag else ""
    words += f"/proc/net for {', '.join(proc)}"
    if notes:
        words += f" (sock_diag probe: {'; '.join(notes)})"
    return sources, words


class NetworkCollector:
    name = NAME

    def __init__(self, ctx: Context, section: dict[str, Any]) -> None:
        self.ctx = ctx
        self.interval = float(section["poll_interval"])
        self.backend = str(section["backend"])
        self.report_existing = bool(section["report_existing"])
        self.find_owners = bool(section["owners"])
        self.max_connections = int(section["max_connections"])
        self.max_listen = int(section["max_listen"])
        self.proc = str(section["proc"]).rstrip("/") or "/"
        self.sources: dict[str, str] = {}  # table -> "sock_diag" | "proc", chosen at start
        self.counts: dict[str, int] = {}
        self._known: dict[bytes, int] = {}  # connection key -> inode << 3 | table index
        self._listen: dict[ListenKey, dict[str, Any]] = {}  # -> its entry in the snapshot
        self._owners: dict[int, Owner] = {}  # inode -> (pid, executable), live sockets only
        self._first = True
        self._dropped_listen = False  # this look had more listeners than max_listen
        self._timer: Timer | None = None

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        self.sources, words = choose_sources(self.backend)
        log.info("network collector: %s, every %g s", words, self.interval)
        self._timer = self.ctx.call_every(self.interval, self.poll, first=0.0)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def save_state(self) -> dict[str, Any]:
        return {}  # sockets do not outlive a reboot, and a restart takes a new baseline

    def statistics(self) -> dict[str, int]:
        out = dict(self.counts)
        out["tracked"] = len(self._known)
        out["listening"] = len(self._listen)
        return out

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    # --- one look -------------------------------------------------------------------
    def poll(self) -> None:
        now = self.ctx.clock.time()
        tables = [self._read(index) for index in range(len(TABLES))]
        cut = {TABLES[i][2] for i, table in enumerate(tables) if table and not table[2]}
        # protocols whose listeners this look did not all see: their direction is unknown
        blind = cut | {TABLES[i][2] for i, table in enumerate(tables) if table is None}
        known, fresh, listen = self._sort(tables, blind)
        new_listen = {key: uid for key, uid in listen.items() if key not in self._listen}
        report = fresh if not self._first or self.report_existing else []
        self._resolve([f[3] for f in report] + [key[1] for key in new_listen])
        listening = self._listening(listen)
        for key, state, uid, inode, _index, source in report:
            payload = self._connection(key, state, uid, inode, source, listening, blind)
            self.ctx.emit(Record("event", payload, now))
        self._snapshot(listen, new_listen, bool(cut) or self._dropped_listen, now)
        self._known = known
        live = {value >> 3 for value in known.values()} | {key[1] for key in listen}
        self._owners = {i: o for i, o in self._owners.items() if i in live}
        self._first = False

    def _read(self, index: int) -> Table:
        name, family, protocol = TABLES[index]
        limit = self.max_connections + self.max_listen
        if self.sources.get(name) == "sock_diag":
            try:
                rows, complete = inet_diag.dump(family, protocol, limit)
            except inet_diag.DiagError as exc:
                self._count(f"sock_diag-{exc.reason}")
            except OSError:
                self._count("sock_diag-socket-error")
            else:
                if not complete:
                    self._count("table-truncated")
                return rows, "sock_diag", complete
            if self.backend == "sock_diag":  # forced: no fallback; the table is unread
                return None
            self._count("proc-fallback")
        return self._read_proc(name, limit)

    def _read_proc(self, name: str, limit: int) -> Table:
        try:
            rows, garbage, complete = proc_net.read_table(f"{self.proc}/net/{name}", limit)
        except FileNotFoundError:
            if name.endswith("6"):  # a kernel built without IPv6
                return [], "proc", True
            self._count("read-error")
            return None
        except OSError:
            self._count("read-error")
            return None
        if garbage:
            self._count("garbage-line", garbage)
        if not complete:
            self._count("table-truncated")
        return rows, "proc", complete

    def _sort(
        self, tables: list[Table], blind: set[int]
    ) -> tuple[dict[bytes, int], list[Fresh], dict[ListenKey, int]]:
        """This look's connections (those still known, and the fresh ones admitted) and
        listening sockets (with their uids). An unreadable table keeps what it had."""
        known: dict[bytes, int] = {}
        fresh: list[Fresh] = []
        listen: dict[ListenKey, int] = {}
        self._dropped_listen = False
        for index, table in enumerate(tables):
            if table is None:
                self._carry_over(index, known, listen)
            else:
                self._sort_rows(index, table[0], table[1], known, fresh, listen, blind)
        return known, self._admit(known, fresh), listen

    def _sort_rows(
        self,
        index: int,
        rows: list[Row],
        source: str,
        known: dict[bytes, int],
        fresh: list[Fresh],
        listen: dict[ListenKey, int],
        blind: set[int],
    ) -> None:
        protocol = TABLES[index][2]
        for _family, state, laddr, lport, raddr, rport, uid, inode in rows:
            kind = _kind(protocol, state, lport)
            if kind == "listen":
                lkey = (_KEY.pack(protocol, lport, 0) + _canonical(laddr), inode, index)
                if lkey in listen or len(listen) < self.max_listen:
                    listen[lkey] = uid
                else:
                    self._count("listen-dropped")
                    self._dropped_listen = True
                    blind.add(protocol)
            elif kind:
                key = _KEY.pack(protocol, lport, rport) + _canonical(laddr) + _canonical(raddr)
                old = self._known.get(key)
                # inode 0 (not yet accepted, closed by its process, TIME_WAIT) is any inode
                if old is not None and (not inode or old >> 3 in (0, inode)):
                    known[key] = (inode or old >> 3) << 3 | index
                else:
                    fresh.append((key, state, uid, inode, index, source))

    def _carry_over(
        self, index: int, known: dict[bytes, int], listen: dict[ListenKey, int]
    ) -> None:
        for key, value in self._known.items():
            if value & 7 == index:
                known[key] = value
        for lkey, entry in self._listen.items():
            if lkey[2] == index:
                listen[lkey] = entry["uid"]

    def _admit(self, known: dict[bytes, int], fresh: list[Fresh]) -> list[Fresh]:
        """Track fresh connections up to max_connections. The rest are neither tracked nor
        reported (reporting what cannot be remembered would repeat it every poll)."""
        room = max(self.max_connections - len(known), 0)
        if len(fresh) > room:
            self._count("table-full", len(fresh) - room)
            fresh = fresh[:room]
        for key, _state, _uid, inode, index, _source in fresh:
            known[key] = inode << 3 | index
        return fresh

    # --- owners ---------------------------------------------------------------------
    def _resolve(self, inodes: list[int]) -> None:
        """Find the process of every socket inode not looked up before: one scan at most."""
        wanted = {inode for inode in inodes if inode and inode not in self._owners}
        if not wanted or not self.find_owners:
            return
        found, _examined, complete = proc_net.socket_owners(self.proc, wanted, MAX_SCAN_FDS)
        self._count("owner-scans")
        if not complete:
            self._count("owner-scan-incomplete")
        executables: dict[int, str | None] = {}
        for inode in wanted:
            pid = found.get(inode)
            if pid is None:  # closed since the dump, or a process we may not read
                self._count("owner-unknown")
                self._owners[inode] = (None, None)
                continue
            if pid not in executables:
                executables[pid] = proc_net.executable(self.proc, pid)
            self._owners[inode] = (pid, executables[pid])

    def _owner(self, inode: int) -> Owner:
        return self._owners.get(inode, (None, None)) if inode else (None, None)

    # --- events -----------------------------------------------------------------------
    def _connection(
        self,
        key: bytes,
        state: int,
        uid: int,
        inode: int,
        source: str,
        listening: dict[tuple[int, int], list[bytes]],
        blind: set[int],
    ) -> dict[str, Any]:
        protocol, lport, rport, laddr, raddr = _addresses(key)
        pid, executable = self._owner(inode)
        if not inode:
            self._count("orphaned")  # no process holds it any more (or not yet)
        return {
            "event": "connection",
            "direction": _direction(protocol, state, lport, laddr, listening, blind),
            "protocol": PROTOCOLS[protocol],
            "family": 4 if len(laddr) == 4 else 6,
            "local_address": inet.ntop(laddr),
            "local_port": lport,
            "remote_address": inet.ntop(raddr),
            "remote_port": rport,
            "state": _state_name(protocol, state),
            "pid": pid,
            "executable": executable,
            "uid": uid if inode else None,  # the kernel reports 0 for a socket without file
            "backend": source,
        }

    @staticmethod
    def _listening(listen: dict[ListenKey, int]) -> dict[tuple[int, int], list[bytes]]:
        """(protocol, port) -> the local addresses listening on it."""
        out: dict[tuple[int, int], list[bytes]] = {}
        for packed, _inode, _index in listen:
            protocol, port, _zero = _KEY.unpack_from(packed)
            out.setdefault((protocol, port), []).append(packed[_KEY.size :])
        return out

    def _snapshot(
        self, listen: dict[ListenKey, int], new: dict[ListenKey, int], truncated: bool, now: float
    ) -> None:
        """Emit the listen snapshot at the first look and whenever its set changed."""
        if not self._first and not new and listen.keys() == self._listen.keys():
            return
        entries = {
            k: self._listen.get(k) or self._listen_entry(k, uid) for k, uid in listen.items()
        }
        removed = [entry for k, entry in self._listen.items() if k not in listen]
        payload = {
            "event": "listen",
            "sockets": _sorted(entries.values()),
            "added": _sorted(entries[k] for k in new),
            "removed": _sorted(removed),
            "truncated": truncated,
        }
        self._listen = entries
        self.ctx.emit(Record("event", payload, now))

    def _listen_entry(self, lkey: ListenKey, uid: int) -> dict[str, Any]:
        packed, inode, _index = lkey
        protocol, port, _zero = _KEY.unpack_from(packed)
        address = packed[_KEY.size :]
        pid, executable = self._owner(inode)
        return {
            "protocol": PROTOCOLS[protocol],
            "family": 4 if len(address) == 4 else 6,
            "address": inet.ntop(address),
            "port": port,
            "pid": pid,
            "executable": executable,
            "uid": uid,
        }


def _sorted(entries: Any) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: (e["protocol"], e["port"], e["family"], e["address"]))


def _direction(
    protocol: int,
    state: int,
    lport: int,
    laddr: bytes,
    listening: dict[tuple[int, int], list[bytes]],
    blind: set[int],
) -> str:
    """Which way: "in" when the local port is one this host listens on (at that address or all),
    "out" otherwise, "unknown" when this look could not read every listener."""
    if protocol == TCP and state == SYN_SENT:
        return "out"
    if protocol == TCP and state in (SYN_RECV, NEW_SYN_RECV):
        return "in"
    for address in listening.get((protocol, lport), ()):
        if address == laddr or not any(address):
            return "in"
    return "unknown" if protocol in blind else "out"


def _effective_capabilities(proc: str) -> int:
    try:
        with open(f"{proc}/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> NetworkCollector:
    return NetworkCollector(ctx, section)


def describe(section: dict[str, Any]) -> list[str]:
    _sources, words = choose_sources(str(section["backend"]))
    first = "reported" if section["report_existing"] else "a silent baseline"
    lines = [
        f"backend: {words}; every {section['poll_interval']:g} s",
        f"connections open at start: {first}; a listen snapshot at start and on change",
    ]
    caps = _effective_capabilities(str(section["proc"]))
    missing = [name for name, bit in OWNER_CAPABILITIES.items() if not caps >> bit & 1]
    if not section["owners"]:
        lines.append("owners: off (pid and executable null)")
    elif not missing:
        lines.append("owners: /proc/*/fd scan; every process's sockets are readable")
    else:
        lines.append(
            f"owners: /proc/*/fd scan; without {' and '.join(missing)} only uid "
            f"{os.geteuid()}'s processes are readable: other sockets get pid and executable null"
        )
    return lines
