"""The process collector: the connector's datagrams (built byte by byte from the kernel
headers, and captured on a real kernel), fake /proc trees for races and hostile input,
and the real kernel end to end (real child processes, real namespaces).

Virtual time throughout: the poller's scans are fired by advancing a ManualClock. Only
the tests that wait for a real process to be seen by the real connector wait in real
time, for at most 10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent import config
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.collectors import process
from defender_agent.linux import cn_proc, proc_pid
from defender_agent.model import Record
from defender_agent.plugins import QuietOutput

DATA = Path(__file__).parent / "data" / "process"
HZ = os.sysconf("SC_CLK_TCK")
UPTIME = 1000.0  # the fake trees' /proc/uptime


# --- helpers --------------------------------------------------------------------------
class _Records(QuietOutput):
    name = "records"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: Record, line: str) -> None:
        self.records.append(json.loads(line))  # every event must survive JSON

    def events(self, kind: str = "process-exec", pid: int | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r["type"] == "event"
            and r["payload"]["event"] == kind
            and (pid is None or r["payload"]["pid"] == pid)
        ]


def collector_section(**over: Any) -> dict[str, Any]:
    return {**config.defaults()["collectors.process"], **over}


def build(clock: ManualClock, **settings: Any) -> tuple[Agent, process.ProcessCollector, _Records]:
    """An agent on virtual time with the process collector and a list output."""
    agent = Agent("test", clock)
    out = _Records()
    agent.add("outputs", out)
    ctx = agent.context("collectors", "process")
    collector = process.create(ctx, collector_section(**settings), {})
    agent.add("collectors", collector)
    return agent, collector, out


def stat_line(pid: int, comm: str, ppid: int, start: int, flags: int = 0x400100) -> str:
    """proc(5) stat: pid (comm) state ppid pgrp session tty tpgid flags ... starttime ..."""
    fields = ["S", str(ppid), str(pid), str(pid), "0", "-1", str(flags), *["0"] * 12, str(start)]
    return f"{pid} ({comm}) {' '.join(fields + ['0'] * 32)}\n"


def fake_proc(root: Path) -> Path:
    """An empty fake /proc with uptime and stat."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "uptime").write_text(f"{UPTIME:.2f} 1900.00\n")
    (root / "stat").write_text("cpu  1 2 3 4\nbtime 1764000000\n")
    return root


def fake_process(
    root: Path,
    pid: int,
    *,
    ppid: int = 0,  # none: no parent to read unless a test wants one
    start: int = 50_000,
    comm: str = "prog",
    cmdline: bytes = b"prog\0--flag\0",
    exe: str | bytes | None = "/usr/bin/prog",
    cwd: str | None = "/srv",
    uid: int = 0,
    euid: int = 0,
    flags: int = 0x400100,
    where: Path | None = None,
) -> Path:
    """/proc/<pid>/ with stat, status, cmdline and the exe and cwd links (exe=None: a
    kernel thread's missing link)."""
    d = where or root / str(pid)
    d.mkdir()
    (d / "stat").write_text(stat_line(pid, comm, ppid, start, flags))
    (d / "status").write_text(
        f"Name:\t{comm}\nUid:\t{uid}\t{euid}\t{euid}\t{euid}\nGid:\t0\t0\t0\t0\n"
    )
    (d / "cmdline").write_bytes(cmdline)
    if exe is not None:
        os.symlink(exe, d / "exe")
    if cwd is not None:
        os.symlink(cwd, d / "cwd")
    return d


def datagram(
    what: int, body: bytes, *, cpu: int = 0, seq: int = 0, ack: int = 0, idx: int = 1
) -> bytes:
    """One connector message, laid out by hand from the kernel headers (not with
    cn_proc's own structs): struct nlmsghdr (16 bytes), struct cn_msg (20), struct
    proc_event (what, cpu, timestamp_ns; the union padded to its largest member, 24)."""
    event = struct.pack("=IIQ", what, cpu, 123_456_789) + body.ljust(24, b"\0")
    cn = struct.pack("=IIIIHH", idx, 1, seq, ack, len(event), 0) + event
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def exec_msg(pid: int, tgid: int | None = None, **kw: int) -> bytes:
    return datagram(cn_proc.PROC_EVENT_EXEC, struct.pack("=ii", pid, tgid or pid), **kw)


def fork_msg(parent: int, child: int, child_tgid: int, **kw: int) -> bytes:
    body = struct.pack("=iiii", parent, parent, child, child_tgid)
    return datagram(cn_proc.PROC_EVENT_FORK, body, **kw)


def exit_msg(pid: int, status: int, tgid: int | None = None, **kw: int) -> bytes:
    body = struct.pack("=iiIIii", pid, tgid or pid, status, 17, 1, 1)
    return datagram(cn_proc.PROC_EVENT_EXIT, body, **kw)


def netlink_reason() -> str:
    """'' when this process may listen to the connector, else why not."""
    conn, why = cn_proc.listen({})
    if conn is None:
        return why
    conn.close()
    return ""


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts, other users)")


