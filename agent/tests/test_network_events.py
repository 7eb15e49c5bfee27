"""The network collector's event sources: conntrack flows become `connection` events
(one per connection, whoever sees it first, the poll or conntrack), inbound SYNs to
closed ports become `connection-attempt` events.

Offline, the captured kernel messages and packets of data/network-events/ (its
capture.py made them in a namespace of its own: 192.0.2.1 and 2001:db8::1 were that
host's, 192.0.2.2 and 2001:db8::2 its peer's, with listeners on port 8080) are fed to
a collector polling a fake /proc that holds the same listeners, on virtual time. Live,
a child process in a fresh network namespace (a veth pair to a peer namespace,
documentation addresses, an nftables rule that makes the kernel track connections)
runs the real collector against the real kernel: nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent.collectors import network
from defender_agent.linux import conntrack, ifaddr, inet, inet_diag, packet
from defender_agent.model import rfc3339

DATA = Path(__file__).parent / "data" / "network-events"
FLOWS = json.loads((DATA / "conntrack.json").read_text())
PACKETS = json.loads((DATA / "packets.json").read_text())
HOST = {inet.pton("192.0.2.1"), inet.pton("2001:db8::1")}
OWNER, OWNER_EXE = 300, "/usr/bin/fetcher"
captured_here = pytest.mark.skipif(
    sys.byteorder != FLOWS["byteorder"],
    reason=f"the netlink headers were written by a {FLOWS['byteorder']}-endian kernel",
)


# --- helpers --------------------------------------------------------------------------
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


@pytest.fixture
def write_tables(proc_line: Callable[..., str]) -> Callable[..., None]:
    """Write a fake /proc/net: the listeners on 8080, and `extra` rows by table name, each
    row proc_line's arguments."""
    listeners = {
        "tcp": [("192.0.2.1", 8080, "0.0.0.0", 0, 10, 7001)],
        "tcp6": [("2001:db8::1", 8080, "::", 0, 10, 7002)],
    }

    def write(root: Path, **extra: list[tuple[str, int, str, int, int, int]]) -> None:
        net = root / "net"
        net.mkdir(parents=True, exist_ok=True)
        for name in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
            rows = listeners.get(name, []) + extra.get(name, [])
            (net / name).write_text(HEADER + "".join(proc_line(*row) for row in rows))

    return write


def fake_proc(root: Path) -> Path:
    """The owner's process under `root`, beside the tables write_tables put there."""
    fd = root / str(OWNER) / "fd"
    fd.mkdir(parents=True)
    (fd / "3").symlink_to("socket:[555]")
    (root / str(OWNER) / "exe").symlink_to(OWNER_EXE)
    (root / "self").mkdir()
    return root


def events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "events.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [
        {**r["payload"], "_time": r["time"]}
        for r in records
        if r["type"] == "event" and r["payload"]["event"] == kind
    ]


def flows(prefix: str = "") -> list[conntrack.Flow]:
    out: list[conntrack.Flow] = []
    for message in FLOWS["messages"]:
        if message["what"].startswith(prefix):
            out += conntrack.parse(bytes.fromhex(message["hex"]), {})
    return out


def feed(agent: Any, col: network.NetworkCollector, batch: list[conntrack.Flow]) -> None:
    col.feed_flows(batch)
    agent.run_once(0)  # the pipeline hands the events to the outputs


def packet_in(
    agent: Any, col: network.NetworkCollector, data: bytes, interface: str, kind: int
) -> None:
    col.feed_packet(data, interface, kind)
    agent.run_once(0)


@pytest.fixture
def collector(
    tmp_path: Path,
    cfg_factory: Callable[..., Any],
    start_agent: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    write_tables: Callable[..., None],
) -> Callable[..., Any]:
    """Start the agent with the network collector on a fake /proc (listeners on 8080),
    this host being 192.0.2.1 and 2001:db8::1; the sources themselves stay closed, the
    test feeds them. `sockets` answers the owner lookups: {local port: (uid, inode)}."""
    monkeypatch.setattr(ifaddr, "local_addresses", lambda: set(HOST))
    sockets: dict[int, tuple[int, int]] = {}

    def lookup(
        family: int, protocol: int, local: bytes, lport: int, remote: bytes, rport: int
    ) -> Any:
        if lport not in sockets:
            return None
        uid, inode = sockets[lport]
        return (family, 1, local, lport, remote, rport, uid, inode)

    monkeypatch.setattr(inet_diag, "lookup", lookup)

    def start(**settings: Any) -> Any:
        write_tables(tmp_path / "proc")
        root = fake_proc(tmp_path / "proc")
        section = {"enabled": True, "backend": "proc", "proc": str(root), **settings}
        section.setdefault("conntrack", "off")
        section.setdefault("connection_attempts", "off")
        agent = start_agent(cfg_factory(collectors__network=section))
        (found,) = [c for c in agent.collectors if c.name == "network"]
        found.sockets = sockets
        return agent, found

    return start


