"""Aggregation: identical events become one record with a count, written per period;
detectors still see every raw event at once."""

from __future__ import annotations

from typing import Any

from defender_agent.agent import Agent
from defender_agent.aggregate import Aggregator
from defender_agent.clock import ManualClock
from defender_agent.model import Record
from defender_agent.plugins import QuietOutput

T0 = 1_795_766_400.0
PERIODS = {"high": 60.0, "medium": 600.0, "low": 3600.0}


class Collect(QuietOutput):
    name = "collect"

    def __init__(self) -> None:
        self.records: list[Record] = []

    def write(self, record: Record, line: str) -> None:
        self.records.append(record)


class SeeAll:
    """A detector that remembers every event it was shown."""

    name = "see_all"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, Any]:
        return {}

    def process(self, record: Record) -> list[Record]:
        self.seen.append(record.payload)
        return []


def exec_event(
    when: float, cmdline: str = "/bin/busybox ping -c1 192.0.2.1", pid: int = 100
) -> Record:
    payload = {
        "event": "process-exec",
        "pid": pid,
        "executable": "/bin/busybox",
        "cmdline": cmdline,
        "user": "root",
    }
    return Record("event", payload, when)


def connection(when: float, direction: str, local_port: int, remote_port: int = 443) -> Record:
    payload = {
        "event": "connection",
        "direction": direction,
        "protocol": "tcp",
        "family": 4,
        "local_address": "192.0.2.10",
        "local_port": local_port,
        "remote_address": "198.51.100.20",
        "remote_port": remote_port,
    }
    return Record("event", payload, when)


def agent_with(sections: dict[str, str], max_entries: int = 256) -> tuple[Agent, Collect, SeeAll]:
    agent = Agent("t", ManualClock(T0))
    out, det = Collect(), SeeAll()
    agent.add("outputs", out)
    agent.add("detectors", det)
    agent.pipeline.aggregator = Aggregator(agent.pipeline.write, PERIODS, sections, max_entries)
    agent.start(heartbeat_interval=86400, statistics_interval=86400)
    return agent, out, det


def events(out: Collect, name: str) -> list[Record]:
    return [r for r in out.records if r.payload.get("event") == name]


def test_identical_execs_become_one_record_with_a_count_per_period() -> None:
    agent, out, det = agent_with({"collectors.process": "high"})
    ctx = agent.context("collectors", "process")
    for n in range(5):
        ctx.emit(exec_event(T0 + n, pid=100 + n))
    ctx.emit(exec_event(T0 + 6, cmdline="/bin/busybox wget http://192.0.2.1/x"))
    agent.run_once(0)
    assert len(det.seen) == 6  # detectors see every raw event at once
    assert events(out, "process-exec") == []  # outputs wait for the period
    agent.advance(60)
    written = events(out, "process-exec")
    assert [(r.payload["cmdline"].split()[1], r.payload["count"]) for r in written] == [
        ("ping", 5),
        ("wget", 1),
    ]
    first = written[0]
    assert first.time == T0 and first.payload["first_seen"].endswith("08:00:00.000Z")
    assert first.payload["last_seen"].endswith("08:00:04.000Z")
    agent.advance(60)
    assert len(events(out, "process-exec")) == 2  # nothing new, nothing written again


def test_outbound_ephemeral_ports_do_not_split_a_connection_but_inbound_ports_do() -> None:
    agent, out, _det = agent_with({"collectors.network": "medium"})
    ctx = agent.context("collectors", "network")
    for port in (40001, 40002, 40003):
        ctx.emit(connection(T0, "out", port))
    ctx.emit(connection(T0, "in", 22, remote_port=50000))
    ctx.emit(connection(T0, "in", 80, remote_port=50000))
    agent.run_once(0)
    agent.advance(600)
    counts = sorted((r.payload["direction"], r.payload["count"]) for r in events(out, "connection"))
    assert counts == [("in", 1), ("in", 1), ("out", 3)]


def test_retried_attempts_are_one_record_but_each_closed_port_is_its_own() -> None:
    """A scanner's source port changes with every SYN; the ports it tries do not merge."""
    agent, out, _det = agent_with({"collectors.network": "medium"})
    ctx = agent.context("collectors", "network")
    for local_port, remote_port in ((23, 40001), (23, 40002), (23, 40003), (2323, 40004)):
        attempt = {
            "event": "connection-attempt",
            "protocol": "tcp",
            "family": 4,
            "remote_address": "203.0.113.9",
            "remote_port": remote_port,
            "local_address": "192.0.2.10",
            "local_port": local_port,
            "interface": "eth0",
            "interface_index": 2,
        }
        ctx.emit(Record("event", attempt, T0))
    agent.run_once(0)
    agent.advance(7200)
    written = events(out, "connection-attempt")
    assert sorted((r.payload["local_port"], r.payload["count"]) for r in written) == [
        (23, 3),
        (2323, 1),
    ]


def test_other_collectors_and_other_records_are_written_at_once() -> None:
    agent, out, _det = agent_with({"collectors.process": "low"})
    agent.context("collectors", "login").emit(
        Record("event", {"event": "login-failed", "user": "root"}, T0)
    )
    agent.context("collectors", "process").emit(Record("event", {"event": "process-exit"}, T0))
    agent.run_once(0)
    assert [r.payload["event"] for r in out.records if r.type == "event"] == [
        "login-failed",
        "process-exit",
    ]


def test_a_full_table_writes_its_oldest_entry_early_and_stopping_writes_the_rest() -> None:
    agent, out, _det = agent_with({"collectors.process": "low"}, max_entries=2)
    ctx = agent.context("collectors", "process")
    for n in range(3):
        ctx.emit(exec_event(T0 + n, cmdline=f"/bin/busybox sleep {n}"))
    agent.run_once(0)
    assert [r.payload["cmdline"] for r in events(out, "process-exec")] == ["/bin/busybox sleep 0"]
    assert agent.pipeline.aggregator is not None
    assert agent.pipeline.aggregator.statistics()["written-early-table-full"] == 1
    agent.stop()
    agent.shutdown()
    assert len(events(out, "process-exec")) == 3  # nothing held is lost at a stop


def test_build_aggregates_the_collectors_that_have_a_priority(
    cfg_factory: Any,
) -> None:
    from defender_agent import agent as agent_mod

    cfg = cfg_factory(
        collectors__process={"enabled": True, "priority": "high"},
        collectors__network={"enabled": True, "priority": "none"},
        aggregation={"high": 5},
    )
    built = agent_mod.build(cfg, clock=ManualClock(T0))
    assert built.pipeline.aggregator is not None
    assert built.pipeline.aggregator.sections == {"collectors.process": "high"}
    assert built.pipeline.aggregator.periods["high"] == 5.0
    none = cfg_factory(collectors__process={"enabled": True, "priority": "none"})
    assert agent_mod.build(none, clock=ManualClock(T0)).pipeline.aggregator is None
