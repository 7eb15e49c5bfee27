"""Story (g): a server without password logins, attacked with many user names.

Hardened devices turn password logins off. An attacker there produces no "Failed
password" line at all: OpenSSH logs `Invalid user U from A` and `Connection closed by
invalid user U A port P [preauth]` (or `... authenticating user root ...`); Dropbear
(-s) logs the nonexistent-user line and `Exit before auth ... (user 'root', 0 fails)`.
Each connection is still one failure: one BruteForce for the address, and under
OpenSSH, which logs every name, one UserEnumeration too.

A second server with passwords off runs on PORT beside the image's own (whose password
logins the other stories need); the attacker is in the guest, on an address of its own
(scenarios.lab), so the alerts are this story's alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks, lab
from defender_tools.scenarios.base import Scenario, ScenarioResult
from defender_tools.scenarios.checks import BRUTE_FORCE, SETTLE_S, USER_ENUMERATION, Alert

PUBKEY_SOURCE = "203.0.113.9"
PORT = 2222
PIDFILE = f"{lab.RUN_DIR}/pubkey-server.pid"
ALERT_TIMEOUT_S = 20.0
# sshd when the image has OpenSSH, else Dropbear; both with password logins off
_START_SERVER = f"""set -e
if [ -x /usr/sbin/sshd ]; then
    /usr/sbin/sshd -p {PORT} -o PasswordAuthentication=no \\
        -o KbdInteractiveAuthentication=no -o PidFile={PIDFILE}
else
    dropbear -s -p {PORT} -P {PIDFILE}
fi
for _ in $(seq 50); do [ -s {PIDFILE} ] && exit 0; sleep 0.1; done
exit 1
"""
_STOP_SERVER = f"test -s {PIDFILE} && kill $(cat {PIDFILE}); rm -f {PIDFILE}"


@dataclass(frozen=True)
class PubkeyOnlySeen:
    tried: list[str]
    statuses: list[int]  # ssh's exit status per name (255: refused)
    brute_force: list[Alert]  # for the attacker's address
    enumeration: list[Alert]
    seen: float  # host time the BruteForce was first seen (0.0: never)
    last: float  # host time the last attempt ended


class PubkeyOnlyServer(Scenario[PubkeyOnlySeen]):
    """One password login for each of NAMES against a server that accepts only keys."""

    name = "password attempts on a key-only server"

    def __init__(
        self,
        names: tuple[str, ...] = ("root", "operator", "ubnt", "oracle", "pi", "test"),
        source: str = PUBKEY_SOURCE,
    ) -> None:
        self.names = list(names)
        self.source = source

    def describe(self) -> str:
        return f"{len(self.names)} user names from {self.source} on a server without passwords"

    def observe(self, guest: Guest) -> PubkeyOnlySeen:
        lab.prepare(guest, self.source)
        rc, out, err = guest.ssh(_START_SERVER)
        if rc != 0:
            raise lab.LabError(f"key-only server did not start ({rc}): {err or out}")
        try:
            statuses = []
            for name in self.names:
                command = lab.password_attempt(self.source, name, "key-only-guess", PORT)
                status, _out, _err = guest.ssh(command)
                statuses.append(status)
            last = time.time()
            seen = 0.0
            deadline = time.monotonic() + ALERT_TIMEOUT_S
            while not seen and time.monotonic() < deadline:
                if checks.from_source(guest_agent.alerts(guest), BRUTE_FORCE, self.source):
                    seen = time.time()
                else:
                    time.sleep(0.5)
            time.sleep(SETTLE_S)
            records = guest_agent.alerts(guest)
        finally:
            guest.ssh(_STOP_SERVER)
        return PubkeyOnlySeen(
            self.names,
            statuses,
            checks.from_source(records, BRUTE_FORCE, self.source),
            checks.from_source(records, USER_ENUMERATION, self.source),
            seen,
            last,
        )

    def judge(self, seen: PubkeyOnlySeen, profile: Profile) -> ScenarioResult:
        alert = seen.brute_force[0] if seen.brute_force else None
        result = ScenarioResult(self.name, alert=alert)
        result.extend(
            [
                checks.all_refused(seen.statuses, len(seen.tried)),
                checks.appeared(BRUTE_FORCE, alert),
                checks.exactly_one_new(BRUTE_FORCE, 0, len(seen.brute_force)),
            ]
        )
        if alert is not None:
            result.timings["alert seen after the last name s"] = round(seen.seen - seen.last, 2)
            result.extend([checks.source_is(alert, self.source), checks.service_is(alert, profile)])
        if not profile.logs_unknown_user_names:
            # Dropbear names only existing users: too few names for an enumeration
            result.extend([checks.none_of(USER_ENUMERATION, len(seen.enumeration))])
            return result
        enumeration = seen.enumeration[0] if seen.enumeration else None
        result.extend(
            [
                checks.appeared(USER_ENUMERATION, enumeration),
                checks.exactly_one_new(USER_ENUMERATION, 0, len(seen.enumeration)),
            ]
        )
        if enumeration is not None:
            result.extend([checks.users_include(enumeration, seen.tried, len(seen.tried) - 1)])
        return result
