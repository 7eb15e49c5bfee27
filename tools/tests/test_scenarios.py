"""The scenarios' judgement, from made-up observations (no guest): what passes, what fails."""

from __future__ import annotations

import dataclasses
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from defender_tools.errors import UserError
from defender_tools.images.debian import PROFILES
from defender_tools.scenarios import (
    BacklogAfterRestart,
    Check,
    LoginAfterGuessing,
    PasswordGuessing,
    ScenarioResult,
    checks,
)
from defender_tools.scenarios.backlog_after_restart import RESTART_PAUSE_S, BacklogSeen
from defender_tools.scenarios.login_after_guessing import LoginSeen
from defender_tools.scenarios.password_guessing import GuessingSeen

STANDARD, EMBEDDED = PROFILES["standard"], PROFILES["embedded"]
T0 = 1_795_766_400.0  # 2026-11-27T08:00:00Z, host time of the first refused attempt


def _rfc3339(ts: float) -> str:
    """The agent's format: UTC, milliseconds, Z."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _alert(name: str, when: float, **payload: Any) -> dict[str, Any]:
    return {
        "schema": "defender/1",
        "type": "alert",
        "device_id": "d",
        "agent_version": "0.1.0",
        "time": _rfc3339(when),
        "payload": {"name": name, "source": "10.0.2.2", **payload},
    }


def _failed(result: ScenarioResult) -> list[str]:
    return [check.name for check in result.checks if not check.passed]


# --- the result ----------------------------------------------------------------------------


def test_result_passes_only_with_checks_all_passed() -> None:
    result = ScenarioResult("story")
    assert not result.passed
    assert result.failures() == "story: FAIL no check ran"
    result.checks.append(Check("one", True))
    assert result.passed and result.failures() == ""
    result.checks.append(Check("two", False, "got 3"))
    assert not result.passed
    assert result.failures() == "story: FAIL two (got 3)"
    result.timings["attack s"] = 1.5
    assert result.report().splitlines() == [
        "story: FAIL",
        "  attack s: 1.5",
        "  PASS one",
        "  FAIL two (got 3)",
    ]


def test_rfc3339_times_parse_and_anything_else_does_not() -> None:
    assert checks.parse_time("2026-11-27T08:00:00.123Z") == pytest.approx(T0 + 0.123)
    assert _rfc3339(T0 + 0.123) == "2026-11-27T08:00:00.123Z"
    for bad in (None, 5, "", "2026-11-27 08:00:00", "2026-11-27T08:00:00+01:00", "noonZ"):
        assert checks.parse_time(bad) is None


# --- (a) password guessing -----------------------------------------------------------------

STAMPS = [T0 + 3.0 * i for i in range(8)]  # refused attempts, 3 s apart (sshd under TCG)


def _guessing(**changes: Any) -> GuessingSeen:
    seen = GuessingSeen(
        user_exists=False,
        before=0,
        stamps=STAMPS,
        alert=_alert(
            "BruteForce", STAMPS[4], severity="low", users=["admin"], service="sshd", count=5
        ),
        seen=STAMPS[4] + 0.5,
        after=1,
        successes=0,
    )
    return dataclasses.replace(seen, **changes)


def test_password_guessing_passes_on_the_expected_alert() -> None:
    result = PasswordGuessing().judge(_guessing(), STANDARD)
    assert result.passed, result.failures()
    assert result.alert is not None
    assert result.timings["alert seen after attempt 5 (crossing) s"] == 0.5
    assert result.timings["alert seen vs last attempt s (< 0: before it)"] == -8.5
    names = [check.name for check in result.checks]
    assert "users is ['admin']" in names and "service is sshd" in names


def test_dropbear_names_no_unknown_user_but_names_a_real_one() -> None:
    alert = _alert("BruteForce", STAMPS[4], severity="low", users=[], service="dropbear")
    assert PasswordGuessing().judge(_guessing(alert=alert), EMBEDDED).passed
    named = {**alert, "payload": {**alert["payload"], "users": ["admin"]}}
    failed = _failed(PasswordGuessing().judge(_guessing(alert=named), EMBEDDED))
    assert failed == ["users is [] (unknown names are not logged)"]
    real = {**alert, "payload": {**alert["payload"], "users": ["operator"]}}
    known = _guessing(alert=real, user_exists=True)
    assert PasswordGuessing("operator").judge(known, EMBEDDED).passed


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({"before": 1, "after": 2}, ["no BruteForce before the attack"]),
        ({"after": 2}, ["exactly one BruteForce alert"]),
        ({"successes": 1}, ["no BruteForceSuccess"]),
        ({"seen": STAMPS[3] - 0.1}, ["alert not before failed attempt 5"]),
        ({"seen": STAMPS[-1] + 10.5}, ["alert within 10 s of the last attempt"]),
    ],
)
def test_password_guessing_names_what_went_wrong(
    changes: dict[str, Any], failed: list[str]
) -> None:
    assert _failed(PasswordGuessing().judge(_guessing(**changes), STANDARD)) == failed


def test_password_guessing_without_an_alert_fails_once() -> None:
    result = PasswordGuessing().judge(_guessing(alert=None, after=0), STANDARD)
    assert _failed(result) == ["BruteForce alert appeared"]
    assert "BruteForce alert appeared" in result.failures()


def test_alert_fields_are_checked() -> None:
    wrong = _alert("BruteForce", STAMPS[4], severity="high", users=["admin"], service="dropbear")
    wrong["payload"]["source"] = "10.0.2.3"
    wrong["schema"] = "defender/0"
    failed = _failed(PasswordGuessing().judge(_guessing(alert=wrong), STANDARD))
    assert failed == [
        "a defender/1 alert record",
        "source is 10.0.2.2",
        "service is sshd",
        "severity is low",
    ]


def test_too_few_attempts_cannot_cross_the_threshold() -> None:
    with pytest.raises(UserError, match="--attempts 4: needs at least 5"):
        PasswordGuessing(attempts=4)


# --- (b) login after guessing --------------------------------------------------------------


def _login(**changes: Any) -> LoginSeen:
    alert = _alert(
        "BruteForceSuccess", T0 + 20, severity="high", user="operator", service="dropbear"
    )
    seen = LoginSeen(before=0, accepted=True, logged_in=T0 + 20, alert=alert, seen=T0 + 21, after=1)
    return dataclasses.replace(seen, **changes)


def test_login_after_guessing_passes_on_one_high_alert_naming_the_user() -> None:
    result = LoginAfterGuessing().judge(_login(), EMBEDDED)
    assert result.passed, result.failures()
    assert result.timings == {"alert seen after the login s": 1.0}


def test_login_after_guessing_failures() -> None:
    assert _failed(LoginAfterGuessing().judge(_login(after=2), EMBEDDED)) == [
        "exactly one BruteForceSuccess alert"
    ]
    assert _failed(LoginAfterGuessing().judge(_login(accepted=False, alert=None), EMBEDDED)) == [
        "the right password lets 'operator' in",
        "BruteForceSuccess alert appeared",
    ]
    other = _login(alert=_alert("BruteForceSuccess", T0, severity="low", user="root"))
    assert _failed(LoginAfterGuessing().judge(other, EMBEDDED)) == [
        "severity is high",
        "user is 'operator'",
        "service is dropbear",
    ]


# --- (c) backlog after restart -------------------------------------------------------------

ATTACK = [T0 + 0.5 * i for i in range(6)]  # Dropbear: fast refusals
RESTARTED = ATTACK[-1] + RESTART_PAUSE_S


def _backlog(alert: dict[str, Any] | None, **changes: Any) -> BacklogSeen:
    seen = BacklogSeen(
        before=1,
        stopped_state="inactive",
        stamps=ATTACK,
        restarted=RESTARTED,
        restarted_guest=RESTARTED,
        restarted_state="active",
        alert=alert,
        seen=RESTARTED + 3,
        after=2,
    )
    return dataclasses.replace(seen, **changes)


def _backlog_alert(when: float, observed: float | None) -> dict[str, Any]:
    alert = _alert("BruteForce", when, severity="low", users=[], service="dropbear")
    if observed is not None:
        alert["observed"] = _rfc3339(observed)
    return alert


def test_backlog_alert_dated_by_the_attack_and_observed_after_restart_passes() -> None:
    result = BacklogAfterRestart().judge(
        _backlog(_backlog_alert(ATTACK[4], RESTARTED + 1)), EMBEDDED
    )
    assert result.passed, result.failures()
    assert "exactly one new BruteForce alert" in [c.name for c in result.checks]


def test_observed_is_compared_with_the_guests_own_restart_time() -> None:
    """A busy TCG guest's clock lagged the host's by ~10 s in CI: the alert's `observed`
    (guest clock) is judged against the restart on the guest's clock."""
    lag = 10.0
    observed = RESTARTED - lag + 1  # a second after the restart, on the lagging clock
    seen = _backlog(_backlog_alert(ATTACK[4] - lag, observed), restarted_guest=RESTARTED - lag)
    assert "alert observed after the agent's restart" not in _failed(
        BacklogAfterRestart().judge(seen, EMBEDDED)
    )
    early = _backlog(_backlog_alert(ATTACK[4], RESTARTED - 5), restarted_guest=RESTARTED)
    assert "alert observed after the agent's restart" in _failed(
        BacklogAfterRestart().judge(early, EMBEDDED)
    )


