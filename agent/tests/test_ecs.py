"""ECS records (ecs.py) checked against the Elastic Common Schema's own field definitions.

The definitions are kept in data/ecs-8.17.0.json, taken from the ECS repository
(https://github.com/elastic/ecs, tag v8.17.0: generated/csv/fields.csv for every field
of the field sets used, with its type and normalization, and generated/ecs/ecs_flat.yml
for the allowed values of event.kind, event.category, event.type and event.outcome, and
the event types each category expects). Every field written outside the custom
`defender` set must be an ECS field of the right type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent import agent as agent_mod
from defender_agent import config, ecs
from defender_agent.clock import ManualClock
from defender_agent.model import Record

ECS = json.loads((Path(__file__).parent / "data" / "ecs-8.17.0.json").read_text())
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T = 1_764_547_200.0

SAMPLES = [
    Record("event", {"event": "login-failed", "user": "admin", "source": "10.0.2.2",
                     "port": 52712, "service": "sshd", "pid": 1234, "tty": None,
                     "origin": "authlog"}),
    Record("event", {"event": "login", "user": "root", "source": "gw.example.org",
                     "port": None, "service": "dropbear", "pid": 9, "tty": "pts/0",
                     "origin": "wtmp"}),
    Record("event", {"event": "logout", "user": "root", "source": None, "port": None,
                     "service": "login", "pid": None, "tty": "tty1", "origin": "wtmp"}),
    Record("event", {"event": "process-exec", "pid": 4242, "ppid": 812, "uid": 1000,
                     "euid": 0, "user": "admin", "executable": "/usr/bin/curl",
                     "deleted": False, "cmdline": "curl -s http://198.51.100.7/x",
                     "cwd": "/home/admin", "parent_executable": "/usr/bin/bash",
                     "parent_cmdline": "-bash", "start_time": T - 1.5, "backend": "netlink",
                     "count": 3, "first_seen": "2025-12-01T00:00:00.000Z",
                     "last_seen": "2025-12-01T00:10:00.000Z"}),
    Record("event", {"event": "process-exit", "pid": 4242, "exit_code": 1, "signal": None,
                     "core_dumped": False, "backend": "netlink"}),
    Record("event", {"event": "connection", "direction": "out", "protocol": "tcp",
                     "family": 4, "local_address": "192.0.2.10", "local_port": 48812,
                     "remote_address": "203.0.113.5", "remote_port": 443,
                     "state": "established", "pid": 812, "executable": "/usr/bin/curl",
                     "uid": 1000, "backend": "sock_diag"}),
    Record("event", {"event": "connection", "direction": "in", "protocol": "udp",
                     "family": 6, "local_address": "2001:db8::1", "local_port": 53,
                     "remote_address": "2001:db8::2", "remote_port": 5000,
                     "state": "established", "pid": None, "executable": None,
                     "uid": None, "backend": "conntrack"}),
    Record("event", {"event": "connection-attempt", "protocol": "tcp", "family": 4,
                     "remote_address": "203.0.113.9", "remote_port": 51000,
                     "local_address": "192.0.2.10", "local_port": 23,
                     "interface": "eth0", "interface_index": 2}),
    Record("event", {"event": "listen", "truncated": False, "sockets": [
        {"protocol": "tcp", "family": 4, "address": "0.0.0.0", "port": 22, "pid": 301,
         "executable": "/usr/sbin/dropbear", "uid": 0}], "added": [], "removed": []}),
    Record("event", {"event": "system-information", "hostname": "gw",
                     "kernel": "6.1.0-28-amd64", "arch": "x86_64",
                     "os": {"id": "debian", "name": "Debian GNU/Linux", "version": "12",
                            "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
                     "cpu_count": 2, "memory_total_kib": 1004052, "hardware": {},
                     "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56",
                               "ipv4": ["10.0.2.15"], "ipv6": ["fec0::5054:ff:fe12:3456/64"]}],
                     "agent": {"type": "defender-agent", "version": "0.1.0"}}),
    Record("alert", {"name": "BruteForce", "severity": "low",
                     "description": "5 failed sshd logins from 10.0.2.2 within 4.1 s",
                     "source": "10.0.2.2", "users": ["admin", "root"], "count": 5,
                     "first_seen": "2025-12-01T00:00:00.123Z",
                     "last_seen": "2025-12-01T00:00:04.223Z", "service": "sshd"}),
    Record("alert", {"name": "no-telnet", "rule": "connection-denied", "severity": "high",
                     "description": "telnet out", "finding": "telnet out",
                     "direction": "out", "protocol": "tcp", "remote_address": "198.51.100.1",
                     "remote_port": 23, "local_port": 40000, "pid": 77,
                     "executable": "/usr/bin/telnet"}),
    Record("heartbeat", {"uptime": 300.0, "pid": 812}),
    Record("statistics", {"uptime": 3600.0, "queue": {"max": 4096, "length": 0}}),
]  # fmt: skip
for _n, _record in enumerate(SAMPLES):
    _record.time, _record.observed = T + _n, T + _n + 0.25


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _check_type(field: str, kind: str, value: Any) -> None:
    if kind in ("keyword", "constant_keyword", "wildcard", "match_only_text", "text"):
        assert isinstance(value, str) and value, (field, value)
    elif kind == "long":
        assert isinstance(value, int) and not isinstance(value, bool), (field, value)
    elif kind == "date":
        assert isinstance(value, str) and RFC3339.match(value), (field, value)
    elif kind == "ip":
        import ipaddress

        ipaddress.ip_address(value)
    else:
        pytest.fail(f"{field}: a {kind} field is not expected from ecs.py")


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: r.payload.get("event") or r.type)
def test_every_field_is_ecs_with_its_type(record: Record) -> None:
    doc = ecs.to_ecs(record, "dev-1", "gw")
    for field, value in flatten(doc).items():
        if field.startswith("defender."):
            continue  # the custom field set: the record's own payload
        assert field in ECS["fields"], f"{field} is not an ECS {ECS['source'].split(',')[1]} field"
        kind, normalization = ECS["fields"][field]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list):
            assert normalization == "array", f"{field} is not an array field in ECS"
        for item in values:
            _check_type(field, kind, item)


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: r.payload.get("event") or r.type)
def test_event_categorization_uses_allowed_values(record: Record) -> None:
    event = ecs.to_ecs(record, "dev-1", "gw")["event"]
    allowed = ECS["allowed_values"]
    assert event["kind"] in allowed["event.kind"]
    assert set(event["type"]) <= set(allowed["event.type"])
    for category in event.get("category", []):
        assert category in allowed["event.category"]
        expected = ECS["expected_event_types"][category]
        assert set(event["type"]) <= set(expected), (category, event["type"])
    if "outcome" in event:
        assert event["outcome"] in allowed["event.outcome"]


def test_key_fields_of_an_alert_and_a_connection() -> None:
    alert = ecs.to_ecs(SAMPLES[10], "dev-1", "gw")
    assert alert["@timestamp"] == "2025-12-01T00:00:10.000Z"
    assert alert["event"]["created"] == "2025-12-01T00:00:10.250Z"
    assert (alert["event"]["kind"], alert["event"]["severity"]) == ("alert", 21)
    assert alert["rule"]["name"] == "BruteForce" and alert["source"]["ip"] == "10.0.2.2"
    assert alert["related"]["user"] == ["admin", "root"]
    assert alert["host"] == {"id": "dev-1", "name": "gw", "hostname": "gw"}
    assert alert["defender"]["payload"] is SAMPLES[10].payload  # nothing is lost

    out = ecs.to_ecs(SAMPLES[5], "dev-1", "gw")
    assert out["source"] == {"address": "192.0.2.10", "ip": "192.0.2.10", "port": 48812}
    assert out["destination"]["ip"] == "203.0.113.5" and out["network"]["direction"] == "outbound"
    inbound = ecs.to_ecs(SAMPLES[6], "dev-1", "gw")
    assert inbound["source"]["ip"] == "2001:db8::2" and inbound["network"]["type"] == "ipv6"
    exe = ecs.to_ecs(SAMPLES[3], "dev-1", "gw")
    assert exe["process"]["command_line"] == "curl -s http://198.51.100.7/x"
    assert exe["process"]["parent"]["pid"] == 812 and exe["user"]["effective"]["id"] == "0"
    named = ecs.to_ecs(SAMPLES[1], "dev-1", "gw")  # sshd UseDNS: a name, never in source.ip
    assert named["source"] == {"address": "gw.example.org", "domain": "gw.example.org"}


def test_file_output_writes_ecs_lines(
    tmp_path: Path, cfg_factory: Callable[..., config.Config]
) -> None:
    cfg = cfg_factory(outputs__file={"format": "ecs"})
    agent = agent_mod.build(cfg, ManualClock())
    agent.start()
    agent.pipeline.write(SAMPLES[10])
    agent.shutdown()
    lines = [json.loads(x) for x in (tmp_path / "state" / "events.jsonl").read_text().splitlines()]
    assert all("@timestamp" in doc and doc["ecs"]["version"] == ecs.ECS_VERSION for doc in lines)
    assert any(doc["event"].get("kind") == "alert" for doc in lines)
    assert {doc["host"]["id"] for doc in lines} == {"test-device"}
