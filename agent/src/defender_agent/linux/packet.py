"""Inbound TCP SYNs and SYN-ACKs, from packet sockets with a classic BPF filter.

A socket table shows connections that exist; a SYN to a closed port never makes one
(the kernel answers RST and forgets it), so a port scan against the device leaves no
trace there. Two AF_PACKET sockets, one per protocol (ETH_P_IP, ETH_P_IPV6), receive
every inbound IPv4 and IPv6 packet of every interface; a filter in the kernel keeps only
TCP segments with SYN set, cut to their first SNAPLEN bytes, so the agent is woken for
connection openings alone: a SYN (ACK clear) opens a connection to this host, a SYN-ACK
answers one this host opened (the outbound SYN itself is a packet the host sends, which
these sockets do not get). Sockets bound to one protocol, not ETH_P_ALL:
the kernel hands packets it sends only to ETH_P_ALL taps, and cloning every outgoing
packet for a tap would cost the whole device. SOCK_DGRAM ("cooked") sockets: the kernel
strips the link-layer header, so the filter sees the IP header at offset 0 on every
kind of link, and recvfrom gives the interface and the packet type (PACKET_OUTGOING
copies, and frames for other hosts under promiscuous mode, are dropped here as well).

The socket comes from the C module `_socket` (socket.py costs ~1.5 MiB of RSS); the
filter's address is taken through `_ctypes` (linux/libc.py: the `ctypes` package would
cost 0.45-0.8 MiB more; `array.buffer_info()` costs 0.55 MiB). Needs CAP_NET_RAW and
CONFIG_PACKET.

The filter (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k, <linux/filter.h>):
IPv4: protocol (byte 9) is 6, fragment offset (bytes 6-7 & 0x1fff) is 0, and the TCP
header, found at 4 * IHL (BPF_LDX|BPF_B|BPF_MSH), has SYN set in its flags.
IPv6: next header (byte 6) is 6 and the TCP flags at 40 + 13 have SYN set;
extension headers are not followed (a SYN behind a hop-by-hop or routing header is not
seen: the filter would need a loop, which classic BPF has not). Everything else
returns 0: not queued, not copied. The same checks are made again in Python: the filter
is what keeps the load low, not what makes the parse safe.
"""

from __future__ import annotations

import errno
import os
import struct

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    Instruction = tuple[int, int, int, int]  # code, jt, jf, k
    # family, source, port, destination, port, and whether it is a SYN-ACK (an answer)
    Syn = tuple[int, bytes, int, bytes, int, bool]

AF_PACKET = 17
SOCK_DGRAM = 2
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
SOL_SOCKET = 1
SO_RCVBUF, SO_RCVBUFFORCE = 8, 33
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats { u32 tp_packets; u32 tp_drops; }, reset by reading
PACKET_HOST, PACKET_OUTGOING = 0, 4  # sll_pkttype, <linux/if_packet.h>
PACKET_TYPES = {0: "host", 1: "broadcast", 2: "multicast", 3: "otherhost", 4: "outgoing"}
AF_INET, AF_INET6 = 2, 10
SNAPLEN = 80  # the longest IPv4 header (60) + the TCP ports and flags (14), rounded up
RCVBUF = 1 << 20  # a burst of about 1,000 SYNs (each holds its whole skb, ~1 KiB)
RECV_SIZE = 128
TCP_SYN, TCP_ACK = 0x02, 0x10

# <linux/bpf_common.h>
BPF_LD, BPF_LDX, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x01, 0x04, 0x05, 0x06
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MSH = 0x00, 0x20, 0x40, 0xA0
BPF_AND = 0x50
BPF_JEQ, BPF_JSET = 0x10, 0x40
BPF_K = 0x00

_INSTRUCTION = struct.Struct("=HBBI")
_PORTS = struct.Struct(">HH")


def _assemble(lines: list[tuple[Any, ...]]) -> list[Instruction]:
    """(label,) marks a place; a jump is (code, k, true label, false label) with None for
    "the next instruction"; anything else is (code, k)."""
    places: dict[str, int] = {}
    count = 0
    for line in lines:
        if len(line) == 1:
            places[line[0]] = count
        else:
            count += 1
    out: list[Instruction] = []
    for line in lines:
        if len(line) == 1:
            continue
        here = len(out) + 1
        if len(line) == 4:
            code, k, yes, no = line
            jt = places[yes] - here if yes else 0
            jf = places[no] - here if no else 0
            out.append((code, jt, jf, k))
        else:
            out.append((line[0], 0, 0, line[1]))
    return out


