"""Every check a scenario makes, written once: each returns a `Check` from what was seen.

Times named `seen`, `stamps`, `restarted` are host wall-clock seconds (time.time());
an alert's `time` and `observed` are the agent's RFC 3339 UTC strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from defender_tools.images.debian import Profile
from defender_tools.scenarios.base import Check

ATTACKER_SOURCE = "10.0.2.2"  # QEMU user networking: every host connection comes from here
MAX_FAILURES = 5  # the agent's default brute-force threshold: the 5th failure crosses it
LATENCY_LIMIT = 10.0  # seconds from the last attempt to a visible alert
CLOCK_TOLERANCE = 2.0  # seconds the guest's clock may differ from the host's
SETTLE_S = 2.0  # after an alert, a duplicate would show up within this
SCHEMA = "defender/1"
BRUTE_FORCE = "BruteForce"
BRUTE_FORCE_SUCCESS = "BruteForceSuccess"
BRUTE_FORCE_SLOW = "BruteForceSlow"
USER_ENUMERATION = "UserEnumeration"

Alert = dict[str, Any]


def _payload(alert: Alert) -> dict[str, Any]:
    payload = alert.get("payload")
    return payload if isinstance(payload, dict) else {}


def _field(alert: Alert, key: str, expected: object) -> tuple[bool, str]:
    value = _payload(alert).get(key)
    return value == expected, f"got {value!r}"


def _not_a_time(alert: Alert, key: str) -> str:
    if key not in alert:
        return f"the alert has no `{key}` field"
    return f"{key} {alert[key]!r} is not RFC 3339 UTC"


def parse_time(text: object) -> float | None:
    """An RFC 3339 time as the agent writes it (2026-11-27T08:00:00.123Z); None if not one."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _utc(ts: float) -> str:
    """Time of day in UTC with milliseconds, as in the agent's records."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


# --- the guest -----------------------------------------------------------------------------


def service_active(state: str, name: str = "agent service active") -> Check:
    return Check(name, state == "active", f"state {state!r}")


def service_stopped(state: str) -> Check:
    return Check("agent stopped during the attack", state != "active", f"state {state!r}")


def login_accepted(user: str, accepted: bool) -> Check:
    return Check(f"the right password lets {user!r} in", accepted)


# --- which alerts exist --------------------------------------------------------------------


def appeared(name: str, alert: Alert | None, what: str = "") -> Check:
    return Check(f"{what or name} alert appeared", alert is not None)


def none_before(name: str, before: int) -> Check:
    return Check(f"no {name} before the attack", before == 0, f"{before} before")


def exactly_one_new(name: str, before: int, after: int) -> Check:
    """Exactly one more alert NAME than before the story: none missed, none repeated."""
    label = f"exactly one {name} alert" if before == 0 else f"exactly one new {name} alert"
    return Check(label, after - before == 1, f"{before} before, {after} after")


def none_of(name: str, count: int) -> Check:
    return Check(f"no {name}", count == 0, f"{count} seen")


# --- what the alert says -------------------------------------------------------------------


def is_alert_record(alert: Alert) -> Check:
    ok = alert.get("schema") == SCHEMA and alert.get("type") == "alert"
    return Check(f"a {SCHEMA} alert record", ok, f"schema {alert.get('schema')!r}")


def source_is(alert: Alert, source: str = ATTACKER_SOURCE) -> Check:
    return Check(f"source is {source}", *_field(alert, "source", source))


def service_is(alert: Alert, profile: Profile) -> Check:
    service = profile.ssh_service
    return Check(f"service is {service}", *_field(alert, "service", service))


def severity_is(alert: Alert, severity: str) -> Check:
    return Check(f"severity is {severity}", *_field(alert, "severity", severity))


def user_is(alert: Alert, user: str) -> Check:
    return Check(f"user is {user!r}", *_field(alert, "user", user))


def users_are(alert: Alert, user: str, user_exists: bool, profile: Profile) -> Check:
    """The guessed name is listed, unless the SSH server never logs it (Dropbear 2022.83
    logs no name for a nonexistent user, so the alert's list is exactly empty there)."""
    if user_exists or profile.logs_unknown_user_names:
        return Check(f"users is [{user!r}]", *_field(alert, "users", [user]))
    return Check("users is [] (unknown names are not logged)", *_field(alert, "users", []))


# --- when ----------------------------------------------------------------------------------


def not_before_attempt(seen: float, stamps: list[float], attempt: int = MAX_FAILURES) -> Check:
    """Sooner would mean one attempt was counted twice (e.g. its btmp record and its line)."""
    ok = len(stamps) >= attempt and seen > stamps[attempt - 2]
    return Check(f"alert not before failed attempt {attempt}", ok)


def within_latency(seen: float, last: float, limit: float = LATENCY_LIMIT) -> Check:
    return Check(
        f"alert within {limit:.0f} s of the last attempt",
        seen - last <= limit,
        f"{seen - last:+.2f} s",
    )


def time_within(alert: Alert, start: float, end: float, slack: float = CLOCK_TOLERANCE) -> Check:
    """The alert's `time` is the time of the attack it reports, not the time it was read."""
    name = f"alert time lies within the attack (±{slack:.0f} s)"
    when = parse_time(alert.get("time"))
    if when is None:
        return Check(name, False, _not_a_time(alert, "time"))
    detail = f"time {_utc(when)}, attack {_utc(start)} to {_utc(end)} (host)"
    return Check(name, start - slack <= when <= end + slack, detail)


def observed_after(
    alert: Alert, restarted: float, clock: str = "host", slack: float = CLOCK_TOLERANCE
) -> Check:
    """The alert's `observed` is when the agent raised it: after its restart (taken on
    CLOCK: the guest's own clock where it could be read, since a busy TCG guest's clock
    can lag the host's by seconds)."""
    name = "alert observed after the agent's restart"
    when = parse_time(alert.get("observed"))
    if when is None:
        return Check(name, False, _not_a_time(alert, "observed"))
    detail = f"observed {_utc(when)}, restart {_utc(restarted)} ({clock})"
    return Check(name, when >= restarted - slack, detail)


def users_include(alert: Alert, names: list[str], at_least: int) -> Check:
    """The alert names at least AT_LEAST of NAMES among its `users`."""
    users = _payload(alert).get("users")
    found = [n for n in names if isinstance(users, list) and n in users]
    return Check(
        f"users include at least {at_least} of the names tried",
        len(found) >= at_least,
        f"got {users!r}",
    )


def from_source(records: list[Alert], name: str, source: str) -> list[Alert]:
    """The alerts NAME whose source is SOURCE."""
    return [
        r
        for r in records
        if _payload(r).get("name") == name and _payload(r).get("source") == source
    ]


def all_refused(statuses: list[int], expected: int) -> Check:
    """Every in-guest attempt was made and refused (ssh exits 255 when denied)."""
    refused = sum(1 for status in statuses if status != 0)
    return Check(
        f"{expected} attempts made, all refused",
        len(statuses) == expected and refused == expected,
        f"{len(statuses)} made, {refused} refused",
    )
