"""Threat-intelligence detector: the list format (Spamhaus DROP, FireHOL netsets), ranges
looked up with bisect, reloads on virtual time, alerts in both directions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent.agent import Agent
from defender_agent.detectors import threat_intel
from defender_agent.detectors.threat_intel import ThreatIntelDetector, ThreatList, parse_entry
from defender_agent.model import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # a test module cannot import conftest at run time (importlib mode)
    from conftest import Collect

T0 = 1_795_000_000.0
SHIPPED = Path(__file__).resolve().parents[1] / "packaging" / "threat-intel.txt"

DROP = """\
; Spamhaus DROP List 2026/11/27 - (c) 2026 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Thu, 27 Nov 2026 07:00:00 GMT
198.51.100.0/24 ; SBL000001
203.0.113.128/25 ; SBL000002
"""
NETSET = """\
#
# firehol_level1
#
# ipv4 hash:net ipset
#
192.0.2.0/28
192.0.2.64/26
2001:db8:bad::/48
"""


@pytest.fixture
def running(
    detector_section: Callable[..., dict[str, Any]],
    collecting_agent: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]],
) -> Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]:
    """A started agent with a threat-intel detector reading `path`, from the schema's
    defaults with `extra` over them, and an output that collects its alerts."""

    def start(path: Path, **extra: Any) -> tuple[Agent, ThreatIntelDetector, Collect]:
        section = detector_section("threat_intel", path=str(path), **extra)
        return collecting_agent(T0, threat_intel, section)

    return start


def conn(agent: Agent, when: float, remote: str, direction: str = "out", **extra: Any) -> None:
    payload: dict[str, Any] = {
        "event": "connection",
        "direction": direction,
        "protocol": "tcp",
        "family": 6 if ":" in remote else 4,
        "local_address": "192.0.2.10",
        "local_port": 48812 if direction == "out" else 22,
        "remote_address": remote,
        "remote_port": 443 if direction == "out" else 51000,
        "state": "established",
        "pid": 812,
        "executable": "/usr/bin/curl" if direction == "out" else "/usr/sbin/sshd",
        "uid": 0,
    }
    payload.update(extra)
    agent.context("collectors", "test").emit(Record("event", payload, when))
    agent.run_once(0)


def loaded(tmp_path: Path, text: str | bytes, max_entries: int = 65536) -> ThreatList:
    path = tmp_path / "list.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    listed = ThreatList(max_entries)
    listed.load(str(path))
    return listed


# --- the list ---------------------------------------------------------------------------
def test_spamhaus_drop_and_firehol_netset_formats(tmp_path: Path) -> None:
    drop = loaded(tmp_path, DROP)
    assert len(drop) == 2 and drop.counts["malformed"] == 0
    assert drop.lookup("198.51.100.66") == ("198.51.100.0/24", 4)
    assert drop.lookup("203.0.113.200") == ("203.0.113.128/25", 5)
    netset = loaded(tmp_path, NETSET)
    assert len(netset) == 3 and netset.counts["malformed"] == 0
    assert netset.lookup("2001:db8:bad:1::7") == ("2001:db8:bad::/48", 8)
    assert netset.lookup("2001:db8:bad0::1") is None


def test_range_edges(tmp_path: Path) -> None:
    listed = loaded(tmp_path, "192.0.2.64/26\n10.0.0.0/8\n192.0.2.200\n")
    assert listed.lookup("192.0.2.63") is None
    assert listed.lookup("192.0.2.64") == ("192.0.2.64/26", 1)
    assert listed.lookup("192.0.2.127") == ("192.0.2.64/26", 1)
    assert listed.lookup("192.0.2.128") is None
    assert listed.lookup("192.0.2.200") == ("192.0.2.200", 3)
    assert listed.lookup("192.0.2.201") is None
    assert listed.lookup("9.255.255.255") is None and listed.lookup("11.0.0.0") is None
    assert listed.lookup("10.200.3.4") == ("10.0.0.0/8", 2)
    assert listed.lookup("0.0.0.0") is None and listed.lookup("255.255.255.255") is None
    assert listed.lookup("::ffff:10.1.2.3") == ("10.0.0.0/8", 2)  # IPv4-mapped


def test_big_cidrs_are_ranges_and_nested_entries_are_covered(tmp_path: Path) -> None:
    listed = loaded(
        tmp_path, "10.1.2.0/24\n10.0.0.0/8\n10.0.0.0/8\n2001:db8::/32\n2001:db8:1::/48\n::/0\n"
    )
    assert len(listed) == 2  # 10/8 and ::/0: every other one lies inside them
    assert listed.counts["covered"] == 4
    assert listed.lookup("10.1.2.3") == ("10.0.0.0/8", 2)  # the widest, with its own line
    assert listed.lookup("2001:db8:1::5") == ("::/0", 6)
    assert len(listed.starts4) == 1  # one range, no per-address entries


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    text = (
        b"198.51.100.1\n"
        b"not-an-address\n"
        b"300.1.2.3\n"
        b"198.51.100.0/33\n"
        b"198.51.100.0/abc\n"
        b"\xff\xfe garbage\n"
        + b"1" * 5000
        + b"\n"
        + b"198.51.100.9/24 ; host bits set: read as its network\n"
        + b"   2001:db8::1   # with spaces and a comment\n"
        + b"\n#only a comment\n; another\n"
    )
    listed = loaded(tmp_path, text)
    assert listed.counts["malformed"] == 6
    assert listed.counts["host-bits"] == 1
    assert listed.lookup("198.51.100.200") == ("198.51.100.0/24", 8)
    assert listed.lookup("2001:db8::1") == ("2001:db8::1", 9)


def test_entries_are_capped_and_counted(tmp_path: Path) -> None:
    listed = loaded(tmp_path, "".join(f"198.51.100.{n}\n" for n in range(20)), max_entries=10)
    assert len(listed) == 10 and listed.counts["over-cap"] == 10
    assert listed.lookup("198.51.100.9") and listed.lookup("198.51.100.10") is None


@pytest.mark.parametrize("text", ["1.2.3.4", "1.2.3.0/24", "::1", "2001:db8::/32"])
def test_parse_entry(text: str) -> None:
    family, first, last, host = parse_entry(text)
    assert family == (6 if ":" in text else 4) and first <= last and not host


def test_the_shipped_list_is_empty_and_its_test_entry_works(tmp_path: Path) -> None:
    shipped = loaded(tmp_path, SHIPPED.read_bytes())
    assert len(shipped) == 0 and shipped.counts == {
        "malformed": 0,
        "over-cap": 0,
        "covered": 0,
        "host-bits": 0,
    }
    lines = SHIPPED.read_text().splitlines()
    (test_line,) = [n for n, line in enumerate(lines) if line.startswith("#198.51.100.66")]
    lines[test_line] = lines[test_line][1:]  # uncommented, as the catalog says
    listed = loaded(tmp_path, "\n".join(lines) + "\n")
    assert listed.lookup("198.51.100.66") == ("198.51.100.66", test_line + 1)


# --- the detector -----------------------------------------------------------------------
def test_outbound_connection_to_a_listed_address(
    tmp_path: Path, running: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]
) -> None:
    path = tmp_path / "list.txt"
    path.write_text(DROP)
    agent, _det, out = running(path)
    conn(agent, T0, "198.51.100.66")
    (alert,) = out.alerts
    assert (alert["name"], alert["severity"], alert["direction"]) == ("ThreatIntel", "high", "out")
    assert alert["remote_address"] == "198.51.100.66" and alert["remote_port"] == 443
    assert alert["pid"] == 812 and alert["executable"] == "/usr/bin/curl"
    assert alert["list_entry"] == "198.51.100.0/24" and alert["list_line"] == 4
    assert alert["list_text"] == "198.51.100.0/24 ; SBL000001"
    assert alert["list_file"] == str(path)
    for n in range(1, 10):  # a beacon: counted into the incident
        conn(agent, T0 + 60 * n, "198.51.100.66")
    assert len(out.alerts) == 1
    conn(agent, T0 + 600, "198.51.100.66")
    update = out.alerts[-1]
    assert update["update"] is True and update["id"] == alert["id"] and update["count"] == 11


def test_inbound_from_a_listed_address_and_the_inbound_switch(
    tmp_path: Path, running: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]
) -> None:
    path = tmp_path / "list.txt"
    path.write_text(NETSET)
    agent, _det, out = running(path)
    conn(agent, T0, "2001:db8:bad::9", direction="in")
    (alert,) = out.alerts
    assert alert["direction"] == "in" and alert["local_port"] == 22
    assert "connected to this device on port 22" in alert["description"]
    agent2, _det2, out2 = running(path, inbound=False)
    conn(agent2, T0, "2001:db8:bad::9", direction="in")
    conn(agent2, T0, "192.0.2.70", direction="out")
    assert [a["remote_address"] for a in out2.alerts] == ["192.0.2.70"]


def test_near_misses_unlisted_neighbours_and_other_events(
    tmp_path: Path, running: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]
) -> None:
    path = tmp_path / "list.txt"
    path.write_text(DROP)
    agent, _det, out = running(path)
    conn(agent, T0, "198.51.101.0")  # the next /24
    conn(agent, T0, "203.0.113.127")  # just below the /25
    conn(agent, T0, "192.168.1.20")  # the LAN, not listed
    agent.context("collectors", "test").emit(
        Record("event", {"event": "connection-attempt", "remote_address": "198.51.100.1"}, T0)
    )
    agent.run_once(0)
    assert out.alerts == []


def test_the_list_is_reloaded_when_it_changes_checked_every_interval(
    tmp_path: Path, running: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]
) -> None:
    path = tmp_path / "list.txt"
    path.write_text("198.51.100.1\n")
    agent, det, out = running(path, check_interval=60)
    assert det.statistics()["loads"] == 1
    new = tmp_path / "list.new"
    new.write_text("198.51.100.1\n203.0.113.7\n")
    os.replace(new, path)  # the documented atomic replacement: a new inode
    conn(agent, T0 + 1, "203.0.113.7")
    assert out.alerts == []  # not looked at yet
    agent.advance(59)
    assert det.statistics()["loads"] == 1
    agent.advance(1)
    assert det.statistics()["loads"] == 2
    conn(agent, T0 + 61, "203.0.113.7")
    assert [a["list_entry"] for a in out.alerts] == ["203.0.113.7"]
    agent.advance(60)
    assert det.statistics()["loads"] == 2  # unchanged: not read again
    path.unlink()
    agent.advance(60)
    assert det.statistics()["entries"] == 0 and det.statistics()["list-missing"] == 1
    conn(agent, T0 + 300, "198.51.100.1")
    assert len(out.alerts) == 1


def test_a_missing_list_is_no_error_and_a_new_one_is_picked_up(
    tmp_path: Path, running: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]
) -> None:
    path = tmp_path / "absent.txt"
    agent, det, out = running(path)
    assert det.statistics()["list-missing"] == 1 and det.statistics()["entries"] == 0
    conn(agent, T0, "198.51.100.1")
    path.write_text("198.51.100.1\n")
    agent.advance(60)
    conn(agent, T0 + 60, "198.51.100.1")
    assert len(out.alerts) == 1 and det.statistics()["list-missing"] == 0


def test_a_changed_file_is_not_quoted_from_the_wrong_line(
    tmp_path: Path, running: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]
) -> None:
    path = tmp_path / "list.txt"
    path.write_text("198.51.100.1 ; first\n")
    agent, _det, out = running(path)
    path.write_text("# changed, not yet re-read\n198.51.100.1 ; moved\n")
    conn(agent, T0, "198.51.100.1")
    (alert,) = out.alerts
    assert alert["list_line"] == 1 and "list_text" not in alert


def test_hostile_addresses_and_many_incidents_stay_bounded(
    tmp_path: Path, running: Callable[..., tuple[Agent, ThreatIntelDetector, Collect]]
) -> None:
    path = tmp_path / "list.txt"
    path.write_text("10.0.0.0/8\n")
    agent, det, out = running(path)
    for bad in ["", "x" * 100_000, "10.0.0.1\x00", "10.0.0.01", "::ffff:zz", "10.0.0.0/8"]:
        conn(agent, T0, bad)
    conn(agent, T0, "10.0.0.1", remote_address=None)
    assert out.alerts == [] and det.counts["not-an-address"] == 2
    for n in range(1500):
        conn(agent, T0 + n, f"10.0.{n // 256}.{n % 256}")
    stats = det.statistics()
    assert stats["alerts"] == 1500 and stats["incidents-forgotten"] == 1500 - 1024
    assert len(det._quotes) == 1  # one listed line, read once


def test_describe(tmp_path: Path, detector_section: Callable[..., dict[str, Any]]) -> None:
    path = tmp_path / "list.txt"
    path.write_text(DROP + "bogus\n")
    lines = threat_intel.describe(detector_section("threat_intel", path=str(path)))
    assert "2 ranges (1 malformed lines" in lines[0] and "to or from" in lines[0]
    missing = threat_intel.describe(
        detector_section("threat_intel", path=str(tmp_path / "none"), inbound=False)
    )
    assert "not readable now" in missing[0] and "connections to addresses" in missing[0]


def test_a_large_list_loads_and_looks_up(tmp_path: Path) -> None:
    lines = "".join(f"{n >> 8 & 255}.{n & 255}.{(n * 7) & 255}.0/24\n" for n in range(50_000))
    listed = loaded(tmp_path, lines)
    assert len(listed) + listed.counts["covered"] == 50_000
    assert listed.lookup("0.1.7.9") == ("0.1.7.0/24", 2)
