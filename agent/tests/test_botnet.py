"""Botnet detector: Mirai-like behaviour, on event time with a virtual clock."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.config import ConfigError
from defender_agent.detectors import botnet, port_scan
from defender_agent.detectors.botnet import BotnetDetector
from defender_agent.model import Record

T0 = 1_795_000_000.0
DEVICE = "192.0.2.10"
BOT = "/tmp/.x/dvrHelper"


@pytest.fixture
def detector(detector_section: Callable[..., dict[str, Any]]) -> Callable[..., BotnetDetector]:
    """A botnet detector from the schema's defaults with `settings` over them."""

    def make(**settings: Any) -> BotnetDetector:
        agent = Agent("t", ManualClock(T0 + 600))
        section = detector_section("botnet", **settings)
        return botnet.create(agent.context("detectors", "botnet"), section, {})

    return make


def out(
    t: float,
    remote: str,
    port: int,
    pid: int | None = 4242,
    executable: str | None = BOT,
    protocol: str = "tcp",
    direction: str = "out",
    state: str = "syn-sent",
) -> Record:
    return Record(
        "event",
        {
            "event": "connection",
            "direction": direction,
            "protocol": protocol,
            "family": 4,
            "local_address": DEVICE,
            "local_port": 40000,
            "remote_address": remote,
            "remote_port": port,
            "state": state,
            "pid": pid,
            "executable": executable,
            "uid": 0 if pid is not None else None,
            "backend": "conntrack",
        },
        T0 + t,
    )


def exec_(
    t: float,
    executable: str | None,
    cmdline: str | None,
    pid: int = 4242,
    deleted: bool | None = False,
) -> Record:
    return Record(
        "event",
        {
            "event": "process-exec",
            "pid": pid,
            "ppid": 1,
            "uid": 0,
            "euid": 0,
            "user": "root",
            "executable": executable,
            "deleted": deleted if executable else None,
            "cmdline": cmdline,
            "cwd": "/",
            "parent_executable": "/bin/busybox",
            "parent_cmdline": "sh",
            "start_time": T0 + t,
            "backend": "netlink",
        },
        T0 + t,
    )


def sock(
    protocol: str, port: int, executable: str | None, pid: int = 4242, address: str = "0.0.0.0"
) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "family": 4,
        "address": address,
        "port": port,
        "pid": pid,
        "executable": executable,
        "uid": 0,
    }


def listen(
    t: float, added: list[dict[str, Any]], sockets: list[dict[str, Any]] | None = None
) -> Record:
    return Record(
        "event",
        {
            "event": "listen",
            "truncated": False,
            "sockets": sockets if sockets is not None else added,
            "added": added,
            "removed": [],
        },
        T0 + t,
    )


def feed(det: Any, records: list[Record]) -> list[dict[str, Any]]:
    alerts = []
    for r in records:
        alerts.extend(a.payload for a in det.process(r))
    return alerts


def hosts(n: int, start: int = 0) -> list[str]:
    return [f"198.51.{(start + i) // 250}.{(start + i) % 250 + 1}" for i in range(n)]


# --- BotnetScan ------------------------------------------------------------------------
def test_a_mirai_like_telnet_scan_is_one_botnet_scan(
    detector: Callable[..., BotnetDetector],
) -> None:
    """A few hundred hosts a minute on 23, one in ten on 2323, from one process."""
    det = detector()
    records = [out(i * 0.1, host, 2323 if i % 10 == 0 else 23) for i, host in enumerate(hosts(600))]
    alerts = feed(det, records)
    scans = [a for a in alerts if a["name"] == "BotnetScan"]
    assert [a.get("update", False) for a in scans] == [False]  # one alert, 60 s not yet over
    (a,) = scans
    assert (a["severity"], a["behaviour"], a["pid"], a["executable"], a["port"]) == (
        "high",
        "scan",
        4242,
        BOT,
        23,
    )
    assert a["distinct_targets"] == 32 and len(a["targets"]) == 16 and a["deleted"] is False
    assert f"{BOT} (pid 4242) connected to 32 hosts on TCP port 23" in a["description"]
    assert a["remediation"] and a["id"].startswith("BotnetScan-")
    # a minute on, still scanning: the same incident written again, counted
    (update,) = feed(det, [out(70.0 + i * 0.1, h, 23) for i, h in enumerate(hosts(2, 900))])[:1]
    assert update["id"] == a["id"] and update["update"] is True and update["count"] > 500


