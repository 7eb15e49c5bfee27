"""The syslog output against a real rsyslog (Debian's rsyslog and rsyslog-gnutls, from
scripts/install-system-deps.sh) on loopback: TLS with certificates made here by the
openssl command, a client certificate rsyslog checks, octet-counted framing, the
structured data as rsyslog's RFC 5424 parser reads it, the local socket's syslog(3)
form through imuxsock, and nothing lost while rsyslog restarts.

rsyslog writes every message it takes as one line of its own template: the fields its
parser found, tab-separated. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.model import Record
from defender_agent.outputs import syslog

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")

pytestmark = [
    pytest.mark.skipif(
        not os.access(RSYSLOGD, os.X_OK),
        reason="rsyslogd is not installed (scripts/install-system-deps.sh installs rsyslog)",
    ),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing"),
]

FIELDS = ("pri", "app", "procid", "msgid", "sd", "msg")
TEMPLATE = (
    'template(name="fields" type="string" string="%pri%\\t%app-name%\\t%procid%\\t'
    '%msgid%\\t%structured-data%\\t%msg%\\n")'
)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    d = directory
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
    )  # fmt: skip
    for name, san in (("server", "IP:127.0.0.1,DNS:localhost"), ("client", "DNS:device")):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
        )  # fmt: skip
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl(
            "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"),
        )  # fmt: skip
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class Rsyslog:
    """rsyslogd in the foreground with a configuration of the test's own."""

    def __init__(self, directory: Path, certs: dict[str, Path]) -> None:
        self.dir = directory
        self.out = directory / "received.log"
        self.tls_port = _free_port()
        self.tcp_port = _free_port()
        self.unix_socket = directory / "log.sock"
        (directory / "work").mkdir()
        self.conf = directory / "rsyslog.conf"
        self.conf.write_text(
            f"""
global(workDirectory="{directory / "work"}" maxMessageSize="64k"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{certs["ca.pem"]}"
       defaultNetstreamDriverCertFile="{certs["server.pem"]}"
       defaultNetstreamDriverKeyFile="{certs["server.key"]}")
module(load="imuxsock" SysSock.Use="off")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/certvalid")
module(load="imptcp")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}")
input(type="imptcp" address="127.0.0.1" port="{self.tcp_port}"
      SupportOctetCountedFraming="on")
input(type="imuxsock" Socket="{self.unix_socket}" CreatePath="off")
{TEMPLATE}
*.* action(type="omfile" file="{self.out}" template="fields")
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not self.unix_socket.exists() or not _listening(self.tls_port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"rsyslogd did not start: {err}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def lines(self) -> list[dict[str, str]]:
        if not self.out.exists():
            return []
        text = self.out.read_text(encoding="utf-8", errors="replace")
        return [dict(zip(FIELDS, line.split("\t", 5))) for line in text.splitlines()]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def rsyslog(tmp_path: Path, certs: dict[str, Path]) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path, certs)
    server.start()
    yield server
    server.stop()


def _output(agent: Agent, **settings: Any) -> syslog.SyslogOutput:
    out = syslog.SyslogOutput(agent.context("outputs", "syslog"), **settings)
    agent.add("outputs", out)
    return out


def _until(agent: Agent, done: Any, what: str, seconds: float = 15.0) -> None:
    """Real sockets under virtual time: the output's timers fire as the clock is moved,
    the network needs real moments in between."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        agent.advance(0.1)
        time.sleep(0.02)


def _alert(n: int) -> Record:
    payload = {
        "name": "BruteForce",
        "severity": "high",
        "description": f'attack {n} "quoted" ] back\\slash',
        "source": "10.0.2.2",
        "users": ["admin", "ro]ot"],
        "count": 5,
        "service": "sshd",
    }
    return Record("alert", payload, time=1_764_547_200.0 + n, observed=1_764_547_201.0 + n)


def _tls(certs: dict[str, Path]) -> dict[str, str]:
    return {
        "ca": str(certs["ca.pem"]),
        "cert": str(certs["client.pem"]),
        "key": str(certs["client.key"]),
    }


def test_tls_framing_and_structured_data(rsyslog: Rsyslog, certs: dict[str, Path]) -> None:
    agent = Agent("dev-1", ManualClock())
    out = _output(agent, transport="tls", address="127.0.0.1", port=rsyslog.tls_port,
                  tls=_tls(certs))  # fmt: skip
    out.start()
    for n in range(3):
        agent.pipeline.write(_alert(n))
    _until(agent, lambda: len(rsyslog.lines()) >= 3, "three messages over TLS")
    lines = rsyslog.lines()
    assert len(lines) == 3 and out.counts["written"] == 3 and out.counts["errors"] == 0
    first = lines[0]
    assert first["pri"] == str(3 * 8 + 2)  # daemon.crit: a high alert
    assert (first["app"], first["procid"], first["msgid"]) == (
        "defender-agent",
        str(os.getpid()),
        "alert",
    )
    # rsyslog's RFC 5424 parser kept our element whole: escapes as sent
    assert first["sd"].startswith('[defender@32473 device_id="dev-1" name="BruteForce" ')
    assert 'users="admin,ro\\]ot"' in first["sd"]
    record = json.loads(first["msg"])
    assert record["payload"]["description"] == 'attack 0 "quoted" ] back\\slash'
    assert [json.loads(line["msg"])["time"] for line in lines] == [
        "2025-12-01T00:00:00.000Z", "2025-12-01T00:00:01.000Z", "2025-12-01T00:00:02.000Z",
    ]  # fmt: skip
    agent.shutdown()


def test_tls_refuses_a_collector_outside_the_ca(rsyslog: Rsyslog, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_certificates(tmp_path / "other")  # a CA rsyslog does not know
    agent = Agent("dev-1", ManualClock())
    out = _output(agent, transport="tls", address="127.0.0.1", port=rsyslog.tls_port,
                  tls=_tls(other))  # fmt: skip
    out.start()
    agent.pipeline.write(_alert(0))
    _until(agent, lambda: out.counts["errors"] > 0, "the handshake to fail")
    assert out.counts["written"] == 0 and len(out.queue) == 1  # kept, not lost
    agent.shutdown()


def test_reconnects_after_rsyslog_restarts_and_loses_nothing(
    rsyslog: Rsyslog, certs: dict[str, Path]
) -> None:
    agent = Agent("dev-1", ManualClock())
    out = _output(agent, transport="tls", address="127.0.0.1", port=rsyslog.tls_port,
                  tls=_tls(certs))  # fmt: skip
    out.start()
    agent.pipeline.write(_alert(0))
    _until(agent, lambda: len(rsyslog.lines()) == 1, "the first message")
    rsyslog.stop()
    for n in range(1, 6):  # the collector is down: these wait in the queue
        agent.pipeline.write(_alert(n))
    agent.advance(0.5)
    assert out.counts["written"] == 1 and len(out.queue) == 5 and out.counts["errors"] >= 1
    rsyslog.start()
    _until(agent, lambda: len(rsyslog.lines()) >= 6, "the queued messages", seconds=90)
    descriptions = [json.loads(line["msg"])["payload"]["description"] for line in rsyslog.lines()]
    assert [d.split()[1] for d in descriptions] == ["0", "1", "2", "3", "4", "5"]
    assert out.counts["connections"] == 2 and out.counts["dropped"] == 0
    agent.shutdown()


def test_plain_tcp_octet_counting_with_a_long_message(rsyslog: Rsyslog) -> None:
    agent = Agent("dev-1", ManualClock())
    out = _output(agent, transport="tcp", address="127.0.0.1", port=rsyslog.tcp_port,
                  max_message=60000)  # fmt: skip
    out.start()
    cmdline = "x" * 20000 + "\nnext line"  # no LF framing would survive this
    agent.pipeline.write(Record("event", {"event": "process-exec", "pid": 7, "cmdline": cmdline}))
    agent.pipeline.write(_alert(1))
    _until(agent, lambda: len(rsyslog.lines()) >= 2, "two messages over TCP")
    first, second = rsyslog.lines()
    assert json.loads(first["msg"])["payload"]["cmdline"] == cmdline
    assert first["pri"] == str(3 * 8 + 6) and first["msgid"] == "event"
    assert json.loads(second["msg"])["payload"]["name"] == "BruteForce"
    agent.shutdown()


def test_local_socket_in_syslog3_form(rsyslog: Rsyslog) -> None:
    agent = Agent("dev-1", ManualClock())
    out = _output(agent, transport="unix", address=str(rsyslog.unix_socket), facility="local3")
    out.start()
    agent.pipeline.write(_alert(0))
    _until(agent, lambda: len(rsyslog.lines()) >= 1, "a message on the local socket")
    line = rsyslog.lines()[0]
    assert line["pri"] == str(19 * 8 + 2)
    assert line["app"] == "defender-agent" and line["procid"] == str(os.getpid())
    assert json.loads(line["msg"].lstrip())["payload"]["name"] == "BruteForce"
    agent.shutdown()