def test_an_agent_that_dates_the_backlog_when_it_reads_it_fails_both_time_checks() -> None:
    """What an agent without log timestamps and without `observed` reports."""
    read_at = RESTARTED + 1.2
    failed = _failed(BacklogAfterRestart().judge(_backlog(_backlog_alert(read_at, None)), EMBEDDED))
    assert failed == [
        "alert time lies within the attack (±2 s)",
        "alert observed after the agent's restart",
    ]


@pytest.mark.parametrize(
    ("when", "passed"),
    [
        (ATTACK[0] - 1.9, True),  # guest clock slightly behind the host's
        (ATTACK[-1] + 1.9, True),
        (ATTACK[0] - 2.1, False),
        (ATTACK[-1] + 2.1, False),
    ],
)
def test_event_time_tolerates_two_seconds_of_clock_difference(when: float, passed: bool) -> None:
    check = checks.time_within(_backlog_alert(when, None), ATTACK[0], ATTACK[-1])
    assert check.passed is passed, check.detail


def test_backlog_counts_only_new_alerts_and_needs_the_service_stopped() -> None:
    alert = _backlog_alert(ATTACK[4], RESTARTED + 1)
    assert _failed(BacklogAfterRestart().judge(_backlog(alert, after=3), EMBEDDED)) == [
        "exactly one new BruteForce alert"
    ]
    still_running = _backlog(alert, stopped_state="active")
    assert _failed(BacklogAfterRestart().judge(still_running, EMBEDDED)) == [
        "agent stopped during the attack"
    ]
    missing = BacklogAfterRestart().judge(_backlog(None, restarted_state="failed"), EMBEDDED)
    assert _failed(missing) == [
        "agent active again after restart",
        "a new BruteForce alert appeared",
    ]


