"""Story (h): what runs, connects and listens in the guest, and the owner's own rules.

The agent is given a configuration with the process and network collectors writing
each event at once (no aggregation), the network polled every second, and one custom
rule of every type. Then, inside the guest:

- a shell started with a marker argument starts `sleep` (seen with its parent);
- a network namespace `dfn-peer` behind a veth pair holds listeners on 192.0.2.2 and
  192.0.2.130 (RFC 5737; no packet leaves the guest), and shells connect to them
  (seen with their owning program);
- a program listens on 18080 and 18081 (seen in the `listen` snapshot);
- every rule gets a positive case and a near miss: a denied and a fine copy of
  `sleep`, a denied and an allowed destination, an inbound connection from outside
  and from inside the allowed network, a login by operator and by root, a burst of
  connections after a quiet window, three failed console logins after two.

The configuration is restored and the agent restarted at the end.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Any

import paramiko

from defender_tools import guest_agent
from defender_tools.images.debian import OPERATOR_PASSWORD, Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks, lab
from defender_tools.scenarios.base import Check, Scenario, ScenarioResult

CONFIG = "/etc/defender-agent/agent.toml"
SAVED = f"{lab.RUN_DIR}/agent.toml.orig"
MARK = "dfn-parent-mark"
# not under /run: sysvinit mounts it noexec
PROGRAMS = "/opt/dfn-lab"
DENIED, FINE = f"{PROGRAMS}/dfn-denied", f"{PROGRAMS}/dfn-fine"
WINDOW = 20  # seconds: the counting rules' window
SETTLE_S = WINDOW + 6  # long enough for a window check and a poll after the last step

RULES = f"""
[collectors.process]
priority = "none"
[collectors.network]
priority = "none"
poll_interval = 1.0

[[detectors.custom.rules]]
name = "dfn-denied-program"
type = "process-denied"
deny = ["{DENIED}"]

[[detectors.custom.rules]]
name = "dfn-unlisted-program"
type = "process-not-allowed"
allow = ["/usr/*", "/bin/*", "/sbin/*", "/lib/*", "/lib64/*", "/etc/*", "{FINE}"]

[[detectors.custom.rules]]
name = "dfn-denied-destination"
type = "outbound-denied"
deny_cidrs = ["192.0.2.2/32"]
ports = ["tcp/8443"]

[[detectors.custom.rules]]
name = "dfn-unlisted-destination"
type = "outbound-not-allowed"
allow_cidrs = ["192.0.2.0/25"]
ports = ["tcp/8444"]

[[detectors.custom.rules]]
name = "dfn-inbound"
type = "inbound-not-allowed"
allow_cidrs = ["192.0.2.2/32"]
ports = [18080]

[[detectors.custom.rules]]
name = "dfn-listener"
type = "listen-port-not-allowed"
allow_ports = ["tcp/22", "tcp/2222", "tcp/18081", "udp/68", "udp/546"]

[[detectors.custom.rules]]
name = "dfn-users"
type = "login-not-allowed"
allow_users = ["root"]

[[detectors.custom.rules]]
name = "dfn-chatty"
type = "connections-out-of-range"
window = {WINDOW}
max = 30

[[detectors.custom.rules]]
name = "dfn-console"
type = "local-login-failures-out-of-range"
window = {WINDOW}
max = 2
"""

# two listeners that accept and keep every connection (the client side stays open)
_SERVE = """
import select, socket, sys
ports = [int(p) for p in sys.argv[1:]]
socks = []
for port in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    socks.append(s)
held = []
while True:
    ready, _, _ = select.select(socks, [], [], 1.0)
    for s in ready:
        held.append(s.accept()[0])
        del held[:-300]
