"""Network collector: socket tables from sock_diag and /proc/net, diffed into `connection`
events and `listen` snapshots, on virtual time.

Test data (data/network/, made by its capture.py on a real kernel): the /proc/net tables
and the sock_diag answers of the same loopback sockets in three stages (baseline,
connected, new-listener), read back to back. The fake /proc trees built here hold those
tables and a /proc/PID/fd that owns their inodes. The live tests open real sockets on
loopback only and read this machine's kernel through both backends.
"""

from __future__ import annotations

import _socket
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defender_agent.collectors import network
from defender_agent.linux import inet, inet_diag, proc_net
from defender_agent.model import rfc3339

DATA = Path(__file__).parent / "data" / "network"
CAPTURE = json.loads((DATA / "sockets.json").read_text())
INODES: dict[str, int] = CAPTURE["inodes"]
SEQ: int = CAPTURE["seq"]
STAGES = ("baseline", "connected", "new-listener")
DIAG_TABLES = ("tcp", "tcp6", "udp", "udp6")
SERVER, CLIENT = 300, 301  # the fake tree's processes
SERVER_EXE, CLIENT_EXE = "/usr/sbin/demo-server", "/usr/bin/demo-client"
fuzz = settings.get_profile("fuzz")  # conftest.py
captured_here = pytest.mark.skipif(
    sys.byteorder != CAPTURE["byteorder"],
    reason=f"the /proc/net data was printed by a {CAPTURE['byteorder']}-endian kernel",
)


# --- helpers ------------------------------------------------------------------------
def diag_capture(stage: str, table: str) -> bytes:
    return (DATA / stage / "sock_diag" / f"{table}.bin").read_bytes()


def diag_rows(data: bytes, seq: int = SEQ) -> tuple[list[Any], bool]:
    rows: list[Any] = []
    done = inet_diag.parse(data, seq, rows)
    return rows, done


def messages(data: bytes) -> list[bytes]:
    """A dump split back into its netlink messages."""
    out, offset = [], 0
    while offset < len(data):
        length = struct.unpack_from("=I", data, offset)[0]
        out.append(data[offset : offset + ((length + 3) & ~3)])
        offset += (length + 3) & ~3
    return out


def nlmsg(kind: int, payload: bytes, seq: int = SEQ) -> bytes:
    """One netlink message as the kernel frames it (NLM_F_MULTI, port id 0)."""
    return struct.pack("=IHHII", 16 + len(payload), kind, 2, seq, 0) + payload


OWNED = {  # pid -> the captured sockets it holds
    SERVER: (
        "tcp-listen-39001",
        "tcp6-listen-39002-mapped",
        "tcp6-listen-39006",
        "tcp-listen-39005",
        "udp-bound-39003",
        "udp6-bound-39004",
        "tcp-in-39001",
        "tcp6-in-39002-mapped",
        "tcp6-in-39006",
        "raw-icmp",
        "raw6-icmpv6",
    ),
    CLIENT: ("tcp-out-to-39001", "tcp-out-to-39002", "tcp6-out-to-39006"),
}  # udp-connected-to-39003 has no owner: it stands for a socket whose process is gone


def fake_proc(root: Path, stage: str, owned: dict[int, tuple[str, ...]] = OWNED) -> Path:
    """A /proc with the stage's /proc/net tables and processes holding the sockets."""
    shutil.rmtree(root / "net", ignore_errors=True)
    shutil.copytree(DATA / stage / "proc" / "net", root / "net")
    for pid, names in owned.items():
        fd = root / str(pid) / "fd"
        if fd.exists():
            continue
        fd.mkdir(parents=True)
        (fd / "0").symlink_to("/dev/null")
        (fd / "1").symlink_to("pipe:[4026]")
        for n, name in enumerate(names, start=3):
            (fd / str(n)).symlink_to(f"socket:[{INODES[name]}]")
        (root / str(pid) / "exe").symlink_to(SERVER_EXE if pid == SERVER else CLIENT_EXE)
    (root / "self").mkdir(exist_ok=True)
    return root


def events(tmp_path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "events.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        {**r["payload"], "_time": r["time"]}
        for r in records
        if r["type"] == "event" and (kind is None or r["payload"]["event"] == kind)
    ]


def by_port(listen: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(s["protocol"], s["port"]): s for s in listen["sockets"]}


