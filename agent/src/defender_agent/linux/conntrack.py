"""Connection tracking events (ctnetlink): every new and every ended flow, as it happens.

A NETLINK_NETFILTER socket bound to the multicast groups NFNLGRP_CONNTRACK_NEW and
NFNLGRP_CONNTRACK_DESTROY receives one message per conntrack entry created (the flow's
first packet, once the kernel confirmed it) and one per entry destroyed (timed out,
closed, flushed). Unlike a poll of the socket tables, nothing is missed however short the
connection. The socket comes from the C module `_socket`, not `socket` (socket.py builds
enums at import: ~1.5 MiB of RSS for the agent's whole life).

What it takes, and what it sees:
- CAP_NET_ADMIN: nfnetlink refuses the multicast bind (EPERM) and every request without it.
- CONFIG_NF_CONNTRACK, CONFIG_NF_CONNTRACK_EVENTS and CONFIG_NF_CT_NETLINK. Without the
  last, the bind still succeeds (the kernel only asks for the module) and nothing ever
  comes: `probe()` asks ctnetlink for its statistics to tell the two apart.
- Only the agent's network namespace, and only when something in it uses conntrack: the
  kernel registers conntrack's hooks in a namespace when a rule needs them (an nftables
  or iptables rule matching `ct state`, NAT, a conntrack helper). A device without such a
  rule tracks nothing and sends no events. net.netfilter.nf_conntrack_events = 0 turns
  events off altogether.

Layouts, from <linux/netlink.h>, <linux/netfilter/nfnetlink.h> and
<linux/netfilter/nfnetlink_conntrack.h> (header fields native byte order, attribute
payloads as marked):

    struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }             16
        type = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW (0) or _DELETE (2)
    struct nfgenmsg { u8 family; u8 version; be16 res_id; }                           4
    struct nlattr   { u16 len; u16 type; } + payload, padded to 4 bytes               4
        type bit 15 NLA_F_NESTED, bit 14 NLA_F_NET_BYTEORDER: masked off

    CTA_TUPLE_ORIG (1), CTA_TUPLE_REPLY (2): nested
        CTA_TUPLE_IP (1): nested CTA_IP_V4_SRC 1, V4_DST 2 (4 bytes), V6_SRC 3, V6_DST 4 (16)
        CTA_TUPLE_PROTO (2): nested CTA_PROTO_NUM 1 (u8), SRC_PORT 2, DST_PORT 3 (be16)
    CTA_STATUS (3): be32   CTA_ID (12): be32
    CTA_PROTOINFO (4): nested CTA_PROTOINFO_TCP (1): nested CTA_PROTOINFO_TCP_STATE 1 (u8)
    CTA_TIMESTAMP (20): nested CTA_TIMESTAMP_START 1, STOP 2 (be64 ns, CLOCK_REALTIME);
        DESTROY only
    CTA_TIMESTAMP_EVENT (27): be64 ns, CLOCK_REALTIME: when the kernel raised the event
        (Linux 6.1 and later); both only with net.netfilter.nf_conntrack_timestamp = 1

The messages come from the kernel, but nothing in them is trusted: every length is checked
before it is used, and a message that does not parse is counted and skipped, never raised.
"""

from __future__ import annotations

import errno
import os
import struct

from defender_agent.linux.netlink import StepError, grow_buffer, open_socket

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    Tuple = tuple[bytes, int, bytes, int]  # source, source port, destination, destination port
    Attrs = dict[int, tuple[int, int]]  # attribute type -> (payload start, payload end)

SOCK_RAW = 3
NETLINK_NETFILTER = 12
NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_DESTROY = 3
GROUPS = 1 << (NFNLGRP_CONNTRACK_NEW - 1) | 1 << (NFNLGRP_CONNTRACK_DESTROY - 1)
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_STATS = 5
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_ID, CTA_TIMESTAMP, CTA_TIMESTAMP_EVENT = 12, 20, 27
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP = 1, 2
CTA_STATS_GLOBAL_ENTRIES = 1
# enum tcp_conntrack (<linux/netfilter/nf_conntrack_tcp.h>)
TCP_CONNTRACK_SYN_SENT, TCP_CONNTRACK_ESTABLISHED = 1, 3

NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct(">BBH")  # family, version, res_id (big-endian)
NLATTR = struct.Struct("=HH")
BE16, BE32, BE64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_HEADERS = NLMSGHDR.size + NFGENMSG.size
_ADDRESS_SIZE = {CTA_IP_V4_SRC: 4, CTA_IP_V4_DST: 4, CTA_IP_V6_SRC: 16, CTA_IP_V6_DST: 16}

RCVBUF = 8 << 20  # about 8,000 events (an skb of ~1 KiB each): a burst of new flows
RECV_SIZE = 8192  # an event is a few hundred bytes; a longer one parses as cut, counted


class MalformedError(Exception):
    """Inside the parser only: the message is not what the headers describe."""


class Flow:
    """One conntrack event. `new`: a NEW message creating the entry (DESTROY otherwise);
    `orig`/`reply`: (source, source port, destination, destination port) of each
    direction, addresses as 4 or 16 bytes, ports 0 for a protocol without them;
    `event`, `start`, `stop`: the kernel's timestamps of the event, the flow's start and
    end (DESTROY only) in ns since the epoch, 0 when not sent."""

    __slots__ = (
        "event",
        "family",
        "id",
        "new",
        "orig",
        "protocol",
        "reply",
        "start",
        "state",
        "status",
        "stop",
    )

    def __init__(self, new: bool, family: int, protocol: int, orig: Tuple, reply: Tuple) -> None:
        self.new = new
        self.family = family
        self.protocol = protocol
        self.orig = orig
        self.reply = reply
        self.status = 0
        self.id = 0
        self.state = 0  # TCP: enum tcp_conntrack when sent, else 0
        self.event = 0
        self.start = 0
        self.stop = 0

    def __repr__(self) -> str:
        return (
            f"Flow(new={self.new}, family={self.family}, protocol={self.protocol}, "
            f"orig={self.orig!r}, reply={self.reply!r}, status={self.status:#x}, id={self.id})"
        )


def parse(data: bytes, counts: dict[str, int]) -> list[Flow]:
    """The conntrack NEW and DESTROY events in one datagram; anything else is counted."""
    flows = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < NLMSGHDR.size:
            _count(counts, "conntrack-malformed")
            break
        length, kind, flags = NLMSGHDR.unpack_from(data, pos)[:3]
        if length < NLMSGHDR.size or length > len(data) - pos:
            _count(counts, "conntrack-malformed")
            break
        if kind >> 8 != NFNL_SUBSYS_CTNETLINK or kind & 0xFF not in (
            IPCTNL_MSG_CT_NEW,
            IPCTNL_MSG_CT_DELETE,
        ):
            _count(counts, "conntrack-other-message")
        else:
            try:
                flow = _flow(data, pos + NLMSGHDR.size, pos + length, kind & 0xFF, flags)
            except MalformedError:
                _count(counts, "conntrack-malformed")
            else:
                flows.append(flow)
        pos += (length + 3) & ~3  # NLMSG_ALIGN
    return flows


