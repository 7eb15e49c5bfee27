"""Crypto-miner detector: by name and arguments, by pool connection, and by behaviour
(CPU sampled from a fake /proc on virtual time), with the issue's near misses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.detectors import crypto_miner
from defender_agent.detectors.crypto_miner import CryptoMinerDetector, read_cpu
from defender_agent.model import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # a test module cannot import conftest at run time (importlib mode)
    from conftest import Collect

T0 = 1_795_000_000.0


class FakeProc:
    """A /proc tree whose processes' CPU time the test advances."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)

    def stat(self, pid: int, ticks: int, starttime: int = 5000, comm: str = "a) b") -> None:
        fields = ["R", "1"] + ["0"] * 9 + [str(ticks), "0"] + ["0"] * 6 + [str(starttime)]
        fields += ["0"] * 30
        (self.root / str(pid)).mkdir(exist_ok=True)
        (self.root / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")

    def tcp(self, pid: int, lines: list[str]) -> None:
        net = self.root / str(pid) / "net"
        net.mkdir(parents=True, exist_ok=True)
        header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when ...\n"
        (net / "tcp").write_text(header + "".join(lines))

    def gone(self, pid: int) -> None:
        for f in sorted((self.root / str(pid)).rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def running(
    detector_section: Callable[..., dict[str, Any]],
    collecting_agent: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> Callable[..., tuple[Agent, CryptoMinerDetector, Collect]]:
    """A started agent with a crypto-miner detector from the schema's defaults with
    `settings` over them, and an output that collects its alerts."""

    def start(**settings: Any) -> tuple[Agent, CryptoMinerDetector, Collect]:
        return collecting_agent(T0, crypto_miner, detector_section("crypto_miner", **settings))

    return start


def emit(agent: Agent, when: float, **payload: Any) -> None:
    agent.context("collectors", "test").emit(Record("event", payload, when))
    agent.run_once(0)


def exec_(
    agent: Agent, when: float, pid: int, exe: str, cmdline: str, deleted: bool = False
) -> None:
    emit(
        agent,
        when,
        event="process-exec",
        pid=pid,
        ppid=1,
        uid=0,
        user="root",
        executable=exe,
        deleted=deleted,
        cmdline=cmdline,
        start_time=when,
    )


def conn(
    agent: Agent, when: float, pid: int | None, exe: str | None, port: int, **extra: Any
) -> None:
    payload: dict[str, Any] = {
        "event": "connection",
        "direction": "out",
        "protocol": "tcp",
        "family": 4,
        "local_address": "192.0.2.10",
        "local_port": 48812,
        "remote_address": "203.0.113.5",
        "remote_port": port,
        "state": "established",
        "pid": pid,
        "executable": exe,
        "uid": 0,
    }
    payload.update(extra)
    emit(agent, when, **payload)


# --- by name and arguments ------------------------------------------------------------
def test_xmrig_with_pool_url_and_options_raises_one_alert_then_counts(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running()
    exec_(
        agent,
        T0,
        100,
        "/usr/local/bin/xmrig",
        "xmrig -o stratum+tcp://pool.example:3333 -u 4Abc --donate-level=1 -a rx/0",
    )
    (alert,) = out.alerts
    assert (alert["name"], alert["severity"], alert["pid"]) == ("CryptoMiner", "high", 100)
    assert alert["executable"] == "/usr/local/bin/xmrig"
    assert alert["evidence"] == [
        "miner-name",
        "pool-url:stratum+tcp://",
        "miner-option:--donate-level",
        "miner-option:-a rx/0",
    ]
    assert alert["cmdline"].startswith("xmrig -o stratum+tcp://")
    assert alert["id"] and alert["description"] and alert["remediation"]
    assert alert["count"] == 1 and alert["first_seen"] == alert["last_seen"]
    conn(agent, T0 + 1, 100, "/usr/local/bin/xmrig", 3333)  # its pool connection: counted
    assert len(out.alerts) == 1
    assert det.statistics()["findings"] == 2


def test_a_renamed_miner_with_a_stratum_url_is_caught(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, _det, out = running()
    exec_(agent, T0, 7, "/usr/sbin/kworkerd", "kworkerd --url=STRATUM+SSL://203.0.113.5:443")
    (alert,) = out.alerts
    assert alert["evidence"] == ["pool-url:stratum+ssl://"]


def test_a_miner_name_alone_waits_for_a_connection_of_that_process(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running()
    exec_(agent, T0, 200, "/opt/xmrig/xmrig", "./xmrig -c config.json")  # its pool in a file
    assert out.alerts == [] and det.counts["name-only"] == 1
    conn(agent, T0 + 2, 200, "/opt/xmrig/xmrig", 443)
    (alert,) = out.alerts
    assert alert["evidence"] == ["miner-name", "connection:443"]
    assert alert["remote_address"] == "203.0.113.5" and alert["remote_port"] == 443
    assert alert["first_seen"] == alert["last_seen"]  # dated by the connection event


def test_a_named_miner_seen_only_by_its_connection(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    """Running before the agent started: no exec event, the connection names it."""
    agent, _det, out = running()
    conn(agent, T0, 300, "/usr/bin/minerd", 443)
    (alert,) = out.alerts
    assert alert["evidence"] == ["miner-name", "connection:443"]


def test_a_miner_option_with_a_pool_port_raises(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, _det, out = running()
    exec_(agent, T0, 400, "/opt/app/helper", "helper --coin monero --algo=rx/0 -c h.json")
    assert out.alerts == []  # options alone: one point
    conn(agent, T0 + 1, 400, "/opt/app/helper", 14444)
    (alert,) = out.alerts
    assert alert["evidence"] == [
        "miner-option:--coin",
        "miner-option:--algo",
        "pool-port:14444",
    ]


def test_near_miss_xmrig_docs_viewer_doing_nothing(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running()
    exec_(agent, T0, 500, "/usr/bin/xmrig-docs-viewer", "xmrig-docs-viewer --help")
    conn(agent, T0 + 1, 500, "/usr/bin/xmrig-docs-viewer", 443)
    assert out.alerts == []
    assert det.statistics()["tracked"] == 0  # no evidence at all: not even remembered


def test_near_miss_pool_ports_alone_are_development_ports(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running()
    for n, port in enumerate((3333, 4444, 5555, 8888)):
        conn(agent, T0 + n, 600 + n, "/usr/bin/node", port)
    conn(agent, T0 + 5, None, None, 3333)  # nobody known holds it
    assert out.alerts == []
    assert det.counts["pool-port-only"] == 5


def test_the_executable_is_matched_exactly_not_by_substring(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, _det, out = running()
    exec_(agent, T0, 700, "/usr/bin/notxmrig", "notxmrig --donate-level 1")
    exec_(agent, T0, 701, "/usr/bin/cpuminer-helper", "cpuminer-helper")
    conn(agent, T0 + 1, 701, "/usr/bin/cpuminer-helper", 443)
    assert out.alerts == []


# --- behaviour ------------------------------------------------------------------------
@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def busy(
    agent: Agent, det: CryptoMinerDetector, fake: FakeProc, pid: int, seconds: float, share: float
) -> None:
    """Run `seconds` of virtual time, the process using `share` of one CPU."""
    ticks = det._ticks
    path = fake.root / str(pid) / "stat"
    used = int(path.read_text().rsplit(") ", 1)[1].split()[11]) if path.exists() else 0
    for _ in range(int(seconds)):
        used += int(ticks * share)
        fake.stat(pid, used)
        agent.advance(1)


def test_a_renamed_deleted_miner_is_caught_by_its_behaviour(
    fake: FakeProc,
    proc_line: Callable[..., str],
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running(proc=str(fake.root))
    fake.stat(900, 0)
    fake.tcp(900, [proc_line("192.0.2.10", 48812, "203.0.113.5", 443, 1, 77)])
    exec_(agent, T0, 900, "/tmp/.x/kworker", "[kworker/0:1]", deleted=True)
    conn(agent, T0, 900, "/tmp/.x/kworker (deleted)", 443)
    busy(agent, det, fake, 900, 170, 1.0)
    assert out.alerts == []  # the connection is not yet min_connection_age old
    busy(agent, det, fake, 900, 20, 1.0)
    (alert,) = out.alerts
    assert alert["evidence"][:2] == ["cpu", "deleted-executable"]
    assert "connection:443" in alert["evidence"]
    assert alert["cpu_percent"] >= 95 and alert["deleted"] is True
    assert alert["cmdline"] == "[kworker/0:1]" and alert["remote_port"] == 443
    busy(agent, det, fake, 900, 300, 1.0)  # still mining: counted into the same incident
    assert len(out.alerts) == 1
    assert det.statistics()["findings"] >= 2


def test_an_ipv4_peer_on_an_ipv6_socket_is_found_in_tcp6(
    fake: FakeProc,
    proc_line: Callable[..., str],
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running(proc=str(fake.root), min_connection_age=60)
    fake.stat(901, 0)
    fake.tcp(901, [])
    (fake.root / "901" / "net" / "tcp6").write_text(
        "header\n" + proc_line("::ffff:192.0.2.10", 48812, "::ffff:203.0.113.5", 443, 1, 78)
    )
    conn(agent, T0, 901, "/home/pi/.cache/svc", 443)
    busy(agent, det, fake, 901, 115, 2.0)  # two threads: 200 %
    assert out.alerts == []  # not yet a whole cpu_window of samples
    busy(agent, det, fake, 901, 20, 2.0)
    (alert,) = out.alerts
    assert alert["evidence"][:2] == ["cpu", "writable-path"] and alert["cpu_percent"] > 150


def test_near_miss_compiler_at_full_cpu_without_a_pool_connection(
    fake: FakeProc, running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]]
) -> None:
    agent, det, out = running(proc=str(fake.root))
    fake.stat(1000, 0)
    fake.stat(1001, 0)
    exec_(agent, T0, 1000, "/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "cc1 -O2 big.c")
    exec_(agent, T0, 1001, "/home/dev/build/gen-tables", "./gen-tables")  # writable, no conn
    for _ in range(60):
        fake.stat(1000, int(det._ticks) * 60)
        busy(agent, det, fake, 1001, 1, 1.0)
    assert out.alerts == []
    assert det.counts["samples"] == 0 and det._timer is None  # never even sampled


def test_near_miss_a_writable_program_with_a_connection_but_little_cpu(
    fake: FakeProc,
    proc_line: Callable[..., str],
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running(proc=str(fake.root))
    fake.stat(1100, 0)
    fake.tcp(1100, [proc_line("192.0.2.10", 48812, "203.0.113.5", 443, 1, 79)])
    conn(agent, T0, 1100, "/home/pi/bin/weather", 443)
    busy(agent, det, fake, 1100, 600, 0.5)
    assert out.alerts == [] and det.counts["samples"] > 50


def test_no_alert_when_the_connection_is_no_longer_established(
    fake: FakeProc,
    proc_line: Callable[..., str],
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running(proc=str(fake.root))
    fake.stat(1200, 0)
    fake.tcp(1200, [proc_line("192.0.2.10", 48812, "203.0.113.5", 443, 6, 80)])  # TIME_WAIT
    conn(agent, T0, 1200, "/var/tmp/job", 443)
    busy(agent, det, fake, 1200, 300, 1.0)
    assert out.alerts == [] and det.counts["connection-closed"] > 0


def test_a_pool_port_with_a_writable_program_is_a_candidate_not_an_alert(
    fake: FakeProc, running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]]
) -> None:
    agent, det, out = running(proc=str(fake.root))
    fake.stat(1300, 0)
    conn(agent, T0, 1300, "/tmp/dev-server", 3333)
    assert out.alerts == [] and det.statistics()["candidates"] == 1


def test_candidates_that_exit_or_whose_pid_is_reused_are_dropped(
    fake: FakeProc, running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]]
) -> None:
    agent, det, _out = running(proc=str(fake.root))
    fake.stat(1400, 0)
    fake.stat(1401, 0, starttime=1)
    conn(agent, T0, 1400, "/tmp/a", 443)
    conn(agent, T0, 1401, "/tmp/b", 443)
    agent.advance(10)
    assert det.statistics()["candidates"] == 2
    fake.stat(1402, 0)
    conn(agent, T0, 1402, "/dev/shm/c", 443)
    fake.gone(1400)
    fake.stat(1401, 0, starttime=99)  # another process now has pid 1401
    (fake.root / "1402" / "stat").write_text("1402 (c) R 1 2 3\n")  # not a stat line
    agent.advance(10)
    assert det.statistics()["candidates"] == 0 and det.counts["candidates-gone"] == 2
    assert det.counts["sample-errors"] == 1
    assert det._timer is None  # the sampler stops when there is nothing to sample


def test_sampling_is_bounded(
    fake: FakeProc, running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]]
) -> None:
    agent, det, _out = running(proc=str(fake.root), max_candidates=4)
    for pid in range(2000, 2020):
        fake.stat(pid, 0)
        conn(agent, T0, pid, f"/tmp/x{pid}", 443)
    agent.advance(10)
    assert det.statistics()["candidates"] == 4
    assert det.counts["candidates-evicted"] == 16
    assert det.counts["samples"] <= 8  # the first sample at once, then one per interval


# --- hostile input ----------------------------------------------------------------------
def test_hostile_command_lines_and_many_processes_stay_bounded(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, det, out = running(max_processes=32)
    huge = "xmrig " + "\udcff\\xff" * 200_000 + " --donate-level 1 -o stratum+tcp://x"
    exec_(agent, T0, 1, "/usr/bin/xmrig", huge)
    assert out.alerts == [] and det.counts["name-only"] == 1  # markers past the cap: unread
    conn(agent, T0 + 1, 1, "/usr/bin/xmrig", 3333)
    (alert,) = out.alerts
    assert alert["evidence"] == ["miner-name", "pool-port:3333"]
    assert len(alert["cmdline"]) <= crypto_miner.MAX_SHOWN
    for pid in range(10, 1010):
        exec_(agent, T0, pid, f"/tmp/pkg-{pid}", f"/tmp/pkg-{pid} " + "A" * 5000)
    stats = det.statistics()
    assert stats["tracked"] == 32 and stats["processes-evicted"] >= 968
    emit(agent, T0, event="process-exec", pid="7", executable=None, cmdline=None)
    emit(agent, T0, event="process-exec", pid=True, executable=7, cmdline=["x"])
    conn(agent, T0, 5, 12345, "3333")  # type: ignore[arg-type]  # wrong types: ignored
    assert det.counts["no-pid"] == 2


def test_markers_beyond_the_command_line_cap_are_not_read(
    running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]],
) -> None:
    agent, _det, out = running()
    exec_(agent, T0, 3, "/usr/bin/app", "app " + "x " * 3000 + "-o stratum+tcp://pool:3333")
    assert out.alerts == []


def test_a_package_upgrade_running_files_in_tmp_raises_nothing(
    fake: FakeProc, running: Callable[..., tuple[Agent, CryptoMinerDetector, Collect]]
) -> None:
    agent, _det, out = running(proc=str(fake.root))
    for pid in range(3000, 3050):
        exec_(agent, T0 + pid / 100, pid, f"/tmp/dpkg-{pid}/postinst", "postinst configure")
    conn(agent, T0 + 40, 3001, "/usr/bin/apt-get", 80)  # pid reused by apt: another program
    agent.advance(600)
    assert out.alerts == []


# --- contract and live /proc ------------------------------------------------------------
def test_create_and_describe(detector_section: Callable[..., dict[str, Any]]) -> None:
    lines = crypto_miner.describe(detector_section("crypto_miner"))
    assert lines[0].startswith("CryptoMiner by name") and "80 %" in lines[1]
    with pytest.raises(ValueError, match="pool_ports"):
        ctx = Agent("t", ManualClock(T0)).context("detectors", "crypto_miner")
        crypto_miner.create(ctx, detector_section("crypto_miner", pool_ports=["http"]), {})


def test_read_cpu_of_this_process_on_the_real_proc() -> None:
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("no procfs here")
    start, before = read_cpu("/proc", os.getpid())
    end = 0.0
    while end < 1e6:  # burn a little CPU
        end += 1
    start2, after = read_cpu("/proc", os.getpid())
    assert start == start2 > 0 and after >= before
