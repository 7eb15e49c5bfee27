"""The SYN filter and packet parser (linux/packet.py), offline and against the kernel.

The filter is classic BPF: the kernel runs it, so an offline test needs an interpreter.
The one below follows the kernel's semantics for the instructions the program may use
(loads past the packet's end return 0: the packet is dropped). It is checked against
the kernel itself: data/network-events/packets.json holds every packet an unfiltered
packet socket saw while capture.py (in that directory) made traffic in a namespace of
its own, each marked with whether the kernel's run of the same filter kept it. The
interpreter must agree on every one, and so must the Python parser.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defender_agent.linux import inet, packet

DATA = Path(__file__).parent / "data" / "network-events"
CAPTURE = json.loads((DATA / "packets.json").read_text())
fuzz = settings.get_profile("fuzz")  # conftest.py
SIZES = {packet.BPF_W: 4, packet.BPF_H: 2, packet.BPF_B: 1}


def run_bpf(program: list[tuple[int, int, int, int]], data: bytes) -> int:
    """Classic BPF as net/core/filter.c runs it: how many bytes to keep, 0 to drop."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        cls, size, mode = code & 0x07, code & 0x18, code & 0xE0
        if cls == packet.BPF_LD:
            if mode == packet.BPF_IMM:
                a = k
            elif mode in (packet.BPF_ABS, packet.BPF_IND):
                offset = k + (x if mode == packet.BPF_IND else 0)
                if offset + SIZES[size] > len(data):
                    return 0
                a = int.from_bytes(data[offset : offset + SIZES[size]], "big")
            else:
                raise AssertionError(f"load mode {mode:#x} not modelled")
        elif cls == packet.BPF_LDX:
            assert code == packet.BPF_LDX | packet.BPF_B | packet.BPF_MSH, f"{code:#x}"
            if k >= len(data):
                return 0
            x = 4 * (data[k] & 0x0F)
        elif cls == packet.BPF_ALU:
            assert code & 0xF8 == packet.BPF_AND, f"{code:#x}"
            a &= k
        elif cls == packet.BPF_JMP:
            op = code & 0xF0
            taken = (
                a == k if op == packet.BPF_JEQ else bool(a & k) if op == packet.BPF_JSET else None
            )
            assert taken is not None, f"{code:#x}"
            pc += jt if taken else jf
        elif cls == packet.BPF_RET:
            return k
        else:
            raise AssertionError(f"instruction class {cls} not modelled")


def keeps(data: bytes) -> bool:
    return run_bpf(packet.PROGRAM, data) > 0


def ipv4(payload: bytes, proto: int = 6, options: bytes = b"", frag: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    head = struct.pack(
        ">BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(options) + len(payload), 1, frag, 64, proto,
        0, inet.pton("198.51.100.7"), inet.pton("192.0.2.1"),
    )  # fmt: skip
    return head + options + payload


def ipv6(payload: bytes, next_header: int = 6) -> bytes:
    head = struct.pack(">IHBB16s16s", 0x60000000, len(payload), next_header, 64,
                       inet.pton("2001:db8::7"), inet.pton("2001:db8::1"))  # fmt: skip
    return head + payload


def tcp(flags: int, sport: int = 40000, dport: int = 23) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)


SYN, ACK, RST, FIN, ECE, CWR = 0x02, 0x10, 0x04, 0x01, 0x40, 0x80
HOP_BY_HOP = bytes([6, 0]) + bytes(6)  # next header TCP, 8 bytes long, padding only


# --- the program --------------------------------------------------------------------------
def test_the_program_is_well_formed() -> None:
    """What the kernel's checker requires (sk_chk_filter): at most 4096 instructions,
    jumps forward inside the program, a return at the end."""
    program = packet.PROGRAM
    assert 0 < len(program) <= 4096
    for pc, (code, jt, jf, _k) in enumerate(program):
        if code & 0x07 == packet.BPF_JMP:
            assert pc + 1 + max(jt, jf) < len(program)
    assert program[-1][0] & 0x07 == packet.BPF_RET
    code = packet.program_bytes()
    assert len(code) == 8 * len(program)
    assert struct.unpack_from("=HBBI", code, 8 * 2) == program[2]