def wait_for(agent: Agent, found: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Turn the loop until `found()` holds; real time, bounded (the connector is real)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        agent.run_once(0)
        if found():
            return True
        time.sleep(0.01)
    return False


# --- the connector's datagrams ----------------------------------------------------------
def test_a_datagram_is_76_bytes_and_every_kind_parses() -> None:
    counts: dict[str, int] = {}
    messages = [
        fork_msg(100, 4242, 4242, cpu=1, seq=7),
        exec_msg(4242, cpu=1, seq=8),
        exit_msg(4242, 9 << 8, cpu=1, seq=9),
        datagram(cn_proc.PROC_EVENT_NONE, struct.pack("=I", 1), ack=78),  # EPERM
        datagram(0x200, struct.pack("=ii", 4242, 4242) + b"name\0"),  # COMM: not used
    ]
    assert {len(m) for m in messages} == {76}  # 16 + 20 + 16 + 24, as the kernel sends
    fork, exe, ex, ack, comm = (cn_proc.parse(m, counts)[0] for m in messages)
    assert (fork.what, fork.cpu, fork.seq, fork.parent, fork.pid, fork.tgid) == (
        1,
        1,
        7,
        100,
        4242,
        4242,
    )
    assert (exe.what, exe.pid, exe.tgid, exe.seq) == (2, 4242, 4242, 8)
    assert (ex.what, ex.pid, ex.code, ex.signal) == (0x80000000, 4242, 9 << 8, 17)
    assert (ack.what, ack.ack, ack.code) == (0, 78, 1)
    assert comm.what == 0x200 and counts == {}


def test_several_messages_in_one_datagram_and_malformed_ones() -> None:
    counts: dict[str, int] = {}
    two = exec_msg(1) + exec_msg(2)
    assert [e.pid for e in cn_proc.parse(two, counts)] == [1, 2]
    assert cn_proc.parse(exec_msg(3)[:50], counts) == []  # cut inside cn_msg's payload
    assert cn_proc.parse(exec_msg(4, idx=2), counts) == []  # another connector user
    short = bytearray(exec_msg(5))
    struct.pack_into("=H", short, 32, 17)  # cn_msg.len: one byte past proc_event's header
    assert cn_proc.parse(bytes(short), counts) == []
    assert counts == {"netlink-malformed": 3}


def test_the_listen_request_is_what_the_kernel_reads() -> None:
    msg = cn_proc.message(cn_proc.PROC_CN_MCAST_LISTEN, ack=0x1234)
    length, kind, _flags, _seq, pid = struct.unpack_from("=IHHII", msg)
    idx, val, _cseq, ack, size, _cflags = struct.unpack_from("=IIIIHH", msg, 16)
    assert (length, kind, pid) == (len(msg), 3, os.getpid()) and len(msg) == 40
    assert (idx, val, ack, size) == (1, 1, 0x1234, 4)
    assert struct.unpack_from("=I", msg, 36) == (1,)


def captured() -> list[tuple[str, int, list[int], bytes]]:
    """(kind, cpu, the union's first four ints, datagram) from the capture files: a
    comment line naming each datagram, then its hex."""
    out = []
    for path in sorted(DATA.glob("cn_proc-*.txt")):
        lines = path.read_text().splitlines()
        for comment, data in zip(lines, lines[1:]):
            if comment.startswith("# ") and " cpu=" in comment and not data.startswith("#"):
                kind, cpu, ids = comment[2:].split(" ", 2)
                values = [int(v) for v in ids[len("ids=(") : -1].split(",")]
                out.append((kind, int(cpu[len("cpu=") :]), values, bytes.fromhex(data)))
    return out


@pytest.mark.skipif(sys.byteorder != "little", reason="captured on a little-endian machine")
def test_datagrams_captured_on_a_real_kernel_parse() -> None:
    samples = captured()
    assert {kind for kind, *_rest in samples} >= {"ack", "fork", "exec", "exit", "uid", "gid"}
    counts: dict[str, int] = {}
    for kind, cpu, ids, data in samples:
        (event,) = cn_proc.parse(data, counts)
        assert event.cpu == cpu, kind
        if kind == "fork":
            assert [event.parent, event.pid, event.tgid] == ids[1:], kind
        elif kind == "exec":
            assert (event.what, event.pid, event.tgid) == (2, ids[0], ids[1])
        elif kind == "exit":
            signal = ids[3] & 0xFFFFFFFF  # a thread's exit_signal is -1
            assert (event.pid, event.tgid, event.code, event.signal) == (*ids[:3], signal)
        elif kind == "ack":
            assert (event.what, event.code, event.ack) == (0, 0, 0x5EED + 1)
    assert counts == {}


@pytest.mark.skipif(sys.byteorder != "little", reason="captured on a little-endian machine")
def test_captured_sequence_feeds_the_collector(tmp_path: Path, clock: ManualClock) -> None:
    """The real capture: a thread (not a process), /bin/false forked, setgid/setuid,
    exec'd and exiting with status 1; nothing read from a /proc where it no longer is."""
    agent, collector, out = build(clock, proc=str(fake_proc(tmp_path)), exits=True)
    for *_about, data in captured():
        collector.feed(data)
    agent.pipeline.drain()
    (child_exec,) = out.events()
    (child_exit,) = out.events("process-exit")
    assert child_exec["payload"]["pid"] == child_exit["payload"]["pid"]
    assert child_exit["payload"]["exit_code"] == 1 and child_exit["payload"]["signal"] is None
    stats = collector.statistics()
    assert stats.pop("gone-before-read") == 1
    assert set(stats) <= {"netlink-lost"}  # the capture kept only its own process's events


# --- the collector on the connector, over fake /proc trees -------------------------------
def test_the_parent_that_forked_is_named_after_it_exited(
    tmp_path: Path, clock: ManualClock
) -> None:
    """`sh -c 'cmd &'` exits before the child's exec is read: /proc then says PPid 1, the
    fork event still knows the shell; a later exec in the same process keeps it."""
    root = fake_proc(tmp_path / "proc")
    fake_process(root, 4242, ppid=1, comm="setsid", cmdline=b"setsid\0x\0", exe="/usr/bin/setsid")
    agent, collector, out = build(clock, proc=str(root))
    collector.feed(fork_msg(4200, 4242, 4242, cpu=0, seq=1))
    collector.feed(exec_msg(4242, cpu=0, seq=2))
    collector.feed(exec_msg(4242, cpu=0, seq=3))  # setsid execs its program: same process
    collector.feed(fork_msg(1, 4300, 4300, cpu=0, seq=4))  # forked by init: PPid agrees
    fake_process(root, 4300, ppid=1, comm="d", cmdline=b"d\0", exe="/usr/sbin/d")
    collector.feed(exec_msg(4300, cpu=0, seq=5))
    agent.pipeline.drain()
    first, second, third = (e["payload"] for e in out.events())
    assert (first["pid"], first["ppid"], first["parent_executable"]) == (4242, 4200, None)
    assert second["ppid"] == 4200
    assert third["ppid"] == 1
    assert collector.statistics()["parent-gone-before-exec"] == 2
    collector.feed(exit_msg(4242, 0, cpu=0, seq=6))
    assert 4242 not in collector._forks


def test_exec_event_reads_the_process_and_its_parent(tmp_path: Path, clock: ManualClock) -> None:
    root = fake_proc(tmp_path / "proc")
    fake_process(root, 4200, comm="sh", cmdline=b"/bin/sh\0-c\0run\0", exe="/bin/sh")
    fake_process(
        root,
        4242,
        ppid=4200,
        start=50_000,
        comm="we (ird) name",  # comm may hold spaces and ")"
        cmdline=b"/usr/bin/prog\0--flag\0two words\0",
        cwd="/var/lib/x",
        uid=0,
        euid=0,
    )
    agent, collector, out = build(clock, proc=str(root))
    collector.feed(exec_msg(4242, cpu=0, seq=1))
    agent.pipeline.drain()
    (event,) = out.events()
    start = round(clock.time() - UPTIME + 50_000 / HZ, 3)
    assert event["payload"] == {
        "event": "process-exec",
        "pid": 4242,
        "ppid": 4200,
        "uid": 0,
        "euid": 0,
        "user": "root",
        "executable": "/usr/bin/prog",
        "deleted": False,
        "cmdline": "/usr/bin/prog --flag two words",
        "cwd": "/var/lib/x",
        "parent_executable": "/bin/sh",
        "parent_cmdline": "/bin/sh -c run",
        "start_time": start,
        "backend": "netlink",
    }
    assert event["time"] == Record("event", {}, start, start).to_dict("x")["time"]
    assert collector.statistics() == {}


def test_a_process_gone_before_the_read_still_yields_its_pid(
    tmp_path: Path, clock: ManualClock
) -> None:
    agent, collector, out = build(clock, proc=str(fake_proc(tmp_path)))
    collector.feed(exec_msg(777))
    agent.pipeline.drain()
    (event,) = out.events()
    payload = event["payload"]
    assert payload["pid"] == 777 and payload["backend"] == "netlink"
    assert all(payload[k] is None for k in payload if k not in ("event", "pid", "backend"))
    assert event["time"] == event["observed"]  # no start time known: dated when seen
    assert collector.statistics() == {"gone-before-read": 1}


def test_threads_are_not_processes_and_exits_only_when_asked(
    tmp_path: Path, clock: ManualClock
) -> None:
    root = fake_proc(tmp_path)
    for exits in (False, True):
        agent, collector, out = build(clock, proc=str(root), exits=exits)
        collector.feed(fork_msg(10, 11, 10))  # a thread of 10
        collector.feed(exit_msg(11, 0, tgid=10))  # and its end
        collector.feed(exit_msg(20, 3 << 8))  # exit(3)
        collector.feed(exit_msg(21, 9))  # killed by SIGKILL
        collector.feed(exit_msg(22, 0x80 | 11))  # SIGSEGV, core dumped
        agent.pipeline.drain()
        got = [
            (p["pid"], p["exit_code"], p["signal"], p["core_dumped"])
            for p in (r["payload"] for r in out.events("process-exit"))
        ]
        assert got == ([(20, 3, None, False), (21, None, 9, False), (22, None, 11, True)] * exits)
        assert out.events() == []


def test_lost_events_are_counted_from_the_per_cpu_sequence(
    tmp_path: Path, clock: ManualClock
) -> None:
    agent, collector, _out = build(clock, proc=str(fake_proc(tmp_path)))
    for seq in (10, 11, 15):  # 12, 13, 14 lost on cpu 0
        collector.feed(fork_msg(1, 100 + seq, 100 + seq, cpu=0, seq=seq))
    collector.feed(fork_msg(1, 200, 200, cpu=1, seq=5000))  # another CPU's own numbering
    collector.feed(datagram(0, b"\0" * 4, cpu=0, seq=16))  # a 6.6+ acknowledgement: in line
    collector.feed(fork_msg(1, 300, 300, cpu=0, seq=17))
    collector.feed(datagram(0, b"\0" * 4, cpu=0, seq=99))  # an older kernel's: its own seq
    collector.feed(fork_msg(1, 301, 301, cpu=0, seq=18))
    collector.feed(fork_msg(1, 302, 302, cpu=0, seq=14))  # late, not lost again
    collector.feed(fork_msg(1, 303, 303, cpu=1, seq=0xFFFFFFFF))  # far behind
    assert collector.statistics() == {"netlink-lost": 3}
    wrapped = process.ProcessCollector(agent.context("collectors", "process"), collector_section())
    wrapped.feed(fork_msg(1, 2, 2, seq=0xFFFFFFFF))
    wrapped.feed(fork_msg(1, 3, 3, seq=0))  # the counter wraps: nothing lost
    assert wrapped.statistics() == {}


def test_parents_are_cached_until_they_exec_or_exit(tmp_path: Path, clock: ManualClock) -> None:
    root = fake_proc(tmp_path)
    shell = fake_process(root, 50, cmdline=b"sh\0one\0", exe="/bin/sh")  # ppid 0: no parent
    for child in (51, 52, 53, 54):
        fake_process(root, child, ppid=50)
    agent, collector, out = build(clock, proc=str(root))
    collector.feed(exec_msg(51))
    (shell / "cmdline").write_bytes(b"sh\0two\0")  # setproctitle: the cached image stays
    collector.feed(exec_msg(52))
    collector.feed(exec_msg(50))  # the shell execs: a new image
    collector.feed(exec_msg(53))
    collector.feed(exit_msg(50, 0))  # it ends; its pid is free
    shutil.rmtree(shell)
    collector.feed(exec_msg(54))  # an orphan whose stat still names 50
    agent.pipeline.drain()
    parents = [r["payload"]["parent_cmdline"] for r in out.events() if r["payload"]["pid"] != 50]
    assert parents == ["sh one", "sh one", "sh two", None]
    assert collector.statistics() == {"parent-gone-before-read": 1}


# --- the /proc poller, over fake trees -----------------------------------------------
def poller(
    tmp_path: Path, clock: ManualClock, **settings: Any
) -> tuple[Agent, Any, _Records, Path]:
    root = fake_proc(tmp_path / "proc")
    fake_process(root, 1, cmdline=b"/sbin/init\0", exe="/sbin/init")
    fake_process(root, 2, ppid=0, cmdline=b"", exe=None, flags=0x00208040)  # kthreadd
    fake_process(root, 300, ppid=1, cmdline=b"/usr/sbin/sshd\0", exe="/usr/sbin/sshd")
    agent, collector, out = build(clock, backend="proc", proc=str(root), **settings)
    return agent, collector, out, root


def test_the_first_scan_is_a_baseline(tmp_path: Path, clock: ManualClock) -> None:
    agent, collector, out, root = poller(tmp_path, clock)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    agent.advance(3.0)
    assert out.events() == []  # what ran before the agent is not news
    fake_process(root, 400, ppid=300, cmdline=b"new\0")
    fake_process(root, 401, ppid=400, flags=0x00208040)  # a new kernel thread
    agent.advance(1.0)
    assert [r["payload"]["pid"] for r in out.events()] == [400]
    assert out.events()[0]["payload"]["backend"] == "proc"
    assert collector.statistics() == {"tracked-processes": 5}
    agent.advance(5.0)
    assert len(out.events()) == 1  # seen once


def test_a_process_that_vanishes_between_listing_and_reading(
    tmp_path: Path, clock: ManualClock
) -> None:
    agent, collector, out, root = poller(tmp_path, clock)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    (root / "500").mkdir()  # listed, but its files are gone: it exited in between
    agent.advance(1.0)
    (event,) = out.events()
    assert event["payload"]["pid"] == 500 and event["payload"]["cmdline"] is None
    assert collector.statistics()["gone-before-read"] == 1
    (root / "500").rmdir()
    agent.advance(1.0)
    assert len(out.events()) == 1


def test_a_reused_pid_is_a_new_process(tmp_path: Path, clock: ManualClock) -> None:
    agent, _collector, out, root = poller(tmp_path, clock, exits=True)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    # procfs gives a new process's directory a new inode: build it beside the old one
    fresh = fake_process(root, 300, start=90_000, cmdline=b"reborn\0", where=root / "tmp")
    shutil.rmtree(root / "300")
    fresh.rename(root / "300")
    agent.advance(1.0)
    assert [r["payload"]["cmdline"] for r in out.events()] == ["reborn"]
    assert [r["payload"]["pid"] for r in out.events("process-exit")] == [300]
    assert out.events("process-exit")[0]["payload"]["exit_code"] is None  # reaped: unknown
    shutil.rmtree(root / "300")
    agent.advance(1.0)
    assert len(out.events("process-exit")) == 2


def test_a_reread_directory_of_the_same_process_is_no_news(
    tmp_path: Path, clock: ManualClock
) -> None:
    """An evicted dentry comes back with a new inode: the start time says it is the same."""
    agent, _collector, out, root = poller(tmp_path, clock)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    fake_process(root, 300, ppid=1, where=root / "tmp")  # the same start time
    shutil.rmtree(root / "300")
    (root / "tmp").rename(root / "300")
    agent.advance(1.0)
    assert out.events() == []


def test_the_process_table_is_bounded(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "MAX_PROCESSES", 4)
    agent, collector, out, root = poller(tmp_path, clock)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    for pid in (600, 601, 602):
        fake_process(root, pid)
    agent.advance(1.0)
    assert len(out.events()) == 1
    assert collector.statistics() == {"table-full": 2, "tracked-processes": 4}


# --- hostile input ------------------------------------------------------------------
def test_a_100_kb_command_line_with_bytes_that_are_not_utf8(
    tmp_path: Path, clock: ManualClock
) -> None:
    root = fake_proc(tmp_path)
    evil = b"\xff\xfe\x1b[31m\0" + "é€😀".encode() * 2000 + b"\0" + b"A" * 100_000 + b"\0"
    fake_process(root, 9, cmdline=evil, exe=b"/tmp/\xff\xfeevil")
    agent, collector, out = build(clock, proc=str(root))
    collector.feed(exec_msg(9))
    agent.pipeline.drain()
    payload = out.events()[0]["payload"]
    cmdline = payload["cmdline"]
    assert len(cmdline) == process.MAX_TEXT and cmdline.endswith("…")
    assert cmdline.startswith("\\xff\\xfe\x1b[31m é€😀é€😀")
    assert payload["executable"] == "/tmp/\\xff\\xfeevil"
    assert collector.statistics() == {"truncated-cmdline": 1}


@pytest.mark.parametrize(
    ("raw", "text", "cut"),
    [
        (b"a\0b\0\0c\0", "a b  c", False),  # an empty argument is kept
        (b"sshd: user@pts/0\0\0\0\0", "sshd: user@pts/0", False),  # setproctitle padding
        (b"", None, False),  # a zombie
        (b"x" * process.MAX_TEXT, "x" * process.MAX_TEXT, False),
        (b"x" * (process.MAX_TEXT + 1), "x" * (process.MAX_TEXT - 1) + "…", True),
        ("😀".encode() * process.MAX_TEXT, "😀" * process.MAX_TEXT, False),
        (b"\x80" * 2000, "\\x80" * 1023 + "…", True),  # not ending on half an escape
    ],
)
def test_command_lines_are_joined_escaped_and_capped(
    raw: bytes, text: str | None, cut: bool
) -> None:
    assert process.cmdline_text(raw, False) == (text, cut)


def test_a_command_line_longer_than_was_read_is_cut() -> None:
    assert process.cmdline_text(b"abc\0", True) == ("abc …", True)


def test_deleted_executables(tmp_path: Path, clock: ManualClock) -> None:
    root = fake_proc(tmp_path / "proc")
    named = tmp_path / "bin" / "tool (deleted)"  # a real file whose name ends so
    named.parent.mkdir()
    named.write_bytes(b"")
    fake_process(root, 70, exe="/usr/sbin/daemon (deleted)", cmdline=b"daemon\0")
    fake_process(root, 71, ppid=70, exe=str(named))
    fake_process(root, 72, exe="/memfd:payload (deleted)")
    agent, collector, out = build(clock, proc=str(root))
    for pid in (70, 71, 72):
        collector.feed(exec_msg(pid))
    agent.pipeline.drain()
    got = {r["payload"]["pid"]: r["payload"] for r in out.events()}
    assert (got[70]["executable"], got[70]["deleted"]) == ("/usr/sbin/daemon", True)
    assert (got[71]["executable"], got[71]["deleted"]) == (str(named), False)
    assert got[71]["parent_executable"] == "/usr/sbin/daemon (deleted)"  # as the kernel shows
    assert (got[72]["executable"], got[72]["deleted"]) == ("/memfd:payload", True)


def test_unknown_users_and_unparsable_files(tmp_path: Path, clock: ManualClock) -> None:
    root = fake_proc(tmp_path)
    fake_process(root, 80, uid=3_999_999, euid=0)  # a setuid program run by nobody known
    odd = fake_process(root, 81)
    (odd / "stat").write_text("81 (x) S 1\n")
    agent, collector, out = build(clock, proc=str(root))
    collector.feed(exec_msg(80) + exec_msg(81))
    agent.pipeline.drain()
    first, second = (r["payload"] for r in out.events())
    assert (first["uid"], first["euid"], first["user"]) == (3_999_999, 0, None)
    assert second["ppid"] is None and second["cmdline"] == "prog --flag"
    assert collector.statistics() == {"unparsable-proc-file": 1}


# --- the real kernel ----------------------------------------------------------------
def spawn(*args: str | bytes, executable: str = "/bin/sleep") -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(args), executable=executable)


