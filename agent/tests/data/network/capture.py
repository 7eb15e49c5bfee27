"""Make this directory's test data from a real kernel (run as root: raw sockets).

    python3 agent/tests/data/network/capture.py agent/tests/data/network

Opens loopback sockets only, in three stages, and after each saves the kernel's socket
tables twice, read back to back: the /proc/net text tables (STAGE/proc/net/NAME) and the
sock_diag dumps (STAGE/sock_diag/NAME.bin: the answer buffers as received, one after the
other). Only rows of the sockets opened here are kept (ports 39001-39006 and the raw
sockets' inodes), each line and each netlink message unchanged; a capture whose two
sources disagree (a socket came or went in between) is taken again. sockets.json names
the inodes, so tests can build a /proc/PID/fd tree that owns them.

- baseline: TCP listeners 127.0.0.1:39001, [::ffff:127.0.0.1]:39002 (an IPv6 socket
  bound to an IPv4-mapped address: IPv4 loopback only) and [::1]:39006, UDP bound to
  127.0.0.1:39003, raw ICMP and ICMPv6 sockets;
- connected: an IPv4 client to 39001, an IPv4 client to 39002 (accepted on the IPv6
  socket: ::ffff:127.0.0.1 at both ends), an IPv6 client to 39006, a UDP socket
  connected to 39003, and a connection to 39001 closed by its client (TIME_WAIT, inode 0);
- new-listener: TCP 127.0.0.1:39005 and UDP [::1]:39004 start listening.
"""

from __future__ import annotations

import _socket
import json
import os
import struct
import sys
import time

SEQ = 7  # the sequence number of every captured dump
PORTS = range(39001, 39007)
TABLES = {"tcp": (2, 6), "tcp6": (10, 6), "udp": (2, 17), "udp6": (10, 17)}
AF_INET, AF_INET6, SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 2, 10, 1, 2, 3


def dump(family: int, protocol: int) -> list[bytes]:
    sock = _socket.socket(16, SOCK_RAW, 4)
    body = struct.pack("=BBBxI48x", family, protocol, 0, 0xFFFFFFFF)
    sock.sendto(struct.pack("=IHHII", 16 + len(body), 20, 0x301, SEQ, 0) + body, (0, 0))
    messages = []
    while True:
        data = sock.recv(32768)
        offset = 0
        while offset < len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            messages.append(data[offset : offset + ((length + 3) & ~3)])
            offset += (length + 3) & ~3
            if kind in (2, 3):
                sock.close()
                return messages


def ours(lport: int, rport: int, inode: int, raw_inodes: set[int]) -> bool:
    return lport in PORTS or rport in PORTS or inode in raw_inodes


def keep_message(msg: bytes, raw_inodes: set[int]) -> bool:
    if struct.unpack_from("=H", msg, 4)[0] != 20:
        return True  # NLMSG_DONE
    lport, rport = struct.unpack_from(">HH", msg, 20)
    return ours(lport, rport, struct.unpack_from("=I", msg, 84)[0], raw_inodes)


def keep_line(line: str, raw_inodes: set[int]) -> bool:
    fields = line.split()
    lport = int(fields[1].split(":")[1], 16)
    rport = int(fields[2].split(":")[1], 16)
    return ours(lport, rport, int(fields[9]), raw_inodes)


def inode_set_of_lines(lines: list[str]) -> set[tuple[int, int, int]]:
    out = set()
    for line in lines:
        f = line.split()
        out.add((int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), int(f[9])))
    return out


def inode_set_of_messages(messages: list[bytes]) -> set[tuple[int, int, int]]:
    out = set()
    for msg in messages:
        if struct.unpack_from("=H", msg, 4)[0] == 20:
            lport, rport = struct.unpack_from(">HH", msg, 20)
            out.add((lport, rport, struct.unpack_from("=I", msg, 84)[0]))
    return out