# --- conntrack, offline ------------------------------------------------------------------
@captured_here
def test_captured_flows_become_connection_events(
    tmp_path: Path, collector: Callable[..., Any]
) -> None:
    agent, col = collector()
    feed(agent, col, flows())
    got = {
        (e["direction"], e["protocol"], e["local_address"], e["local_port"], e["remote_address"])
        for e in events(tmp_path, "connection")
    }
    assert got == {
        ("in", "tcp", "192.0.2.1", 8080, "192.0.2.2"),  # twice: two peer ports
        ("in", "tcp", "2001:db8::1", 8080, "2001:db8::2"),
        ("out", "tcp", "192.0.2.1", flows("tcp from 192.0.2.1")[0].orig[1], "192.0.2.1"),
        ("in", "tcp", "192.0.2.1", 8080, "192.0.2.1"),  # the same connection's other end
        ("out", "udp", "192.0.2.1", flows("udp")[0].orig[1], "192.0.2.2"),  # unconnected
    }
    sent = events(tmp_path, "connection")
    assert len(sent) == 7  # in from the peer x3 (one DNAT'ed from 80), v6, out + in, udp
    dnat = [
        e
        for e in sent
        if e["remote_port"] == flows("tcp from the peer to 192.0.2.1:80,")[0].orig[1]
    ]
    assert [e["local_port"] for e in dnat] == [8080]  # the socket's port, after the DNAT
    peer = next(e for e in sent if e["remote_address"] == "192.0.2.2" and e["protocol"] == "tcp")
    assert peer == {
        "event": "connection",
        "direction": "in",
        "protocol": "tcp",
        "family": 4,
        "local_address": "192.0.2.1",
        "local_port": 8080,
        "remote_address": "192.0.2.2",
        "remote_port": peer["remote_port"],
        "state": "syn-recv",
        "pid": None,
        "executable": None,
        "uid": None,
        "backend": "conntrack",
        "_time": rfc3339(agent.clock.time()),  # no kernel stamp: when it was read
    }
    udp = next(e for e in sent if e["protocol"] == "udp")
    assert (udp["state"], udp["direction"]) == ("new", "out")
    stats = col.statistics()
    assert stats["conntrack-new"] == 9 and stats["conntrack-destroy"] == 9
    assert stats["conntrack-closed-port"] == 2  # the SYNs to 9 and 23: attempts, not connections
    assert stats["conntrack-other-protocol"] == 2  # the ICMP echo's NEW and DESTROY
    assert "conntrack-not-local" not in stats


@captured_here
def test_one_connection_seen_by_conntrack_and_then_the_poll_is_one_event(
    tmp_path: Path, collector: Callable[..., Any], write_tables: Callable[..., None]
) -> None:
    agent, col = collector()
    (flow,) = flows("tcp from the peer 192.0.2.2 to 192.0.2.1:8080 (listening)")
    feed(agent, col, [flow])
    port = flow.orig[1]
    # the next poll finds it accepted (an inode now) and later in TIME_WAIT
    write_tables(tmp_path / "proc", tcp=[("192.0.2.1", 8080, "192.0.2.2", port, 1, 8801)])
    agent.advance(5)
    write_tables(tmp_path / "proc", tcp=[("192.0.2.1", 8080, "192.0.2.2", port, 6, 0)])
    agent.advance(5)
    feed(agent, col, [flow])  # the same NEW again (a replay): known
    assert len(events(tmp_path, "connection")) == 1
    assert col.statistics()["conntrack-known"] == 1

    # the other way round: the poll first, then conntrack's NEW read late
    (v6,) = flows("tcp from the peer 2001:db8::2")
    row = ("2001:db8::1", 8080, "2001:db8::2", v6.orig[1], 1, 8802)
    write_tables(tmp_path / "proc", tcp6=[row])
    agent.advance(5)
    feed(agent, col, [v6])
    got = events(tmp_path, "connection")
    assert [e["backend"] for e in got] == ["conntrack", "proc"]
    assert col.statistics()["conntrack-known"] == 2