def test_a_raw_socket_scan_seen_by_conntrack_has_no_process(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    alerts = feed(
        det, [out(i * 0.01, h, 23, pid=None, executable=None) for i, h in enumerate(hosts(40))]
    )
    (a,) = alerts
    assert a["pid"] is None and a["executable"] is None
    assert a["description"].startswith("an unknown process connected to 32 hosts")


def test_thresholds_tell_a_scan_from_clients(detector: Callable[..., BotnetDetector]) -> None:
    det = detector()
    # 31 hosts on telnet by one process: one short; the 32nd crosses
    assert feed(det, [out(i, h, 23) for i, h in enumerate(hosts(31))]) == []
    assert len(feed(det, [out(31, "203.0.113.1", 23)])) == 1
    # any other port needs 128 hosts: a busy client on 443 reaching 100 CDN hosts is none
    det = detector()
    web = [
        out(i * 0.5, h, 443, pid=900, executable="/usr/bin/curl") for i, h in enumerate(hosts(100))
    ]
    assert feed(det, web) == []
    scan = [out(i * 0.1, h, 8080, pid=901, executable="/tmp/s") for i, h in enumerate(hosts(128))]
    (a,) = feed(det, scan)
    assert (a["port"], a["distinct_targets"]) == (8080, 128)
    assert "one of the ports" not in a["description"]


def test_near_miss_four_telnet_attempts_to_one_host_and_everyday_clients(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    records = [out(i * 2.0, "198.51.100.23", 23, executable="/usr/bin/telnet") for i in range(4)]
    # a device talking to a few servers on 443, asking NTP and DNS over UDP
    for i in range(120):
        server = ("203.0.113.10", "203.0.113.11", "203.0.113.12")[i % 3]
        records.append(out(i * 0.5, server, 443, pid=700, executable="/usr/bin/agentd"))
    for i in range(4):
        records.append(
            out(
                i,
                f"192.0.2.{123 + i}",
                123,
                pid=701,
                executable="/usr/sbin/chronyd",
                protocol="udp",
            )
        )
    for i in range(60):
        records.append(
            out(i, "192.0.2.53", 53, pid=702, executable="/usr/bin/curl", protocol="udp")
        )
    assert feed(det, records) == []


def test_many_processes_each_to_one_host_are_no_scan(
    detector: Callable[..., BotnetDetector],
) -> None:
    """Ansible from a jump host: one ssh process per target host."""
    det = detector()
    records = [
        out(i * 0.1, h, 22, pid=5000 + i, executable="/usr/bin/ssh", state="established")
        for i, h in enumerate(hosts(200))
    ]
    assert feed(det, records) == []


def test_window_edges_on_event_time(detector: Callable[..., BotnetDetector]) -> None:
    det = detector()
    spread = [out(i * 60 / 31, h, 23) for i, h in enumerate(hosts(32))]  # first to last: 60 s
    assert len(feed(det, spread)) == 1
    det = detector()
    slow = [out(i * 2.0, h, 23) for i, h in enumerate(hosts(100))]  # 31 hosts a minute
    assert feed(det, slow) == []
    det = detector()
    late = [out(1000 + i * 0.1, h, 23) for i, h in enumerate(hosts(31))]
    assert feed(det, [*late, out(900, "203.0.113.99", 23)]) == []  # older than the window
    assert det.statistics()["late"] == 1


def test_scan_thresholds_can_be_turned_off(detector: Callable[..., BotnetDetector]) -> None:
    det = detector(scan_hosts=0, scan_hosts_any_port=0)
    assert feed(det, [out(i * 0.01, h, 23) for i, h in enumerate(hosts(300))]) == []


# --- BotnetDeletedExecutable -------------------------------------------------------------
def test_a_bot_that_deleted_itself_is_seen_at_exec_and_on_its_sockets(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    (a,) = feed(det, [exec_(0, BOT, "./dvrHelper telnet.x86", deleted=True)])
    assert (a["name"], a["behaviour"], a["executable"], a["deleted"]) == (
        "BotnetDeletedExecutable",
        "deleted-executable",
        BOT,
        True,
    )
    assert a["cmdline"] == "./dvrHelper telnet.x86" and a["ppid"] == 1 and a["user"] == "root"
    assert "was started" in a["description"]
    # the same process later on a connection: the same incident, counted
    assert feed(det, [out(5, "203.0.113.5", 80, executable=BOT + " (deleted)")]) == []
    # another one seen first on its connection, and one on its listening socket
    (b,) = feed(det, [out(6, "203.0.113.5", 80, pid=77, executable="/var/tmp/k (deleted)")])
    assert b["pid"] == 77 and "holds a connection with 203.0.113.5:80" in b["description"]
    (c,) = feed(det, [listen(7, [sock("tcp", 2323, "/dev/shm/q (deleted)", pid=78)])])
    assert c["socket"]["port"] == 2323 and "listens on tcp 0.0.0.0:2323" in c["description"]
    (d,) = feed(det, [out(8, "203.0.113.5", 443, pid=79, executable="/memfd:x (deleted)")])
    assert d["executable"] == "/memfd:x"


def test_near_miss_a_package_upgrade(detector: Callable[..., BotnetDetector]) -> None:
    """apt replaces /usr/sbin/sshd while it runs (its old file is deleted), unpacks a
    helper into /tmp and runs it, runs maintainer scripts from /var/lib/dpkg."""
    det = detector()
    records = [
        exec_(0, "/usr/bin/dpkg", "dpkg --unpack /var/cache/apt/archives/openssh.deb", pid=10),
        exec_(1, "/tmp/tmp.Ab12/update-helper", "/tmp/tmp.Ab12/update-helper --install", pid=11),
        exec_(
            2,
            "/usr/bin/dash",
            "/bin/sh /var/lib/dpkg/info/openssh-server.postinst configure",
            pid=12,
        ),
        exec_(3, "/usr/sbin/sshd", "/usr/sbin/sshd -D", pid=13, deleted=True),
        out(
            4, "198.51.100.7", 40000, pid=300, executable="/usr/sbin/sshd (deleted)", direction="in"
        ),
        out(5, "203.0.113.80", 443, pid=14, executable="/usr/lib/apt/methods/http (deleted)"),
        listen(6, [sock("tcp", 22, "/usr/sbin/sshd (deleted)", pid=300)]),
        listen(7, [sock("raw", 58, "/usr/lib/systemd/systemd-networkd (deleted)", pid=301)]),
    ]
    assert feed(det, records) == []


# --- BotnetRawSocket ---------------------------------------------------------------------
def test_a_raw_tcp_socket_held_by_a_program_outside_the_system_directories(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    (a,) = feed(det, [listen(0, [sock("raw", 6, "/tmp/.x/dvrHelper")])])
    assert (a["name"], a["behaviour"], a["protocol"], a["port"], a["deleted"]) == (
        "BotnetRawSocket",
        "raw-socket",
        "raw",
        6,
        False,
    )
    assert "raw socket for IP protocol 6" in a["description"]
    # a snapshot that only lists it again (not in `added`) raises nothing
    assert feed(det, [listen(5, [], sockets=[sock("raw", 6, "/tmp/.x/dvrHelper")])]) == []
    # deleted as well: a raw-socket alert and a deleted-executable alert for the process
    names = [a["name"] for a in feed(det, [listen(9, [sock("raw", 6, "/tmp/y (deleted)", pid=5)])])]
    assert sorted(names) == ["BotnetDeletedExecutable", "BotnetRawSocket"]


def test_near_miss_system_raw_sockets_and_unknown_owners(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    records = [
        listen(
            0,
            [
                sock("raw", 1, "/usr/bin/ping", pid=20),
                sock("raw", 58, "/usr/lib/systemd/systemd-networkd", pid=21, address="::"),
                sock("raw", 112, "/usr/sbin/keepalived", pid=22),
                sock("raw", 255, None, pid=23),
                sock("udp", 68, "/sbin/udhcpc", pid=24),
            ],
        )
    ]
    assert feed(det, records) == []
    assert det.statistics()["raw-owner-unknown"] == 1
    det = detector(raw_sockets=False)
    assert feed(det, [listen(0, [sock("raw", 6, "/tmp/x")])]) == []


# --- BotnetFakeKernelThread --------------------------------------------------------------
@pytest.mark.parametrize(
    "cmdline", ["[kworker/0:1]", "[kthreadd]", "[ksoftirqd/0] x", "[kworker/u8:2-events_unbound]"]
)
def test_a_program_named_like_a_kernel_thread(
    cmdline: str, detector: Callable[..., BotnetDetector]
) -> None:
    det = detector()
    (a,) = feed(det, [exec_(0, "/tmp/.x/k", cmdline)])
    assert (a["name"], a["behaviour"], a["process_name"], a["cmdline"]) == (
        "BotnetFakeKernelThread",
        "fake-kernel-thread",
        cmdline.split()[0],
        cmdline,
    )
    assert a["description"].startswith(
        f"/tmp/.x/k (pid 4242) was started under the name {cmdline.split()[0]}"
    )


@pytest.mark.parametrize(
    ("executable", "cmdline"),
    [
        (None, "[kworker/0:1]"),  # a real kernel thread: no executable
        ("/usr/bin/[", "[ -f /etc/hostname ]"),  # test(1) from a script
        ("/usr/bin/[", "["),
        ("/usr/sbin/sshd", "sshd: admin [priv]"),
        ("/tmp/x", "[]"),
        ("/tmp/x", "[" + "k" * 100 + "]"),  # longer than any thread name
        ("/tmp/x", "[a[b]"),
        ("/tmp/x", None),
    ],
)
def test_near_miss_brackets_that_are_no_kernel_thread(
    executable: str | None, cmdline: str | None, detector: Callable[..., BotnetDetector]
) -> None:
    assert feed(detector(), [exec_(0, executable, cmdline)]) == []


# --- BotnetArtefact ------------------------------------------------------------------------
def test_the_mirai_single_instance_listener(detector: Callable[..., BotnetDetector]) -> None:
    det = detector()
    (a,) = feed(det, [listen(0, [sock("tcp", 48101, "/tmp/.x/dvrHelper", address="127.0.0.1")])])
    assert (a["name"], a["behaviour"], a["address"], a["port"], a["pid"]) == (
        "BotnetArtefact",
        "artefact",
        "127.0.0.1",
        48101,
        4242,
    )
    assert "listens on TCP 127.0.0.1:48101" in a["description"]
    assert feed(detector(artefact_listeners=[]), [listen(0, [sock("tcp", 48101, "/tmp/x")])]) == []


def test_near_miss_an_admin_running_nc_listen_on_a_lan_address(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    records = [
        exec_(0, "/usr/bin/nc", "nc -l -p 4444 -s 192.0.2.10", pid=600),
        listen(1, [sock("tcp", 4444, "/usr/bin/nc", pid=600, address="192.0.2.10")]),
        out(
            2,
            "192.0.2.77",
            51000,
            pid=600,
            executable="/usr/bin/nc",
            direction="in",
            state="established",
        ),
    ]
    assert feed(det, records) == []


# --- near misses shared by every detector, a benign workload ----------------------------------
def test_near_miss_a_process_named_like_a_miner_doing_nothing_and_a_compile(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    records = [exec_(0, "/usr/local/bin/xmrig-docs-viewer", "xmrig-docs-viewer --help", pid=50)]
    records += [
        exec_(1 + i * 0.01, "/usr/bin/cc1", f"cc1 -O2 file{i}.c", pid=60 + i) for i in range(200)
    ]
    assert feed(det, records) == []


def test_near_miss_ssh_remote_forwarding(detector: Callable[..., BotnetDetector]) -> None:
    det = detector()
    records = [
        exec_(0, "/usr/bin/ssh", "ssh -N -R 8080:localhost:80 admin@198.51.100.7", pid=70),
        out(1, "198.51.100.7", 22, pid=70, executable="/usr/bin/ssh", state="established"),
        listen(2, [sock("tcp", 8080, "/usr/bin/ssh", pid=70, address="127.0.0.1")]),
    ]
    assert feed(det, records) == []


def test_a_benign_workload_raises_nothing_from_either_scan_detector(
    detector_section: Callable[..., dict[str, Any]],
) -> None:
    """Package installs and upgrades, cron, DHCP and NTP, an admin logging in with a key
    and running ps/top/ss/journalctl, a compile: zero alerts from botnet and port_scan."""
    agent = Agent("t", ManualClock(T0 + 600))
    detectors = [
        botnet.create(agent.context("detectors", "botnet"), detector_section("botnet"), {}),
        port_scan.create(
            agent.context("detectors", "port_scan"), detector_section("port_scan"), {}
        ),
    ]
    records = [
        listen(
            0,
            [
                sock("tcp", 22, "/usr/sbin/sshd", pid=300),
                sock("udp", 68, "/usr/sbin/dhclient", pid=301),
                sock("udp", 123, "/usr/sbin/chronyd", pid=302, address="127.0.0.1"),
                sock("raw", 58, "/usr/lib/systemd/systemd-networkd", pid=303, address="::"),
            ],
        ),
    ]
    t = 1.0
    mirrors = ["203.0.113.80", "203.0.113.81"]
    for i in range(30):  # apt: a few mirrors, many fetches; dpkg and maintainer scripts
        records.append(out(t, mirrors[i % 2], 443, pid=400, executable="/usr/lib/apt/methods/http"))
        records.append(exec_(t, "/usr/bin/dpkg", f"dpkg --unpack pkg{i}.deb", pid=401 + i))
        t += 0.5
    records.append(exec_(t, "/tmp/tmp.Zx/helper", "/tmp/tmp.Zx/helper --postinst", pid=450))
    records.append(exec_(t, "/usr/sbin/sshd", "/usr/sbin/sshd -D", pid=451, deleted=True))
    for i in range(5):  # cron
        records.append(exec_(t + 60 * i, "/usr/sbin/cron", "/usr/sbin/CRON -f", pid=500 + i))
        records.append(
            exec_(t + 60 * i, "/usr/bin/run-parts", "run-parts /etc/cron.hourly", pid=510 + i)
        )
    for i in range(4):  # DHCP renew, NTP pool over UDP
        records.append(
            out(t + i, "192.0.2.1", 67, pid=301, executable="/usr/sbin/dhclient", protocol="udp")
        )
        records.append(
            out(
                t + i,
                f"192.0.2.{123 + i}",
                123,
                pid=302,
                executable="/usr/sbin/chronyd",
                protocol="udp",
            )
        )
    # the admin logs in with a key and looks around
    records.append(
        out(
            t + 10,
            "198.51.100.7",
            50022,
            pid=600,
            executable="/usr/sbin/sshd",
            direction="in",
            state="established",
        )
    )
    for i, (exe, cmd) in enumerate(
        [
            ("/usr/bin/bash", "-bash"),
            ("/usr/bin/ps", "ps aux"),
            ("/usr/bin/top", "top -b -n 1"),
            ("/usr/bin/ss", "ss -tlnp"),
            ("/usr/bin/journalctl", "journalctl -u ssh --since today"),
        ]
    ):
        records.append(exec_(t + 11 + i, exe, cmd, pid=601 + i))
    for i in range(300):  # a compile
        records.append(exec_(t + 20 + i * 0.1, "/usr/bin/gcc", f"gcc -c -O2 src{i}.c", pid=700 + i))
    for det in detectors:
        assert feed(det, records) == [], det.name


# --- hostile input and bounds ----------------------------------------------------------------
def test_hostile_fields_are_capped_or_counted_never_raised(
    detector: Callable[..., BotnetDetector],
) -> None:
    det = detector()
    huge = "[kworker/0:1] " + "\\xff" * 300_000
    (a,) = feed(det, [exec_(0, "/tmp/" + "A" * 100_000, huge)])
    assert len(a["executable"]) == botnet.MAX_PATH and len(a["cmdline"]) == botnet.MAX_PATH
    assert feed(det, [exec_(1, "/tmp/x", "[" + "\udcff" * 1_000_000)]) == []
    bad = [
        out(0, "x" * 1000, 23),
        Record("event", {**out(0, "198.51.100.1", 23).payload, "remote_port": "23"}, T0),
        Record("event", {"event": "listen", "sockets": "no", "added": None}, T0),
        Record("event", {"event": "listen", "added": [{"protocol": "raw", "port": -1}, 7]}, T0),
        Record("event", {"event": "process-exec", "executable": 5}, T0),
        Record("event", out(0, "198.51.100.1", 23).payload, None),
    ]
    assert feed(det, bad) == []
    assert det.statistics()["malformed"] == 4


def test_many_scanning_processes_stay_bounded(detector: Callable[..., BotnetDetector]) -> None:
    det = detector(max_keys=64, max_items=2048)
    records = [out(i * 0.001, hosts(1, i)[0], 23, pid=10_000 + i % 5000) for i in range(20_000)]
    feed(det, records)
    stats = det.statistics()
    assert stats["tracked"] <= 64 and stats["items"] <= 2048 and stats["keys-evicted"] > 0


# --- settings ------------------------------------------------------------------------------
def test_settings_are_checked_with_one_clear_message(
    detector: Callable[..., BotnetDetector], detector_section: Callable[..., dict[str, Any]]
) -> None:
    lines = botnet.describe(detector_section("botnet"))
    assert lines[0] == (
        "BotnetScan: hosts one process tries on TCP 23, 2323, 22, 5555, 7547, 37215, 52869: "
        "32 within 60 s (event time)"
    )
    assert lines[-1] == "BotnetArtefact listeners: tcp/48101"
    with pytest.raises(
        ConfigError, match=r"^detectors.botnet.scan_ports: 'telnet': expected a port"
    ):
        detector(scan_ports=["telnet"])
    with pytest.raises(ConfigError, match=r"^detectors.botnet.artefact_listeners: 'udp/1'"):
        botnet.describe(detector_section("botnet", artefact_listeners=["udp/1"]))
    with pytest.raises(ConfigError, match=r"^detectors.botnet.system_paths: 'usr'"):
        detector(system_paths=["usr"])
    det = detector(system_paths=["/usr", "/tmp/.x"])  # a trailing slash is added
    assert feed(det, [listen(0, [sock("raw", 6, "/tmp/.x/dvrHelper")])]) == []
    assert len(feed(det, [listen(0, [sock("raw", 6, "/usrx/bot")])])) == 1


def test_idle_windows_and_incidents_are_pruned_on_a_timer(
    detector_section: Callable[..., dict[str, Any]],
) -> None:
    clock = ManualClock(T0)
    agent = Agent("t", clock)
    det = botnet.create(agent.context("detectors", "botnet"), detector_section("botnet"), {})
    agent.add("detectors", det)
    agent.start()
    feed(det, [out(i * 0.1, h, 23) for i, h in enumerate(hosts(40))])
    feed(det, [out(1000.0, "203.0.113.1", 443, pid=1, executable="/usr/bin/curl")])
    agent.advance(61)
    stats = det.statistics()
    assert stats["tracked"] == 1 and stats["pruned"] >= 1 and stats["open-incidents"] == 0
    agent.shutdown()
