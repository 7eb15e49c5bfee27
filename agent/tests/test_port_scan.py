"""Port-scan detector (and its distinct-items window), on event time with a virtual clock."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.config import ConfigError
from defender_agent.detectors import port_scan
from defender_agent.detectors.distinct import DistinctWindow
from defender_agent.detectors.port_scan import PortScanDetector
from defender_agent.model import Record

T0 = 1_795_000_000.0
DEVICE = "192.0.2.10"
SCANNER = "203.0.113.9"


@pytest.fixture
def detector(detector_section: Callable[..., dict[str, Any]]) -> Callable[..., PortScanDetector]:
    """A port-scan detector from the schema's defaults with `settings` over them."""

    def make(**settings: Any) -> PortScanDetector:
        agent = Agent("t", ManualClock(T0 + 600))
        section = detector_section("port_scan", **settings)
        return port_scan.create(agent.context("detectors", "port_scan"), section, {})

    return make


def attempt(t: float, port: int, source: str = SCANNER) -> Record:
    return Record(
        "event",
        {
            "event": "connection-attempt",
            "protocol": "tcp",
            "family": 4,
            "remote_address": source,
            "remote_port": 51000,
            "local_address": DEVICE,
            "local_port": port,
            "interface": "eth0",
            "interface_index": 2,
        },
        T0 + t,
    )


def connection(
    t: float,
    direction: str,
    remote: str,
    port: int,
    protocol: str = "tcp",
    state: str = "established",
    pid: int | None = 812,
    executable: str | None = "/usr/bin/curl",
) -> Record:
    """An inbound connection to local `port`, or an outbound one to remote `port`."""
    local_port, remote_port = (port, 40000) if direction == "in" else (40000, port)
    return Record(
        "event",
        {
            "event": "connection",
            "direction": direction,
            "protocol": protocol,
            "family": 6 if ":" in remote else 4,
            "local_address": DEVICE,
            "local_port": local_port,
            "remote_address": remote,
            "remote_port": remote_port,
            "state": state,
            "pid": pid,
            "executable": executable,
            "uid": 0 if pid is not None else None,
            "backend": "sock_diag",
        },
        T0 + t,
    )


