"""The guest's alerts arrive at an rsyslog on the host, over TCP, through a guest forward.

The session's guest is booted with a forward (conftest.py `syslog_forward`): a TCP
connection the guest opens to 10.0.2.100:514 reaches 127.0.0.1:<port> on the host,
where this test runs rsyslogd (Debian's rsyslog, from scripts/install-system-deps.sh)
with an octet-counting TCP input that writes each message's fields as one line. The
agent in the guest gets the syslog output (TCP, alerts only) and a custom rule that
denies one program; running that program must put exactly one alert into the host's
rsyslog, with the agent's structured data and the alert's JSON. Under systemd the unit's
`IPAddressDeny=any` is opened for the collector by a drop-in, as docs/outputs.md says.
Nothing leaves the machine: the forward goes to the host's loopback only.
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

import pytest
from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
CONFIG = "/etc/defender-agent/agent.toml"
SAVED = "/run/defender-syslog-test.toml"
DROPIN_DIR = "/etc/systemd/system/defender-agent.service.d"
DROPIN = f"{DROPIN_DIR}/syslog-test.conf"
PROGRAM = "/opt/dfn-syslog/dfn-forwarded"  # not under /run: sysvinit mounts it noexec
RULE = "dfn-syslog-denied"
FIELDS = ("pri", "app", "procid", "msgid", "sd", "msg")


class HostRsyslog:
    """rsyslogd in the foreground: one octet-counting TCP input on 127.0.0.1:PORT, every
    message written as its parsed fields, tab-separated, one line each."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.out = directory / "received.log"
        (directory / "work").mkdir()
        self.conf = directory / "rsyslog.conf"
        self.conf.write_text(
            f"""
global(workDirectory="{directory / "work"}" maxMessageSize="64k")
module(load="imptcp")
input(type="imptcp" address="127.0.0.1" port="{port}" SupportOctetCountedFraming="on")
template(name="fields" type="string"
         string="%pri%\\t%app-name%\\t%procid%\\t%msgid%\\t%structured-data%\\t%msg%\\n")
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
        deadline = time.monotonic() + 15
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"rsyslogd did not start on 127.0.0.1:{self.port}: {err}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)

    def lines(self) -> list[dict[str, str]]:
        if not self.out.exists():
            return []
        text = self.out.read_text(encoding="utf-8", errors="replace")
        return [dict(zip(FIELDS, line.split("\t", 5), strict=False)) for line in text.splitlines()]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def host_rsyslog(tmp_path: Path, syslog_forward: tuple[str, int, int]) -> Iterator[HostRsyslog]:
    if not os.access(RSYSLOGD, os.X_OK):
        pytest.skip("rsyslogd is not installed (scripts/install-system-deps.sh installs it)")
    collector = HostRsyslog(tmp_path, syslog_forward[2])
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


def _guest_config(address: str, port: int) -> str:
    return f"""
[outputs.syslog]
enabled = true
transport = "tcp"
address = "{address}"
port = {port}
alerts_only = true

[[detectors.custom.rules]]
name = "{RULE}"
type = "process-denied"
deny = ["{PROGRAM}"]
"""


def _restart(guest: Guest) -> None:
    guest_agent.stop_service(guest)
    guest_agent.start_service(guest)
    assert guest_agent.wait_for_service(guest) == "active"


def test_alerts_reach_a_host_rsyslog_through_the_guest_forward(
    guest: Guest,
    profile: Profile,
    host_rsyslog: HostRsyslog,
    syslog_forward: tuple[str, int, int],
) -> None:
    address, port, _host_port = syslog_forward
    guest.run(f"cp {CONFIG} {SAVED}")
    try:
        guest.run(f"cat > {CONFIG} <<'EOF'\n{_guest_config(address, port)}\nEOF")
        guest.run(
            "if [ -d /run/systemd/system ]; then "
            f"mkdir -p {DROPIN_DIR} && "
            f"printf '[Service]\\nIPAddressAllow={address}\\n' > {DROPIN} && "
            "systemctl daemon-reload; fi"
        )
        _restart(guest)
        time.sleep(2)  # the collectors' first look
        sent = time.monotonic()
        guest.run(f"mkdir -p {os.path.dirname(PROGRAM)} && cp /bin/true {PROGRAM} && {PROGRAM}")
        deadline = sent + 60
        ours: list[dict[str, str]] = []
        while time.monotonic() < deadline and not ours:
            time.sleep(0.5)
            ours = [m for m in host_rsyslog.lines() if f'name="{RULE}"' in m.get("sd", "")]
        latency = time.monotonic() - sent
        print(f"\n{profile.name}: the alert reached the host's rsyslog in {latency:.1f} s")
        assert ours, f"no alert arrived in 60 s; rsyslog got {host_rsyslog.lines()}"
        time.sleep(3)  # a second copy would come within this
        ours = [m for m in host_rsyslog.lines() if f'name="{RULE}"' in m.get("sd", "")]
        (message,) = ours
        assert (message["app"], message["msgid"]) == ("defender-agent", "alert")
        assert message["sd"].startswith("[defender@")
        record = json.loads(message["msg"])
        assert record["type"] == "alert" and record["payload"]["name"] == RULE
        assert record["payload"]["executable"] == PROGRAM
        everything = host_rsyslog.lines()
        assert all(m["msgid"] == "alert" for m in everything), everything  # alerts_only
    finally:
        guest.ssh(
            f"cp {SAVED} {CONFIG}; rm -f {SAVED} {DROPIN}; rm -rf {os.path.dirname(PROGRAM)}; "
            "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi"
        )
        _restart(guest)