def test_the_kernel_and_the_interpreter_agree_on_every_captured_packet() -> None:
    inbound = [e for e in CAPTURE["sniffed"] if e["pkttype"] != packet.PACKET_OUTGOING]
    assert len(inbound) > 15 and any(e["kernel_kept"] for e in inbound)
    for entry in inbound:
        data = bytes.fromhex(entry["hex"])
        assert keeps(data) == entry["kernel_kept"], entry["what"]
        assert (packet.parse(data) is not None) == entry["kernel_kept"], entry["what"]


def test_what_the_filtered_sockets_received() -> None:
    got = []
    for entry in CAPTURE["filtered"]:
        data = bytes.fromhex(entry["hex"])
        assert len(data) <= packet.SNAPLEN and entry["pkttype"] == packet.PACKET_HOST
        family, src, sport, dst, dport, answer = packet.parse(data) or (0, b"", 0, b"", 0, 0)
        got.append((entry["interface"], family, inet.ntop(dst), dport, answer))
        assert inet.ntop(src) in ("192.0.2.2", "2001:db8::2", "192.0.2.1")
        assert (sport if not answer else dport) >= 1024  # the connecting end's own port
    assert [g for g in got if not g[4]] == [
        ("v0", 2, "192.0.2.1", 8080, False),
        ("v0", 10, "2001:db8::1", 8080, False),
        ("lo", 2, "192.0.2.1", 8080, False),  # this namespace to itself: lo, inbound copy only
        ("v0", 2, "192.0.2.1", 9, False),
        ("v0", 10, "2001:db8::1", 23, False),
        ("v0", 2, "192.0.2.1", 80, False),
        ("v0", 2, "192.0.2.1", 8080, False),
    ]
    # the one connection this namespace opened (to itself) is answered by a SYN-ACK on lo;
    # the peer's connections are answered by SYN-ACKs this host sends: not received
    (answer,) = [g for g in got if g[4]]
    assert answer[:3] == ("lo", 2, "192.0.2.1") and answer[3] != 8080


