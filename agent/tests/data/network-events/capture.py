"""Make this directory's test data from a real kernel: conntrack events and TCP SYNs.

    unshare --net python3 agent/tests/data/network-events/capture.py agent/tests/data/network-events

Run as root, inside a fresh network namespace (the line above): it builds its own small
network there and sends nothing anywhere else. The namespace gets lo, a veth pair whose
other end lives in a second namespace ("the peer"), documentation addresses
(192.0.2.1 and 2001:db8::1 here, 192.0.2.2 and 2001:db8::2 on the peer), and an nftables
table that makes the kernel track connections (`ct state new counter` on output, a
DNAT from port 80 to 8080 on prerouting). Then, with a ctnetlink subscription (groups
NEW and DESTROY), an unfiltered ETH_P_ALL packet socket and two packet sockets carrying
the agent's SYN filter all open, it makes:

- a TCP connection from the peer to 192.0.2.1:8080 (a listener) and one over IPv6;
- a TCP connection from this namespace to itself (192.0.2.1 -> 192.0.2.1:8080, on lo);
- SYNs from the peer to closed ports (192.0.2.1:9, [2001:db8::1]:23), refused;
- a UDP datagram from an unconnected socket to the peer (192.0.2.2:5353);
- an ICMP echo to the peer (a flow without ports);
- a TCP connection from the peer to 192.0.2.1:80, DNAT'ed to 8080;
- with net.netfilter.nf_conntrack_timestamp = 1: one more connection from the peer,
  then a flush of the table (IPCTNL_MSG_CT_DELETE), whose DESTROY events carry stamps.

conntrack.json: every ctnetlink datagram, as received, in order, with what caused it.
packets.json: every packet the unfiltered socket saw (the IP packet, as a SOCK_DGRAM
socket gives it, cut at 200 bytes) with its interface, packet type and whether the
kernel's run of the filter kept it (the same bytes came out of a filtered socket); and
what the filtered sockets received, as received. Netlink headers are in the CPU's byte
order (recorded as `byteorder`); IP packets are big-endian everywhere.
"""

from __future__ import annotations

import _socket
import json
import os
import platform
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "src"))

from defender_agent.linux import packet  # noqa: E402  (the filter under test)

NFT = """
table inet t {
    chain out { type filter hook output priority 0; ct state new counter; }
    chain pre { type nat hook prerouting priority -100; tcp dport 80 dnat ip to 192.0.2.1:8080; }
}
"""


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True)


def drain(sock: _socket.socket, out: list[bytes]) -> None:
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return