@pytest.fixture
def proc_agent(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Callable[..., Any]
) -> Callable[..., Any]:
    """Start the agent with the network collector on a fake /proc at a stage."""

    def start(
        stage: str = "baseline", prepare: Callable[[Path], None] | None = None, **settings: Any
    ) -> Any:
        root = fake_proc(tmp_path / "proc", stage)
        if prepare is not None:
            prepare(root)
        section = {"enabled": True, "backend": "proc", "proc": str(root), **settings}
        return start_agent(cfg_factory(collectors__network=section))

    return start


def collector(agent: Any) -> network.NetworkCollector:
    found = [c for c in agent.collectors if c.name == "network"]
    assert len(found) == 1
    return found[0]  # type: ignore[no-any-return]


# --- /proc/net tables -------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("table", (*DIAG_TABLES, "raw", "raw6"))
def test_every_captured_line_parses(stage: str, table: str) -> None:
    path = DATA / stage / "proc" / "net" / table
    rows, garbage, complete = proc_net.read_table(str(path), 1000, CAPTURE["byteorder"])
    assert (garbage, complete) == (0, True)
    assert len(rows) == len(path.read_text().splitlines()) - 1


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("table", DIAG_TABLES)
def test_proc_and_sock_diag_captures_agree(stage: str, table: str) -> None:
    """Two encodings of one kernel state, parsed by two parsers: the same rows."""
    text, _garbage, _complete = proc_net.read_table(
        str(DATA / stage / "proc" / "net" / table), 1000, CAPTURE["byteorder"]
    )
    binary, done = diag_rows(diag_capture(stage, table))
    assert done
    assert sorted(text) == sorted(binary)


def test_addresses_in_both_byte_orders() -> None:
    little = "3: 0100007F:9859 0100007F:A7E4 01 00000000:00000000 00:00000000 0  1000 0 41321"
    big = little.replace("0100007F", "7F000001")
    for line, order in ((little, "little"), (big, "big")):
        row = proc_net.parse_line(line, order == "little")
        assert row == (
            2,
            1,
            bytes([127, 0, 0, 1]),
            39001,
            bytes([127, 0, 0, 1]),
            42980,
            1000,
            41321,
        )
    mapped = "0000000000000000FFFF00000100007F:985A"
    raw, port = proc_net._address(mapped, swap=True)
    assert (inet.ntop(raw), port) == ("::ffff:127.0.0.1", 39002)
    raw, _port = proc_net._address("00000000000000000000000001000000:0000", swap=True)
    assert inet.ntop(raw) == "::1"
    raw, _port = proc_net._address("00000000000000000000000000000001:0000", swap=False)
    assert inet.ntop(raw) == "::1"  # as a big-endian kernel prints it


def test_hostile_table_lines_are_counted_never_raised(tmp_path: Path) -> None:
    good = (DATA / "connected" / "proc" / "net" / "tcp").read_text().splitlines(keepends=True)
    junk = [
        "garbage\n",
        "   9: 0100007F:ZZZZ 0100007F:9859 01 0 0 0 0 0 1\n",  # not hex
        "   9: 0100007F:-001 0100007F:9859 01 0 0 0 0 0 1\n",  # a negative port
        "   9: 0100007F 0100007F:9859 01 0 0 0 0 0 1\n",  # no port
        "   9: 0100007F:0001 00000000000000000000000000000000:0000 01 0 0 0 0 0 1\n",  # 4 vs 16
        "   9: 0100007F:0001 0100007F:0002 01 0 0 0 0\n",  # too few fields
        "   9: 0100007F:0001 0100007F:0002 01 0 0 0 -5 0 1\n",  # a negative uid
        "x" * 5000 + "\n",  # longer than any kernel line
        "\x00\xff\n",
    ]
    cut = good[2][:30]  # the table ends in the middle of a line
    path = tmp_path / "tcp"
    path.write_text(good[0] + "".join(junk) + "".join(good[1:]) + cut, errors="surrogateescape")
    rows, garbage, complete = proc_net.read_table(str(path), 1000, "little")
    assert len(rows) == len(good) - 1 and complete
    assert garbage == len(junk) + 1
    rows, _garbage, complete = proc_net.read_table(str(path), 2, "little")
    assert len(rows) == 2 and not complete  # the limit holds, and says so


@fuzz
@given(st.text(max_size=3000))
def test_fuzz_table_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "tcp")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
        rows, garbage, _complete = proc_net.read_table(path, 10, "little")
    assert len(rows) <= 10 and garbage >= 0
    for row in rows:
        assert len(row[2]) in (4, 16) and 0 <= row[3] <= 0xFFFF and 0 <= row[5] <= 0xFFFF


