"""Brute-force detector, driven with explicit event times."""

from __future__ import annotations

from typing import Any

from defender_agent.detectors.brute_force import BruteForceDetector
from defender_agent.model import Record, login_event

T0 = 1_795_000_000.0


def failure(
    t: float, source: str | None = "10.0.2.2", user: str = "admin", service: str = "sshd"
) -> Record:
    return login_event(
        "login-failed",
        user=user,
        source=source,
        port=40000,
        service=service,
        pid=1,
        tty=None,
        origin="authlog",
        time=T0 + t,
    )


def login(t: float, source: str | None = "10.0.2.2", user: str = "root") -> Record:
    return login_event(
        "login",
        user=user,
        source=source,
        port=40000,
        service="sshd",
        pid=1,
        tty=None,
        origin="authlog",
        time=T0 + t,
    )


def feed(det: BruteForceDetector, records: list[Record]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        out.extend(a.payload for a in det.process(r))
    return out


def test_five_failures_raise_one_alert_and_eight_still_one() -> None:
    det = BruteForceDetector(max_failures=5, window=60)
    users = ["admin", "root", "pi", "admin", "ubnt"]
    alerts = feed(det, [failure(i, user=users[i]) for i in range(5)])
    assert len(alerts) == 1
    a = alerts[0]
    assert (a["name"], a["severity"], a["source"], a["count"], a["service"]) == (
        "BruteForce",
        "low",
        "10.0.2.2",
        5,
        "sshd",
    )
    assert a["users"] == ["admin", "pi", "root", "ubnt"]
    assert a["first_seen"].endswith("Z") and a["first_seen"] < a["last_seen"]
    assert feed(det, [failure(5 + i) for i in range(3)]) == []


def test_near_miss_four_failures() -> None:
    det = BruteForceDetector(max_failures=5, window=60)
    assert feed(det, [failure(i) for i in range(4)]) == []


def test_failures_spread_beyond_window_never_alert() -> None:
    det = BruteForceDetector(max_failures=5, window=60)
    assert feed(det, [failure(i * 16) for i in range(10)]) == []  # 5 span 64 s > 60 s


def test_new_burst_after_quiet_window_alerts_again() -> None:
    det = BruteForceDetector(max_failures=5, window=60)
    assert len(feed(det, [failure(i) for i in range(5)])) == 1
    assert feed(det, [failure(30 + i) for i in range(5)]) == []  # still the same burst
    assert len(feed(det, [failure(200 + i) for i in range(5)])) == 1  # quiet > 60 s before


def test_sources_are_counted_separately_and_local_by_service() -> None:
    det = BruteForceDetector(max_failures=3, window=60)
    mixed = [failure(i, source=f"10.0.2.{i % 2 + 2}") for i in range(4)]
    assert feed(det, mixed) == []
    local = feed(
        det, [failure(10 + i, source=None, service="login", user="root") for i in range(3)]
    )
    assert len(local) == 1 and local[0]["source"] is None and local[0]["service"] == "login"


def test_success_after_burst_is_high() -> None:
    det = BruteForceDetector(max_failures=5, window=60, success_window=600)
    feed(det, [failure(i) for i in range(7)])
    alerts = feed(det, [login(300, user="root")])
    assert len(alerts) == 1
    a = alerts[0]
    assert (a["name"], a["severity"], a["user"], a["source"], a["count"]) == (
        "BruteForceSuccess",
        "high",
        "root",
        "10.0.2.2",
        7,
    )
    assert feed(det, [login(301)]) == []  # one success alert per burst


def test_success_without_burst_or_too_late_is_quiet() -> None:
    det = BruteForceDetector(max_failures=5, window=60, success_window=600)
    feed(det, [failure(i) for i in range(4)])
    assert feed(det, [login(10)]) == []
    det2 = BruteForceDetector(max_failures=5, window=60, success_window=600)
    feed(det2, [failure(i) for i in range(5)])
    assert feed(det2, [login(1000)]) == []


def test_clock_stepping_back_does_not_break_ordering() -> None:
    det = BruteForceDetector(max_failures=3, window=60)
    assert len(feed(det, [failure(100), failure(101), failure(-500)])) == 1


def test_bounded_sources_evict_oldest() -> None:
    det = BruteForceDetector(max_failures=5, window=60, max_sources=16)
    feed(det, [failure(i * 0.01, source=f"192.0.2.{i}") for i in range(40)])
    stats = det.statistics()
    assert stats["tracked"] == 16 and stats["evicted"] == 24