def feed(det: PortScanDetector, records: list[Record]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        out.extend(a.payload for a in det.process(r))
    return out


# --- inbound ---------------------------------------------------------------------------
def test_a_closed_port_sweep_raises_one_port_scan_then_updates_it(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    alerts = feed(det, [attempt(i * 0.1, 1 + i) for i in range(40)])  # nmap -T4: 10 a second
    assert len(alerts) == 1
    (a,) = alerts
    assert (a["name"], a["severity"], a["direction"], a["source"]) == (
        "PortScan",
        "medium",
        "in",
        SCANNER,
    )
    assert a["distinct_ports"] == 15 and a["ports"] == list(range(1, 16))
    assert a["count"] == 1 and a["last_seen"] == a["first_seen"]
    assert a["id"].startswith("PortScan-") and a["remediation"]
    assert "203.0.113.9 probed 15 ports of this device within 1.4 s" in a["description"]
    # the sweep goes on a minute later: the same incident, written again with its count
    (update,) = feed(det, [attempt(61.0 + i, 100 + i) for i in range(2)])[:1]
    assert update["id"] == a["id"] and update["update"] is True
    assert update["count"] == 40 - 14 + 2  # every probe since the crossing (at 1.4 s)
    assert update["last_seen"] > a["last_seen"] and update["first_seen"] == a["first_seen"]
    assert det.statistics()["alerts"] == 1 and det.statistics()["probes-in"] == 42


def test_a_connect_scan_counts_open_ports_seen_as_connections_too(
    detector: Callable[..., PortScanDetector],
) -> None:
    """nmap -sT: the open ports are accepted (inbound connections), the closed ones are
    SYNs to nothing; together they make the scan."""
    det = detector()
    records = [connection(0.1 * p, "in", SCANNER, p) for p in (22, 80, 443)]
    records += [attempt(1 + 0.1 * i, 1000 + i) for i in range(11)]
    assert feed(det, records) == []  # 14 distinct ports
    (a,) = feed(det, [attempt(3.0, 8080)])
    assert a["distinct_ports"] == 15 and {22, 80, 443, 8080} <= set(a["ports"])


def test_near_miss_four_telnet_attempts_and_a_client_using_its_services(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    assert feed(det, [attempt(i * 2.0, 23) for i in range(4)]) == []
    ssh_and_web = [connection(i, "in", "198.51.100.7", (22, 80, 443)[i % 3]) for i in range(300)]
    assert feed(det, ssh_and_web) == []
    monitoring = [connection(i * 0.2, "in", "198.51.100.8", 9000 + i) for i in range(14)]
    assert feed(det, monitoring) == []  # 14 ports: one short of the threshold
    assert det.statistics()["alerts"] == 0


def test_window_edges_on_event_time(detector: Callable[..., PortScanDetector]) -> None:
    det = detector()
    # 15 ports exactly 60 s apart first to last: inside the window (edges included)
    (a,) = feed(det, [attempt(i * 60 / 14, 1 + i) for i in range(15)])
    assert a["distinct_ports"] == 15
    det = detector()
    # one port every 5 s: 15 ports span 70 s, never 15 within a minute
    assert feed(det, [attempt(i * 5.0, 1 + i) for i in range(40)]) == []
    det = detector(window=120.0)  # a wider window catches the slower scan
    alerts = feed(det, [attempt(i * 5.0, 1 + i) for i in range(40)])
    assert [a.get("update", False) for a in alerts] == [False, True, True]  # once a minute
    assert alerts[0]["last_seen"] == alerts[0]["first_seen"]  # crossed at the 15th port


def test_a_late_probe_cannot_join_a_window_it_is_older_than(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    feed(det, [attempt(1000 + i * 0.1, 1 + i) for i in range(14)])
    assert feed(det, [attempt(900, 5000)]) == []  # 100 s before the others
    assert det.statistics()["late"] == 1
    assert len(feed(det, [attempt(1002, 5001)])) == 1


def test_a_quiet_scanner_comes_back_as_a_new_incident(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    (first,) = feed(det, [attempt(i * 0.1, 1 + i) for i in range(15)])
    (second,) = feed(det, [attempt(700 + i * 0.1, 1 + i) for i in range(15)])
    assert second["id"] != first["id"] and second["count"] == 1


def test_sources_are_separate_and_loopback_is_not_counted(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    half = [attempt(i * 0.1, 1 + i, source=f"198.51.100.{i % 2 + 1}") for i in range(28)]
    assert feed(det, half) == []  # 14 ports each
    local = [connection(i * 0.1, "in", "127.0.0.1", 8000 + i) for i in range(40)]
    local += [connection(i * 0.1, "out", "::1", 8000 + i) for i in range(40)]
    assert feed(det, local) == []
    assert det.statistics()["ignored"] == 80
    det = detector(ignore_addresses=[])
    assert len(feed(det, local)) == 2  # one each way when loopback is counted


# --- outbound --------------------------------------------------------------------------
def test_the_device_probing_many_ports_of_one_host(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    probes = [
        connection(
            i * 0.05,
            "out",
            "198.51.100.20",
            20 + i,
            state="syn-sent",
            pid=4242,
            executable="/tmp/.x/scan",
        )
        for i in range(20)
    ]
    (a,) = feed(det, probes)
    assert (a["direction"], a["target"], a["distinct_ports"]) == ("out", "198.51.100.20", 15)
    assert (a["pid"], a["executable"]) == (4242, "/tmp/.x/scan")
    assert "this device probed 15 ports of 198.51.100.20" in a["description"]


def test_the_device_sweeping_many_hosts_on_one_port_mirai_rate(
    detector: Callable[..., PortScanDetector],
) -> None:
    """Mirai sends SYNs to random hosts, 9 in 10 on port 23, hundreds a minute and more:
    conntrack reports each flow, its process unknown (a raw socket)."""
    det = detector()
    flows = [
        connection(
            i * 0.01,
            "out",
            f"198.51.{i // 250}.{i % 250 + 1}",
            2323 if i % 10 == 0 else 23,
            state="syn-sent",
            pid=None,
            executable=None,
        )
        for i in range(600)
    ]
    alerts = feed(det, flows)
    assert [(a["port"], a["distinct_targets"]) for a in alerts] == [(23, 100)]
    assert alerts[0]["pid"] is None and len(alerts[0]["targets"]) == 16


def test_near_miss_a_browser_ntp_and_dns_do_not_scan(
    detector: Callable[..., PortScanDetector],
) -> None:
    """A busy minute of an ordinary client: 40 web servers (CDNs) on 443 and 80, the
    same API host again and again, two DNS resolvers, an NTP pool of four."""
    det = detector()
    records = []
    for i in range(40):
        records.append(connection(i * 1.5, "out", f"198.51.100.{i + 1}", 443))
    for i in range(10):
        records.append(connection(i * 6.0, "out", f"203.0.113.{i + 1}", 80))
    records += [connection(i * 0.5, "out", "203.0.113.50", 443) for i in range(100)]
    for i in range(60):
        records.append(
            connection(i, "out", ("192.0.2.53", "192.0.2.54")[i % 2], 53, protocol="udp")
        )
    for i in range(4):
        records.append(connection(i, "out", f"192.0.2.{123 + i}", 123, protocol="udp"))
    records.append(connection(30, "out", "203.0.113.50", 8443))
    assert feed(det, records) == []
    assert det.statistics()["other-protocol"] == 64


def test_near_miss_four_telnet_connections_to_one_host(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    assert feed(det, [connection(i * 2.0, "out", "198.51.100.23", 23) for i in range(4)]) == []


def test_udp_counts_when_asked_and_unknown_direction_never(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector(out_protocols=["tcp", "udp"])
    flows = [
        connection(i * 0.1, "out", "198.51.100.30", 1000 + i, protocol="udp") for i in range(15)
    ]
    assert len(feed(det, flows)) == 1
    det = detector()
    unknown = [connection(i * 0.1, "unknown", SCANNER, 1 + i) for i in range(30)]
    assert feed(det, unknown) == []


# --- hostile input and bounds ------------------------------------------------------------
def test_malformed_fields_are_counted_not_raised(detector: Callable[..., PortScanDetector]) -> None:
    det = detector()
    bad = [
        attempt(0, 22, source="x" * 100_000),
        attempt(0, 22, source=""),
        Record("event", {**attempt(0, 22).payload, "local_port": True}, T0),
        Record("event", {**attempt(0, 22).payload, "local_port": 70000}, T0),
        Record("event", {**attempt(0, 22).payload, "local_port": "22"}, T0),
        Record("event", {**attempt(0, 22).payload, "remote_address": None}, T0),
        Record("event", attempt(0, 22).payload, None),
        Record("event", {"event": "connection", "direction": "in"}, T0),
    ]
    assert feed(det, bad) == []
    assert det.statistics()["malformed"] == len(bad)
    # an address that is no address is counted as itself (nothing to ignore), bounded
    weird = [attempt(i * 0.1, 1 + i, source="\udcff" * 64) for i in range(15)]
    assert len(feed(det, weird)) == 1


def test_a_spoofed_syn_flood_stays_bounded(detector: Callable[..., PortScanDetector]) -> None:
    """50,000 SYNs from as many spoofed sources, one port each: no alert, and the table
    keeps max_keys sources and counts the rest as evicted."""
    import tracemalloc

    det = detector(max_keys=1024, max_items=4096)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(50_000):
        det.process(attempt(n * 0.001, 23, source=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = det.statistics()
    assert stats["alerts"] == 0 and stats["tracked"] == 1024
    assert stats["keys-evicted"] == 50_000 - 1024
    assert used < 1024 * 1024, f"{used} bytes for 1024 tracked sources"


def test_one_source_with_all_ports_keeps_only_what_it_needs(
    detector: Callable[..., PortScanDetector],
) -> None:
    det = detector()
    alerts = feed(det, [attempt(i * 0.0001, i) for i in range(65536)])
    assert len(alerts) == 1
    assert det.statistics()["items"] == 15  # the newest 15 ports: enough to decide


def test_items_are_bounded_over_all_keys() -> None:
    window = DistinctWindow(60.0, max_keys=100, max_items=50)
    for n in range(40):
        window.add(f"k{n}", 1, 0.0, 10)
        window.add(f"k{n}", 2, 0.0, 10)
    assert window.items <= 50 and len(window) == 25
    assert window.counts["keys-evicted"] == 15


def test_idle_keys_and_incidents_are_pruned_on_a_timer(
    detector_section: Callable[..., dict[str, Any]],
) -> None:
    clock = ManualClock(T0)
    agent = Agent("t", clock)
    det = port_scan.create(
        agent.context("detectors", "port_scan"), detector_section("port_scan"), {}
    )
    agent.add("detectors", det)
    agent.start()
    feed(det, [attempt(i * 0.1, 1 + i) for i in range(15)])
    feed(det, [attempt(300.0, 1, source="198.51.100.99")])  # event time moves on
    agent.advance(61)
    stats = det.statistics()
    assert stats["tracked"] == 1 and stats["pruned"] == 1 and stats["open-incidents"] == 1
    feed(det, [attempt(2000.0, 1, source="198.51.100.99")])
    agent.advance(61)
    assert det.statistics()["open-incidents"] == 0
    agent.shutdown()


# --- settings ----------------------------------------------------------------------------
def test_settings_turn_rules_off_and_bad_values_are_one_clear_error(
    detector: Callable[..., PortScanDetector], detector_section: Callable[..., dict[str, Any]]
) -> None:
    det = detector(in_ports=0, out_ports=0, out_hosts=0)
    assert feed(det, [attempt(i * 0.1, 1 + i) for i in range(30)]) == []
    lines = port_scan.describe(detector_section("port_scan", in_ports=0))
    assert lines[0].endswith("off") and "15 within 60 s" in lines[1]
    assert lines[-1] == "not counted: 127.0.0.0/8, ::1"
    with pytest.raises(ConfigError, match=r"detectors.port_scan.ignore_addresses: '10.0.0.1/8'"):
        detector(ignore_addresses=["10.0.0.1/8"])
    with pytest.raises(ConfigError, match=r"detectors.port_scan.out_protocols: 'icmp'"):
        port_scan.describe(detector_section("port_scan", out_protocols=["icmp"]))