"""
# connect from a given source address and hold the connection
_CONNECT = """
import socket, sys, time
s = socket.socket()
s.bind((sys.argv[1], 0))
s.connect((sys.argv[2], int(sys.argv[3])))
time.sleep(float(sys.argv[4]))
"""

_SETUP = f"""set -e
mkdir -p {lab.RUN_DIR}
ip netns add dfn-peer 2>/dev/null || true
if ! ip link show dfn-veth0 >/dev/null 2>&1; then
    ip link add dfn-veth0 type veth peer name dfn-veth1
    ip link set dfn-veth1 netns dfn-peer
fi
ip addr replace 192.0.2.1/24 dev dfn-veth0
ip link set dfn-veth0 up
ip netns exec dfn-peer ip addr replace 192.0.2.2/24 dev dfn-veth1
ip netns exec dfn-peer ip addr replace 192.0.2.130/24 dev dfn-veth1
ip netns exec dfn-peer ip link set dfn-veth1 up
ip netns exec dfn-peer ip link set lo up
mkdir -p {PROGRAMS}
cp /bin/sleep {DENIED}
cp /bin/sleep {FINE}
{DENIED} 0 && {FINE} 0  # they can run here
printf '%s' {shlex.quote(_SERVE)} > {lab.RUN_DIR}/serve.py
printf '%s' {shlex.quote(_CONNECT)} > {lab.RUN_DIR}/connect.py
nohup ip netns exec dfn-peer python3 {lab.RUN_DIR}/serve.py 8443 8444 \\
    >{lab.RUN_DIR}/peer.out 2>&1 </dev/null &
