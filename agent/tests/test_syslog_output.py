"""The syslog output without a syslog daemon: message form (RFC 5424 and syslog(3)),
escaping of what attackers write, the bounded queue while the collector is away, and a
stream collector that closes. Sockets are the test's own, on loopback or in tmp_path;
test_syslog_rsyslog.py runs the same output against a real rsyslog.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent import config, schema
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.model import Record
from defender_agent.outputs import syslog

# RFC 5424 section 6, with the fields this output writes
RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) "
    rb"(?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) (?P<sd>-|\[.*?(?<!\\)\]) (?P<msg>.*)$",
    re.S,
)
SD_PARAM = re.compile(r'([^= \]"]{1,32})="((?:[^"\\\]]|\\["\\\]]|\\[^"\\\]])*)"')


def _agent() -> Agent:
    return Agent("dev-1", ManualClock())


def _output(agent: Agent, **settings: Any) -> syslog.SyslogOutput:
    out = syslog.SyslogOutput(agent.context("outputs", "syslog"), **settings)
    agent.add("outputs", out)
    return out


def _alert(**payload: Any) -> Record:
    base = {"name": "BruteForce", "severity": "medium", "source": "10.0.2.2", "count": 5}
    return Record("alert", {**base, **payload}, time=1_764_547_200.5, observed=1_764_547_201.0)


def test_rfc5424_message_and_structured_data() -> None:
    out = _output(_agent(), transport="udp", address="127.0.0.1", facility="local4")
    message = out.format(_alert(user='ad"min]\\\n'), '{"x":1}')
    match = RFC5424.match(message)
    assert match, message
    assert int(match["pri"]) == 20 * 8 + 3  # local4.err: a medium alert
    assert match["ts"] == b"2025-12-01T00:00:00.500Z"
    assert (match["app"], match["msgid"], match["msg"]) == (b"defender-agent", b"alert", b'{"x":1}')
    sd = match["sd"].decode()
    assert sd.startswith("[defender@32473 ")
    params = dict(SD_PARAM.findall(sd))
    assert params["device_id"] == "dev-1" and params["name"] == "BruteForce"
    assert params["user"] == 'ad\\"min\\]\\\\\\x0a'  # RFC 5424 escapes; a newline as \x0a
    assert all(re.fullmatch(r"[!-~]{1,32}", name) for name in params)


def test_sd_values_are_capped_and_long_sd_is_left_to_msg() -> None:
    assert len(syslog.escape_value("x" * 5000)) == syslog.SD_VALUE_MAX
    assert syslog.escape_value("a]b") == "a\\]b"
    out = _output(_agent(), transport="tcp", address="127.0.0.1")
    many = dict.fromkeys(syslog.SD_KEYS, "]" * 200)
    frame = out.format(Record("event", many, time=0.0), "{}")
    count, _, message = frame.partition(b" ")
    assert int(count) == len(message)  # octet counting (RFC 6587 3.4.1)
    assert b" event - {}" in message  # the element would pass HEADER_MAX: nil SD, MSG kept


def test_message_is_cut_at_max_message_and_counted() -> None:
    out = _output(_agent(), transport="udp", address="127.0.0.1", max_message=480)
    message = out.format(_alert(), json.dumps({"cmdline": "y" * 2000}))
    assert len(message) == 480 and out.counts["truncated"] == 1


def test_syslog3_form_on_the_local_socket() -> None:
    out = _output(_agent(), transport="unix", address="/dev/log")
    message = out.format(Record("heartbeat", {"uptime": 1.0}, time=1_764_547_200.0), "{}")
    assert re.fullmatch(rb"<30>[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d defender-agent\[\d+\]: \{\}",
                        message)  # fmt: skip


def test_severities_and_facilities() -> None:
    assert tuple(syslog.FACILITIES) == schema.SYSLOG_FACILITIES
    assert [syslog.severity(_alert(severity=s)) for s in ("high", "medium", "low", "?")] == [
        2, 3, 4, 4,
    ]  # fmt: skip
    assert syslog.severity(Record("event", {})) == 6


def test_network_transport_needs_an_address(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"outputs\.syslog\.address: transport tcp"):
        config.validate({"outputs": {"syslog": {"transport": "tcp"}}}, "agent.toml")
    cfg = config.validate(
        {"agent": {"state_dir": str(tmp_path)}, "outputs": {"syslog": {"enabled": True}}},
        "agent.toml",
    )
    assert cfg.enabled("outputs", "syslog", ("file", "syslog"))
    with pytest.raises(config.ConfigError, match="not in this build"):
        config.validate(
            {"outputs": {"syslog": {"enabled": True}}},
            "agent.toml",
            {"collectors": (), "detectors": (), "outputs": ("file", "stdout")},
        )


def test_local_socket_queue_while_away_then_everything_in_order(tmp_path: Path) -> None:
    path = tmp_path / "log"
    agent = _agent()
    out = _output(agent, transport="unix", address=str(path), queue_max=5)
    out.start()
    for n in range(8):
        agent.pipeline.write(_alert(count=n))
    assert out.counts["dropped"] == 3 and len(out.queue) == 5 and out.counts["errors"] >= 1
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(0)
    agent.advance(70)  # past the longest backoff
    got = []
    while True:
        try:
            got.append(receiver.recv(65536))
        except BlockingIOError:
            break
    receiver.close()
    counts = [json.loads(m.split(b": ", 1)[1])["payload"]["count"] for m in got]
    assert counts == [3, 4, 5, 6, 7]  # the oldest went; the rest in order
    assert out.statistics() == {**out.counts, "backlog": 0}
    assert out.counts["written"] == 5 and out.counts["connections"] == 1
    agent.shutdown()


def test_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    agent = _agent()
    out = _output(agent, transport="unix", address=str(tmp_path / "none"), queue_bytes=65536)
    for _ in range(400):  # about 280 bytes each (the JSON line, the header)
        agent.pipeline.write(_alert())
    assert out.queued_bytes <= 65536 and out.counts["dropped"] > 0
    assert out.queued_bytes == sum(len(f) for f in out.queue)
    agent.shutdown()


def test_alerts_only(tmp_path: Path) -> None:
    agent = _agent()
    out = _output(agent, transport="unix", address=str(tmp_path / "none"), alerts_only=True)
    agent.pipeline.write(Record("event", {"event": "login"}))
    agent.pipeline.write(_alert())
    assert len(out.queue) == 1
    agent.shutdown()


def _accept(server: socket.socket, agent: Agent) -> socket.socket:
    for _ in range(100):
        agent.advance(0.1)
        try:
            conn, _ = server.accept()
            return conn
        except BlockingIOError:
            continue
    pytest.fail("the output did not connect")


def _frames(conn: socket.socket, agent: Agent, n: int) -> list[bytes]:
    """Read n octet-counted frames."""
    data = b""
    frames: list[bytes] = []
    conn.settimeout(0.05)
    for _ in range(200):
        agent.advance(0.1)
        try:
            data += conn.recv(65536)
        except (BlockingIOError, TimeoutError):
            pass
        while b" " in data:
            count, _, rest = data.partition(b" ")
            if len(rest) < int(count):
                break
            frames.append(rest[: int(count)])
            data = rest[int(count) :]
        if len(frames) >= n:
            return frames
    pytest.fail(f"got {len(frames)} of {n} frames")


def test_tcp_collector_that_closes_gets_a_new_connection_and_loses_nothing() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    agent = _agent()
    out = _output(agent, transport="tcp", address="127.0.0.1", port=server.getsockname()[1])
    out.start()
    first = _accept(server, agent)
    agent.pipeline.write(_alert(count=1))
    assert len(_frames(first, agent, 1)) == 1
    first.close()  # the collector restarts: its end closes first
    agent.advance(0.1)
    agent.pipeline.write(_alert(count=2))  # noticed before sending: kept, not lost
    second = _accept(server, agent)
    frames = _frames(second, agent, 1)
    assert json.loads(RFC5424.match(frames[0])["msg"])["payload"]["count"] == 2  # type: ignore[index]
    assert out.counts["connections"] == 2 and out.counts["dropped"] == 0
    second.close()
    server.close()
    agent.shutdown()


def test_contract_module_describes_every_transport(
    cfg_factory: Callable[..., config.Config],
) -> None:
    for transport in ("unix", "udp", "tcp", "tls"):
        address = "/dev/log" if transport == "unix" else "192.0.2.1"
        cfg = cfg_factory(outputs__syslog={"transport": transport, "address": address})
        lines = syslog.describe(cfg.section("outputs.syslog"))
        assert lines and all(isinstance(line, str) for line in lines)
    assert "tls://192.0.2.1:6514" in lines[0] and "TLS: CA the system store" in lines[-1]
