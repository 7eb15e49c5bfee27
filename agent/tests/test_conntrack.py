"""ctnetlink events (linux/conntrack.py): the parser against real kernel messages, built
ones and hostile ones, and the subscription against the real kernel.

Test data: data/network-events/conntrack.json, every datagram a ctnetlink subscription
received while data/network-events/capture.py made flows in a network namespace of its
own (its docstring says what and how); each message comes with what caused it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defender_agent.linux import conntrack, inet

DATA = Path(__file__).parent / "data" / "network-events"
CAPTURE = json.loads((DATA / "conntrack.json").read_text())
MESSAGES = [(m["what"], bytes.fromhex(m["hex"])) for m in CAPTURE["messages"]]
fuzz = settings.get_profile("fuzz")  # conftest.py
captured_here = pytest.mark.skipif(
    sys.byteorder != CAPTURE["byteorder"],
    reason=f"the netlink headers were written by a {CAPTURE['byteorder']}-endian kernel",
)
pytestmark = captured_here


def flows_of(what: str) -> list[conntrack.Flow]:
    counts: dict[str, int] = {}
    out = [f for w, data in MESSAGES if w.startswith(what) for f in conntrack.parse(data, counts)]
    assert counts == {}
    return out


def text(t: tuple[bytes, int, bytes, int]) -> tuple[str, int, str, int]:
    return (inet.ntop(t[0]), t[1], inet.ntop(t[2]), t[3])


# --- building messages by the headers ---------------------------------------------------
def attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    kind |= conntrack.NLA_F_NESTED if nested else 0
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def tuple_attr(kind: int, src: bytes, sport: int, dst: bytes, dport: int, proto: int = 6) -> bytes:
    v6 = len(src) == 16
    ip = attr(3 if v6 else 1, src) + attr(4 if v6 else 2, dst)
    ports = attr(2, struct.pack(">H", sport)) + attr(3, struct.pack(">H", dport))
    return attr(kind, attr(1, ip, True) + attr(2, attr(1, bytes([proto])) + ports, True), True)


def message(body: bytes, msg: int = 0, flags: int = 0x600, family: int = 2) -> bytes:
    payload = struct.pack(">BBH", family, 0, 0) + body
    kind = conntrack.NFNL_SUBSYS_CTNETLINK << 8 | msg
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, 0, 0) + payload


A, B = inet.pton("192.0.2.7"), inet.pton("198.51.100.9")


# --- the captured messages ----------------------------------------------------------------
def test_every_captured_message_is_one_flow() -> None:
    assert len(MESSAGES) == 18
    for what, data in MESSAGES:
        counts: dict[str, int] = {}
        flows = conntrack.parse(data, counts)
        assert len(flows) == 1 and counts == {}, what


def test_captured_new_flows() -> None:
    (peer,) = flows_of("tcp from the peer 192.0.2.2 to 192.0.2.1:8080 (listening)")
    assert (peer.new, peer.family, peer.protocol) == (True, 2, 6)
    assert text(peer.orig) == ("192.0.2.2", peer.orig[1], "192.0.2.1", 8080)
    assert peer.reply == peer.orig[2:] + peer.orig[:2]  # no NAT: the reverse
    assert peer.state == conntrack.TCP_CONNTRACK_SYN_SENT and peer.id
    assert peer.status & 0x8  # IPS_CONFIRMED
    (v6,) = flows_of("tcp from the peer 2001:db8::2")
    assert (v6.family, text(v6.orig)[2:]) == (10, ("2001:db8::1", 8080))
    (udp,) = flows_of("udp from an unconnected socket")
    assert (udp.protocol, text(udp.orig)[2:], udp.state) == (17, ("192.0.2.2", 5353), 0)
    (icmp,) = flows_of("icmp echo")
    assert (icmp.protocol, icmp.orig[1], icmp.orig[3]) == (1, 0, 0)  # no ports
    (dnat,) = flows_of("tcp from the peer to 192.0.2.1:80,")
    assert text(dnat.orig)[2:] == ("192.0.2.1", 80)
    assert text(dnat.reply)[:2] == ("192.0.2.1", 8080)  # who answers: after the DNAT
    assert dnat.status & 0x20  # IPS_DST_NAT


def test_captured_destroy_and_timestamps() -> None:
    new, destroyed = flows_of("tcp SYNs from the peer to closed ports")[:2]
    assert (new.new, destroyed.new) == (True, False)
    assert destroyed.orig == new.orig and destroyed.id == new.id
    assert destroyed.state == 8  # TCP_CONNTRACK_CLOSE: refused with RST
    (stamped,) = flows_of("tcp from the peer to 192.0.2.1:8080 with nf_conntrack_timestamp")
    assert stamped.event and not stamped.start  # NEW carries the event's time only
    flushed = flows_of("IPCTNL_MSG_CT_DELETE")
    assert len(flushed) == 7 and not any(f.new for f in flushed)
    (end,) = [f for f in flushed if f.id == stamped.id]
    assert stamped.event <= end.start < end.stop <= end.event  # ns since the epoch
    assert all(f.start == 0 for f in flushed if f.id != stamped.id)


def test_a_built_message_reads_like_the_kernels() -> None:
    """The layout in the module's docstring, built by hand, parses to the same flow as
    the kernel's own message; the byte-order flag on a type is masked off."""
    (udp,) = flows_of("udp from an unconnected socket")
    src, sport, dst, dport = udp.orig
    body = tuple_attr(1, src, sport, dst, dport, 17) + tuple_attr(2, dst, dport, src, sport, 17)
    body += attr(conntrack.CTA_ID | conntrack.NLA_F_NET_BYTEORDER, struct.pack(">I", udp.id))
    body += attr(conntrack.CTA_STATUS, struct.pack(">I", udp.status))
    (built,) = conntrack.parse(message(body), {})
    assert (built.orig, built.reply, built.id, built.status) == (
        udp.orig,
        udp.reply,
        udp.id,
        udp.status,
    )
    assert (built.new, built.protocol, built.family) == (True, 17, 2)


