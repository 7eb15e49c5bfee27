"""Story (f): one password every 30 s from one address: one BruteForceSlow, no BruteForce.

An attacker who stays under the fast rule (5 failures in 60 s) still makes 10 attempts
in under 5 minutes. The attacker runs inside the guest from an address of its own
(scenarios.lab), in the background while the other stories play from 10.0.2.2, so its
five minutes cost the test session little and no other story's failures mix with its.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks, lab
from defender_tools.scenarios.base import Scenario, ScenarioResult
from defender_tools.scenarios.checks import BRUTE_FORCE, BRUTE_FORCE_SLOW, SETTLE_S, Alert

SLOW_SOURCE = "198.51.100.7"
NAME = "slow-guessing"
ALERT_TIMEOUT_S = 30.0  # after the last attempt
POLL_S = 5.0


@dataclass(frozen=True)
class SlowSeen:
    attempts: list[lab.Attempt]  # guest time each attempt started, ssh's status
    slow: list[Alert]  # BruteForceSlow alerts for the attacker's address
    fast: list[Alert]  # BruteForce alerts for it
    seen: float  # host time the slow alert was first seen (0.0: never)
    last_done: float  # host time the last attempt was known to have ended


class SlowGuessing(Scenario[SlowSeen]):
    """ATTEMPTS wrong passwords for USER, one starting every INTERVAL seconds."""

    name = "slow password guessing"

    def __init__(
        self,
        user: str = "operator",
        attempts: int = 10,
        interval: float = 30.0,
        source: str = SLOW_SOURCE,
    ) -> None:
        self.user = user
        self.attempts = attempts
        self.interval = interval
        self.source = source
        self.started = False

    def describe(self) -> str:
        return (
            f"{self.attempts} wrong passwords for {self.user!r} from {self.source}, "
            f"one every {self.interval:.0f} s"
        )

    def begin(self, guest: Guest) -> None:
        """Start the attacker in the guest; `observe` waits for it (other stories may run
        in between)."""
        lab.prepare(guest, self.source)
        commands = [
            lab.password_attempt(self.source, self.user, f"slow-guess-{i}")
            for i in range(self.attempts)
        ]
        lab.start_background(guest, NAME, commands, self.interval)
        self.started = True

    def observe(self, guest: Guest) -> SlowSeen:
        if not self.started:
            self.begin(guest)
        deadline = time.monotonic() + self.attempts * self.interval + 120
        attempts, done = lab.background_progress(guest, NAME)
        while not done and time.monotonic() < deadline:
            time.sleep(POLL_S)
            attempts, done = lab.background_progress(guest, NAME)
        last_done = time.time()
        slow = []
        seen = 0.0
        wait_until = time.monotonic() + ALERT_TIMEOUT_S
        while True:
            records = guest_agent.alerts(guest)
            slow = checks.from_source(records, BRUTE_FORCE_SLOW, self.source)
            if slow:
                seen = seen or time.time()
                break
            if time.monotonic() > wait_until:
                break
            time.sleep(1.0)
        time.sleep(SETTLE_S)
        records = guest_agent.alerts(guest)
        return SlowSeen(
            attempts,
            checks.from_source(records, BRUTE_FORCE_SLOW, self.source),
            checks.from_source(records, BRUTE_FORCE, self.source),
            seen,
            last_done,
        )

    def judge(self, seen: SlowSeen, profile: Profile) -> ScenarioResult:
        alert = seen.slow[0] if seen.slow else None
        result = ScenarioResult(self.name, alert=alert)
        starts = [a.started for a in seen.attempts]
        if len(starts) > 1:
            result.timings["attack s"] = round(starts[-1] - starts[0], 1)
            result.timings["mean interval s"] = round(
                (starts[-1] - starts[0]) / (len(starts) - 1), 1
            )
        result.extend(
            [
                checks.all_refused([a.status for a in seen.attempts], self.attempts),
                checks.appeared(BRUTE_FORCE_SLOW, alert),
                checks.exactly_one_new(BRUTE_FORCE_SLOW, 0, len(seen.slow)),
                checks.none_of(BRUTE_FORCE, len(seen.fast)),
            ]
        )
        if alert is None or not starts:
            return result
        result.extend(
            [
                checks.severity_is(alert, "low"),
                checks.source_is(alert, self.source),
                checks.service_is(alert, profile),
                # dated at the attempt that crossed the threshold: the last one
                checks.time_within(alert, starts[-1], starts[-1] + self.interval),
            ]
        )
        return result