class _FakeGuest:
    """Answers every command with success and records it; nothing listens on its SSH port."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.ssh_port = sock.getsockname()[1]

    def ssh(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        self.commands.append(command)
        return 0, "inactive\n", ""

    def run(self, command: str, timeout: float = 60.0) -> str:
        return self.ssh(command, timeout)[1]


def test_the_agent_is_started_again_when_the_attack_fails() -> None:
    guest = _FakeGuest()
    with pytest.raises(OSError):
        BacklogAfterRestart()._attack_while_stopped(guest)  # type: ignore[arg-type]
    controls = [c for c in guest.commands if "systemctl {" not in c and "exec " in c]
    assert "systemctl stop defender-agent.service" in controls[0]
    assert "/etc/init.d/defender-agent stop" in controls[0]
    assert "systemctl start defender-agent.service" in controls[-1]
    assert "/etc/init.d/defender-agent start" in controls[-1]


# --- (d) user enumeration ------------------------------------------------------------------


def _enumeration(alert: dict[str, Any] | None, after: int) -> Any:
    from defender_tools.scenarios.user_enumeration import EnumerationSeen

    names = ["ubnt", "oracle", "guest", "pi", "test"]
    stamps = [T0 + 3 * n for n in range(5)]
    return EnumerationSeen(0, names, stamps, alert, T0 + 15, after)


def test_user_enumeration_passes_on_one_medium_alert_naming_the_names() -> None:
    from defender_tools.scenarios import UserEnumeration

    alert = _alert(
        "UserEnumeration",
        T0 + 12,
        severity="medium",
        service="sshd",
        users=["guest", "oracle", "pi", "test", "ubnt"],
    )
    result = UserEnumeration().judge(_enumeration(alert, 1), STANDARD)
    assert result.passed, result.failures()
    missing_names = dict(alert, payload={**alert["payload"], "users": ["deploy"]})
    result = UserEnumeration().judge(_enumeration(missing_names, 1), STANDARD)
    assert _failed(result) == ["users include at least 4 of the names tried"]


def test_dropbear_claims_no_enumeration_it_cannot_see() -> None:
    from defender_tools.scenarios import UserEnumeration

    assert UserEnumeration().judge(_enumeration(None, 0), EMBEDDED).passed
    seen = _enumeration(_alert("UserEnumeration", T0 + 12), 1)
    assert _failed(UserEnumeration().judge(seen, EMBEDDED)) == ["no UserEnumeration"]


# --- (e) wrong keys, then the right one ----------------------------------------------------


def test_keys_then_login_passes_only_without_new_failures() -> None:
    from defender_tools.scenarios import KeysThenLogin
    from defender_tools.scenarios.keys_then_login import KeysSeen

    assert KeysThenLogin().judge(KeysSeen(20, 4, True, 20), STANDARD).passed
    counted = KeysThenLogin().judge(KeysSeen(20, 4, True, 24), STANDARD)
    assert _failed(counted) == ["no failed login recorded"]
    assert "4 new login-failed events" in counted.failures()


# --- (f) the slow attacker -----------------------------------------------------------------


def _slow(slow: list[dict[str, Any]], fast: list[dict[str, Any]], statuses: list[int]) -> Any:
    from defender_tools.scenarios import lab
    from defender_tools.scenarios.slow_guessing import SlowSeen

    attempts = [lab.Attempt(T0 + 30 * n, status) for n, status in enumerate(statuses)]
    return SlowSeen(attempts, slow, fast, T0 + 275, T0 + 272)


def _slow_alert(**payload: Any) -> dict[str, Any]:
    fields = {"severity": "low", "service": "sshd", **payload}
    return _alert("BruteForceSlow", T0 + 271, **{**fields, "source": "198.51.100.7"})


def test_slow_guessing_passes_on_one_slow_alert_and_no_fast_one() -> None:
    from defender_tools.scenarios import SlowGuessing

    result = SlowGuessing().judge(_slow([_slow_alert()], [], [255] * 10), STANDARD)
    assert result.passed, result.failures()
    assert result.timings["mean interval s"] == 30.0


def test_slow_guessing_failures() -> None:
    from defender_tools.scenarios import SlowGuessing

    story = SlowGuessing()
    fast = _alert("BruteForce", T0 + 120, source="198.51.100.7")
    assert _failed(story.judge(_slow([_slow_alert()], [fast], [255] * 10), STANDARD)) == [
        "no BruteForce"
    ]
    assert _failed(story.judge(_slow([], [], [255] * 10), STANDARD)) == [
        "BruteForceSlow alert appeared",
        "exactly one BruteForceSlow alert",
    ]
    let_in = story.judge(_slow([_slow_alert()], [], [255] * 9 + [0]), STANDARD)
    assert _failed(let_in) == ["10 attempts made, all refused"]
    early = _slow_alert()
    early = dict(early, time=_rfc3339(T0 + 100))  # dated before the 10th attempt
    assert _failed(story.judge(_slow([early], [], [255] * 10), STANDARD)) == [
        "alert time lies within the attack (±2 s)"
    ]


# --- (g) a key-only server ------------------------------------------------------------------


def _pubkey(brute: list[dict[str, Any]], enum: list[dict[str, Any]]) -> Any:
    from defender_tools.scenarios.pubkey_only import PubkeyOnlySeen

    names = ["root", "operator", "ubnt", "oracle", "pi", "test"]
    return PubkeyOnlySeen(names, [255] * 6, brute, enum, T0 + 15, T0 + 14)


def test_key_only_server_passes_with_brute_force_and_enumeration_under_openssh() -> None:
    from defender_tools.scenarios import PubkeyOnlyServer

    brute = _alert("BruteForce", T0 + 10, source="203.0.113.9", service="sshd")
    enum = _alert(
        "UserEnumeration",
        T0 + 12,
        source="203.0.113.9",
        users=["oracle", "operator", "pi", "root", "test", "ubnt"],
    )
    assert PubkeyOnlyServer().judge(_pubkey([brute], [enum]), STANDARD).passed
    assert _failed(PubkeyOnlyServer().judge(_pubkey([brute], []), STANDARD)) == [
        "UserEnumeration alert appeared",
        "exactly one UserEnumeration alert",
    ]
    assert "BruteForce alert appeared" in _failed(
        PubkeyOnlyServer().judge(_pubkey([], [enum]), STANDARD)
    )


def test_key_only_dropbear_needs_brute_force_and_claims_no_enumeration() -> None:
    from defender_tools.scenarios import PubkeyOnlyServer

    brute = _alert("BruteForce", T0 + 10, source="203.0.113.9", service="dropbear")
    assert PubkeyOnlyServer().judge(_pubkey([brute], []), EMBEDDED).passed
    enum = _alert("UserEnumeration", T0 + 12, source="203.0.113.9")
    assert _failed(PubkeyOnlyServer().judge(_pubkey([brute], [enum]), EMBEDDED)) == [
        "no UserEnumeration"
    ]


def test_lab_commands_quote_hostile_names() -> None:
    from defender_tools.scenarios import lab

    command = lab.password_attempt("198.51.100.7", "x'; reboot; '", "p w", 2222)
    assert "'x'\"'\"'; reboot; '\"'\"''@198.51.100.1" in command
    assert "DFN_PASSWORD='p w'" in command and "-p 2222" in command


# --- (h) processes, connections, listeners, custom rules ----------------------------------


def _activity(**changes: Any) -> Any:
    from defender_tools.scenarios.system_activity import DENIED, FINE, MARK, ActivitySeen

    alerts = [
        {"name": "dfn-denied-program", "executable": DENIED},
        {"name": "dfn-unlisted-program", "executable": DENIED},
        {"name": "dfn-denied-destination", "remote_port": 8443},
        {"name": "dfn-unlisted-destination", "remote_address": "192.0.2.130"},
        {"name": "dfn-inbound", "remote_address": "192.0.2.130"},
        {"name": "dfn-listener", "port": 18080},
        {"name": "dfn-users", "user": "operator"},
        {"name": "dfn-chatty", "_time": T0 + 100},
        {"name": "dfn-console", "_time": T0 + 90},
    ]
    seen = ActivitySeen(
        execs=[
            {
                "cmdline": "sleep 6",
                "parent_cmdline": f"bash -c sleep 6; true {MARK}",
                "executable": "/usr/bin/sleep",
            },
            {"cmdline": f"{FINE} 6", "executable": FINE},
        ],
        connections=[
            {
                "direction": "out",
                "remote_address": "192.0.2.2",
                "remote_port": 8443,
                "executable": "/usr/bin/bash",
                "backend": "sock_diag",
            }
        ],
        attempts=[{"remote_address": "192.0.2.2", "local_port": 18999}],
        listens=[
            {"sockets": [{"protocol": "tcp", "port": 22}, {"protocol": "tcp", "port": 18080}]}
        ],
        alerts=alerts,
        phases={"burst": T0 + 80, "console": T0 + 75},
        statuses={"setup": 0, "spawn": 0},
        logins={"operator": True, "root": True},
    )
    return dataclasses.replace(seen, **changes)


def test_system_activity_passes_on_every_expected_finding() -> None:
    from defender_tools.scenarios.system_activity import SystemActivity

    result = SystemActivity().judge(_activity(), STANDARD)
    assert result.passed, result.failures()


def test_system_activity_names_each_miss() -> None:
    from defender_tools.scenarios.system_activity import FINE, SystemActivity

    seen = _activity()
    noisy = dataclasses.replace(
        seen, alerts=[*seen.alerts, {"name": "dfn-denied-program", "executable": FINE}]
    )
    assert _failed(SystemActivity().judge(noisy, STANDARD)) == [
        "dfn-denied-program: one alert, none on the near miss"
    ]
    early = dataclasses.replace(
        seen, alerts=[*seen.alerts, {"name": "dfn-console", "_time": T0 + 10}]
    )
    assert _failed(SystemActivity().judge(early, STANDARD)) == [
        "dfn-console: one alert, none on the near miss"
    ]
    attempt = "a SYN to a closed port is one connection attempt, to a listening port none"
    for attempts in ([], [*seen.attempts, {"remote_address": "192.0.2.2", "local_port": 18080}]):
        assert _failed(
            SystemActivity().judge(dataclasses.replace(seen, attempts=attempts), STANDARD)
        ) == [attempt]
    no_child = dataclasses.replace(seen, execs=[])
    assert "the shell's child is seen with its parent" in _failed(
        SystemActivity().judge(no_child, STANDARD)
    )


def test_both_init_systems_are_judged_alike() -> None:
    from defender_tools.scenarios.system_activity import SystemActivity

    assert SystemActivity().judge(_activity(), EMBEDDED).passed
    seen = _activity()
    silent = dataclasses.replace(
        seen, alerts=[x for x in seen.alerts if "program" not in str(x["name"])]
    )
    assert "dfn-denied-program: one alert, none on the near miss" in _failed(
        SystemActivity().judge(silent, EMBEDDED)
    )