@captured_here
def test_a_destroyed_flow_ends_tracking(
    tmp_path: Path, collector: Callable[..., Any], write_tables: Callable[..., None]
) -> None:
    """After DESTROY a NEW on the same addresses is a new connection (a client that
    reuses its port), unless its socket is the one the poll already knows (a connected
    UDP socket idle longer than conntrack's timeout)."""
    agent, col = collector()
    (udp,) = flows("udp from an unconnected socket")
    (gone,) = [f for f in flows("IPCTNL_MSG_CT_DELETE") if f.protocol == 17]
    feed(agent, col, [udp, gone, udp])
    assert len(events(tmp_path, "connection")) == 2

    col.sockets[udp.orig[1]] = (1000, 555)  # now a connected socket the poll sees
    row = ("192.0.2.1", udp.orig[1], "192.0.2.2", 5353, 1, 555)
    write_tables(tmp_path / "proc", udp=[row])
    agent.advance(5)
    feed(agent, col, [gone, udp])
    assert len(events(tmp_path, "connection")) == 2
    assert col.statistics()["conntrack-same-socket"] == 1
    col.sockets[udp.orig[1]] = (1000, 556)  # another socket on the same addresses
    feed(agent, col, [gone, udp])
    assert len(events(tmp_path, "connection")) == 3


@captured_here
def test_the_owner_is_looked_up_at_once(tmp_path: Path, collector: Callable[..., Any]) -> None:
    """A connection that is gone before the next poll still names its program: the
    socket is looked up when the NEW is read, then its process in /proc/*/fd."""
    agent, col = collector()
    (udp,) = flows("udp from an unconnected socket")
    col.sockets[udp.orig[1]] = (1000, 555)
    scans = col.statistics()["owner-scans"]  # the first poll's, for the listeners
    feed(agent, col, [udp])
    (event,) = events(tmp_path, "connection")
    assert (event["pid"], event["executable"], event["uid"]) == (OWNER, OWNER_EXE, 1000)
    stats = col.statistics()
    assert stats["owner-lookups"] == 1 and stats["owner-scans"] == scans + 1


@captured_here
def test_owner_lookups_and_scans_are_bounded(tmp_path: Path, collector: Callable[..., Any]) -> None:
    agent, col = collector()
    (udp,) = flows("udp from an unconnected socket")
    many = []
    for n in range(network.MAX_LOOKUPS_PER_TURN + 10):
        flow = conntrack.Flow(True, 2, 17, (udp.orig[0], 20000 + n, udp.orig[2], 53), udp.reply)
        flow.reply = (udp.orig[2], 53, udp.orig[0], 20000 + n)
        col.sockets[20000 + n] = (0, 9000 + n)
        many.append(flow)
    scans = col.statistics()["owner-scans"]  # the first poll's, for the listeners
    feed(agent, col, many[:5])
    feed(agent, col, many[5:])  # the same instant: no second scan
    stats = col.statistics()
    assert len(events(tmp_path, "connection")) == len(many)
    assert stats["owner-lookups"] == 5 + network.MAX_LOOKUPS_PER_TURN
    assert stats["owner-lookup-skipped"] == len(many) - 5 - network.MAX_LOOKUPS_PER_TURN
    assert stats["owner-scans"] == scans + 1 and stats["owner-scan-deferred"] == 1


def test_flows_the_host_only_forwards_are_not_its_connections(
    tmp_path: Path, collector: Callable[..., Any]
) -> None:
    agent, col = collector()
    lan, wan = inet.pton("198.51.100.20"), inet.pton("203.0.113.80")
    forwarded = conntrack.Flow(True, 2, 6, (lan, 40000, wan, 443), (wan, 443, lan, 40000))
    feed(agent, col, [forwarded])
    assert events(tmp_path, "connection") == []
    assert col.statistics()["conntrack-not-local"] == 1
    # masqueraded on the way out: the reply comes back to the host's address
    host = inet.pton("192.0.2.1")
    masqueraded = conntrack.Flow(True, 2, 6, (lan, 40001, wan, 443), (wan, 443, host, 61000))
    feed(agent, col, [masqueraded])
    assert events(tmp_path, "connection") == []  # the host only rewrote it on the way
    assert col.statistics()["conntrack-not-local"] == 2


