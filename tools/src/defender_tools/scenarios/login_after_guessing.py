"""Story (b): failed passwords for a real user, then the right one: ONE BruteForceSuccess (high).

The guessing is for `operator`, the test image's user with a known password; the
successful login is a new connection from the same address as the failures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from defender_tools import guest_agent
from defender_tools.images.debian import OPERATOR_PASSWORD, OPERATOR_USER, Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks
from defender_tools.scenarios.base import Scenario, ScenarioResult
from defender_tools.scenarios.checks import BRUTE_FORCE_SUCCESS, SETTLE_S, Alert
from defender_tools.scenarios.ssh_brute_force import failed_password_attempts, try_password

ALERT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LoginSeen:
    """What the guest showed after the failures and the login."""

    before: int  # BruteForceSuccess alerts before the story
    accepted: bool  # the right password let the user in
    logged_in: float  # host time of that login
    alert: Alert | None  # the first new BruteForceSuccess alert
    seen: float  # host time it was first seen
    after: int  # BruteForceSuccess alerts once settled


class LoginAfterGuessing(Scenario[LoginSeen]):
    """FAILURES wrong passwords for USER, then PASSWORD, each on a new connection."""

    name = "login after guessing"

    def __init__(
        self, user: str = OPERATOR_USER, password: str = OPERATOR_PASSWORD, failures: int = 6
    ) -> None:
        self.user = user
        self.password = password
        self.failures = failures

    def describe(self) -> str:
        return f"{self.failures} failed SSH password logins as {self.user!r}, then the right one"

    def observe(self, guest: Guest) -> LoginSeen:
        before = len(guest_agent.named(guest_agent.alerts(guest), BRUTE_FORCE_SUCCESS))
        failed_password_attempts(guest.ssh_port, self.user, self.failures)
        accepted = try_password(guest.ssh_port, self.user, self.password)
        logged_in = time.time()
        alert, seen = guest_agent.wait_for_alert(
            guest, BRUTE_FORCE_SUCCESS, timeout=ALERT_TIMEOUT_S, known=before
        )
        if alert is not None:
            time.sleep(SETTLE_S)
        after = len(guest_agent.named(guest_agent.alerts(guest), BRUTE_FORCE_SUCCESS))
        return LoginSeen(before, accepted, logged_in, alert, seen, after)

    def judge(self, seen: LoginSeen, profile: Profile) -> ScenarioResult:
        result = ScenarioResult(self.name, alert=seen.alert)
        result.extend(
            [
                checks.login_accepted(self.user, seen.accepted),
                checks.appeared(BRUTE_FORCE_SUCCESS, seen.alert),
            ]
        )
        if seen.alert is None:
            return result
        alert = seen.alert
        result.timings["alert seen after the login s"] = round(seen.seen - seen.logged_in, 2)
        result.extend(
            [
                checks.exactly_one_new(BRUTE_FORCE_SUCCESS, seen.before, seen.after),
                checks.is_alert_record(alert),
                checks.severity_is(alert, "high"),
                checks.user_is(alert, self.user),
                checks.source_is(alert),
                checks.service_is(alert, profile),
            ]
        )
        return result
