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

Two event sources close the gaps between polls, each used when the kernel allows it
(`conntrack`, `connection_attempts`: auto, on, off) and imported only then:

- conntrack events (linux/conntrack.py, CAP_NET_ADMIN): each new TCP or UDP flow of
  this host as the kernel starts tracking it, however short. One of the host's own ends
  (the original source: `out`; the reply's source, the end that answers: `in`, only when
  something listens there) becomes a `connection` event under the same key as the poll's,
  in the same table: whichever sees a connection first reports it, the other knows it.
  Its owner is looked up at once (one sock_diag lookup of that socket, then the /proc
  scan), so a connection gone before the next poll still names its program.
- connection attempts (linux/packet.py, CAP_NET_RAW): every inbound TCP SYN to one of
  the host's addresses on a port nothing listens on, as a `connection-attempt` event:
  what a port scan against the device leaves, and what no socket table shows.

When to look: every `poll_interval` (5 s) when nothing tells of new connections. When
something does, a look follows each opening after ACTIVITY_DELAY (so the connection and
its program are found while both exist), never sooner than `poll_interval` after the
previous look, and a quiet device is looked at every `idle_poll_interval` (60 s) only:
on a slow core a look costs ~10 ms (sock_diag walks the kernel's whole TCP hash in every
dump), which every 5 s was most of an idle agent's CPU. The announcements are the
capture's SYNs (inbound connections, listening port or not) and SYN-ACKs (the answer to
an outbound connect()), and conntrack's NEW events once any has come (before that, no
firewall rule may be making the kernel track anything). A look that finds a connection
no announcement led to (a UDP socket, a SYN the capture lost), or a source that lost
events, keeps the next one at `poll_interval`.