def _flow(data: bytes, start: int, end: int, msg: int, flags: int) -> Flow:
    if end - start < NFGENMSG.size:
        raise MalformedError
    family = data[start]
    attrs = _attributes(data, start + NFGENMSG.size, end)
    if CTA_TUPLE_ORIG not in attrs:
        raise MalformedError
    protocol, orig = _tuple(data, *attrs[CTA_TUPLE_ORIG])
    reply = orig[2:] + orig[:2]  # no reply tuple sent: the reverse, as without NAT
    if CTA_TUPLE_REPLY in attrs:
        reply_protocol, reply = _tuple(data, *attrs[CTA_TUPLE_REPLY])
        if reply_protocol != protocol or len(reply[0]) != len(orig[0]):
            raise MalformedError
    new = msg == IPCTNL_MSG_CT_NEW and bool(flags & NLM_F_CREATE)
    if msg == IPCTNL_MSG_CT_NEW and not new:
        raise MalformedError  # an update: not sent to the groups this socket joins
    flow = Flow(new, family, protocol, orig, reply)
    flow.status = _number(data, attrs.get(CTA_STATUS), BE32)
    flow.id = _number(data, attrs.get(CTA_ID), BE32)
    if CTA_PROTOINFO in attrs:
        info = _attributes(data, *attrs[CTA_PROTOINFO])
        if CTA_PROTOINFO_TCP in info:
            tcp = _attributes(data, *info[CTA_PROTOINFO_TCP])
            if CTA_PROTOINFO_TCP_STATE in tcp:
                first, last = tcp[CTA_PROTOINFO_TCP_STATE]
                if last - first != 1:
                    raise MalformedError
                flow.state = data[first]
    flow.event = _number(data, attrs.get(CTA_TIMESTAMP_EVENT), BE64)
    if CTA_TIMESTAMP in attrs:
        stamps = _attributes(data, *attrs[CTA_TIMESTAMP])
        flow.start = _number(data, stamps.get(CTA_TIMESTAMP_START), BE64)
        flow.stop = _number(data, stamps.get(CTA_TIMESTAMP_STOP), BE64)
    return flow


def _attributes(data: bytes, start: int, end: int) -> Attrs:
    """One level of netlink attributes: type -> (payload start, end). A repeated type
    keeps the first, as the kernel's nla_parse keeps the last: either is a forgery."""
    out: Attrs = {}
    pos = start
    while end - pos >= NLATTR.size:
        length, kind = NLATTR.unpack_from(data, pos)
        if length < NLATTR.size or length > end - pos:
            raise MalformedError
        out.setdefault(kind & NLA_TYPE_MASK, (pos + NLATTR.size, pos + length))
        pos += (length + 3) & ~3  # NLA_ALIGN
    return out


def _tuple(data: bytes, start: int, end: int) -> tuple[int, Tuple]:
    """A CTA_TUPLE_*: (IP protocol, (source, source port, destination, destination port))."""
    attrs = _attributes(data, start, end)
    if CTA_TUPLE_IP not in attrs or CTA_TUPLE_PROTO not in attrs:
        raise MalformedError
    ip = _attributes(data, *attrs[CTA_TUPLE_IP])
    addresses = []
    for source, destination in ((CTA_IP_V4_SRC, CTA_IP_V4_DST), (CTA_IP_V6_SRC, CTA_IP_V6_DST)):
        if source in ip and destination in ip:
            for kind in (source, destination):
                first, last = ip[kind]
                if last - first != _ADDRESS_SIZE[kind]:
                    raise MalformedError
                addresses.append(bytes(data[first:last]))
            break
    else:
        raise MalformedError
    proto = _attributes(data, *attrs[CTA_TUPLE_PROTO])
    if CTA_PROTO_NUM not in proto:
        raise MalformedError
    first, last = proto[CTA_PROTO_NUM]
    if last - first != 1:
        raise MalformedError
    sport = _number(data, proto.get(CTA_PROTO_SRC_PORT), BE16)
    dport = _number(data, proto.get(CTA_PROTO_DST_PORT), BE16)
    return data[first], (addresses[0], sport, addresses[1], dport)


def _number(data: bytes, where: tuple[int, int] | None, fmt: struct.Struct) -> int:
    if where is None:
        return 0
    first, last = where
    if last - first != fmt.size:
        raise MalformedError
    return int(fmt.unpack_from(data, first)[0])


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


