"""sock_diag (NETLINK_SOCK_DIAG): the kernel's TCP and UDP socket tables, in binary.

One request per (address family, protocol) asks for every socket in every state; the
kernel answers with a multi-part netlink dump of `struct inet_diag_msg`, ended by
NLMSG_DONE. Dumps need no capability (ss(8) works as any user) and, unlike
/proc/net/tcp, cost the kernel no text formatting. Each dump gets its own socket, closed
when it ends: a dump that breaks halfway leaves nothing behind to drain. The socket comes
from the C module `_socket`, not `socket`: socket.py builds enums at import, which costs
~1.5 MiB of RSS for the agent's whole life.

Layouts (include/uapi/linux/netlink.h, sock_diag.h, inet_diag.h), native byte order
except where marked big-endian:

    struct nlmsghdr        { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }       16
    struct inet_diag_req_v2 { u8 family, protocol, ext, pad; u32 states;
                              struct inet_diag_sockid id; }                            56
    struct inet_diag_sockid { be16 sport, dport; be32 src[4], dst[4]; u32 if;
                              u32 cookie[2]; }                                         48
    struct inet_diag_msg   { u8 family, state, timer, retrans; struct inet_diag_sockid;
                             u32 expires, rqueue, wqueue, uid, inode; }                72

A kernel without the protocol's handler (CONFIG_INET_TCP_DIAG / CONFIG_INET_UDP_DIAG not
built, module not loadable) ends the dump with an NLMSG_DONE whose payload is -ENOENT;
other refusals come as NLMSG_ERROR. Both raise DiagError, as does anything malformed.

The same request without NLM_F_DUMP, its sockid filled in, asks for one socket by its
ends (lookup()): the answer is that socket's message, or NLMSG_ERROR -ENOENT. The
network collector uses it to find the socket, and so the program, behind a conntrack
flow while the socket still exists.

A row is (family, state, local address, local port, remote address, remote port, uid,
inode): addresses as 4 (AF_INET) or 16 (AF_INET6) bytes in network order, ports as
integers, the same row linux/proc_net.py reads from the text tables.
"""

from __future__ import annotations

import struct

from defender_agent.linux.netlink import open_socket

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    Row = tuple[int, int, bytes, int, bytes, int, int, int]

AF_INET, AF_INET6 = 2, 10
SOCK_RAW = 3
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
IPPROTO_TCP, IPPROTO_UDP = 6, 17
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
MSG_TRUNC = 0x20
ALL_STATES = 0xFFFFFFFF
# The kernel never makes one part of a dump larger than 32 KiB (netlink_recvmsg caps
# max_recvmsg_len there); MSG_TRUNC says if one was anyway.
RECV_SIZE = 32768

_HDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: an all-zero sockid matches every socket
_MSG = struct.Struct("=BB2x4s16s16s24xII")  # family, state, ports, src, dst, ..., uid, inode
_ERRNO = struct.Struct("=i")

_seq = 0


class DiagError(Exception):
    """A dump that did not complete. `reason` names it for the statistics (`error`: the
    kernel refused with `errno`; `bad-message`, `foreign-message`, `truncated`,
    `incomplete`: the answer could not be trusted)."""

    def __init__(self, reason: str, errno: int = 0) -> None:
        detail = f" (errno {errno})" if errno else ""
        super().__init__(f"sock_diag {reason}{detail}")
        self.reason = reason
        self.errno = errno


def request(family: int, protocol: int, seq: int, states: int = ALL_STATES) -> bytes:
    """SOCK_DIAG_BY_FAMILY dump request for every socket of (family, protocol) in `states`."""
    body = _REQ.pack(family, protocol, 0, states)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def parse(data: bytes, seq: int, rows: list[Row]) -> bool:
    """Append the sockets of one received buffer to `rows`; True when it ends the dump.

    Every length is checked against the buffer before it is used: a message that claims
    more than what is there, or less than its own header, ends the dump as `bad-message`.
    """
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _HDR.size:
            raise DiagError("bad-message")
        length, kind, _flags, msg_seq, _port = _HDR.unpack_from(data, offset)
        if length < _HDR.size or length > end - offset:
            raise DiagError("bad-message")
        if msg_seq != seq:
            raise DiagError("foreign-message")
        body = offset + _HDR.size
        if kind == SOCK_DIAG_BY_FAMILY:
            if length - _HDR.size < _MSG.size:
                raise DiagError("bad-message")
            rows.append(_row(data, body))
        elif kind in (NLMSG_DONE, NLMSG_ERROR):
            # DONE carries the dump's result, ERROR a refusal (0 would be an ACK)
            error = _ERRNO.unpack_from(data, body)[0] if length - _HDR.size >= 4 else 0
            if error:
                raise DiagError("error", -error)
            return True
        elif kind != NLMSG_NOOP:
            raise DiagError("bad-message")
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return False


