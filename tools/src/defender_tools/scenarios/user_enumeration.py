"""Story (d): one failed password each for many user names: ONE UserEnumeration (medium).

Scanners walk name lists (root, admin, pi, ubnt, oracle, ...). OpenSSH logs every name
tried, so the agent sees the list; Dropbear logs no name for a user that does not exist,
so on that image the story checks that nothing is claimed it could not know.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks
from defender_tools.scenarios.base import Scenario, ScenarioResult
from defender_tools.scenarios.checks import SETTLE_S, USER_ENUMERATION, Alert
from defender_tools.scenarios.ssh_brute_force import ScenarioError, try_password

ALERT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class EnumerationSeen:
    before: int  # UserEnumeration alerts before the story
    tried: list[str]  # the names, in order
    stamps: list[float]  # host time each was refused
    alert: Alert | None
    seen: float
    after: int


class UserEnumeration(Scenario[EnumerationSeen]):
    """One wrong password for each of NAMES, each on its own connection."""

    name = "user enumeration"

    def __init__(self, names: tuple[str, ...] = ("ubnt", "oracle", "guest", "pi", "test")) -> None:
        self.names = list(names)

    def describe(self) -> str:
        return f"one failed SSH password login each as {', '.join(self.names)}"

    def observe(self, guest: Guest) -> EnumerationSeen:
        before = len(guest_agent.named(guest_agent.alerts(guest), USER_ENUMERATION))
        stamps = []
        for name in self.names:
            if try_password(guest.ssh_port, name, "wrong-guess"):
                raise ScenarioError(f"the guess for {name!r} was accepted: not a test image?")
            stamps.append(time.time())
        alert, seen = guest_agent.wait_for_alert(
            guest, USER_ENUMERATION, timeout=ALERT_TIMEOUT_S, known=before
        )
        time.sleep(SETTLE_S)
        after = len(guest_agent.named(guest_agent.alerts(guest), USER_ENUMERATION))
        return EnumerationSeen(before, self.names, stamps, alert, seen, after)

    def judge(self, seen: EnumerationSeen, profile: Profile) -> ScenarioResult:
        result = ScenarioResult(self.name, alert=seen.alert)
        if not profile.logs_unknown_user_names:
            # Dropbear: "Login attempt for nonexistent user" carries no name to count
            result.extend([checks.none_of(USER_ENUMERATION, seen.after - seen.before)])
            return result
        result.extend([checks.appeared(USER_ENUMERATION, seen.alert)])
        if seen.alert is None:
            return result
        alert = seen.alert
        result.timings["alert seen after the last name s"] = round(seen.seen - seen.stamps[-1], 2)
        result.extend(
            [
                checks.exactly_one_new(USER_ENUMERATION, seen.before, seen.after),
                checks.severity_is(alert, "medium"),
                checks.source_is(alert),
                checks.service_is(alert, profile),
                checks.users_include(alert, seen.tried, len(seen.tried) - 1),
            ]
        )
        return result
