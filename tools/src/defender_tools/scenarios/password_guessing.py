"""Story (a): an attacker guesses SSH passwords for a user name; the agent raises ONE BruteForce.

The attack runs while the alerts are polled, so the result shows WHEN the alert appeared
relative to each attempt: not before the threshold's attempt (sooner would mean one
attempt was counted twice), and soon after the last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from defender_tools import guest_agent
from defender_tools.errors import UserError
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks
from defender_tools.scenarios.base import Scenario, ScenarioResult
from defender_tools.scenarios.checks import (
    BRUTE_FORCE,
    BRUTE_FORCE_SUCCESS,
    MAX_FAILURES,
    SETTLE_S,
    Alert,
)
from defender_tools.scenarios.ssh_brute_force import iter_failed_password_attempts


@dataclass(frozen=True)
class GuessingSeen:
    """What the guest showed around the attack."""

    user_exists: bool
    before: int  # BruteForce alerts before the attack
    stamps: list[float]  # host time each attempt was refused
    alert: Alert | None  # the first BruteForce alert
    seen: float  # host time it was first seen
    after: int  # BruteForce alerts once the attack was over and settled
    successes: int  # BruteForceSuccess alerts then


class PasswordGuessing(Scenario[GuessingSeen]):
    """ATTEMPTS failed password logins as USER, each a new connection with one password."""

    name = "password guessing"

    def __init__(self, user: str = "admin", attempts: int = 8) -> None:
        if attempts < MAX_FAILURES:
            raise UserError(
                f"--attempts {attempts}: needs at least {MAX_FAILURES} to cross the threshold"
            )
        self.user = user
        self.attempts = attempts

    def describe(self) -> str:
        return f"{self.attempts} failed SSH password logins as {self.user!r}, watching alerts"

    def observe(self, guest: Guest) -> GuessingSeen:
        exists = guest_agent.user_exists(guest, self.user)
        before = len(guest_agent.named(guest_agent.alerts(guest), BRUTE_FORCE))
        attack = iter_failed_password_attempts(guest.ssh_port, self.user, self.attempts)
        stamps, alert, seen = guest_agent.watch_attack(guest, BRUTE_FORCE, attack)
        if alert is not None:
            time.sleep(SETTLE_S)
        records = guest_agent.alerts(guest)
        return GuessingSeen(
            user_exists=exists,
            before=before,
            stamps=stamps,
            alert=alert,
            seen=seen,
            after=len(guest_agent.named(records, BRUTE_FORCE)),
            successes=len(guest_agent.named(records, BRUTE_FORCE_SUCCESS)),
        )

    def judge(self, seen: GuessingSeen, profile: Profile) -> ScenarioResult:
        result = ScenarioResult(self.name, alert=seen.alert)
        result.timings["attack s"] = round(seen.stamps[-1] - seen.stamps[0], 1)
        result.checks.append(checks.appeared(BRUTE_FORCE, seen.alert))
        result.checks.append(checks.none_before(BRUTE_FORCE, seen.before))
        if seen.alert is None:
            return result
        alert = seen.alert
        # Negative: the alert was already visible before the attacker gave up.
        result.timings["alert seen vs last attempt s (< 0: before it)"] = round(
            seen.seen - seen.stamps[-1], 2
        )
        crossing = seen.stamps[min(MAX_FAILURES, len(seen.stamps)) - 1]
        result.timings[f"alert seen after attempt {MAX_FAILURES} (crossing) s"] = round(
            seen.seen - crossing, 2
        )
        # Both stamps from the guest's clock: when the agent raised the alert (observed)
        # minus the crossing log line's own time: the agent's latency, without SSH polling
        raised, logged = (
            checks.parse_time(alert.get("observed")),
            checks.parse_time(alert.get("time")),
        )
        if raised is not None and logged is not None:
            result.timings["alert raised after the crossing log line (guest clock) s"] = round(
                raised - logged, 3
            )
        result.extend(
            [
                checks.exactly_one_new(BRUTE_FORCE, seen.before, seen.after),
                checks.is_alert_record(alert),
                checks.source_is(alert),
                checks.service_is(alert, profile),
                checks.severity_is(alert, "low"),
                checks.users_are(alert, self.user, seen.user_exists, profile),
                checks.none_of(BRUTE_FORCE_SUCCESS, seen.successes),
                checks.not_before_attempt(seen.seen, seen.stamps),
                checks.within_latency(seen.seen, seen.stamps[-1]),
            ]
        )
        return result