def test_several_messages_in_one_datagram() -> None:
    one = message(tuple_attr(1, A, 1000, B, 22))
    two = message(tuple_attr(1, B, 2000, A, 23), msg=conntrack.IPCTNL_MSG_CT_DELETE, flags=0)
    flows = conntrack.parse(one + two, {})
    assert [(f.new, f.orig[1]) for f in flows] == [(True, 1000), (False, 2000)]
    assert flows[0].reply == (B, 22, A, 1000)  # no reply tuple: the reverse


# --- hostile input ------------------------------------------------------------------------
def hostile() -> list[tuple[str, bytes, str]]:
    good = tuple_attr(1, A, 1000, B, 22)
    whole = message(good)
    v6 = inet.pton("2001:db8::1")
    mixed_ip = attr(1, attr(1, A) + attr(4, v6), True)  # an IPv4 source, IPv6 destination
    no_number = attr(1, attr(1, attr(1, A) + attr(2, B), True) + attr(2, b"", True), True)
    port = b"\x06\x00\x02\x00\x00\x01\x00\x00"  # CTA_PROTO_SRC_PORT 1
    long_port = b"\x07\x00\x02\x00\x00\x00\x01\x00"  # 3 bytes
    other_subsystem = whole[:4] + struct.pack("=H", 0x200) + whole[6:]  # expectations
    bad = "conntrack-malformed"
    return [
        ("a header cut short", whole[:12], bad),
        ("a length beyond the datagram", struct.pack("=I", 400) + whole[4:], bad),
        ("a length below the header", struct.pack("=I", 8) + whole[4:], bad),
        ("no nfgenmsg", struct.pack("=IHHII", 18, 0x100, 0x600, 0, 0) + b"\0\0", bad),
        ("no original tuple", message(attr(3, bytes(4))), bad),
        ("an attribute of length 0", message(good + b"\0\0\0\0"), bad),
        ("an attribute longer than the message", message(good + struct.pack("=HH", 200, 3)), bad),
        ("an IPv4 address of 5 bytes", message(good.replace(A, A + b"\0", 1)), bad),
        ("IPv4 source, IPv6 destination", message(attr(1, mixed_ip, True)), bad),
        ("a port of 3 bytes", message(tuple_attr(1, A, 1, B, 2).replace(port, long_port)), bad),
        ("no protocol number", message(no_number), bad),
        ("reply of another protocol", message(good + tuple_attr(2, B, 22, A, 1000, 17)), bad),
        ("reply of another family", message(good + tuple_attr(2, v6, 22, v6, 1000)), bad),
        ("an update (NEW without NLM_F_CREATE)", message(good, flags=0), bad),
        ("a status of 2 bytes", message(good + attr(3, b"\0\1")), bad),
        (
            "a TCP state of 4 bytes",
            message(good + attr(4, attr(1, attr(1, bytes(4)), True), True)),
            bad,
        ),
        ("a timestamp of 4 bytes", message(good + attr(20, attr(1, bytes(4)), True)), bad),
        ("another subsystem", other_subsystem, "conntrack-other-message"),
        ("IPCTNL_MSG_CT_GET", message(good, msg=1), "conntrack-other-message"),
        ("NLMSG_ERROR", struct.pack("=IHHIIi", 20, 2, 0, 0, 0, -1), "conntrack-other-message"),
    ]


