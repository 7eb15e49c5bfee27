"""The process connector: fork, exec and exit events from the kernel over netlink.

A NETLINK_CONNECTOR socket bound to the CN_IDX_PROC group receives one `proc_event` per
fork, exec, exit (and uid, gid, sid, comm, ptrace, coredump change) of every process,
once someone asked the kernel for them with PROC_CN_MCAST_LISTEN. The socket comes from
the C module `_socket`: socket.py converts its constants to enums at import, which costs
~1.5 MiB of RSS for the agent's whole life; `_socket` alone costs ~0.17 MiB (measured on
CPython 3.11; sysinfo loads it anyway).

Who may listen: Linux 6.6 and later let anyone in the initial user and PID namespaces
bind to CN_IDX_PROC (commit bfdfdc2f3b70); older kernels refuse the bind with EPERM
without CAP_NET_ADMIN. The connector exists only in the initial network namespace
(elsewhere the LISTEN message is refused with ECONNREFUSED), and a listener outside the
initial PID namespace is ignored without an answer. The kernel handles LISTEN inside
send() and multicasts its acknowledgement before send() returns, so "no answer" is known
at once, without waiting.

Layouts (native byte order, no padding) from <linux/netlink.h>, <linux/connector.h> and
<linux/cn_proc.h>; a datagram is nlmsghdr + cn_msg + proc_event.
"""

from __future__ import annotations

import errno
import os
import struct

from defender_agent.linux.netlink import StepError, grow_buffer, open_socket

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

SOCK_DGRAM = 2
NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1  # <linux/connector.h>: the process events' id and multicast group
CN_VAL_PROC = 1
NLMSG_DONE = 3  # the type the connector gives every message it sends
PROC_CN_MCAST_LISTEN = 1  # enum proc_cn_mcast_op
PROC_CN_MCAST_IGNORE = 2

# enum what (struct proc_event)
PROC_EVENT_NONE = 0x00000000  # an acknowledgement of LISTEN/IGNORE; carries an errno
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

NLMSGHDR = struct.Struct("=IHHII")  # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
CN_MSG = struct.Struct("=IIIIHH")  # id.idx, id.val, seq, ack, len, flags; then len bytes
EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns (CLOCK_MONOTONIC); then the union
ACK = struct.Struct("=I")  # event_data.ack: err
FORK = struct.Struct("=iiii")  # parent_pid, parent_tgid, child_pid, child_tgid
EXEC = struct.Struct("=ii")  # process_pid, process_tgid
EXIT = struct.Struct("=iiII")  # process_pid, process_tgid, exit_code, exit_signal
_HEADERS = NLMSGHDR.size + CN_MSG.size

# Asked for. Each event takes ~768 bytes of the buffer (the skb around its 96), so
# rmem_max's usual 208 KiB (416 KiB granted) holds ~550 events: a 2-vCPU guest spawning
# 50 processes/s overflowed it while the agent waited for a CPU. 4 MiB (8 granted) holds
# ~10,000; kernel memory used only while events wait, never the agent's RSS.
RCVBUF = 4 << 20


class ProcEvent:
    """One proc_event. `pid`/`tgid` are the process (the child, for a fork); `seq` is the
    kernel's per-CPU counter, so a gap on one CPU is events lost to a full buffer."""

    __slots__ = ("ack", "code", "cpu", "parent", "pid", "seq", "signal", "tgid", "what")

    def __init__(self, what: int, cpu: int, seq: int, ack: int) -> None:
        self.what = what
        self.cpu = cpu
        self.seq = seq
        self.ack = ack
        self.pid = self.tgid = self.parent = 0
        self.code = 0  # EXIT: the wait status (exit code << 8 | signal); NONE: the errno
        self.signal = 0  # EXIT: the signal sent to the parent (SIGCHLD)

    def __repr__(self) -> str:
        return (
            f"ProcEvent(what={self.what:#x}, cpu={self.cpu}, seq={self.seq}, pid={self.pid}, "
            f"tgid={self.tgid}, parent={self.parent}, code={self.code}, signal={self.signal})"
        )