@pytest.fixture
def children() -> Any:
    """Real children of this test process; killed and reaped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str | bytes, executable: str = "/bin/sleep") -> subprocess.Popen[bytes]:
        child = spawn(*args, executable=executable)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()
        child.wait()


def see(agent: Agent, out: _Records, backend: str, pid: int) -> dict[str, Any]:
    """The process-exec event of `pid`: the next scan (virtual time) or the connector's
    message (real time, bounded)."""
    if backend == "proc":
        agent.advance(1.0)
    else:
        wait_for(agent, lambda: bool(out.events(pid=pid)))
    found = out.events(pid=pid)
    assert len(found) == 1, f"{backend}: no event for {pid}"
    payload: dict[str, Any] = found[0]["payload"]
    return payload


BACKENDS = ["proc", "netlink"]


def skip_unless_possible(backend: str) -> None:
    if backend == "netlink":
        why = netlink_reason()
        if why:
            pytest.skip(f"the process connector is refused here: {why}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_real_child_is_seen_with_its_parent(
    backend: str, clock: ManualClock, children: Any
) -> None:
    skip_unless_possible(backend)
    agent, collector, out = build(clock, backend=backend)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    assert collector.backend == backend
    child = children("/bin/sleep", "5", "0.000271828")
    payload = see(agent, out, backend, child.pid)
    assert payload["ppid"] == os.getpid()
    assert payload["cmdline"] == "/bin/sleep 5 0.000271828"
    assert payload["executable"] == os.path.realpath("/bin/sleep")
    assert payload["parent_executable"] == os.readlink("/proc/self/exe")
    own = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").decode()
    assert payload["parent_cmdline"] == own.replace("\0", " ")
    assert (payload["uid"], payload["euid"], payload["cwd"]) == (
        os.getuid(),
        os.geteuid(),
        os.getcwd(),
    )
    assert payload["deleted"] is False and payload["backend"] == backend
    # its start, on the agent's (virtual) clock: a moment ago, never in the future
    assert clock.time() - 60 < payload["start_time"] <= clock.time() + 0.01
    agent.stop()
    agent.shutdown()


def test_a_process_caught_in_the_middle_of_its_exec(clock: ManualClock, children: Any) -> None:
    """Popen returns when the exec closes its close-on-exec pipe, before the kernel has
    written the new arguments: read at once, cmdline is empty about half the time (1.4 ms
    at the median, measured). A scan right after each spawn still gets every command line."""
    agent, collector, out = build(clock, backend="proc")
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    agent.advance(1.0)  # the baseline
    pids = []
    for n in range(100):
        pids.append(children("/bin/sleep", "30", f"0.{n:04d}").pid)
        agent.advance(1.0)  # scans at once (virtual time)
    got = {pid: out.events(pid=pid)[0]["payload"]["cmdline"] for pid in pids}
    assert got == {pid: f"/bin/sleep 30 0.{n:04d}" for n, pid in enumerate(pids)}
    assert "cmdline-empty" not in collector.statistics()
    agent.stop()
    agent.shutdown()


ARGC0 = (
    "import ctypes; libc = ctypes.CDLL(None); argv = (ctypes.c_char_p * 1)(None); "
    "libc.execv(b'/bin/sh', argv); raise SystemExit('execv failed')"
)


def argument_less_shell() -> subprocess.Popen[bytes]:
    """execve("/bin/sh", {NULL}, env): argc 0 (Linux 5.18+ fills in one empty argument),
    so its cmdline is empty for good; returns once the shell answers (its exec is over)."""
    child = subprocess.Popen(
        [sys.executable, "-c", ARGC0], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(b"echo ready\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"ready\n"
    return child


def test_programs_exec_d_with_no_arguments_at_all(clock: ManualClock) -> None:
    """A scan waits a bounded time for arguments that never come, then sends null; its
    waiting has a budget per scan (a flood of such programs must not stall the agent).
    The connector never waits: it reports an exec once the arguments are in place."""
    agent, collector, out = build(clock, backend="proc")
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    agent.advance(1.0)
    shells = []
    try:
        for _ in range(6):
            shells.append(argument_less_shell())
        agent.advance(1.0)
        for shell in shells:
            (event,) = out.events(pid=shell.pid)
            assert event["payload"]["cmdline"] is None
            assert event["payload"]["executable"] == os.path.realpath("/bin/sh")
        stats = collector.statistics()
        # 63.5 ms of waiting each: three fit in the 250 ms budget, the rest are sent at once
        assert stats.get("cmdline-empty") == 3, stats
        assert stats.get("cmdline-wait-budget-spent") == 3, stats
        payload, _start = collector.read_process(shells[0].pid, "netlink", None, set())
        assert payload["cmdline"] is None
        assert collector.statistics().get("cmdline-empty") == 3  # no wait: nothing counted
    finally:
        for shell in shells:
            shell.kill()
            shell.wait()
    agent.stop()
    agent.shutdown()


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_hostile_and_deleted_programs(
    backend: str, clock: ManualClock, children: Any, tmp_path: Path
) -> None:
    skip_unless_possible(backend)
    copy = tmp_path / "sleeper"
    shutil.copy("/bin/sleep", copy)
    named = tmp_path / "sleeper (deleted)"
    shutil.copy("/bin/sleep", named)
    agent, collector, out = build(clock, backend=backend)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    argv0 = b"\xff\xfe\x1b]0;pwned\x07" + b"B" * 100_000  # one 100 KB argument, not UTF-8
    hostile = children(argv0, b"5")
    deleted = children(str(copy), "5", executable=str(copy))
    os.unlink(copy)  # before the agent looks: it runs a file that no longer exists
    tricky = children(str(named), "5", executable=str(named))
    got = {c.pid: see(agent, out, backend, c.pid) for c in (hostile, deleted, tricky)}
    cmdline = got[hostile.pid]["cmdline"]
    assert len(cmdline) == process.MAX_TEXT and cmdline.endswith("B…")
    assert cmdline.startswith("\\xff\\xfe\x1b]0;pwned\x07BBB")
    assert (got[deleted.pid]["executable"], got[deleted.pid]["deleted"]) == (str(copy), True)
    assert (got[tricky.pid]["executable"], got[tricky.pid]["deleted"]) == (str(named), False)
    assert collector.statistics().get("truncated-cmdline") == 1
    agent.stop()
    agent.shutdown()


def test_real_exits_through_the_connector(clock: ManualClock, children: Any) -> None:
    skip_unless_possible("netlink")
    agent, _collector, out = build(clock, backend="netlink", exits=True)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    three = children("sh", "-c", "exit 3", executable="/bin/sh")
    killed = children("/bin/sleep", "30")
    see(agent, out, "netlink", killed.pid)
    killed.kill()
    three.wait()
    killed.wait()

    def ended(pid: int) -> list[dict[str, Any]]:
        return out.events("process-exit", pid)

    assert wait_for(agent, lambda: bool(ended(three.pid) and ended(killed.pid)))
    assert ended(three.pid)[0]["payload"]["exit_code"] == 3
    assert ended(killed.pid)[0]["payload"]["signal"] == 9
    agent.stop()
    agent.shutdown()


# imports first: a child that gives up root may no longer read this interpreter's files
IMPORTS = "import _socket\nfrom defender_agent.collectors import process\n"
DESCRIBE = (
    "section = {'backend': 'auto', 'poll_interval': 1.0, 'exits': False, 'proc': '/proc'}\n"
    "print(process.describe(section)[0])\n"
)


@pytest.mark.parametrize(
    ("namespace", "reason"),
    [
        ("--net", "ECONNREFUSED: the connector lives in the initial network namespace only"),
        ("--pid", "no answer to PROC_CN_MCAST_LISTEN"),
    ],
)
def test_a_refused_connector_falls_back_to_proc_polling(
    namespace: str, reason: str, run_child: Callable[..., str]
) -> None:
    """Real refusals: the connector exists only in the initial network namespace, and
    ignores listeners outside the initial PID namespace."""
    need_root()
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    if netlink_reason():
        pytest.skip(f"no connector here at all: {netlink_reason()}")
    wrapper = ["unshare", namespace, *(["--fork"] if namespace == "--pid" else [])]
    line = run_child(IMPORTS + DESCRIBE, *wrapper).strip()
    assert line.startswith("backend: /proc polling every 1 s (netlink: ") and reason in line


def test_an_unprivileged_listener(tmp_path: Path, run_child: Callable[..., str]) -> None:
    """Linux 6.6 opened the connector to users without CAP_NET_ADMIN; before, bind fails."""
    need_root()
    if netlink_reason():
        pytest.skip(f"no connector here at all: {netlink_reason()}")
    drop = "import os; os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    line = run_child(IMPORTS + drop + DESCRIBE).strip()
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (6, 6):
        assert line == "backend: netlink process connector"
    else:
        assert "EPERM on bind: CAP_NET_ADMIN is needed before Linux 6.6" in line


HIDDEN = """
import os, time
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.linux import cn_proc
from defender_agent.plugins import QuietOutput
os.system("mount -t proc -o hidepid=invisible proc {mnt}")  # in this mount namespace only
class Out(QuietOutput):
    name = "out"
    pids = []
    def write(self, record, line):
        self.pids.append(record.payload["pid"])