@fuzz
@given(st.lists(st.text(alphabet="0123456789ABCDEFabcdef:- x\t", max_size=40), max_size=14))
def test_fuzz_table_fields(fields: list[str]) -> None:
    try:
        row = proc_net.parse_line(" ".join(fields), True)
    except ValueError:
        return
    assert len(row[2]) == len(row[4]) and row[0] in (2, 10)


# --- sock_diag messages -----------------------------------------------------------
def test_request_bytes() -> None:
    assert inet_diag.request(inet_diag.AF_INET6, 17, 9) == (
        struct.pack("=IHHII", 72, 20, 0x301, 9, 0)  # nlmsghdr: SOCK_DIAG_BY_FAMILY, dump
        + bytes([10, 17, 0, 0])  # family, protocol, no extensions, pad
        + b"\xff\xff\xff\xff"  # every state
        + bytes(48)  # inet_diag_sockid: all zero, any socket
    )


def test_captured_dump_rows() -> None:
    rows, done = diag_rows(diag_capture("connected", "tcp6"))
    assert done
    row = {r[7]: r for r in rows}
    mapped = row[INODES["tcp6-in-39002-mapped"]]
    assert mapped[:2] == (10, 1) and inet.ntop(mapped[2]) == "::ffff:127.0.0.1"
    assert mapped[3] == 39002
    listener = row[INODES["tcp6-listen-39006"]]
    assert (inet.ntop(listener[2]), listener[3], listener[1]) == ("::1", 39006, 10)
    rows, done = diag_rows(diag_capture("connected", "tcp"))
    timewait = [r for r in rows if r[1] == 6]
    assert len(timewait) == 1 and timewait[0][5] == 39001 and timewait[0][6:] == (0, 0)


def test_a_dump_in_many_parts_and_its_end() -> None:
    """One received buffer per message: every part but the last says "more"."""
    whole = diag_capture("new-listener", "tcp")
    parts = messages(whole)
    assert len(parts) > 3
    rows: list[Any] = []
    results = [inet_diag.parse(part, SEQ, rows) for part in parts]
    assert results == [False] * (len(parts) - 1) + [True]
    assert rows == diag_rows(whole)[0]
    done = nlmsg(inet_diag.NLMSG_DONE, struct.pack("=i", 0))
    assert diag_rows(done) == ([], True)
    assert diag_rows(nlmsg(inet_diag.NLMSG_NOOP, b"") + done) == ([], True)


@pytest.mark.parametrize(
    ("answer", "reason", "errno"),
    [
        # a kernel without udp_diag: the dump ends with -ENOENT in NLMSG_DONE
        (nlmsg(inet_diag.NLMSG_DONE, struct.pack("=i", -2)), "error", 2),
        # NLMSG_ERROR: -EPERM and the request it refuses
        (nlmsg(inet_diag.NLMSG_ERROR, struct.pack("=i", -1) + bytes(16)), "error", 1),
    ],
)
def test_refusals(answer: bytes, reason: str, errno: int) -> None:
    with pytest.raises(inet_diag.DiagError) as caught:
        diag_rows(answer)
    assert (caught.value.reason, caught.value.errno) == (reason, errno)


def hostile_answers() -> list[tuple[str, bytes]]:
    good = messages(diag_capture("connected", "tcp"))[0]
    return [
        ("length beyond the buffer", struct.pack("=I", len(good) + 4) + good[4:]),
        ("length below its header", struct.pack("=I", 12) + good[4:]),
        ("length 0", struct.pack("=I", 0) + good[4:]),
        ("a header cut short", good + good[:10]),
        ("a message too short for inet_diag_msg", nlmsg(20, good[16:60])),
        ("an unknown message type", nlmsg(0x1234, b"")),
        ("an unknown address family", good[:16] + b"\x07" + good[17:]),
        ("a sequence number not ours", nlmsg(20, good[16:], seq=SEQ + 1)),
    ]


@pytest.mark.parametrize(("what", "answer"), hostile_answers(), ids=lambda x: str(x)[:40])
def test_hostile_answers_raise_only_diag_error(what: str, answer: bytes) -> None:
    with pytest.raises(inet_diag.DiagError) as caught:
        diag_rows(answer)
    assert caught.value.reason in ("bad-message", "foreign-message"), what


@fuzz
@given(st.binary(max_size=600), st.integers(0, 2**32 - 1))
def test_fuzz_netlink_answers(data: bytes, seq: int) -> None:
    good = diag_capture("connected", "udp")
    for answer in (data, good[: seq % len(good)] + data):
        rows: list[Any] = []
        try:
            inet_diag.parse(answer, SEQ, rows)
        except inet_diag.DiagError:
            pass
        assert all(len(r[2]) in (4, 16) for r in rows)


