"""This host's own addresses (rtnetlink RTM_GETADDR), to tell its traffic from traffic
it only forwards.

conntrack sees every flow through the host, forwarded ones too (a gateway's NAT), and a
packet socket sees every frame addressed to the host's MAC, routed ones too: a flow or a
SYN is the host's own only when one end is one of its addresses. One dump of the address
list answers that; it needs no capability and costs the kernel a walk of a few entries.
The socket comes from the C module `_socket` (socket.py costs ~1.5 MiB of RSS).

Layouts (native byte order) from <linux/netlink.h> and <linux/if_addr.h>:

    struct nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }          16
    struct ifaddrmsg { u8 family, prefixlen, flags, scope; u32 index; }            8
    then attributes: IFA_ADDRESS 1, IFA_LOCAL 2 (4 or 16 bytes)

For IPv4, IFA_LOCAL is the address (IFA_ADDRESS is the peer's on a point-to-point link);
IPv6 sends IFA_ADDRESS alone unless the link is point-to-point. The kernel treats all of
127.0.0.0/8 as local whatever is configured on lo: so does is_local().
"""

from __future__ import annotations

import struct

from defender_agent.linux.netlink import open_socket

AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10
SOCK_RAW = 3
NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
RECV_SIZE = 32768
MAX_ADDRESSES = 4096  # more than any device has; a dump beyond is cut

_HDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_ATTR = struct.Struct("=HH")
_LOOPBACK6 = bytes(15) + b"\x01"


def request(seq: int) -> bytes:
    body = _IFADDRMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _HDR.pack(_HDR.size + len(body), RTM_GETADDR, flags, seq, 0) + body


def parse(data: bytes, seq: int, out: set[bytes]) -> bool:
    """Add the addresses of one received buffer to `out`; True at the end of the dump.
    ValueError for anything that does not parse (the dump is then not trusted)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HDR.size:
            raise ValueError("a netlink header cut short")
        length, kind, _flags, msg_seq, _port = _HDR.unpack_from(data, pos)
        if length < _HDR.size or length > len(data) - pos or msg_seq != seq:
            raise ValueError("a netlink message that is not ours or not whole")
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            error = struct.unpack_from("=i", data, pos + _HDR.size)[0] if length >= 20 else 0
            if error:
                raise ValueError(f"the kernel refused the dump (errno {-error})")
            return True
        if kind == RTM_NEWADDR:
            _address(data, pos + _HDR.size, pos + length, out)
        elif kind != NLMSG_NOOP:
            raise ValueError(f"an unexpected message type {kind}")
        pos += (length + 3) & ~3
    return False


def _address(data: bytes, start: int, end: int, out: set[bytes]) -> None:
    if end - start < _IFADDRMSG.size:
        raise ValueError("an ifaddrmsg cut short")
    family = data[start]
    size = 4 if family == AF_INET else 16 if family == AF_INET6 else 0
    found: dict[int, bytes] = {}
    pos = start + _IFADDRMSG.size
    while end - pos >= _ATTR.size:
        length, kind = _ATTR.unpack_from(data, pos)
        if length < _ATTR.size or length > end - pos:
            raise ValueError("an attribute longer than its message")
        if kind in (IFA_ADDRESS, IFA_LOCAL) and length - _ATTR.size == size:
            found[kind] = bytes(data[pos + _ATTR.size : pos + length])
        pos += (length + 3) & ~3
    address = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
    if address is not None and len(out) < MAX_ADDRESSES:
        out.add(address)


def local_addresses() -> set[bytes]:
    """Every address configured on this namespace's interfaces. OSError when the dump
    cannot be had, ValueError when its answer does not parse."""
    # Non-blocking: the kernel queues each part of a dump before send/recv returns,
    # so an empty queue mid-dump is a broken dump, never a reason to wait.
    sock = open_socket(SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.sendto(request(1), (0, 0))
        out: set[bytes] = set()
        while True:
            try:
                data = bytes(sock.recv(RECV_SIZE))
            except BlockingIOError:
                raise ValueError("the dump stopped before its end") from None
            if parse(data, 1, out):
                return out
    finally:
        sock.close()


def is_local(address: bytes, addresses: set[bytes] | frozenset[bytes]) -> bool:
    if len(address) == 4 and address[0] == 127:
        return True
    return address == _LOOPBACK6 or address in addresses