PROGRAM: list[Instruction] = _assemble(
    [
        (BPF_LD | BPF_B | BPF_ABS, 0),  # A = version << 4 | IHL
        (BPF_ALU | BPF_AND | BPF_K, 0xF0),
        (BPF_JMP | BPF_JEQ | BPF_K, 0x40, "ipv4", None),
        (BPF_JMP | BPF_JEQ | BPF_K, 0x60, "ipv6", "drop"),
        ("ipv4",),
        (BPF_LD | BPF_B | BPF_ABS, 9),  # protocol
        (BPF_JMP | BPF_JEQ | BPF_K, 6, None, "drop"),
        (BPF_LD | BPF_H | BPF_ABS, 6),  # flags and fragment offset
        (BPF_JMP | BPF_JSET | BPF_K, 0x1FFF, "drop", None),  # not the first fragment
        (BPF_LDX | BPF_B | BPF_MSH, 0),  # X = 4 * IHL: the TCP header
        (BPF_LD | BPF_B | BPF_IND, 13),  # TCP flags
        (BPF_JMP | BPF_JSET | BPF_K, TCP_SYN, "keep", "drop"),
        ("ipv6",),
        (BPF_LD | BPF_B | BPF_ABS, 6),  # next header
        (BPF_JMP | BPF_JEQ | BPF_K, 6, None, "drop"),
        (BPF_LD | BPF_B | BPF_ABS, 40 + 13),  # TCP flags after the fixed header
        (BPF_JMP | BPF_JSET | BPF_K, TCP_SYN, "keep", "drop"),
        ("keep",),
        (BPF_RET | BPF_K, SNAPLEN),
        ("drop",),
        (BPF_RET | BPF_K, 0),
    ]
)


def program_bytes(program: list[Instruction] = PROGRAM) -> bytes:
    """The instructions as the kernel reads them: an array of struct sock_filter."""
    return b"".join(_INSTRUCTION.pack(*ins) for ins in program)


def parse(data: bytes) -> Syn | None:
    """(family, source, source port, destination, destination port, SYN-ACK) of a TCP
    segment with SYN set at the start of `data` (an IP packet, maybe cut at SNAPLEN);
    None for anything else."""
    if len(data) < 20:
        return None
    version = data[0] >> 4
    if version == 4:
        header = (data[0] & 0x0F) * 4
        if header < 20 or data[9] != 6 or (data[6] << 8 | data[7]) & 0x1FFF:
            return None
        if len(data) < header + 14:
            return None
        flags = data[header + 13]
        source, destination = bytes(data[12:16]), bytes(data[16:20])
        family = AF_INET
    elif version == 6:
        header = 40
        if len(data) < header + 14 or data[6] != 6:
            return None
        flags = data[header + 13]
        source, destination = bytes(data[8:24]), bytes(data[24:40])
        family = AF_INET6
    else:
        return None
    if not flags & TCP_SYN:
        return None
    sport, dport = _PORTS.unpack_from(data, header)
    return family, source, sport, destination, dport, bool(flags & TCP_ACK)


class StepError(OSError):
    """Opening a capture failed; `step` says where: socket or filter."""

    def __init__(self, step: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror)
        self.step = step


def _open(protocol: int) -> Any:
    """One packet socket for an ethertype, filtered, non-blocking, with what it queued
    before the filter was attached read away (it was not filtered)."""
    import _socket

    from defender_agent.linux import libc

    try:
        sock = _socket.socket(AF_PACKET, SOCK_DGRAM, _socket.htons(protocol))
    except OSError as exc:
        raise StepError("socket", exc) from None
    try:
        code = program_bytes()
        buf, address = libc.pinned(code)
        fprog = struct.pack("@HP", len(PROGRAM), address)  # struct sock_fprog
        sock.setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        del buf  # the kernel copied the program inside setsockopt
    except OSError as exc:
        sock.close()
        raise StepError("filter", exc) from None
    sock.setblocking(False)
    try:  # CAP_NET_ADMIN (the conntrack events' capability) may force it
        sock.setsockopt(SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        try:  # capped at net.core.rmem_max
            sock.setsockopt(SOL_SOCKET, SO_RCVBUF, RCVBUF)
        except OSError:
            pass
    for _ in range(100_000):  # what came in before the filter, bounded
        try:
            sock.recv(1)
        except OSError:
            break
    return sock


class Capture:
    """The two filtered packet sockets (IPv4, IPv6). StepError when either cannot be had."""

    def __init__(self) -> None:
        self.sockets: list[Any] = [_open(ETH_P_IP)]
        try:
            self.sockets.append(_open(ETH_P_IPV6))
        except StepError:
            self.close()
            raise

    def filenos(self) -> list[int]:
        return [int(sock.fileno()) for sock in self.sockets]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def drops(sock: Any) -> int:
    """Packets the kernel dropped for this socket (its buffer was full) since the last
    call: PACKET_STATISTICS, which the kernel resets when it is read."""
    try:
        return int(struct.unpack("=II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1])
    except (OSError, struct.error):
        return 0


def receive(sock: Any) -> tuple[bytes, str, int]:
    """One packet: (bytes from its IP header, interface name, packet type).
    BlockingIOError when none waits."""
    data, address = sock.recvfrom(RECV_SIZE)
    return bytes(data), str(address[0]), int(address[2])


def open_capture() -> tuple[Capture | None, str]:
    """A capture, or None and why not."""
    try:
        return Capture(), "packet sockets with a SYN filter"
    except StepError as exc:
        return None, _why(exc.step, exc)


def _why(step: str, exc: OSError) -> str:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    if step == "socket" and code == errno.EPERM:
        return f"{name}: packet sockets need CAP_NET_RAW"
    if step == "socket" and code == errno.EAFNOSUPPORT:
        return (
            f"{name}: no AF_PACKET sockets here (CONFIG_PACKET off, or a "
            "RestrictAddressFamilies= without AF_PACKET)"
        )
    if step == "filter" and code in (errno.EINVAL, errno.ENOMEM):
        return f"{name} attaching the SYN filter (CONFIG_BPF off?)"
    return f"{name} on {step}: {os.strerror(code)}"