# --- the collector on captured tables ----------------------------------------------
@captured_here
def test_baseline_then_new_connections_then_a_new_listener(
    tmp_path: Path, proc_agent: Callable[..., Any]
) -> None:
    agent = proc_agent("baseline")
    start = agent.clock.time()
    (snapshot,) = events(tmp_path, "listen")  # at start, always
    assert events(tmp_path, "connection") == []  # the first look is a baseline
    assert snapshot["_time"] == rfc3339(start) and not snapshot["truncated"]
    ports = by_port(snapshot)
    assert ports[("tcp", 39001)] == {
        "protocol": "tcp",
        "family": 4,
        "address": "127.0.0.1",
        "port": 39001,
        "pid": SERVER,
        "executable": SERVER_EXE,
        "uid": 0,
    }
    assert ports[("tcp", 39002)]["family"] == 4  # an IPv6 socket on ::ffff:127.0.0.1
    assert ports[("tcp", 39002)]["address"] == "127.0.0.1"
    assert (ports[("tcp", 39006)]["family"], ports[("tcp", 39006)]["address"]) == (6, "::1")
    assert ports[("udp", 39003)]["pid"] == SERVER
    assert {("raw", 1), ("raw", 58)} <= set(ports)  # ICMP and ICMPv6 raw sockets
    assert snapshot["added"] == snapshot["sockets"] and snapshot["removed"] == []

    fake_proc(tmp_path / "proc", "connected")
    agent.advance(5)
    got = {(e["local_port"], e["remote_port"]): e for e in events(tmp_path, "connection")}
    assert len(got) == len(events(tmp_path, "connection")) == 8  # each one once
    out = got[(42980, 39001)]
    assert out == {
        "event": "connection",
        "direction": "out",
        "protocol": "tcp",
        "family": 4,
        "local_address": "127.0.0.1",
        "local_port": 42980,
        "remote_address": "127.0.0.1",
        "remote_port": 39001,
        "state": "established",
        "pid": CLIENT,
        "executable": CLIENT_EXE,
        "uid": 0,
        "backend": "proc",
        "_time": rfc3339(start + 5),  # when the agent first saw it
    }
    assert (got[(39001, 42980)]["direction"], got[(39001, 42980)]["pid"]) == ("in", SERVER)
    mapped = got[(39002, 43672)]  # accepted by the IPv6 socket: reported as IPv4
    assert (mapped["family"], mapped["local_address"], mapped["remote_address"]) == (
        4,
        "127.0.0.1",
        "127.0.0.1",
    )
    assert (mapped["direction"], got[(43672, 39002)]["direction"]) == ("in", "out")
    v6 = got[(34326, 39006)]
    assert (v6["family"], v6["local_address"], v6["direction"]) == (6, "::1", "out")
    assert got[(39006, 34326)]["direction"] == "in"
    udp = got[(40528, 39003)]
    assert (udp["protocol"], udp["direction"], udp["state"]) == ("udp", "out", "established")
    assert (udp["pid"], udp["executable"], udp["uid"]) == (None, None, 0)  # owner gone
    timewait = got[(42992, 39001)]  # opened and closed between the two looks
    assert (timewait["state"], timewait["pid"], timewait["uid"]) == ("time-wait", None, None)
    assert len(events(tmp_path, "listen")) == 1  # the listeners did not change

    fake_proc(tmp_path / "proc", "new-listener")
    agent.advance(5)
    listens = events(tmp_path, "listen")
    assert len(listens) == 2 and len(events(tmp_path, "connection")) == 8
    added = [(s["protocol"], s["family"], s["address"], s["port"]) for s in listens[1]["added"]]
    assert added == [("tcp", 4, "127.0.0.1", 39005), ("udp", 6, "::1", 39004)]
    assert listens[1]["removed"] == [] and len(listens[1]["sockets"]) == len(ports) + 2

    agent.advance(15)  # nothing changes: nothing more is said
    assert len(events(tmp_path)) == 10
    stats = collector(agent).statistics()
    assert stats["owner-unknown"] == 1 and stats["orphaned"] == 1
    assert stats["owner-scans"] == 3  # start, the new connections, the new listeners


@captured_here
def test_report_existing_reports_the_first_look(
    tmp_path: Path, proc_agent: Callable[..., Any]
) -> None:
    proc_agent("connected", report_existing=True)
    got = events(tmp_path, "connection")
    assert len(got) == 8 and {e["direction"] for e in got} == {"in", "out"}