def test_the_table_bound_holds_for_conntrack_too(
    tmp_path: Path, collector: Callable[..., Any]
) -> None:
    agent, col = collector(max_connections=16)
    host, far = inet.pton("192.0.2.1"), inet.pton("203.0.113.80")
    batch = [
        conntrack.Flow(True, 2, 6, (host, 30000 + n, far, 443), (far, 443, host, 30000 + n))
        for n in range(20)
    ]
    feed(agent, col, batch)
    stats = col.statistics()
    assert len(events(tmp_path, "connection")) == 16 and stats["table-full"] == 4
    assert stats["tracked"] == 16


@captured_here
def test_the_kernels_timestamp_is_the_events_time(
    tmp_path: Path, collector: Callable[..., Any]
) -> None:
    agent, col = collector()
    (stamped,) = flows("tcp from the peer to 192.0.2.1:8080 with nf_conntrack_timestamp")
    at = stamped.event / 1e9
    agent.clock.step(at + 0.25)  # the agent reads it a quarter second later
    feed(agent, col, [stamped])
    (event,) = events(tmp_path, "connection")
    assert event["_time"] == rfc3339(at)
    agent.clock.step(at + 7200)  # a stamp two hours off the clock is not trusted
    (again,) = flows("tcp from the peer 192.0.2.2 to 192.0.2.1:8080 (listening)")
    again.event = stamped.event
    feed(agent, col, [again])
    assert events(tmp_path, "connection")[1]["_time"] == rfc3339(at + 7200)


# --- connection attempts, offline -----------------------------------------------------------
def syn(source: str, sport: int, destination: str, dport: int, flags: int = 0x02) -> bytes:
    src, dst = inet.pton(source), inet.pton(destination)
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(9) + bytes([flags])
    tcp += bytes(6)
    if len(src) == 4:
        return bytes([0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]) + src + dst + tcp
    return bytes([0x60, 0, 0, 0, 0, 20, 6, 64]) + src + dst + tcp


@captured_here
def test_captured_syns_to_closed_ports_are_attempts(
    tmp_path: Path, collector: Callable[..., Any]
) -> None:
    agent, col = collector()
    for entry in PACKETS["filtered"]:
        packet_in(agent, col, bytes.fromhex(entry["hex"]), entry["interface"], entry["pkttype"])
    got = events(tmp_path, "connection-attempt")
    assert [
        (e["family"], e["local_address"], e["local_port"], e["remote_address"]) for e in got
    ] == [
        (4, "192.0.2.1", 9, "192.0.2.2"),
        (6, "2001:db8::1", 23, "2001:db8::2"),
        # DNAT'ed to 8080 after the packet socket saw it: nothing listens on 80 itself
        (4, "192.0.2.1", 80, "192.0.2.2"),
    ]
    first = got[0]
    assert set(first) == {
        "event", "protocol", "family", "remote_address", "remote_port", "local_address",
        "local_port", "interface", "interface_index", "_time",
    }  # fmt: skip
    assert (first["protocol"], first["interface"], first["_time"]) == (
        "tcp",
        "v0",
        rfc3339(agent.clock.time()),
    )
    assert col.statistics()["syn-to-listener"] == 4


def test_attempts_are_bounded_and_retransmissions_are_one(
    tmp_path: Path, collector: Callable[..., Any]
) -> None:
    agent, col = collector(attempt_rate=200)
    for port in range(1, 501):  # a scan: 500 ports in one instant
        packet_in(agent, col, syn("198.51.100.7", 40000, "192.0.2.1", port), "lo", 0)
    stats = col.statistics()
    assert len(events(tmp_path, "connection-attempt")) == 200
    assert stats["attempt-rate-limited"] == 300
    agent.advance(0.5)  # half a second: 100 more tokens
    for port in range(501, 701):
        packet_in(agent, col, syn("198.51.100.7", 40000, "192.0.2.1", port), "lo", 0)
    assert len(events(tmp_path, "connection-attempt")) == 300
    agent.advance(10)
    for _ in range(3):  # a SYN sent again (no answer came): one attempt
        packet_in(agent, col, syn("203.0.113.9", 51000, "192.0.2.1", 23), "lo", 0)
    packet_in(agent, col, syn("203.0.113.9", 51001, "192.0.2.1", 23), "lo", 0)  # a new one
    assert len(events(tmp_path, "connection-attempt")) == 302
    assert col.statistics()["attempt-repeated"] == 2
    assert events(tmp_path, "connection-attempt")[-1]["interface_index"] == 1  # lo