class Subscription:
    """A non-blocking NETLINK_NETFILTER socket in the conntrack NEW and DESTROY groups;
    StepError (socket or bind) when it cannot be had."""

    def __init__(self) -> None:
        self.sock: Any = open_socket(SOCK_RAW, NETLINK_NETFILTER, GROUPS)
        # room for a burst of new flows: CAP_NET_ADMIN, which the bind took, may force it
        grow_buffer(self.sock, RCVBUF)

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def recv(self) -> bytes:
        """One datagram; BlockingIOError when none waits, OSError(ENOBUFS) after an overrun
        (the kernel dropped events for this socket)."""
        return bytes(self.sock.recv(RECV_SIZE))

    def close(self) -> None:
        self.sock.close()


def stats_request(seq: int) -> bytes:
    """IPCTNL_MSG_CT_GET_STATS for every family: ctnetlink answers with the entry count."""
    body = NFGENMSG.pack(0, 0, 0)
    kind = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET_STATS
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, NLM_F_REQUEST, seq, 0) + body


def entries(answer: bytes, seq: int) -> int:
    """The tracked entries in a GET_STATS answer; -errno for a refusal; OSError(EBADMSG)
    when the answer is neither."""
    if len(answer) >= _HEADERS:
        length, kind, _flags, msg_seq = NLMSGHDR.unpack_from(answer, 0)[:4]
        if msg_seq == seq and NLMSGHDR.size <= length <= len(answer):
            if kind == NLMSG_ERROR and length >= NLMSGHDR.size + 4:
                return -abs(int(struct.unpack_from("=i", answer, NLMSGHDR.size)[0]))
            if kind == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET_STATS:
                try:
                    attrs = _attributes(answer, _HEADERS, length)
                    return _number(answer, attrs.get(CTA_STATS_GLOBAL_ENTRIES), BE32)
                except MalformedError:
                    pass
    raise OSError(errno.EBADMSG, "an answer from ctnetlink that does not parse")


def probe() -> tuple[int, str]:
    """Whether ctnetlink answers here: (entries tracked in this namespace, "") or (-1, why
    not). A socket of its own, opened and closed: the subscription's gets events only."""
    try:  # non-blocking: nfnetlink handles a request inside send(), no waiting
        sock = open_socket(SOCK_RAW, NETLINK_NETFILTER)
    except StepError as exc:
        return -1, _why(exc.step, exc)
    try:
        seq = os.getpid() & 0x7FFFFFFF or 1
        sock.sendto(stats_request(seq), (0, 0))
        got = entries(bytes(sock.recv(RECV_SIZE)), seq)
    except OSError as exc:
        return -1, _why("request", exc)
    finally:
        sock.close()
    if got < 0:
        return -1, _why("request", OSError(-got, os.strerror(-got)))
    return got, ""


def subscribe() -> tuple[Subscription | None, str]:
    """A subscription to the NEW and DESTROY groups, or None and why not. The probe first:
    without ctnetlink the bind would succeed and nothing would ever come."""
    count, why = probe()
    if why:
        return None, why
    try:
        return Subscription(), f"{count} entries tracked now"
    except StepError as exc:
        return None, _why(exc.step, exc)


def events_setting(proc: str = "/proc") -> str | None:
    """net.netfilter.nf_conntrack_events of this namespace ("0": no events at all), or None
    when conntrack is not loaded."""
    try:
        with open(f"{proc}/sys/net/netfilter/nf_conntrack_events", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _why(step: str, exc: OSError) -> str:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    if step == "socket" and code == errno.EPROTONOSUPPORT:
        return f"{name}: no NETLINK_NETFILTER in this kernel (CONFIG_NETFILTER_NETLINK off)"
    if step == "socket" and code == errno.EAFNOSUPPORT:
        return f"{name}: no AF_NETLINK sockets here (RestrictAddressFamilies, or CONFIG_NET off)"
    if code == errno.EPERM:
        return f"{name} on {step}: conntrack events need CAP_NET_ADMIN"
    if step == "request" and code == errno.EAGAIN:
        return "no answer from ctnetlink"
    if step == "request" and code == errno.EOPNOTSUPP:
        return f"{name}: no ctnetlink in this kernel (CONFIG_NF_CT_NETLINK off)"
    return f"{name} on {step}: {os.strerror(code)}"