@captured_here
def test_a_listener_replaced_by_another_process_is_a_change(
    tmp_path: Path, proc_agent: Callable[..., Any]
) -> None:
    """Same port, new socket (Mirai kills what holds a port and binds it itself)."""
    agent = proc_agent("baseline")
    table = tmp_path / "proc" / "net" / "tcp"
    old = str(INODES["tcp-listen-39001"])
    table.write_text(table.read_text().replace(f" {old} ", " 999999 "))
    agent.advance(5)
    listens = events(tmp_path, "listen")
    assert len(listens) == 2
    assert [(s["port"], s["pid"]) for s in listens[1]["added"]] == [(39001, None)]
    assert [(s["port"], s["pid"]) for s in listens[1]["removed"]] == [(39001, SERVER)]


@captured_here
def test_direction_is_unknown_when_listeners_could_not_be_read(
    tmp_path: Path, proc_agent: Callable[..., Any]
) -> None:

    def break_tcp6(root: Path) -> None:
        (root / "net" / "tcp6").unlink()
        (root / "net" / "tcp6").mkdir()  # unreadable as a table

    agent = proc_agent("connected", prepare=break_tcp6, report_existing=True)
    got = {(e["local_port"], e["remote_port"]): e for e in events(tmp_path, "connection")}
    assert got[(39001, 42980)]["direction"] == "in"  # its listener was read
    assert got[(42980, 39001)]["direction"] == "unknown"  # a TCP listener may be unread
    assert got[(40528, 39003)]["direction"] == "out"  # every UDP table was read
    assert collector(agent).statistics()["read-error"] == 1


@captured_here
def test_a_table_unreadable_for_a_while_reports_nothing_twice(
    tmp_path: Path, proc_agent: Callable[..., Any]
) -> None:
    agent = proc_agent("connected")  # baseline: 8 connections known
    table = tmp_path / "proc" / "net" / "tcp"
    saved = table.read_text()
    table.unlink()
    table.mkdir()
    agent.advance(5)  # tcp unreadable: what was known from it is kept
    table.rmdir()
    table.write_text(saved)
    agent.advance(5)
    assert events(tmp_path, "connection") == []
    assert len(events(tmp_path, "listen")) == 1
    assert collector(agent).statistics()["read-error"] == 1


def synthetic_tcp(listeners: int, connections: int) -> str:
    header = (DATA / "baseline" / "proc" / "net" / "tcp").read_text().splitlines(True)[0]
    lines = []
    for n in range(listeners):
        lines.append(f"{n}: 0100007F:{20000 + n:04X} 00000000:0000 0A 0:0 0:0 0 0 0 {50000 + n}\n")
    for n in range(connections):
        lines.append(f"{n}: 0100007F:{40000 + n:04X} 0100007F:0050 01 0:0 0:0 0 0 0 {60000 + n}\n")
    return header + "".join(lines)


@captured_here
def test_tables_are_bounded_and_what_is_left_out_is_counted(
    tmp_path: Path, proc_agent: Callable[..., Any]
) -> None:
    agent = proc_agent("baseline", max_connections=16, max_listen=16)
    table = tmp_path / "proc" / "net" / "tcp"
    table.write_text(synthetic_tcp(listeners=4, connections=24))
    agent.advance(5)
    agent.advance(5)  # what could not be tracked is not reported again and again
    stats = collector(agent).statistics()
    assert len(events(tmp_path, "connection")) == 16 and stats["tracked"] == 16
    assert stats["table-full"] == 2 * 8
    assert not events(tmp_path, "listen")[-1]["truncated"]

    table.write_text(synthetic_tcp(listeners=20, connections=0))  # 25 listeners in all
    agent.advance(5)
    stats = collector(agent).statistics()
    listens = events(tmp_path, "listen")
    assert listens[-1]["truncated"] and len(listens[-1]["sockets"]) == 16
    assert stats["listen-dropped"] == 9 and stats["listening"] == 16

    table.write_text(synthetic_tcp(listeners=0, connections=40))  # more rows than 16 + 16
    agent.advance(5)
    stats = collector(agent).statistics()
    assert stats["table-truncated"] == 1 and stats["tracked"] == 16