def test_packets_not_for_the_host_are_counted(
    tmp_path: Path, collector: Callable[..., Any]
) -> None:
    agent, col = collector()
    closed = syn("198.51.100.7", 40000, "192.0.2.1", 9)
    packet_in(agent, col, closed, "lo", 4)  # PACKET_OUTGOING: a copy of what the host sent
    packet_in(agent, col, closed, "eth0", 3)  # PACKET_OTHERHOST: promiscuous mode
    packet_in(agent, col, syn("198.51.100.7", 40000, "203.0.113.1", 9), "eth0", 0)  # routed
    packet_in(agent, col, closed[:30], "eth0", 0)  # cut short
    assert events(tmp_path, "connection-attempt") == []
    stats = col.statistics()
    assert stats["packet-outgoing"] == stats["packet-otherhost"] == 1
    assert stats["attempt-not-local"] == 1 and stats["packet-malformed"] == 1


def test_a_listener_newer_than_the_poll_is_not_a_closed_port(
    tmp_path: Path, collector: Callable[..., Any], write_tables: Callable[..., None]
) -> None:
    agent, col = collector()
    write_tables(tmp_path / "proc", tcp=[("0.0.0.0", 2222, "0.0.0.0", 0, 10, 7100)])
    packet_in(agent, col, syn("198.51.100.7", 40000, "192.0.2.1", 2222), "lo", 0)
    packet_in(agent, col, syn("198.51.100.7", 40001, "192.0.2.1", 2223), "lo", 0)
    packet_in(agent, col, syn("2001:db8::7", 40002, "2001:db8::1", 2222), "lo", 0)  # v4 only
    got = [e["local_port"] for e in events(tmp_path, "connection-attempt")]
    assert got == [2223, 2222]
    assert col.statistics()["listen-fresh-checks"] == 1  # one dump a second at most


# --- when to look ----------------------------------------------------------------------------
class QuietCapture:
    """An open capture that receives nothing by itself: the test feeds the packets."""

    def __init__(self) -> None:
        self.sockets: list[Any] = []

    def filenos(self) -> list[int]:
        return [sock.fileno() for sock in self.sockets]

    def close(self) -> None:
        pass


def polls(col: network.NetworkCollector) -> int:
    return col.statistics().get("polls", 0)


