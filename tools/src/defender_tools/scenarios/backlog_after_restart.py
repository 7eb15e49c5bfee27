"""Story (c): an attack while the agent is stopped is reported from the backlog at restart.

The agent service is stopped, USER (a name no earlier story used) fails ATTEMPTS password
logins, then the agent starts again and reads the auth log from where it stopped. It must
raise exactly one new BruteForce, dated by the attack (`time`, from the log's own
timestamps), and say when it raised it (`observed`, after the restart).

Every host connection comes from 10.0.2.2, so the source cannot be new. The agent raises
one alert per burst and remembers raised incidents across restarts (a crash must not raise
one twice), so a new burst needs the address to have been quiet for the detector's window:
the story first waits until the newest failure the agent recorded from that address is
more than a window old.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks
from defender_tools.scenarios.base import Scenario, ScenarioResult
from defender_tools.scenarios.checks import (
    ATTACKER_SOURCE,
    BRUTE_FORCE,
    CLOCK_TOLERANCE,
    SETTLE_S,
    Alert,
)
from defender_tools.scenarios.ssh_brute_force import failed_password_attempts

ALERT_TIMEOUT_S = 30.0
# Wait after the attack so that "read at restart" and "happened during the attack" are
# further apart than the clock tolerance on both sides: a wrong `time` cannot pass.
RESTART_PAUSE_S = 2 * CLOCK_TOLERANCE + 1.0
WINDOW_S = 60.0  # the agent's default detectors.brute_force.window


@dataclass(frozen=True)
class BacklogSeen:
    """What the guest showed around the stop, the attack and the restart."""

    before: int  # BruteForce alerts before the story
    stopped_state: str  # the service's state during the attack
    stamps: list[float]  # host time each attempt was refused
    restarted: float  # host time the agent was started again
    restarted_guest: float | None  # the guest's time then (what the agent's stamps are on)
    restarted_state: str  # the service's state after the start
    alert: Alert | None  # the first new BruteForce alert
    seen: float  # host time it was first seen
    after: int  # BruteForce alerts once settled


class BacklogAfterRestart(Scenario[BacklogSeen]):
    """Stop the agent, ATTEMPTS failed logins as USER, start the agent, wait for the alert."""

    name = "backlog after restart"

    def __init__(self, user: str = "deploy", attempts: int = 6) -> None:
        self.user = user
        self.attempts = attempts
        self.quiet_wait = 0.0

    def describe(self) -> str:
        return f"agent stopped, {self.attempts} failed logins as {self.user!r}, agent restarted"

    def _attack_while_stopped(self, guest: Guest) -> tuple[str, list[float], float, float | None]:
        """The attack with the agent stopped; the agent is started again whatever happens."""
        guest_agent.stop_service(guest)
        restarted_guest = None
        try:
            stopped_state = guest_agent.service_state(guest)
            stamps = failed_password_attempts(guest.ssh_port, self.user, self.attempts)
            time.sleep(RESTART_PAUSE_S)
            restarted_guest = guest_agent.guest_time(guest)
        finally:
            restarted = time.time()
            guest_agent.start_service(guest)
        return stopped_state, stamps, restarted, restarted_guest

    def _wait_for_quiet(self, guest: Guest) -> float:
        """Seconds waited until earlier failures from the attacker's address are a window old."""
        last = guest_agent.last_event_time(guest, "login-failed", ATTACKER_SOURCE)
        wait = 0.0 if last is None else last + WINDOW_S + CLOCK_TOLERANCE - time.time()
        if wait > 0:
            time.sleep(wait)
        return max(0.0, wait)

    def observe(self, guest: Guest) -> BacklogSeen:
        self.quiet_wait = self._wait_for_quiet(guest)
        before = len(guest_agent.named(guest_agent.alerts(guest), BRUTE_FORCE))
        stopped_state, stamps, restarted, restarted_guest = self._attack_while_stopped(guest)
        restarted_state = guest_agent.wait_for_service(guest)
        alert, seen = guest_agent.wait_for_alert(
            guest, BRUTE_FORCE, timeout=ALERT_TIMEOUT_S, known=before
        )
        if alert is not None:
            time.sleep(SETTLE_S)
        after = len(guest_agent.named(guest_agent.alerts(guest), BRUTE_FORCE))
        return BacklogSeen(
            before,
            stopped_state,
            stamps,
            restarted,
            restarted_guest,
            restarted_state,
            alert,
            seen,
            after,
        )

    def judge(self, seen: BacklogSeen, profile: Profile) -> ScenarioResult:
        result = ScenarioResult(self.name, alert=seen.alert)
        result.timings["attack s"] = round(seen.stamps[-1] - seen.stamps[0], 1)
        result.extend(
            [
                checks.service_stopped(seen.stopped_state),
                checks.service_active(seen.restarted_state, "agent active again after restart"),
                checks.appeared(BRUTE_FORCE, seen.alert, f"a new {BRUTE_FORCE}"),
            ]
        )
        if seen.alert is None:
            return result
        alert = seen.alert
        result.timings["alert seen after the restart s"] = round(seen.seen - seen.restarted, 2)
        result.extend(
            [
                checks.exactly_one_new(BRUTE_FORCE, seen.before, seen.after),
                checks.source_is(alert),
                checks.service_is(alert, profile),
                checks.time_within(alert, seen.stamps[0], seen.stamps[-1]),
                checks.observed_after(alert, seen.restarted_guest, "guest")
                if seen.restarted_guest is not None
                else checks.observed_after(alert, seen.restarted),
            ]
        )
        return result