@captured_here
def test_direction_from_wildcard_listeners_and_handshake_states(
    tmp_path: Path, proc_agent: Callable[..., Any], proc_line: Callable[..., str]
) -> None:
    agent = proc_agent("baseline")
    net = tmp_path / "proc" / "net"
    header = (net / "tcp").read_text().splitlines(True)[0]
    lines = [
        proc_line("0.0.0.0", 22, "0.0.0.0", 0, 10, 1001),  # sshd on every IPv4 address
        proc_line("192.0.2.10", 22, "198.51.100.7", 50000, 1, 1002),
        proc_line("192.0.2.10", 50001, "203.0.113.5", 22, 1, 1003),
        proc_line("192.0.2.10", 50002, "203.0.113.5", 23, 2, 1004),  # a SYN sent
        proc_line("192.0.2.10", 2323, "203.0.113.9", 40000, 3, 0),  # a SYN received
    ]
    (net / "tcp").write_text(header + "".join(lines))
    lines6 = [
        proc_line("::", 80, "::", 0, 10, 2001),  # dual stack: IPv4 clients arrive mapped
        proc_line("::ffff:192.0.2.10", 80, "::ffff:198.51.100.8", 51000, 1, 2002),
        proc_line("2001:db8::10", 51001, "2001:db8::80", 80, 1, 2003),
    ]
    (net / "tcp6").write_text(header + "".join(lines6))
    agent.advance(5)
    got = {(e["local_port"], e["remote_port"]): e for e in events(tmp_path, "connection")}
    assert {k: e["direction"] for k, e in got.items()} == {
        (22, 50000): "in",
        (50001, 22): "out",
        (50002, 23): "out",
        (2323, 40000): "in",
        (80, 51000): "in",
        (51001, 80): "out",
    }
    assert (got[(80, 51000)]["family"], got[(80, 51000)]["remote_address"]) == (4, "198.51.100.8")
    assert (got[(50002, 23)]["state"], got[(2323, 40000)]["state"]) == ("syn-sent", "syn-recv")
    assert got[(51001, 80)]["local_address"] == "2001:db8::10"


@captured_here
def test_garbage_tables_are_counted(tmp_path: Path, proc_agent: Callable[..., Any]) -> None:
    agent = proc_agent("baseline")
    net = tmp_path / "proc" / "net"
    (net / "udp").write_bytes(os.urandom(4096))
    (net / "tcp").write_text((net / "tcp").read_text() + "   7: 0100007F:00")  # cut
    (net / "raw").write_text("")
    agent.advance(5)
    stats = collector(agent).statistics()
    assert stats["garbage-line"] >= 2
    assert agent.statistics_payload()["collectors"]["network"]["errors"] == 0


@captured_here
def test_owner_lookups_can_be_off(tmp_path: Path, proc_agent: Callable[..., Any]) -> None:
    agent = proc_agent("connected", report_existing=True, owners=False)
    assert {e["pid"] for e in events(tmp_path, "connection")} == {None}
    assert "owner-scans" not in collector(agent).statistics()


def replay_dump(stage: list[str]) -> Callable[..., tuple[list[Any], bool]]:
    """inet_diag.dump answered from the captured kernel answers of stage[0]."""

    def dump(family: int, protocol: int, limit: int, states: int = 0) -> tuple[list[Any], bool]:
        table = {(2, 6): "tcp", (10, 6): "tcp6", (2, 17): "udp", (10, 17): "udp6"}
        if stage[0] == "fail":
            raise inet_diag.DiagError("bad-message")
        return diag_rows(diag_capture(stage[0], table[family, protocol]))

    return dump