test -f {SAVED} || cp {CONFIG} {SAVED}
printf '%s' {shlex.quote(RULES)} > {CONFIG}
"""


def _bg(command: str) -> str:
    """COMMAND detached from the SSH session."""
    return f"nohup sh -c {shlex.quote(command)} >/dev/null 2>&1 </dev/null &"


def _tcp(host: str, port: int, hold: int = 12) -> str:
    """A bash that opens a TCP connection and holds it, waiting on it without a child (a
    `sleep` would inherit the descriptor and own the connection too)."""
    return _bg(f"exec bash -c 'exec 3<>/dev/tcp/{host}/{port}; read -r -t {hold} -u 3 _'")


@dataclass(frozen=True)
class ActivitySeen:
    execs: list[dict[str, Any]]
    connections: list[dict[str, Any]]
    attempts: list[dict[str, Any]]  # connection-attempt events
    listens: list[dict[str, Any]]
    alerts: list[dict[str, Any]]  # alert payloads with their record `time` as "_time"
    phases: dict[str, float]  # guest time each step began
    statuses: dict[str, int]  # guest commands that must have succeeded
    logins: dict[str, bool]


class SystemActivity(Scenario[ActivitySeen]):
    """Processes, connections, listeners and one custom rule of each type."""

    name = "processes, connections, listeners and custom rules"

    def describe(self) -> str:
        return "a shell and its child, connections into a network namespace, listeners, rules"

    def observe(self, guest: Guest) -> ActivitySeen:
        statuses: dict[str, int] = {}
        phases: dict[str, float] = {}
        logins: dict[str, bool] = {}

        def step(name: str, command: str) -> None:
            phases[name] = guest_agent.guest_time(guest) or 0.0
            statuses[name], _out, _err = guest.ssh(command)

        step("setup", _SETUP)
        guest_agent.stop_service(guest)
        guest_agent.start_service(guest)
        statuses["agent active"] = 0 if guest_agent.wait_for_service(guest) == "active" else 1
        time.sleep(4)  # the collectors' first look: everything so far is the baseline
        try:
            step("quiet window", "true")
            step("console near miss", _failed_console_logins(2))
            time.sleep(WINDOW + 2)  # a counting window passes with few events of each kind
            step("spawn", _bg(f"bash -c 'sleep 6; true' {MARK}"))
            step("programs", _bg(f"{DENIED} 6") + "\n" + _bg(f"{FINE} 6"))
            step("listen", _bg(f"exec python3 {lab.RUN_DIR}/serve.py 18080 18081"))
            time.sleep(2)
            step("outbound", "\n".join([_tcp("192.0.2.2", 8443), _tcp("192.0.2.2", 8444)]))
            step("outbound unlisted", _tcp("192.0.2.130", 8444))
            step("inbound", _inbound("192.0.2.130") + "\n" + _inbound("192.0.2.2"))
            step("closed port", _closed_port(CLOSED_PORT))
            logins["operator"] = _password_login(guest, "operator", OPERATOR_PASSWORD)
            logins["root"] = _key_login(guest)
            step("console", _failed_console_logins(3))
            step(
                "burst",
                "for i in $(seq 40); do "
                "bash -c 'exec 3<>/dev/tcp/192.0.2.2/8444' 2>/dev/null; done",
            )
            time.sleep(SETTLE_S)
            alerts = [
                dict(r.get("payload", {}), _time=checks.parse_time(r.get("time")))
                for r in guest_agent.alerts(guest)
            ]
            return ActivitySeen(
                guest_agent.events(guest, "process-exec"),
                guest_agent.events(guest, "connection"),
                guest_agent.events(guest, "connection-attempt"),
                guest_agent.events(guest, "listen"),
                [a for a in alerts if str(a.get("name", "")).startswith("dfn-")],
                phases,
                statuses,
                logins,
            )
        finally:
            guest.ssh(
                f"test -f {SAVED} && cp {SAVED} {CONFIG}; "
                f"pkill -f {lab.RUN_DIR}/serve.py; ip netns del dfn-peer 2>/dev/null; "
                f"rm -rf {PROGRAMS}; true"
            )
            guest_agent.stop_service(guest)
            guest_agent.start_service(guest)

    def judge(self, seen: ActivitySeen, profile: Profile) -> ScenarioResult:
        result = ScenarioResult(self.name)
        failed = [name for name, status in seen.statuses.items() if status != 0]
        result.checks.append(Check("every guest step ran", not failed, ", ".join(failed)))
        # both init systems give the agent its collectors' capabilities (CAP_SYS_PTRACE:
        # other users' executables), so both profiles are judged alike
        result.extend(_process_checks(seen))
        result.extend(_network_checks(seen))
        result.extend(_rule_checks(seen))
        return result


def _inbound(source: str) -> str:
    return _bg(
        f"exec ip netns exec dfn-peer python3 {lab.RUN_DIR}/connect.py {source} 192.0.2.1 18080 12"
    )


CLOSED_PORT = 18999  # nothing listens there: a SYN to it is a connection attempt


def _closed_port(port: int) -> str:
    """One TCP connect from the namespace to a port of the guest nothing listens on: the
    guest answers the SYN with a reset, so there is exactly one SYN."""
    code = (
        "import socket; s = socket.socket(); s.bind(('192.0.2.2', 0)); s.settimeout(5)\n"
        f"try: s.connect(('192.0.2.1', {port}))\n"
        "except ConnectionRefusedError: pass\n"
        "else: raise SystemExit('a listener answered')"
    )
    return f"ip netns exec dfn-peer python3 -c {shlex.quote(code)}"


def _failed_console_logins(n: int) -> str:
    """login(1)'s own message for a failed console login, through syslog as root."""
    line = "FAILED LOGIN (1) on '/dev/ttyS0' FOR 'root', Authentication failure"
    return "\n".join(f"logger -i -t login -p authpriv.notice {shlex.quote(line)}" for _ in range(n))


def _password_login(guest: Guest, user: str, password: str) -> bool:
    from defender_tools.scenarios.ssh_brute_force import try_password

    return try_password(guest.ssh_port, user, password)


def _key_login(guest: Guest) -> bool:
    try:
        guest.connect().close()
    except (paramiko.SSHException, OSError):
        return False
    return True