@pytest.mark.parametrize(
    ("what", "data", "kept"),
    [
        ("IPv4 SYN", ipv4(tcp(SYN)), True),
        ("IPv4 SYN with IP options (IHL 6)", ipv4(tcp(SYN), options=b"\x01\x01\x01\x00"), True),
        ("IPv4 SYN with ECN (ECE, CWR)", ipv4(tcp(SYN | ECE | CWR)), True),
        ("IPv4 SYN, first fragment (MF, offset 0)", ipv4(tcp(SYN), frag=0x2000), True),
        ("IPv4 SYN, cut after the flags", ipv4(tcp(SYN))[:34], True),
        ("IPv4 SYN+ACK (the answer to this host's connect)", ipv4(tcp(SYN | ACK)), True),
        ("IPv4 ACK", ipv4(tcp(ACK)), False),
        ("IPv4 RST", ipv4(tcp(RST)), False),
        ("IPv4 FIN", ipv4(tcp(FIN)), False),
        ("IPv4 later fragment whose bytes look like a SYN", ipv4(tcp(SYN), frag=0x0003), False),
        ("IPv4 UDP", ipv4(tcp(SYN), proto=17), False),
        ("IPv4 cut before the TCP flags", ipv4(tcp(SYN))[:33], False),
        ("IPv6 SYN", ipv6(tcp(SYN)), True),
        ("IPv6 SYN+ACK", ipv6(tcp(SYN | ACK)), True),
        ("IPv6 SYN behind a hop-by-hop header", ipv6(HOP_BY_HOP + tcp(SYN), 0), False),
        ("IPv6 UDP", ipv6(tcp(SYN), 17), False),
        ("IPv6 cut before the TCP flags", ipv6(tcp(SYN))[:53], False),
        ("version 5", b"\x50" + ipv4(tcp(SYN))[1:], False),
        ("ARP", bytes.fromhex("0001080006040001") + bytes(20), False),
        ("empty", b"", False),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)  # fmt: skip
def test_the_filter_on_built_packets(what: str, data: bytes, kept: bool) -> None:
    assert keeps(data) == kept, what
    assert (packet.parse(data) is not None) == kept, what


def test_parse_gives_the_ends() -> None:
    syn = packet.parse(ipv4(tcp(SYN, 51000, 2323), options=b"\x01\x01\x01\x00"))
    assert syn == (2, inet.pton("198.51.100.7"), 51000, inet.pton("192.0.2.1"), 2323, False)
    syn6 = packet.parse(ipv6(tcp(SYN, 51001, 22)))
    assert syn6 == (10, inet.pton("2001:db8::7"), 51001, inet.pton("2001:db8::1"), 22, False)
    answer = packet.parse(ipv4(tcp(SYN | ACK | ECE, 443, 51002)))
    assert answer == (2, inet.pton("198.51.100.7"), 443, inet.pton("192.0.2.1"), 51002, True)
    assert packet.parse(ipv4(tcp(SYN))[:4] + b"\x00\x00" + ipv4(tcp(SYN))[6:]) is not None
    bad_ihl = b"\x44" + ipv4(tcp(SYN))[1:]  # IHL 4: shorter than the header itself
    assert packet.parse(bad_ihl) is None  # the filter does not look: the parser does


@fuzz
@given(st.binary(max_size=120))
def test_fuzz_the_filter_and_the_parser_agree(data: bytes) -> None:
    """Random packets: the filter keeps exactly what the parser calls a SYN, except an
    IPv4 header claiming fewer than 20 bytes (IHL < 5): the filter does not spend an
    instruction on it (a packet socket sees frames before IP checks them), the parser
    drops it."""
    if data and data[0] >> 4 == 4 and data[0] & 0x0F < 5:
        return
    assert keeps(data) == (packet.parse(data) is not None)


@fuzz
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 15), st.binary(max_size=40))
def test_fuzz_ipv4_headers(flags: int, frag: int, extra: int, options: bytes) -> None:
    options = options[: 4 * (len(options) // 4)]
    data = ipv4(tcp(flags), options=options, frag=frag)[: 20 + len(options) + 14 + extra]
    assert keeps(data) == (packet.parse(data) is not None)


# --- the real kernel ------------------------------------------------------------------------
LIVE = """
import _socket, time
from defender_agent.linux import packet
{drop}
capture, why = packet.open_capture()
if capture is None:
    raise SystemExit(print("NO", why))
import subprocess
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = _socket.socket(2, 1, 6)
server.bind(("127.0.0.1", 0))
server.listen(4)
for port in (server.getsockname()[1], 9):
    c = _socket.socket(2, 1, 6)
    try:
        c.connect(("127.0.0.1", port))
    except OSError:
        pass
    c.close()
time.sleep(0.2)
for sock in capture.sockets:
    while True:
        try:
            data, interface, kind = packet.receive(sock)
        except BlockingIOError:
            break
        syn = packet.parse(data)
        port = server.getsockname()[1]
        print(interface, kind, syn and syn[4] == 9, syn and syn[4] == port,
              syn and syn[5] and syn[2] == port)
"""


def test_the_kernel_runs_the_filter(run_child: Callable[..., str]) -> None:
    """In a namespace of its own: two connections over lo (one to a listener, one
    refused) give exactly their two SYNs and the listener's SYN-ACK, inbound copies only,
    and nothing else (no ACK, RST or FIN)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare(1) and ip(8)")
    out = run_child(LIVE.format(drop=""), "unshare", "--net")
    if out.startswith("NO"):
        pytest.skip(f"the kernel refuses a packet socket: {out}")
    assert sorted(out.splitlines()) == [
        "lo 0 False False True",  # the listener's SYN-ACK to the connecting end
        "lo 0 False True False",  # the SYN to the listener
        "lo 0 True False False",  # the SYN to the closed port 9 (its RST is not kept)
    ]


def test_packet_sockets_need_cap_net_raw(run_child: Callable[..., str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop it")
    drop = "import os; os.setgroups([]); os.setgid(65534); os.setuid(65534)"
    out = run_child(LIVE.format(drop=drop)).strip()
    assert out == "NO EPERM: packet sockets need CAP_NET_RAW"


def test_open_capture_reports_what_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def refuse(protocol: int) -> Any:
        raise packet.StepError("socket", OSError(errno.EAFNOSUPPORT, "no"))

    monkeypatch.setattr(packet, "_open", refuse)
    capture, why = packet.open_capture()
    assert capture is None and why.startswith("EAFNOSUPPORT: no AF_PACKET sockets here")