def message(op: int, ack: int = 0) -> bytes:
    """A PROC_CN_MCAST_LISTEN/IGNORE request; the kernel answers with `ack` + 1."""
    body = struct.pack("=I", op)
    cn = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, ack, len(body), 0) + body
    return NLMSGHDR.pack(NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn


def parse(data: bytes, counts: dict[str, int]) -> list[ProcEvent]:
    """The proc events in one datagram; anything else is skipped and counted."""
    events = []
    pos = 0
    while pos + _HEADERS <= len(data):
        length, kind = NLMSGHDR.unpack_from(data, pos)[:2]
        if length < _HEADERS or pos + length > len(data):
            _count(counts, "netlink-malformed")
            break
        event = _parse_one(data[pos + NLMSGHDR.size : pos + length]) if kind == NLMSG_DONE else None
        if event is None:
            _count(counts, "netlink-malformed")
        else:
            events.append(event)
        pos += (length + 3) & ~3  # NLMSG_ALIGN
    return events


def _parse_one(cn: bytes) -> ProcEvent | None:
    idx, val, seq, ack, size, _flags = CN_MSG.unpack_from(cn, 0)
    body = cn[CN_MSG.size : CN_MSG.size + size]
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) or len(body) < EVENT.size:
        return None
    what, cpu, _ns = EVENT.unpack_from(body, 0)
    event = ProcEvent(what, cpu, seq, ack)
    data = body[EVENT.size :]
    try:
        if what == PROC_EVENT_EXEC:
            event.pid, event.tgid = EXEC.unpack_from(data, 0)
        elif what == PROC_EVENT_FORK:
            _ppid, event.parent, event.pid, event.tgid = FORK.unpack_from(data, 0)
        elif what == PROC_EVENT_EXIT:
            event.pid, event.tgid, event.code, event.signal = EXIT.unpack_from(data, 0)
        elif what == PROC_EVENT_NONE:
            event.code = ACK.unpack_from(data, 0)[0]
    except struct.error:  # shorter than its kind: not what the headers describe
        return None
    return event


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


class Connector:
    """A bound, non-blocking proc-connector socket; StepError from the step that failed
    (socket, bind, later send)."""

    def __init__(self) -> None:
        self.sock: Any = open_socket(SOCK_DGRAM, NETLINK_CONNECTOR, CN_IDX_PROC)
        self.rcvbuf = grow_buffer(self.sock, RCVBUF)  # room for a burst of forks

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def send(self, op: int, ack: int) -> None:
        try:
            self.sock.send(message(op, ack))
        except OSError as exc:
            raise StepError("send", exc) from None

    def recv(self) -> bytes:
        """One datagram; BlockingIOError when none waits, OSError(ENOBUFS) after an overrun."""
        return bytes(self.sock.recv(8192))

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            try:  # kernels before 6.6 count listeners only through LISTEN/IGNORE
                self.send(PROC_CN_MCAST_IGNORE, 0)
            except OSError:
                pass
            self.sock.close()


def listen(counts: dict[str, int], retries: int = 3) -> tuple[Connector | None, str]:
    """A connector whose LISTEN the kernel acknowledged, or None and why not.

    Messages queued before the acknowledgement are events from before this agent listened
    (another listener had them sent): dropped and counted as `netlink-before-listen`.
    """
    try:
        conn = Connector()
    except StepError as exc:
        return None, _why(exc.step, exc)
    token = os.getpid() & 0x7FFFFFFF  # the kernel answers ack + 1: ours among all listeners'
    try:
        for _attempt in range(retries):
            conn.send(PROC_CN_MCAST_LISTEN, token)
            answer = _await_ack(conn, token + 1, counts)
            if answer is None:
                continue  # an overrun dropped the answer: ask again
            if answer == -1:
                break
            if answer:
                conn.close()
                return None, f"{errno.errorcode.get(answer, answer)} from the kernel"
            return conn, "the kernel acknowledged PROC_CN_MCAST_LISTEN"
    except OSError as exc:
        conn.close()
        return None, _why(getattr(exc, "step", "recv"), exc)
    conn.close()
    return None, (
        "no answer to PROC_CN_MCAST_LISTEN (a kernel without CONFIG_PROC_EVENTS, "
        "or an agent outside the initial PID namespace)"
    )


def _await_ack(conn: Connector, token: int, counts: dict[str, int]) -> int | None:
    """The errno of our acknowledgement (0: listening); -1 when none is queued, None when
    an overrun may have dropped it."""
    for _ in range(4096):  # at most a full receive buffer of events before it
        try:
            data = conn.recv()
        except BlockingIOError:
            return -1
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                _count(counts, "netlink-overrun")
                return None
            raise
        for event in parse(data, counts):
            if event.what == PROC_EVENT_NONE and event.ack == token:
                return event.code
            _count(counts, "netlink-before-listen")
    return None


def _why(step: str, exc: OSError) -> str:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    if step == "socket" and code == errno.EPROTONOSUPPORT:
        return f"{name}: no NETLINK_CONNECTOR in this kernel (CONFIG_CONNECTOR off)"
    if step == "socket" and code == errno.EAFNOSUPPORT:
        return f"{name}: no AF_NETLINK sockets here (RestrictAddressFamilies, or CONFIG_NET off)"
    if step == "bind" and code == errno.EPERM:
        return f"{name} on bind: CAP_NET_ADMIN is needed before Linux 6.6"
    if step == "send" and code == errno.ECONNREFUSED:
        return f"{name}: the connector lives in the initial network namespace only"
    return f"{name} on {step}: {os.strerror(code)}"