gate_r, gate_w = os.pipe()
others = os.fork()
if others == 0:  # stays root: a process the agent may not see
    os.read(gate_r, 1)
    os.execv("/bin/true", ["/bin/true"])
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # the agent's own user from here on
conn, why = cn_proc.listen({{}})
if conn is None:
    os.write(gate_w, b"x")
    raise SystemExit(print("SKIP: the kernel refuses an unprivileged listener:", why))
conn.close()
agent = Agent("t", ManualClock())
out = Out()
agent.add("outputs", out)
section = {{"backend": "netlink", "poll_interval": 1.0, "exits": False, "proc": "{mnt}"}}
collector = process.create(agent.context("collectors", "process"), section, {{}})
agent.add("collectors", collector)
agent.start(3600, 3600)
print("DESCRIBE", process.describe(section))
own = os.fork()
if own == 0:  # the agent's user: visible
    os.read(gate_r, 1)
    os.execv("/bin/sleep", ["/bin/sleep", "0.5"])
os.write(gate_w, b"xx")
deadline = time.monotonic() + 10
# both execs, in whichever order the kernel sent them: the own one seen, the other counted
while time.monotonic() < deadline and not (
    own in out.pids and "hidden-process" in collector.statistics()
):
    agent.run_once(0)
    time.sleep(0.01)