Both must know which addresses are the host's (linux/ifaddr.py: forwarded traffic is
not the host's) and which ports listen: the last poll's listeners, and for a port not
listening then one fresh sock_diag dump of listeners at most once a second, so a
listener that appeared since the poll is not taken for a closed port.
"""

from __future__ import annotations

import errno
import os
import struct
from collections import OrderedDict

from defender_agent import log as _log
from defender_agent.linux import inet, inet_diag, proc_net
from defender_agent.model import Record

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from defender_agent.linux.conntrack import Flow, Subscription
    from defender_agent.linux.inet_diag import Row
    from defender_agent.linux.packet import Capture
    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

    Table = Optional[tuple[list[Row], str, bool]]  # rows, source, complete; None: unreadable
    ListenKey = tuple[bytes, int, int]  # packed protocol, port, address; inode; table
    Owner = tuple[Optional[int], Optional[str]]
    Fresh = tuple[bytes, int, int, int, int, str]  # key, state, uid, inode, table, source
    Ports = dict[tuple[int, int], list[bytes]]  # (protocol, port) -> listening addresses
    End = tuple[bytes, str, int]  # key, direction, table index

log = _log.get(__name__)

NAME = "network"
MAX_SCAN_FDS = 65536  # descriptors one owner scan reads at most
MAX_PER_TURN = 256  # conntrack messages or packets read per loop turn; the rest wait
MAX_LOOKUPS_PER_TURN = 64  # sock_diag lookups of conntrack flows' sockets per loop turn
OWNER_SCAN_GAP = 0.25  # seconds between owner scans for conntrack flows
FRESH_CHECK = 1.0  # seconds between fresh looks at listeners, and at the host's addresses
ACTIVITY_DELAY = 0.5  # seconds from an announced opening to the look that finds it
MAX_RECENT_ATTEMPTS = 1024  # (remote, local) pairs whose SYN was reported lately
REPEAT_WINDOW = 60.0  # seconds a repeated SYN (a retransmission) is one attempt
MAX_INTERFACES = 256  # interface name -> index
CT_TIME_SKEW = 3600.0  # a conntrack timestamp further than this from the clock is not used
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
TABLE_INDEX = {(4, TCP): 0, (6, TCP): 1, (4, UDP): 2, (6, UDP): 3}  # (family, protocol)
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
        self.idle_interval = max(self.interval, float(section["idle_poll_interval"]))
        self.backend = str(section["backend"])
        self.report_existing = bool(section["report_existing"])
        self.find_owners = bool(section["owners"])
        self.max_connections = int(section["max_connections"])
        self.max_listen = int(section["max_listen"])
        self.proc = str(section["proc"]).rstrip("/") or "/"
        self.conntrack = str(section["conntrack"])
        self.attempts = str(section["connection_attempts"])
        self.attempt_rate = float(section["attempt_rate"])
        self.sources: dict[str, str] = {}  # table -> "sock_diag" | "proc", chosen at start
        self.counts: dict[str, int] = {}
        self._known: dict[bytes, int] = {}  # connection key -> inode << 3 | table index
        self._listen: dict[ListenKey, dict[str, Any]] = {}  # -> its entry in the snapshot
        self._owners: dict[int, Owner] = {}  # inode -> (pid, executable), live sockets only
        self._first = True
        self._dropped_listen = False  # this look had more listeners than max_listen
        self._timer: Timer | None = None
        self._polled = float("-inf")  # monotonic time of the last look
        self._busy = True  # the last look found what no announcement led to, or events were lost
        self._ct_heard = False  # a conntrack event came: the kernel tracks connections here
        # the event sources
        self.conntrack_words = "off (conntrack = off)"
        self.attempts_words = "off (connection_attempts = off)"
        self._ct: Subscription | None = None
        self._capture: Capture | None = None
        self._ended: set[bytes] = set()  # known keys whose conntrack flow was destroyed
        self._ports: Ports = {}  # the last poll's listeners
        self._fresh: dict[int, tuple[float, Ports]] = {}  # protocol -> (when, listeners)
        self._local: set[bytes] = set()  # the host's addresses
        self._local_checked = -FRESH_CHECK
        self._owner_scanned = -OWNER_SCAN_GAP
        self._tokens = self.attempt_rate
        self._tokens_at = 0.0
        self._recent: OrderedDict[bytes, float] = OrderedDict()  # SYN 4-tuple -> when
        self._ifindex: dict[str, int] = {}

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        self.sources, words = choose_sources(self.backend)
        log.info("network collector: %s, every %g s", words, self.interval)
        if self.conntrack != "off":
            self._start_conntrack()
        if self.attempts != "off":
            self._start_attempts()
        self._timer = self.ctx.call_later(0.0, self._timed_poll)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ct is not None:
            self.ctx.remove_reader(self._ct.fileno())
            self._ct.close()
            self._ct = None
        if self._capture is not None:
            for fd in self._capture.filenos():
                self.ctx.remove_reader(fd)
            self._capture.close()
            self._capture = None

    def save_state(self) -> dict[str, Any]:
        return {}  # sockets do not outlive a reboot, and a restart takes a new baseline

    def statistics(self) -> dict[str, int]:
        out = dict(self.counts)
        out["tracked"] = len(self._known)
        out["listening"] = len(self._listen)
        return out

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    # --- when to look ---------------------------------------------------------------
    def _timed_poll(self) -> None:
        self._timer = None
        self.poll()
        self._count("polls")
        announced = self._capture is not None or (self._ct is not None and self._ct_heard)
        quiet = announced and not self._busy
        if quiet:
            self._count("idle-polls-next")
        self._timer = self.ctx.call_later(
            self.idle_interval if quiet else self.interval, self._timed_poll
        )

    def _announced(self) -> None:
        """A connection opened (a SYN, a SYN-ACK, a conntrack flow): bring the next look
        forward to ACTIVITY_DELAY from now, but not closer than poll_interval to the last."""
        timer = self._timer
        if timer is None:
            return
        now = self.ctx.clock.monotonic()
        at = max(now + ACTIVITY_DELAY, self._polled + self.interval)
        if at < timer.deadline:
            timer.cancel()
            self._timer = self.ctx.call_later(at - now, self._timed_poll)

    def _lost_events(self) -> None:
        """A source lost events: the next looks come every poll_interval again."""
        self._busy = True
        self._announced()

    # --- one look -------------------------------------------------------------------
    def poll(self) -> None:
        now = self.ctx.clock.time()
        self._polled = self.ctx.clock.monotonic()
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
        self._busy = bool(report) and not self._first
        self._snapshot(listen, new_listen, bool(cut) or self._dropped_listen, now)
        self._known = known
        self._ended = {key for key in self._ended if key in known}
        self._ports = listening
        if self._capture is not None:
            self._count_drops()
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

    # --- what the host is, and what listens ---------------------------------------
    def _is_local(self, address: bytes) -> bool:
        """One of the host's addresses; an address not known as one is looked up again,
        at most once a second (an address added since: DHCP, a new interface)."""
        from defender_agent.linux import ifaddr

        if ifaddr.is_local(address, self._local):
            return True
        now = self.ctx.clock.monotonic()
        if now - self._local_checked < FRESH_CHECK:
            return False
        self._local_checked = now
        try:
            self._local = ifaddr.local_addresses()
        except (OSError, ValueError):
            self._count("address-list-error")
            return False
        self._count("address-list-reads")
        return ifaddr.is_local(address, self._local)

    def _is_listening(self, protocol: int, port: int, address: bytes) -> bool:
        """Something listens on (protocol, port) at `address` or every address: by the
        last poll, else by a fresh dump of the protocol's listeners (one a second)."""
        if _listens(self._ports, protocol, port, address):
            return True
        now = self.ctx.clock.monotonic()
        when, fresh = self._fresh.get(protocol, (-FRESH_CHECK, {}))
        if now - when >= FRESH_CHECK:
            fresh = self._listeners_now(protocol)
            self._fresh[protocol] = (now, fresh)
        return _listens(fresh, protocol, port, address)

    def _listeners_now(self, protocol: int) -> Ports:
        """The protocol's listening sockets now: sock_diag dumps of listening states only,
        or the /proc/net tables where sock_diag is not used."""
        self._count("listen-fresh-checks")
        states = 1 << LISTEN if protocol == TCP else 1 << CLOSE
        out: Ports = {}
        for name, family, proto in TABLES:
            if proto != protocol:
                continue
            rows: list[Row] | None = None
            if self.sources.get(name) == "sock_diag":
                try:
                    rows, _complete = inet_diag.dump(family, protocol, self.max_listen, states)
                except (OSError, inet_diag.DiagError):
                    self._count("listen-fresh-check-error")
            if rows is None:
                table = self._read_proc(name, self.max_connections + self.max_listen)
                rows = table[0] if table else []
            for _family, state, laddr, lport, _raddr, _rport, _uid, _inode in rows:
                if _kind(protocol, state, lport) == "listen":
                    out.setdefault((protocol, lport), []).append(_canonical(laddr))
        return out

    # --- conntrack ------------------------------------------------------------------
    def _start_conntrack(self) -> None:
        from defender_agent.linux import conntrack

        sub, why = conntrack.subscribe()
        if sub is None:
            self.conntrack_words = f"unavailable ({why})"
            if self.conntrack == "on":
                self._count("conntrack-unavailable")
                log.error("network collector: conntrack events unavailable (%s)", why)
            else:
                log.info("network collector: no conntrack events (%s)", why)
            return
        self._ct = sub
        self.conntrack_words = f"subscribed ({why})"
        self.ctx.add_reader(sub.fileno(), self._on_conntrack)
        log.info("network collector: conntrack events (%s)", why)

    def _on_conntrack(self) -> None:
        """Read what waits, up to MAX_PER_TURN messages: the rest stays in the kernel's
        bounded buffer (and overflows there, counted) rather than in the agent's memory."""
        from defender_agent.linux import conntrack

        sub = self._ct
        if sub is None:
            return
        flows: list[Flow] = []
        for _ in range(MAX_PER_TURN):
            try:
                data = sub.recv()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._count("conntrack-overrun")  # the kernel dropped events for us
                self._lost_events()
                continue
            flows.extend(conntrack.parse(data, self.counts))
        else:
            self._count("conntrack-busy-turns")
        self.feed_flows(flows)

    def feed_flows(self, flows: list[Flow]) -> None:
        """Conntrack events, in the kernel's order (tests feed captured ones)."""
        now = self.ctx.clock.time()
        fresh: list[tuple[bytes, str, str, int, int, float]] = []
        lookups = MAX_LOOKUPS_PER_TURN
        for flow in flows:
            self._count("conntrack-new" if flow.new else "conntrack-destroy")
            self._ct_heard = True
            if flow.protocol not in (TCP, UDP):
                self._count("conntrack-other-protocol")
                continue
            for key, direction, index in self._ends(flow):
                if not flow.new:
                    if key in self._known:
                        self._ended.add(key)
                    continue
                old = self._known.get(key)
                if old is not None and key not in self._ended:
                    self._count("conntrack-known")  # a poll (or an earlier flow) saw it
                    continue
                if old is None and len(self._known) >= self.max_connections:
                    self._count("table-full")
                    continue
                uid, inode = 0, 0
                if lookups > 0:
                    lookups -= 1
                    uid, inode = self._socket_of(key)
                elif self.find_owners:
                    self._count("owner-lookup-skipped")
                if old is not None and old >> 3 and old >> 3 == inode:
                    self._count("conntrack-same-socket")  # its flow timed out, not it
                    continue
                self._known[key] = inode << 3 | index
                self._ended.discard(key)
                state = _flow_state(flow, direction)
                fresh.append((key, direction, state, uid, inode, self._flow_time(flow, now)))
        if not fresh:
            return
        inodes = [inode for _k, _d, _s, _u, inode, _t in fresh if inode not in self._owners]
        if self.find_owners and any(inodes):
            clock = self.ctx.clock.monotonic()
            if clock - self._owner_scanned >= OWNER_SCAN_GAP:
                self._owner_scanned = clock
                self._resolve(inodes)
            else:
                self._count("owner-scan-deferred")  # scans are at most 4 a second
        for key, direction, state, uid, inode, when in fresh:
            payload = self._payload(key, direction, state, uid, inode, "conntrack")
            self.ctx.emit(Record("event", payload, when))

    def _ends(self, flow: Flow) -> list[End]:
        """The host's ends of a flow, as (key, direction, table index): the original
        source when it is the host's (out), the reply's source (the end that answers,
        after any DNAT) when it is the host's and something listens there (in). A flow
        from the host to itself has both, as the poll sees both sockets."""
        ends = []
        family = 4 if len(flow.orig[0]) == 4 else 6
        index = TABLE_INDEX[(family, flow.protocol)]
        src, sport, dst, dport = flow.orig
        rsrc, rsport, rdst, rdport = flow.reply
        out, into = self._is_local(src), self._is_local(rsrc)
        if out:
            key = _KEY.pack(flow.protocol, sport, dport) + src + dst
            ends.append((key, "out", index))
        if into and flow.new and not self._is_listening(flow.protocol, rsport, rsrc):
            self._count("conntrack-closed-port")  # an attempt: not a connection
        elif into:
            key = _KEY.pack(flow.protocol, rsport, rdport) + rsrc + rdst
            ends.append((key, "in", index))
        if not out and not into:
            self._count("conntrack-not-local")  # forwarded: not this host's
        return ends

    def _socket_of(self, key: bytes) -> tuple[int, int]:
        """(uid, inode) of the socket behind a connection key: one sock_diag lookup.
        (0, 0) when it has none (closed already, not accepted yet) or cannot be asked."""
        if not self.find_owners:
            return 0, 0
        protocol, lport, rport, laddr, raddr = _addresses(key)
        family = inet_diag.AF_INET if len(laddr) == 4 else inet_diag.AF_INET6
        try:
            row = inet_diag.lookup(family, protocol, laddr, lport, raddr, rport)
        except (OSError, inet_diag.DiagError):
            self._count("owner-lookup-error")
            return 0, 0
        self._count("owner-lookups")
        if row is None:
            return 0, 0
        _family, _state, rladdr, rlport, rraddr, rrport, uid, inode = row
        if rlport != lport or _canonical(rladdr) not in (laddr, bytes(len(rladdr))):
            return 0, 0
        # a UDP flow of an unconnected socket: the bound socket (no remote end) receives it
        unconnected = protocol == UDP and not rrport and not any(rraddr)
        if (rrport, _canonical(rraddr)) != (rport, raddr) and not unconnected:
            return 0, 0
        return uid, inode

    def _flow_time(self, flow: Flow, now: float) -> float:
        """When the kernel raised the NEW event (the flow's first packet, confirmed): its
        stamp when it sends one (net.netfilter.nf_conntrack_timestamp = 1, Linux 6.1+)
        and it is within an hour of the agent's clock, else the clock at read."""
        stamp = flow.event or flow.start
        if stamp and abs(stamp / 1e9 - now) <= CT_TIME_SKEW:
            return stamp / 1e9
        return now

    # --- connection attempts ----------------------------------------------------------
    def _start_attempts(self) -> None:
        from defender_agent.linux import packet

        capture, why = packet.open_capture()
        if capture is None:
            self.attempts_words = f"unavailable ({why})"
            if self.attempts == "on":
                self._count("attempts-unavailable")
                log.error("network collector: connection attempts unavailable (%s)", why)
            else:
                log.info("network collector: no connection attempts (%s)", why)
            return
        self._capture = capture
        self.attempts_words = f"{why}, at most {self.attempt_rate:g} events/s"
        self._tokens_at = self.ctx.clock.monotonic()
        for sock in capture.sockets:
            self.ctx.add_reader(int(sock.fileno()), self._reader(sock))
        log.info("network collector: connection attempts (%s)", why)

    def _count_drops(self) -> None:
        from defender_agent.linux import packet

        assert self._capture is not None
        lost = sum(packet.drops(sock) for sock in self._capture.sockets)
        if lost:
            self._count("packet-kernel-drops", lost)  # the sockets' buffers were full
            self._busy = True

    def _reader(self, sock: Any) -> Callable[[], None]:
        return lambda: self._on_packets(sock)

    def _on_packets(self, sock: Any) -> None:
        from defender_agent.linux import packet

        for _ in range(MAX_PER_TURN):
            try:
                data, interface, kind = packet.receive(sock)
            except BlockingIOError:
                return
            self.feed_packet(data, interface, kind)
        self._count("packet-busy-turns")

    def feed_packet(self, data: bytes, interface: str, kind: int) -> None:
        """One packet from a SYN-filtered packet socket (tests feed captured ones)."""
        from defender_agent.linux import packet

        if kind != packet.PACKET_HOST:
            # sent by this host, or under promiscuous mode for another one
            self._count(f"packet-{packet.PACKET_TYPES.get(kind, 'other')}")
            return
        syn = packet.parse(data)
        if syn is None:
            self._count("packet-malformed")
            return
        _family, source, sport, destination, dport, answer = syn
        source, destination = _canonical(source), _canonical(destination)
        if not self._is_local(destination):
            self._count("attempt-not-local")  # routed through the host
            return
        if answer:
            self._count("syn-ack")  # an outbound connection of this host is answered
            self._announced()
            return
        if self._is_listening(TCP, dport, destination):
            self._count("syn-to-listener")
            self._announced()
            return
        if self._repeated(_KEY.pack(TCP, dport, sport) + destination + source):
            self._count("attempt-repeated")  # a retransmitted SYN: the same attempt
            return
        if not self._take_token():
            self._count("attempt-rate-limited")
            return
        payload = {
            "event": "connection-attempt",
            "protocol": "tcp",
            "family": 4 if len(destination) == 4 else 6,
            "remote_address": inet.ntop(source),
            "remote_port": sport,
            "local_address": inet.ntop(destination),
            "local_port": dport,
            "interface": interface,
            "interface_index": self._interface_index(interface),
        }
        self.ctx.emit(Record("event", payload, self.ctx.clock.time()))

    def _repeated(self, key: bytes) -> bool:
        now = self.ctx.clock.monotonic()
        last = self._recent.pop(key, None)
        self._recent[key] = now
        if len(self._recent) > MAX_RECENT_ATTEMPTS:
            self._recent.popitem(last=False)
        return last is not None and now - last < REPEAT_WINDOW

    def _take_token(self) -> bool:
        """A token bucket: attempt_rate events a second, bursts of as many."""
        now = self.ctx.clock.monotonic()
        rate = self.attempt_rate
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _interface_index(self, name: str) -> int | None:
        index = self._ifindex.get(name)
        if index is None:
            import _socket

            try:
                index = int(_socket.if_nametoindex(name))
            except OSError:
                return None  # gone since (a short-lived interface)
            if len(self._ifindex) >= MAX_INTERFACES:
                self._ifindex.clear()
            self._ifindex[name] = index
        return index

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
        protocol, lport, _rport, laddr, _raddr = _addresses(key)
        direction = _direction(protocol, state, lport, laddr, listening, blind)
        return self._payload(key, direction, _state_name(protocol, state), uid, inode, source)

    def _payload(
        self, key: bytes, direction: str, state: str, uid: int, inode: int, source: str
    ) -> dict[str, Any]:
        protocol, lport, rport, laddr, raddr = _addresses(key)
        pid, executable = self._owner(inode)
        if not inode:
            self._count("orphaned")  # no process holds it any more (or not yet)
        return {
            "event": "connection",
            "direction": direction,
            "protocol": PROTOCOLS[protocol],
            "family": 4 if len(laddr) == 4 else 6,
            "local_address": inet.ntop(laddr),
            "local_port": lport,
            "remote_address": inet.ntop(raddr),
            "remote_port": rport,
            "state": state,
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


def _listens(ports: Ports, protocol: int, port: int, address: bytes) -> bool:
    """`address` or a wildcard of its family listens on the port (an IPv6 wildcard also
    takes IPv4, as a dual-stack socket does)."""
    for listening in ports.get((protocol, port), ()):
        if listening == address or (not any(listening) and len(listening) >= len(address)):
            return True
    return False


def _flow_state(flow: Flow, direction: str) -> str:
    """A conntrack flow's state as the host's end sees it: a TCP flow's first packet is
    the SYN it sent (out) or received (in); conntrack picks up a connection in the middle
    (after a flush, or one older than the rule) as established. UDP has no state: `new`."""
    if flow.protocol == UDP:
        return "new"
    if flow.state in (0, 1):  # TCP_CONNTRACK_NONE, _SYN_SENT
        return "syn-sent" if direction == "out" else "syn-recv"
    return "established"


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
        f"backend: {words}; every {section['poll_interval']:g} s, every "
        f"{max(section['poll_interval'], section['idle_poll_interval']):g} s while quiet "
        "when SYN capture or conntrack announces new connections",
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
    lines.append(f"conntrack: {_describe_conntrack(section)}")
    lines.append(f"connection attempts: {_describe_attempts(section)}")
    return lines


def _describe_conntrack(section: dict[str, Any]) -> str:
    """What conntrack events would give here: the kernel is asked (and the socket closed)."""
    if section["conntrack"] == "off":
        return "off (conntrack = off): connections between two looks are seen if one end lingers"
    from defender_agent.linux import conntrack

    sub, why = conntrack.subscribe()
    if sub is None:
        word = "UNAVAILABLE" if section["conntrack"] == "on" else "unavailable"
        return f"{word} ({why}): connections between two looks are seen if one end lingers"
    sub.close()
    scope = "this network namespace only"
    if conntrack.events_setting(str(section["proc"])) == "0":
        return "subscribed, but net.netfilter.nf_conntrack_events = 0: the kernel sends none"
    if why.startswith("0 "):
        return (
            f"subscribed ({scope}); nothing is tracked now: events come only while a firewall "
            "rule or NAT uses conntrack (an nftables or iptables rule with ct state)"
        )
    return f"subscribed ({why}; {scope})"


def _describe_attempts(section: dict[str, Any]) -> str:
    if section["connection_attempts"] == "off":
        return "off (connection_attempts = off): SYNs to closed ports are not seen"
    from defender_agent.linux import packet

    capture, why = packet.open_capture()
    if capture is None:
        word = "UNAVAILABLE" if section["connection_attempts"] == "on" else "unavailable"
        return f"{word} ({why}): SYNs to closed ports are not seen"
    capture.close()
    return f"{why} on every interface, at most {section['attempt_rate']:g} events/s"