@captured_here
def test_falling_back_from_sock_diag_to_proc_reports_nothing_twice(
    tmp_path: Path,
    cfg_factory: Callable[..., Any],
    start_agent: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Captured sock_diag answers, then a broken one: the same sockets from /proc/net."""
    stage = ["baseline"]
    monkeypatch.setattr(inet_diag, "dump", replay_dump(stage))
    monkeypatch.setattr(inet_diag, "probe", lambda protocols: dict.fromkeys(protocols, ""))
    root = fake_proc(tmp_path / "proc", "baseline")
    section = {"enabled": True, "backend": "auto", "proc": str(root)}
    agent = start_agent(cfg_factory(collectors__network=section))
    stage[0] = "connected"
    fake_proc(root, "connected")
    agent.advance(5)
    got = events(tmp_path, "connection")
    assert len(got) == 8
    assert {e["backend"] for e in got if e["protocol"] == "tcp"} == {"sock_diag"}
    stage[0] = "fail"
    fake_proc(root, "new-listener")
    agent.advance(5)
    stats = collector(agent).statistics()
    assert stats["sock_diag-bad-message"] == 4 and stats["proc-fallback"] == 4
    assert len(events(tmp_path, "connection")) == 8  # the same sockets, read as text
    assert len(events(tmp_path, "listen")) == 2


# --- the real kernel, loopback only ---------------------------------------------------
def loopback_pair(family: int = 2) -> tuple[_socket.socket, _socket.socket, _socket.socket]:
    """A listener on loopback, a client connected to it, and the accepted socket."""
    host = "127.0.0.1" if family == 2 else "::1"
    server = _socket.socket(family, _socket.SOCK_STREAM, 6)
    server.bind((host, 0))
    server.listen(4)
    client = _socket.socket(family, _socket.SOCK_STREAM, 6)
    client.connect(server.getsockname())
    fd, _addr = server._accept()
    return server, client, _socket.socket(family, _socket.SOCK_STREAM, 6, fileno=fd)


def sock_diag_here() -> bool:
    return inet_diag.probe((6,))[6] == ""


@pytest.mark.parametrize("backend", ["sock_diag", "proc"])
def test_a_real_loopback_connection_is_seen(
    backend: str,
    tmp_path: Path,
    cfg_factory: Callable[..., Any],
    start_agent: Callable[..., Any],
) -> None:
    if backend == "sock_diag" and not sock_diag_here():
        pytest.skip("this kernel has no sock_diag for TCP")
    before = loopback_pair()  # open before the agent starts: part of the baseline
    section = {"enabled": True, "backend": backend, "poll_interval": 5}
    agent = start_agent(cfg_factory(collectors__network=section))
    server, client, accepted = loopback_pair()
    sockets = [*before, server, client, accepted]
    try:
        agent.advance(5)
        port = server.getsockname()[1]
        cport = client.getsockname()[1]
        mine = [
            e for e in events(tmp_path, "connection") if port in (e["local_port"], e["remote_port"])
        ]
        exe = proc_net.executable("/proc", os.getpid())
        assert sorted((e["direction"], e["local_port"]) for e in mine) == sorted(
            [("out", cport), ("in", port)]
        )
        for event in mine:
            assert (event["pid"], event["executable"], event["uid"]) == (
                os.getpid(),
                exe,
                os.getuid(),
            )
            assert (event["backend"], event["state"], event["family"]) == (
                backend,
                "established",
                4,
            )
        # the host's own listeners may come and go too: find ours in what was added
        added = [s for e in events(tmp_path, "listen") for s in e["added"] if s["port"] == port]
        (entry,) = added
        assert (entry["address"], entry["pid"], entry["executable"]) == (
            "127.0.0.1",
            os.getpid(),
            exe,
        )
        old = before[0].getsockname()[1]
        assert not [
            e for e in events(tmp_path, "connection") if old in (e["local_port"], e["remote_port"])
        ]
        assert collector(agent).statistics()["tracked"] >= 3
    finally:
        for sock in sockets:
            sock.close()


def test_a_real_ipv6_connection_and_its_close(
    tmp_path: Path, cfg_factory: Callable[..., Any], start_agent: Callable[..., Any]
) -> None:
    if not os.path.exists("/proc/net/tcp6"):
        pytest.skip("this kernel has no IPv6")
    section = {"enabled": True, "backend": "auto", "poll_interval": 5}
    agent = start_agent(cfg_factory(collectors__network=section))
    server, client, accepted = loopback_pair(family=10)
    port = server.getsockname()[1]
    agent.advance(5)
    mine = [
        e for e in events(tmp_path, "connection") if port in (e["local_port"], e["remote_port"])
    ]
    assert {(e["family"], e["local_address"], e["direction"]) for e in mine} == {
        (6, "::1", "in"),
        (6, "::1", "out"),
    }
    client.close()  # the client's end lingers in TIME_WAIT: still the same connection
    accepted.close()
    server.close()
    agent.advance(5)
    later = [
        e for e in events(tmp_path, "connection") if port in (e["local_port"], e["remote_port"])
    ]
    assert len(later) == 2
    removed = [s for e in events(tmp_path, "listen") for s in e["removed"] if s["port"] == port]
    assert [(s["family"], s["address"]) for s in removed] == [(6, "::1")]


def test_live_dump_matches_the_socket() -> None:
    if not sock_diag_here():
        pytest.skip("this kernel has no sock_diag for TCP")
    server, client, accepted = loopback_pair()
    try:
        rows, complete = inet_diag.dump(inet_diag.AF_INET, 6, 1_000_000)
        inode = os.fstat(server.fileno()).st_ino
        (row,) = [r for r in rows if r[7] == inode]
        assert complete
        assert row == (
            2,
            10,
            bytes([127, 0, 0, 1]),
            server.getsockname()[1],
            bytes(4),
            0,
            os.getuid(),
            inode,
        )
        rows, complete = inet_diag.dump(inet_diag.AF_INET, 6, 1)
        assert len(rows) == 1 and not complete
    finally:
        for sock in (server, client, accepted):
            sock.close()


def test_socket_owners_on_this_host() -> None:
    server, client, accepted = loopback_pair()
    try:
        inodes = {os.fstat(s.fileno()).st_ino for s in (server, client, accepted)}
        found, examined, complete = proc_net.socket_owners("/proc", inodes | {1}, 1_000_000)
        assert found == dict.fromkeys(inodes, os.getpid()) and examined > 3 and complete
        _found, examined, complete = proc_net.socket_owners("/proc", {1}, 2)
        assert examined <= 2 and not complete  # the scan is bounded
    finally:
        for sock in (server, client, accepted):
            sock.close()


OWNER_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from defender_agent.linux import proc_net
found, _examined, _complete = proc_net.socket_owners("/proc", {int(sys.argv[2])}, 10**6)
print(found.get(int(sys.argv[2])))
"""


def _readable_by_others(path: str) -> bool:
    parts = Path(path).resolve().parts
    return all(
        os.stat(os.path.join(*parts[: n + 1])).st_mode & 0o005 == 0o005 for n in range(len(parts))
    )


def _other_python() -> str | None:
    """A Python that another user can run: this one, else the system's."""
    for python in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(python) and _readable_by_others(python):
            return python
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs util-linux setpriv")
@pytest.mark.skipif(_other_python() is None, reason="no Python that others may run")
def test_owners_of_other_users_sockets_need_both_capabilities() -> None:
    """What docs/collectors.md says the network drop-in needs, checked as uid 65534 against
    a socket root holds: listing /proc/PID/fd takes CAP_DAC_READ_SEARCH, reading its
    links CAP_SYS_PTRACE. Neither alone finds the owner."""
    src = str(Path(network.__file__).resolve().parents[2])
    if not _readable_by_others(src):
        pytest.skip("the agent's source is not readable by others")
    server, client, accepted = loopback_pair()
    inode = str(os.fstat(server.fileno()).st_ino)
    found = {}
    try:
        for caps in ("", "+sys_ptrace", "+dac_read_search", "+sys_ptrace,+dac_read_search"):
            switch = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            if caps:
                switch += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
            run = [*switch, str(_other_python()), "-I", "-S", "-c", OWNER_CHILD, src, inode]
            child = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
            assert child.returncode == 0, child.stderr
            found[caps] = child.stdout.strip()
    finally:
        for sock in (server, client, accepted):
            sock.close()
    assert found == {
        "": "None",
        "+sys_ptrace": "None",
        "+dac_read_search": "None",
        "+sys_ptrace,+dac_read_search": str(os.getpid()),
    }


def test_describe_names_the_backend(cfg_factory: Callable[..., Any]) -> None:
    section = cfg_factory(collectors__network={"backend": "proc"}).section("collectors.network")
    lines = network.describe(section)
    assert lines[0] == (
        "backend: /proc/net for tcp, udp, raw; every 5 s, every 60 s while quiet when SYN "
        "capture or conntrack announces new connections"
    )
    assert lines[2].startswith("owners: /proc/*/fd scan")
    auto = network.describe({**section, "backend": "auto"})[0]
    assert auto.startswith("backend: sock_diag for tcp, udp;") == sock_diag_here()


def test_describe_names_missing_capabilities(tmp_path: Path) -> None:
    """Another user's /proc/PID/fd needs both: DAC_READ_SEARCH opens it, SYS_PTRACE reads."""
    (tmp_path / "self").mkdir()
    section = {
        "backend": "proc",
        "poll_interval": 5.0,
        "idle_poll_interval": 60.0,
        "report_existing": False,
        "conntrack": "off",
        "connection_attempts": "off",
    }
    for cap_eff, missing in (
        ("0000000000080000", "without CAP_DAC_READ_SEARCH only"),  # CAP_SYS_PTRACE alone
        ("0000000000000004", "without CAP_SYS_PTRACE only"),
        ("0000000000000000", "without CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE only"),
        ("000001ffffffffff", "every process's sockets are readable"),
    ):
        (tmp_path / "self" / "status").write_text(f"Name:\tx\nCapEff:\t{cap_eff}\n")
        owners = network.describe({**section, "owners": True, "proc": str(tmp_path)})[2]
        assert missing in owners, owners
    assert "off" in network.describe({**section, "owners": False, "proc": str(tmp_path)})[2]