def capture(stage_dir: str, raw_inodes: set[int]) -> None:
    for _attempt in range(20):
        tables = {}
        for name in (*TABLES, "raw", "raw6"):
            with open(f"/proc/net/{name}", encoding="ascii") as fh:
                header, *lines = fh.read().splitlines(keepends=True)
            tables[name] = (header, [ln for ln in lines if keep_line(ln, raw_inodes)])
        dumps = {
            name: [m for m in dump(*spec) if keep_message(m, raw_inodes)]
            for name, spec in TABLES.items()
        }
        if all(inode_set_of_lines(tables[n][1]) == inode_set_of_messages(dumps[n]) for n in TABLES):
            break
        time.sleep(0.05)
    else:
        raise SystemExit("the two sources never agreed")
    os.makedirs(f"{stage_dir}/proc/net", exist_ok=True)
    os.makedirs(f"{stage_dir}/sock_diag", exist_ok=True)
    for name, (header, lines) in tables.items():
        with open(f"{stage_dir}/proc/net/{name}", "w", encoding="ascii") as fh:
            fh.write(header + "".join(lines))
    for name, messages in dumps.items():
        with open(f"{stage_dir}/sock_diag/{name}.bin", "wb") as fh:
            fh.write(b"".join(messages))


def inode(sock: _socket.socket) -> int:
    return os.stat(f"/proc/self/fd/{sock.fileno()}").st_ino


def main(out: str) -> None:
    names: dict[str, int] = {}
    keep = []

    def tcp(family: int, addr: tuple, name: str | None = None, v6only: int = 1) -> _socket.socket:
        sock = _socket.socket(family, SOCK_STREAM, 6)
        sock.setsockopt(1, 2, 1)  # SO_REUSEADDR
        if family == AF_INET6:
            sock.setsockopt(41, 26, v6only)  # IPV6_V6ONLY
        sock.bind(addr)
        sock.listen(8)
        if name:
            names[name] = inode(sock)
        keep.append(sock)
        return sock

    def client(family: int, addr: tuple, name: str) -> _socket.socket:
        sock = _socket.socket(family, SOCK_STREAM, 6)
        sock.connect(addr)
        names[name] = inode(sock)
        keep.append(sock)
        return sock

    def accept(server: _socket.socket, name: str) -> None:
        fd, _addr = server._accept()
        names[name] = os.stat(f"/proc/self/fd/{fd}").st_ino
        keep.append(_socket.socket(fileno=fd))

    listener4 = tcp(AF_INET, ("127.0.0.1", 39001), "tcp-listen-39001")
    mapped = tcp(AF_INET6, ("::ffff:127.0.0.1", 39002), "tcp6-listen-39002-mapped", v6only=0)
    listener6 = tcp(AF_INET6, ("::1", 39006), "tcp6-listen-39006")
    udp = _socket.socket(AF_INET, SOCK_DGRAM, 17)
    udp.bind(("127.0.0.1", 39003))
    names["udp-bound-39003"] = inode(udp)
    icmp = _socket.socket(AF_INET, SOCK_RAW, 1)
    icmp6 = _socket.socket(AF_INET6, SOCK_RAW, 58)
    names["raw-icmp"], names["raw6-icmpv6"] = inode(icmp), inode(icmp6)
    raw = {names["raw-icmp"], names["raw6-icmpv6"]}
    capture(f"{out}/baseline", raw)

    client(AF_INET, ("127.0.0.1", 39001), "tcp-out-to-39001")
    accept(listener4, "tcp-in-39001")
    client(AF_INET, ("127.0.0.1", 39002), "tcp-out-to-39002")
    accept(mapped, "tcp6-in-39002-mapped")
    client(AF_INET6, ("::1", 39006, 0, 0), "tcp6-out-to-39006")
    accept(listener6, "tcp6-in-39006")
    connected = _socket.socket(AF_INET, SOCK_DGRAM, 17)
    connected.connect(("127.0.0.1", 39003))
    names["udp-connected-to-39003"] = inode(connected)
    closing = _socket.socket(AF_INET, SOCK_STREAM, 6)
    closing.connect(("127.0.0.1", 39001))
    fd, _addr = listener4._accept()
    closing.close()  # the client closes first: its end waits in TIME_WAIT
    os.close(fd)
    time.sleep(0.2)
    capture(f"{out}/connected", raw)

    tcp(AF_INET, ("127.0.0.1", 39005), "tcp-listen-39005")
    udp6 = _socket.socket(AF_INET6, SOCK_DGRAM, 17)
    udp6.bind(("::1", 39004, 0, 0))
    names["udp6-bound-39004"] = inode(udp6)
    capture(f"{out}/new-listener", raw)

    with open(f"{out}/sockets.json", "w", encoding="ascii") as fh:
        json.dump(
            {"seq": SEQ, "byteorder": sys.byteorder, "inodes": names}, fh, indent=1, sort_keys=True
        )
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