print("STATS", collector.statistics(), others in out.pids, own in out.pids)
os.waitpid(others, 0)
os.waitpid(own, 0)
"""


def test_hidden_processes_are_counted_not_reported(run_child: Callable[..., str]) -> None:
    """systemd's ProtectProc=invisible: procfs mounted with hidepid=invisible and an agent
    that is not root. Others' processes still exec (the connector says so) but /proc has
    no entry for them: counted as hidden-process, no event; its own user's are seen."""
    need_root()
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8)")
    mnt = Path(tempfile.mkdtemp(prefix="defender-proc-"))  # tmp_path's parents are 0700
    try:
        mnt.chmod(0o755)
        code = IMPORTS + HIDDEN.format(mnt=mnt)
        out = run_child(code, "unshare", "--mount", "--propagation", "private")
    finally:
        mnt.rmdir()  # the mount lived and died in the child's mount namespace
    if out.startswith("SKIP"):
        pytest.skip(out)
    assert "other users' processes are hidden" in out
    stats = next(line for line in out.splitlines() if line.startswith("STATS"))
    assert "'hidden-process': " in stats and stats.endswith(" False True"), stats


def test_describe_says_what_it_would_use() -> None:
    lines = process.describe(collector_section(backend="proc", exits=True))
    assert lines[:2] == [
        "backend: /proc polling every 1 s (backend = proc)",
        "process-exit events: on",
    ]
    why = netlink_reason()
    auto = process.describe(collector_section())[0]
    if why:
        assert auto == f"backend: /proc polling every 1 s (netlink: {why})"
    else:
        assert auto == "backend: netlink process connector"


def test_hidepid_is_read_from_the_visible_mount(tmp_path: Path) -> None:
    """mountinfo(5): the last proc mount on the root's path wins; paths escape spaces."""
    root = fake_proc(tmp_path / "my proc")
    assert proc_pid.hidepid(str(root)) is None  # no self/mountinfo: not a procfs
    where = str(root).replace(" ", "\\040")
    lines = [
        f"22 1 0:5 / {where} rw,nosuid - proc proc rw",
        f"23 22 0:6 / {where}/sys rw - proc proc rw,hidepid=2",  # another path
        f"24 22 0:7 / {where} rw - tmpfs none rw,hidepid=2",  # not a procfs
        f"25 22 0:8 / {where} rw,nosuid shared:9 - proc proc rw,hidepid=invisible,gid=4",
    ]
    (root / "self").mkdir()
    (root / "self" / "mountinfo").write_text("\n".join(lines) + "\n")
    assert proc_pid.hidepid(str(root)) == "invisible"
    lines.append(f"26 25 0:9 / {where} rw - proc proc rw")  # mounted over it, no hidepid
    (root / "self" / "mountinfo").write_text("\n".join(lines) + "\n")
    assert proc_pid.hidepid(str(root)) is None