def main(target: str) -> None:
    peer = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    time.sleep(0.2)
    on_peer = f"nsenter --net=/proc/{peer.pid}/ns/net"
    sh(
        f"ip link set lo up; ip link add v0 type veth peer name v1; "
        f"ip link set v1 netns {peer.pid}; ip addr add 192.0.2.1/24 dev v0; "
        f"ip addr add 2001:db8::1/64 dev v0 nodad; ip link set v0 up"
    )
    sh(
        f"{on_peer} ip addr add 192.0.2.2/24 dev v1; "
        f"{on_peer} ip addr add 2001:db8::2/64 dev v1 nodad; "
        f"{on_peer} ip link set v1 up; {on_peer} ip link set lo up"
    )
    subprocess.run(["nft", "-f", "-"], input=NFT, text=True, check=True)

    ct = _socket.socket(16, 3, 12)  # NETLINK_NETFILTER
    ct.bind((0, 1 | 4))  # NFNLGRP_CONNTRACK_NEW, _DESTROY
    ct.setblocking(False)
    sniff = _socket.socket(17, 2, _socket.htons(3))  # AF_PACKET, SOCK_DGRAM, ETH_P_ALL
    sniff.setblocking(False)
    capture = packet.Capture()
    for sock in capture.sockets:
        sock.setblocking(False)
    # the peer's v1 takes a moment to come up: settle, then forget what that sent
    time.sleep(1.0)
    while True:
        try:
            sniff.recv(65536)
        except BlockingIOError:
            break

    messages: list[dict[str, str]] = []
    sniffed: list[dict[str, object]] = []
    filtered: list[dict[str, object]] = []

    def collect(what: str) -> None:
        time.sleep(0.3)
        got: list[bytes] = []
        drain(ct, got)
        messages.extend({"what": what, "hex": data.hex()} for data in got)
        while True:
            try:
                data, address = sniff.recvfrom(200)
            except BlockingIOError:
                break
            sniffed.append(
                {"what": what, "interface": address[0], "pkttype": address[2], "hex": data.hex()}
            )
        for sock in capture.sockets:
            while True:
                try:
                    data, address = sock.recvfrom(packet.RECV_SIZE)
                except BlockingIOError:
                    break
                filtered.append(
                    {
                        "what": what,
                        "interface": address[0],
                        "pkttype": address[2],
                        "hex": data.hex(),
                    }
                )

    def from_peer(code: str) -> None:
        subprocess.run(
            [*on_peer.split(), sys.executable, "-c", "import _socket\n" + code], check=True
        )

    server = _socket.socket(2, 1, 6)
    server.bind(("192.0.2.1", 8080))
    server.listen(8)
    server6 = _socket.socket(10, 1, 6)
    server6.setsockopt(41, 26, 1)  # IPV6_V6ONLY
    server6.bind(("2001:db8::1", 8080))
    server6.listen(8)
    refused = "c = _socket.socket({f}, 1, 6)\ntry:\n    c.connect(({a!r}, {p}))\n"
    refused += "except OSError:\n    pass\n"
    connect = "c = _socket.socket({f}, 1, 6)\nc.connect(({a!r}, {p}))\nc.close()\n"

    from_peer(connect.format(f=2, a="192.0.2.1", p=8080))
    collect("tcp from the peer 192.0.2.2 to 192.0.2.1:8080 (listening), closed at once")
    from_peer(connect.format(f=10, a="2001:db8::1", p=8080))
    collect("tcp from the peer 2001:db8::2 to [2001:db8::1]:8080 (listening), closed at once")
    local = _socket.socket(2, 1, 6)
    local.connect(("192.0.2.1", 8080))
    local.close()
    collect("tcp from 192.0.2.1 to 192.0.2.1:8080 (this namespace to itself, over lo)")
    from_peer(refused.format(f=2, a="192.0.2.1", p=9))
    from_peer(refused.format(f=10, a="2001:db8::1", p=23))
    time.sleep(0.5)  # a refused flow is destroyed at once; its DESTROY comes with the rest
    collect("tcp SYNs from the peer to closed ports 192.0.2.1:9 and [2001:db8::1]:23")
    udp = _socket.socket(2, 2, 17)
    udp.sendto(b"query", ("192.0.2.2", 5353))
    udp.close()
    collect("udp from an unconnected socket 192.0.2.1 to 192.0.2.2:5353")
    icmp = _socket.socket(2, 3, 1)
    icmp.sendto(struct.pack("!BBHHH", 8, 0, 0xF7FE, 1, 0), ("192.0.2.2", 0))  # echo, id 1
    icmp.close()
    collect("icmp echo from 192.0.2.1 to 192.0.2.2 (no ports)")
    from_peer(connect.format(f=2, a="192.0.2.1", p=80))
    collect("tcp from the peer to 192.0.2.1:80, DNAT'ed to 192.0.2.1:8080")
    sh("sysctl -q -w net.netfilter.nf_conntrack_timestamp=1")
    from_peer(connect.format(f=2, a="192.0.2.1", p=8080))
    collect("tcp from the peer to 192.0.2.1:8080 with nf_conntrack_timestamp = 1")
    flush = _socket.socket(16, 3, 12)
    body = struct.pack(">BBH", 0, 0, 0)  # nfgenmsg: every family
    flush.sendto(struct.pack("=IHHII", 20, 1 << 8 | 2, 1, 1, 0) + body, (0, 0))
    collect("IPCTNL_MSG_CT_DELETE without attributes: the table flushed")

    filtered_bytes = {entry["hex"] for entry in filtered}
    for entry in sniffed:
        data = bytes.fromhex(str(entry["hex"]))
        kept = data[: packet.SNAPLEN].hex()
        entry["kernel_kept"] = entry["pkttype"] != 4 and kept in filtered_bytes
    record = {
        "kernel": platform.release(),
        "byteorder": sys.byteorder,
        "captured": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    with open(os.path.join(target, "conntrack.json"), "w", encoding="ascii") as fh:
        json.dump({**record, "messages": messages}, fh, indent=1)
        fh.write("\n")
    with open(os.path.join(target, "packets.json"), "w", encoding="ascii") as fh:
        json.dump({**record, "sniffed": sniffed, "filtered": filtered}, fh, indent=1)
        fh.write("\n")
    peer.kill()
    print(f"{len(messages)} conntrack messages, {len(sniffed)} packets, {len(filtered)} kept")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