@pytest.mark.parametrize(("what", "data", "reason"), hostile(), ids=lambda x: str(x)[:40])
def test_hostile_messages_are_counted_never_raised(what: str, data: bytes, reason: str) -> None:
    counts: dict[str, int] = {}
    assert conntrack.parse(data, counts) == [], what
    assert counts == {reason: 1}, what


def test_every_cut_of_a_captured_message_is_counted() -> None:
    """A datagram cut anywhere (a short read, a hostile sender) never raises, never
    yields a flow with a wrong address size."""
    for what, data in MESSAGES:
        for cut in range(len(data)):
            counts: dict[str, int] = {}
            flows = conntrack.parse(data[:cut], counts)
            assert not flows and counts.get("conntrack-malformed", 0) == (1 if cut else 0), what


@fuzz
@given(st.binary(max_size=400), st.integers(0, 10_000))
def test_fuzz_messages(data: bytes, where: int) -> None:
    good = MESSAGES[where % len(MESSAGES)][1]
    at = where % len(good)
    for sample in (data, good[:at] + data + good[at + len(data) :], good + data):
        counts: dict[str, int] = {}
        for flow in conntrack.parse(sample, counts):
            assert len(flow.orig[0]) == len(flow.orig[2]) == len(flow.reply[0]) in (4, 16)
            assert 0 <= flow.orig[1] <= 0xFFFF and 0 <= flow.protocol <= 255


def test_the_statistics_answer() -> None:
    request = conntrack.stats_request(7)
    assert request == struct.pack("=IHHII", 20, 0x105, 1, 7, 0) + bytes(4)
    answer = struct.pack("=IHHII", 28, 0x105, 0, 7, 0) + bytes(4) + attr(1, struct.pack(">I", 42))
    assert conntrack.entries(answer, 7) == 42
    refusal = struct.pack("=IHHIIi", 36, 2, 0, 7, 0, -1) + request
    assert conntrack.entries(refusal, 7) == -1  # EPERM
    for bad in (
        answer[:10],
        struct.pack("=I", 99) + answer[4:],
        answer.replace(b"\x07", b"\x08", 1),
    ):
        with pytest.raises(OSError):
            conntrack.entries(bad, 7)


# --- the real kernel ------------------------------------------------------------------------
PROBE = """
import _socket  # before the drop: a child without root may not read this interpreter's files
from defender_agent.linux import conntrack
{drop}
sub, why = conntrack.subscribe()
print("OK" if sub else "NO", why)
"""


def test_subscribing_in_a_namespace_of_its_own(run_child: Callable[..., str]) -> None:
    """Root in a fresh network namespace: ctnetlink answers, nothing is tracked yet."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    out = run_child(PROBE.format(drop=""), "unshare", "--net").strip()
    if out.startswith("NO") and "CONFIG_NF_CT_NETLINK" in out:
        pytest.skip(f"the kernel refuses: {out}")
    assert out == "OK 0 entries tracked now"


def test_subscribing_needs_cap_net_admin(run_child: Callable[..., str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop it")
    drop = "import os; os.setgroups([]); os.setgid(65534); os.setuid(65534)"
    out = run_child(PROBE.format(drop=drop)).strip()
    assert out == "NO EPERM on request: conntrack events need CAP_NET_ADMIN"