def _process_checks(seen: ActivitySeen) -> list[Check]:
    child = [
        e
        for e in seen.execs
        if str(e.get("cmdline", "")).startswith("sleep 6") and MARK in str(e.get("parent_cmdline"))
    ]
    out = [Check("the shell's child is seen with its parent", bool(child), f"{len(child)} seen")]
    if child:
        exe = str(child[0].get("executable"))
        out.append(Check("the child's executable is sleep", exe.endswith("/sleep"), exe))
    return out


def _network_checks(seen: ActivitySeen) -> list[Check]:
    outbound = [
        c
        for c in seen.connections
        if c.get("direction") == "out"
        and c.get("remote_address") == "192.0.2.2"
        and c.get("remote_port") == 8443
    ]
    out = [Check("the connection into the namespace is seen", bool(outbound), f"{len(outbound)}")]
    if outbound:
        exe = str(outbound[0].get("executable"))
        out.append(Check("with its owning program (bash)", exe.endswith("/bash"), exe))
        backend = str(outbound[0].get("backend"))
        out.append(
            Check(
                "from the kernel's netlink sources, not the /proc/net fallback",
                backend in ("sock_diag", "conntrack"),
                backend,
            )
        )
    ports = {
        s.get("port")
        for snapshot in seen.listens
        for s in snapshot.get("sockets", [])
        if isinstance(s, dict) and s.get("protocol") == "tcp"
    }
    out.append(
        Check(
            "the new listener is in a listen snapshot",
            18080 in ports,
            f"ports {sorted(p for p in ports if isinstance(p, int))[:12]}",
        )
    )
    closed = [
        a
        for a in seen.attempts
        if a.get("local_port") == CLOSED_PORT and a.get("remote_address") == "192.0.2.2"
    ]
    listening = [a for a in seen.attempts if a.get("local_port") == 18080]
    out.append(
        Check(
            "a SYN to a closed port is one connection attempt, to a listening port none",
            len(closed) == 1 and not listening,
            f"{len(closed)} to port {CLOSED_PORT}, {len(listening)} to the listener 18080",
        )
    )
    return out


def _named(alerts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a.get("name") == name]


def _exactly_one(rule: str, hits: list[dict[str, Any]], misses: list[dict[str, Any]]) -> Check:
    ok = len(hits) == 1 and not misses
    return Check(
        f"{rule}: one alert, none on the near miss",
        ok,
        f"{len(hits)} hits, {len(misses)} on the near miss",
    )


# rule -> (the alert field that tells the cases apart, its positive value, its near miss)
FINDINGS: tuple[tuple[str, str, object, object], ...] = (
    ("dfn-denied-program", "executable", DENIED, FINE),
    ("dfn-unlisted-program", "executable", DENIED, FINE),
    ("dfn-denied-destination", "remote_port", 8443, 8444),
    ("dfn-unlisted-destination", "remote_address", "192.0.2.130", "192.0.2.2"),
    ("dfn-inbound", "remote_address", "192.0.2.130", "192.0.2.2"),
    ("dfn-listener", "port", 18080, 18081),
    ("dfn-users", "user", "operator", "root"),
)
# counting rules: the step that pushed the count out of range (earlier alerts: near misses)
COUNTED = (("dfn-chatty", "burst"), ("dfn-console", "console"))


def _rule_checks(seen: ActivitySeen) -> list[Check]:
    out = []
    for rule, field, positive, near_miss in FINDINGS:
        alerts = _named(seen.alerts, rule)
        if rule == "dfn-users":
            logged_in = all(seen.logins.values())
            out.append(Check("operator and root logged in", logged_in, str(seen.logins)))
        hits = [x for x in alerts if x.get(field) == positive]
        misses = [x for x in alerts if x.get(field) == near_miss]
        out.append(_exactly_one(rule, hits, misses))
    for rule, phase in COUNTED:
        alerts = _named(seen.alerts, rule)
        start = seen.phases.get(phase, 0.0)
        hits = [x for x in alerts if (x.get("_time") or 0) >= start - 1]
        misses = [x for x in alerts if (x.get("_time") or 0) < start - 1]
        out.append(_exactly_one(rule, hits, misses))
    return out