def _row(data: bytes, offset: int) -> Row:
    family, state, ports, src, dst, uid, inode = _MSG.unpack_from(data, offset)
    if family == AF_INET:
        src, dst = src[:4], dst[:4]
    elif family != AF_INET6:
        raise DiagError("bad-message")
    lport = ports[0] << 8 | ports[1]  # big-endian on the wire
    rport = ports[2] << 8 | ports[3]
    return (family, state, src, lport, dst, rport, uid, inode)


def dump(
    family: int, protocol: int, limit: int, states: int = ALL_STATES
) -> tuple[list[Row], bool]:
    """The sockets of (family, protocol): (rows, complete). At `limit` rows the dump is
    abandoned (complete False). OSError when the socket cannot be had, DiagError when the
    kernel refuses or answers something that does not parse."""
    global _seq

    _seq = (_seq + 1) & 0xFFFFFFFF or 1
    # Non-blocking: the kernel queues each part of a dump before send/recv returns,
    # so an empty queue mid-dump is a broken dump, never a reason to wait.
    sock = open_socket(SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        sock.sendto(request(family, protocol, _seq, states), (0, 0))
        rows: list[Row] = []
        while True:
            try:
                data, _anc, flags, sender = sock.recvmsg(RECV_SIZE)
            except BlockingIOError:
                raise DiagError("incomplete") from None
            if flags & MSG_TRUNC:
                raise DiagError("truncated")
            if sender[0] != 0:  # only the kernel (port id 0) answers a dump
                raise DiagError("foreign-message")
            done = parse(data, _seq, rows)
            if len(rows) > limit or (len(rows) == limit and not done):
                return rows[:limit], False
            if done:
                return rows, True
    finally:
        sock.close()


def probe(protocols: tuple[int, ...] = (IPPROTO_TCP, IPPROTO_UDP)) -> dict[int, str]:
    """Which protocols sock_diag can dump here: {protocol: "" when it can, else why not}.
    An empty dump (no state asked for) is enough to find the handler or miss it."""
    out = {}
    for protocol in protocols:
        try:
            dump(AF_INET, protocol, 1, states=0)
            out[protocol] = ""
        except (OSError, DiagError) as exc:
            out[protocol] = str(exc) or type(exc).__name__
    return out


_ID = struct.Struct(">HH16s16s")  # inet_diag_sockid: sport, dport, src, dst (big-endian)
INET_DIAG_NOCOOKIE = b"\xff" * 8


def lookup_request(
    family: int, protocol: int, local: bytes, lport: int, remote: bytes, rport: int, seq: int
) -> bytes:
    """A request for the one socket with these ends (no NLM_F_DUMP). udp_diag reads the
    id the other way round ("src and dst are swapped for historical reasons", its source
    says) and finds the socket that would receive a datagram from `remote`: a connected
    one, else the bound one."""
    if protocol == IPPROTO_UDP:
        local, lport, remote, rport = remote, rport, local, lport
    sockid = _ID.pack(lport, rport, local, remote) + bytes(4) + INET_DIAG_NOCOOKIE
    body = struct.pack("=BBBxI", family, protocol, 0, ALL_STATES) + sockid
    return _HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def lookup(
    family: int, protocol: int, local: bytes, lport: int, remote: bytes, rport: int
) -> Row | None:
    """The socket the kernel would match to these ends, or None when it has none (ENOENT).
    OSError when the socket cannot be had, DiagError for any other answer."""
    global _seq

    _seq = (_seq + 1) & 0xFFFFFFFF or 1
    sock = open_socket(SOCK_RAW, NETLINK_SOCK_DIAG)  # non-blocking: the answer comes in send()
    try:
        sock.sendto(lookup_request(family, protocol, local, lport, remote, rport, _seq), (0, 0))
        try:
            data, _anc, flags, sender = sock.recvmsg(RECV_SIZE)
        except BlockingIOError:
            raise DiagError("incomplete") from None
        if flags & MSG_TRUNC or sender[0] != 0:
            raise DiagError("bad-message")
        rows: list[Row] = []
        try:
            parse(data, _seq, rows)
        except DiagError as exc:
            if exc.errno == 2:  # ENOENT: no such socket (any more)
                return None
            raise
        return rows[0] if rows else None
    finally:
        sock.close()