def test_a_quiet_device_is_looked_at_every_idle_interval_and_an_opening_brings_a_look(
    tmp_path: Path,
    collector: Callable[..., Any],
    write_tables: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(packet, "open_capture", lambda: (QuietCapture(), "a test capture"))
    agent, col = collector(connection_attempts="on")
    assert polls(col) == 1  # the baseline, at start
    agent.advance(59.9)
    assert polls(col) == 1  # nothing announced: no look for idle_poll_interval
    agent.advance(10.0)  # t = 69.9: the look at 60
    assert polls(col) == 2
    # an outbound connect() answered: the remote end's SYN-ACK to the host, at t = 70
    write_tables(tmp_path / "proc", tcp=[("192.0.2.1", 51000, "198.51.100.7", 443, 1, 555)])
    agent.advance(0.1)
    opened = agent.clock.time()
    packet_in(agent, col, syn("198.51.100.7", 443, "192.0.2.1", 51000, flags=0x12), "eth0", 0)
    agent.advance(network.ACTIVITY_DELAY - 0.01)
    assert polls(col) == 2 and events(tmp_path, "connection") == []
    agent.advance(0.02)
    assert polls(col) == 3
    (found,) = events(tmp_path, "connection")  # found half a second after it opened
    assert (found["direction"], found["remote_port"], found["pid"]) == ("out", 443, OWNER)
    assert found["_time"] == rfc3339(opened + network.ACTIVITY_DELAY)
    assert col.statistics()["syn-ack"] == 1
    # that look found a connection: the next comes poll_interval later, then quiet again
    agent.advance(5.0)
    assert polls(col) == 4
    agent.advance(59.0)
    assert polls(col) == 4
    agent.advance(1.0)
    assert polls(col) == 5
    # a storm of SYNs to a listener: one look per poll_interval at most
    before = polls(col)
    for n in range(100):
        packet_in(agent, col, syn("198.51.100.7", 40000 + n, "192.0.2.1", 8080), "eth0", 0)
        agent.advance(0.1)
    assert polls(col) - before == 2  # 10 s of SYNs: at +5 s and +10 s after the last look
    # a closed-port SYN is an attempt, not an opening: no look for it
    agent.advance(120.0)
    before = polls(col)
    packet_in(agent, col, syn("198.51.100.7", 40000, "192.0.2.1", 9), "eth0", 0)
    agent.advance(30.0)
    assert polls(col) == before


def test_without_announcements_the_look_is_every_poll_interval(
    collector: Callable[..., Any],
) -> None:
    agent, col = collector()  # neither capture nor conntrack
    agent.advance(60.0)
    assert polls(col) == 13  # at 0, 5, ..., 60


def test_conntrack_announces_only_once_it_was_heard(
    collector: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription alone proves nothing (without a rule that uses conntrack, the kernel
    tracks nothing and sends nothing); its first event does."""

    read_end, write_end = os.pipe()  # a descriptor that never becomes readable

    class Silent:
        def fileno(self) -> int:
            return read_end

        def close(self) -> None:
            os.close(read_end)
            os.close(write_end)

    monkeypatch.setattr(conntrack, "subscribe", lambda: (Silent(), "0 entries tracked now"))
    agent, col = collector(conntrack="on")
    agent.advance(20.0)
    assert polls(col) == 5  # every 5 s: nothing heard yet
    col.feed_flows(flows("udp"))
    agent.advance(5.0)  # the look after it: nothing the event had not reported
    assert polls(col) == 6
    agent.advance(59.0)
    assert polls(col) == 6
    agent.advance(1.0)
    assert polls(col) == 7


def test_lost_packets_bring_the_looks_back_to_every_poll_interval(
    collector: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, write_end = os.pipe()  # a descriptor that never becomes readable

    class Sock:
        def fileno(self) -> int:
            return read_end

    capture = QuietCapture()
    capture.sockets = [Sock()]
    monkeypatch.setattr(packet, "open_capture", lambda: (capture, "a test capture"))
    lost = {"n": 0}
    monkeypatch.setattr(packet, "drops", lambda sock: lost.pop("n", 0))
    try:
        agent, col = collector(connection_attempts="on")
        agent.advance(60.0)
        assert polls(col) == 2  # at 0 and 60
        lost["n"] = 7  # the socket's buffer overflowed: SYNs were lost
        agent.advance(60.0)  # the look at 120 counts them
        assert polls(col) == 3 and col.statistics()["packet-kernel-drops"] == 7
        agent.advance(5.0)
        assert polls(col) == 4  # at 125: what was lost may have opened connections
        agent.advance(59.0)
        assert polls(col) == 4
        agent.advance(1.0)
        assert polls(col) == 5  # quiet again: at 185
    finally:
        os.close(read_end)
        os.close(write_end)


# --- describe ---------------------------------------------------------------------------
def test_describe_names_each_source(cfg_factory: Callable[..., Any]) -> None:
    cfg = cfg_factory(collectors__network={"backend": "proc", "conntrack": "off"})
    section = {**cfg.section("collectors.network"), "connection_attempts": "off"}
    lines = network.describe(section)
    assert "conntrack: off (conntrack = off): connections between two looks" in lines[3]
    assert lines[4] == (
        "connection attempts: off (connection_attempts = off): SYNs to closed ports are not seen"
    )


# --- the real kernel, in a namespace of its own -----------------------------------------------
SCENARIO = """
import json, os, subprocess, sys, time, _socket
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.collectors import network
from defender_agent.plugins import QuietOutput

def sh(command):
    subprocess.run(command, shell=True, check=True, capture_output=True)

try:
    sh("ip link set lo up")
    sh("nft add table inet t; nft add chain inet t c '{ type filter hook output priority 0; }'; "
       "nft add rule inet t c ct state new counter")
except subprocess.CalledProcessError as exc:
    raise SystemExit(print("SKIP: no nftables rule here:", exc.stderr.decode().strip()))
peer = subprocess.Popen(["unshare", "--net", "sleep", "60"])
try:
    time.sleep(0.2)
    on_peer = ["nsenter", "--net=/proc/%d/ns/net" % peer.pid]
    sh("ip link add v0 type veth peer name v1 && ip link set v1 netns %d && "
       "ip addr add 192.0.2.1/24 dev v0 && ip link set v0 up" % peer.pid)
    sh(" ".join(on_peer) + " sh -c 'ip addr add 192.0.2.2/24 dev v1 && ip link set v1 up'")

    class Out(QuietOutput):
        name = "out"
        events = []
        def write(self, record, line):
            if record.type == "event":
                self.events.append(record.payload)

    section = {"poll_interval": 5.0, "idle_poll_interval": 60.0, "backend": "auto",
               "report_existing": False,
               "owners": True, "max_connections": 4096, "max_listen": 1024, "proc": "/proc",
               "conntrack": "auto", "connection_attempts": "auto", "attempt_rate": 200}
    print("DESCRIBE", json.dumps(network.describe(section)))
    print("PID", os.getpid())
    agent = Agent("t", ManualClock())
    out = Out()
    agent.add("outputs", out)
    col = network.create(agent.context("collectors", "network"), section, {})
    agent.add("collectors", col)
    agent.start(3600, 3600)
    agent.advance(0)  # the first poll: a baseline
    from defender_agent.linux import conntrack
    if conntrack.events_setting() == "0":
        raise SystemExit(print("SKIP: net.netfilter.nf_conntrack_events = 0 here"))
    if col._ct is None or col._capture is None:
        raise SystemExit(print("SKIP: the kernel refuses:", col.conntrack_words, "/",
                               col.attempts_words))

    def turn(until, seconds=5.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            agent.run_once(0)
            time.sleep(0.01)

    def connections(port):
        return [e for e in out.events if e["event"] == "connection" and port in
                (e["local_port"], e["remote_port"])]

    server = _socket.socket(2, 1, 6)
    server.bind(("192.0.2.1", 8080))
    server.listen(8)
    agent.advance(5)  # a poll sees the listener
    # a short-lived connection from here to the peer's closed port... and one to ourselves,
    # opened and closed well within one poll interval
    client = _socket.socket(2, 1, 6)
    client.connect(("192.0.2.1", 8080))
    mine = client.getsockname()[1]
    turn(lambda: len(connections(mine)) == 2)  # read while it is open: its owner is known
    client.close()
    accepted, _ = server._accept()
    os.close(accepted)
    # from the peer: a connection to the listener, a SYN to a closed port
    code = ("import _socket\\nc = _socket.socket(2, 1, 6)\\n"
            "try:\\n    c.connect(('192.0.2.1', %d))\\nexcept OSError:\\n    pass\\nc.close()\\n")
    subprocess.run(on_peer + [sys.executable, "-c", code % 8080], check=True)
    subprocess.run(on_peer + [sys.executable, "-c", code % 9], check=True)
    turn(lambda: any(e["event"] == "connection-attempt" for e in out.events)
         and len(connections(8080)) >= 3)
    agent.advance(5)  # the poll: the same connections, in TIME_WAIT or gone
    agent.advance(5)
    print("EVENTS", json.dumps(out.events))
    print("STATS", json.dumps(col.statistics()))
    agent.stop()
    agent.shutdown()
finally:
    peer.kill()
"""


def test_the_real_kernel_reports_each_connection_once_and_each_closed_port_syn(
    run_child: Callable[..., str],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, CAP_NET_ADMIN, CAP_NET_RAW)")
    for tool in ("unshare", "nsenter", "ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (nftables: scripts/install-system-deps.sh)")
    stdout = run_child(SCENARIO, "unshare", "--net", timeout=120)
    if stdout.startswith("SKIP") or "\nSKIP" in stdout:
        pytest.skip(stdout.strip().splitlines()[-1])
    lines = {
        line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in stdout.splitlines()
    }
    describe = lines["DESCRIBE"]
    assert describe[3].startswith("conntrack: subscribed (")
    assert describe[4] == (
        "connection attempts: packet sockets with a SYN filter on every interface, "
        "at most 200 events/s"
    )
    sent = lines["EVENTS"]
    conns = [e for e in sent if e["event"] == "connection"]
    ours = [e for e in conns if e["remote_address"] == "192.0.2.1"]
    assert sorted((e["direction"], e["backend"]) for e in ours) == [
        ("in", "conntrack"),
        ("out", "conntrack"),
    ]  # each end once, though the poll saw them after
    out = next(e for e in ours if e["direction"] == "out")  # read while it was open
    assert (out["pid"], out["executable"]) == (lines["PID"], os.path.realpath(sys.executable))
    assert (out["state"], out["uid"]) == ("syn-sent", 0)
    peer = [e for e in conns if e["remote_address"] == "192.0.2.2"]
    assert [(e["direction"], e["local_port"], e["backend"]) for e in peer] == [
        ("in", 8080, "conntrack")
    ]
    attempts = [e for e in sent if e["event"] == "connection-attempt"]
    assert [(e["local_port"], e["remote_address"], e["interface"]) for e in attempts] == [
        (9, "192.0.2.2", "v0")
    ]
    stats = lines["STATS"]
    assert stats["conntrack-closed-port"] == 1 and stats["syn-to-listener"] == 2


# --- the small netlink requests the sources make -------------------------------------------
def test_a_socket_lookup_request() -> None:
    """One socket by its ends: no NLM_F_DUMP, the sockid filled in, no cookie; udp_diag
    reads the ends the other way round."""
    local, remote = inet.pton("192.0.2.1"), inet.pton("198.51.100.7")
    tcp = inet_diag.lookup_request(2, 6, local, 40000, remote, 443, 5)
    assert tcp[:16] == struct.pack("=IHHII", 72, 20, 1, 5, 0)
    assert tcp[16:24] == bytes([2, 6, 0, 0]) + b"\xff" * 4
    assert tcp[24:28] == struct.pack(">HH", 40000, 443)
    assert (tcp[28:32], tcp[44:48]) == (local, remote)
    assert tcp[60:] == bytes(4) + b"\xff" * 8  # any interface, no cookie
    udp = inet_diag.lookup_request(2, 17, local, 40000, remote, 53, 5)
    assert udp[24:28] == struct.pack(">HH", 53, 40000)
    assert (udp[28:32], udp[44:48]) == (remote, local)


def test_the_address_list_answer() -> None:
    def newaddr(family: int, attrs: dict[int, bytes], seq: int = 1, raw: bytes = b"") -> bytes:
        body = struct.pack("=BBBBI", family, 24, 0, 0, 2)
        for kind, value in attrs.items():
            body += struct.pack("=HH", 4 + len(value), kind) + value + bytes(-len(value) % 4)
        body += raw
        return struct.pack("=IHHII", 16 + len(body), ifaddr.RTM_NEWADDR, 2, seq, 0) + body

    done = struct.pack("=IHHIIi", 20, ifaddr.NLMSG_DONE, 2, 1, 0, 0)
    v4, peer = inet.pton("192.0.2.10"), inet.pton("192.0.2.1")
    v6 = inet.pton("2001:db8::10")
    answer = newaddr(2, {1: peer, 2: v4}) + newaddr(10, {1: v6}) + newaddr(17, {1: b"x"}) + done
    found: set[bytes] = set()
    assert ifaddr.parse(answer, 1, found) and found == {v4, v6}  # IFA_LOCAL before the peer
    assert ifaddr.is_local(inet.pton("127.3.2.1"), found)  # all of 127/8
    assert ifaddr.is_local(inet.pton("::1"), found) and not ifaddr.is_local(peer, found)
    for bad in (
        answer[:10],
        newaddr(2, {2: v4}, seq=9),
        struct.pack("=I", 999) + answer[4:],
        newaddr(2, {}, raw=struct.pack("=HH", 40, 2) + v4),  # an attribute past its message
        struct.pack("=IHHIIi", 20, ifaddr.NLMSG_ERROR, 0, 1, 0, -1),
    ):
        with pytest.raises(ValueError):
            ifaddr.parse(bad, 1, set())


def test_the_address_list_of_a_fresh_namespace(run_child: Callable[..., str]) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1)")
    code = (
        "from defender_agent.linux import ifaddr, inet\n"
        "print(sorted(inet.ntop(a) for a in ifaddr.local_addresses()))\n"
    )
    out = run_child(code, "unshare", "--net")
    assert out.strip() == "[]"  # lo is down: nothing, and 127/8 is local anyway
