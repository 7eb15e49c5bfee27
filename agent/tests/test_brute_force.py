"""Brute-force detector, driven with explicit event times on a virtual clock."""

from __future__ import annotations

import json
from typing import Any

from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.detectors.brute_force import MAX_SAVED_SOURCES, BruteForceDetector
from defender_agent.model import Record, login_event

T0 = 1_795_000_000.0


def detector(clock: ManualClock | None = None, **settings: Any) -> BruteForceDetector:
    """A detector whose clock reads T0 + 10 min unless given one (events are not late)."""
    agent = Agent("t", clock or ManualClock(T0 + 600))
    return BruteForceDetector(agent.context("detectors", "brute_force"), **settings)


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
    det = detector(max_failures=5, window=60)
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
    det = detector(max_failures=5, window=60)
    assert feed(det, [failure(i) for i in range(4)]) == []


def test_failures_spread_beyond_window_are_no_fast_burst() -> None:
    det = detector(max_failures=5, window=60, slow_max_failures=0)
    assert feed(det, [failure(i * 16) for i in range(10)]) == []  # 5 span 64 s > 60 s


def test_a_slow_attacker_raises_brute_force_slow_once() -> None:
    """One guess every 30 s: never 5 in a minute, but 10 in 10 minutes."""
    det = detector(max_failures=5, window=60, slow_max_failures=10, slow_window=600)
    alerts = feed(det, [failure(i * 30) for i in range(30)])
    assert [a["name"] for a in alerts] == ["BruteForceSlow"]
    assert alerts[0]["count"] == 10 and alerts[0]["last_seen"] > alerts[0]["first_seen"]
    # quiet for longer than the slow window: the next slow attack is a new incident
    assert [a["name"] for a in feed(det, [failure(2000 + i * 30) for i in range(10)])] == [
        "BruteForceSlow"
    ]


def test_a_fast_burst_is_not_reported_again_as_slow() -> None:
    det = detector(max_failures=5, window=60, slow_max_failures=10, slow_window=600)
    alerts = feed(det, [failure(i) for i in range(12)])
    assert [a["name"] for a in alerts] == ["BruteForce"]
    assert det.statistics()["slow_within_fast"] == 1


def test_many_user_names_from_one_source_is_user_enumeration() -> None:
    det = detector(max_failures=50, window=60, enumeration_users=5, enumeration_window=600)
    names = ["root", "admin", "root", "pi", "ubnt", "oracle", "test", "git"]
    alerts = feed(det, [failure(i * 20, user=name) for i, name in enumerate(names)])
    (alert,) = alerts
    assert (alert["name"], alert["severity"]) == ("UserEnumeration", "medium")
    assert alert["users"] == ["admin", "oracle", "pi", "root", "ubnt"]
    # one user mistyping a password many times is no enumeration
    det2 = detector(max_failures=50, window=60, enumeration_users=5)
    repeated = feed(det2, [failure(i * 20, user="alice") for i in range(20)])
    assert "UserEnumeration" not in [a["name"] for a in repeated]


def test_new_burst_after_quiet_window_alerts_again() -> None:
    det = detector(max_failures=5, window=60)
    assert len(feed(det, [failure(i) for i in range(5)])) == 1
    assert feed(det, [failure(30 + i) for i in range(5)]) == []  # still the same burst
    assert len(feed(det, [failure(200 + i) for i in range(5)])) == 1  # quiet > 60 s before


def test_sources_are_counted_separately_and_local_by_service() -> None:
    det = detector(max_failures=3, window=60)
    mixed = [failure(i, source=f"10.0.2.{i % 2 + 2}") for i in range(4)]
    assert feed(det, mixed) == []
    local = feed(
        det, [failure(10 + i, source=None, service="login", user="root") for i in range(3)]
    )
    assert len(local) == 1 and local[0]["source"] is None and local[0]["service"] == "login"


def test_success_after_burst_is_high() -> None:
    det = detector(max_failures=5, window=60, success_window=600)
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
    det = detector(max_failures=5, window=60, success_window=600)
    feed(det, [failure(i) for i in range(4)])
    assert feed(det, [login(10)]) == []
    det2 = detector(max_failures=5, window=60, success_window=600)
    feed(det2, [failure(i) for i in range(5)])
    assert feed(det2, [login(1000)]) == []


def test_out_of_order_failures_take_their_place_in_time() -> None:
    det = detector(max_failures=3, window=60)
    (alert,) = feed(det, [failure(100), failure(102), failure(101)])
    assert alert["count"] == 3 and alert["last_seen"] > alert["first_seen"]


def test_backlog_spread_over_hours_is_no_burst() -> None:
    """Five failures stamped 10:00 to 14:00, read in one go (the agent was down): no alert."""
    clock = ManualClock(T0 + 5 * 3600)
    det = detector(clock, max_failures=5, window=60)
    assert feed(det, [failure(i * 3600) for i in range(5)]) == []
    assert det.statistics()["late"] == 5


def test_backlog_burst_read_late_is_one_alert_dated_in_its_time() -> None:
    """The same five failures 10 s apart, read an hour later: one alert, at the 5th."""
    det = detector(ManualClock(T0 + 3600), max_failures=5, window=60)
    records = [failure(i * 10) for i in range(5)]
    alerts = [a for r in records for a in det.process(r)]
    assert len(alerts) == 1 and alerts[0].time == T0 + 40
    assert det.statistics()["late"] == 5


def test_a_late_failure_does_not_open_a_burst_with_the_present() -> None:
    det = detector(ManualClock(T0 + 3600), max_failures=3, window=60)
    live = [failure(3590), failure(3595)]
    assert feed(det, [*live, failure(100)]) == []  # two live, one an hour old
    assert len(feed(det, [failure(3598)])) == 1  # the third live one crosses


def test_idle_sources_are_pruned_by_the_clock() -> None:
    clock = ManualClock(T0 + 10)
    agent = Agent("t", clock)
    det = BruteForceDetector(agent.context("detectors", "brute_force"), window=60)
    agent.add("detectors", det)
    agent.start()
    feed(det, [failure(i) for i in range(3)])
    agent.advance(599)
    assert det.statistics()["tracked"] == 1  # a BruteForceSuccess may still follow
    agent.advance(601)
    assert det.statistics()["tracked"] == 0 and det.statistics()["pruned"] == 1
    agent.shutdown()


def test_bounded_sources_evict_oldest() -> None:
    det = detector(max_failures=5, window=60, max_sources=16)
    feed(det, [failure(i * 0.01, source=f"192.0.2.{i}") for i in range(40)])
    stats = det.statistics()
    assert stats["tracked"] == 16 and stats["evicted"] == 24


def test_table_stays_within_its_byte_budget_under_a_flood() -> None:
    """20,480 failures from 4,096 sources with the longest user names the parser lets
    through: the table holds what fits in max_bytes, and its own accounting is honest
    (checked against what tracemalloc sees it allocate)."""
    import tracemalloc

    budget = 256 * 1024
    det = detector(max_failures=5, window=60, max_sources=4096, max_bytes=budget)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(20480):
        source, user = f"10.{n % 4096 >> 8}.{n % 256}.1", f"u{n}".ljust(64, "x") + "\u2026"
        det.process(failure(n * 0.001, source=source, user=user))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = det.statistics()
    assert stats["bytes"] <= budget and stats["evicted"] > 0
    assert used < budget * 1.25, f"accounting says {stats['bytes']} B, allocations {used} B"
    assert stats["bytes"] > used * 0.6, "the cost constants overstate a source's size"


def test_a_restart_that_replays_the_burst_raises_no_second_alert() -> None:
    """kill -9 after the alert: the agent re-reads up to a second of input on restart.
    The incident is in the saved state, so the replayed failures raise nothing; a new
    burst after a quiet window still does."""
    det = detector(max_failures=5, window=60, success_window=600)
    burst = [failure(i) for i in range(6)]
    assert len(feed(det, burst)) == 1
    assert len(feed(det, [login(10)])) == 1  # BruteForceSuccess
    saved = det.save_state()
    again = detector(max_failures=5, window=60, success_window=600)
    again.restore(saved)
    assert feed(again, [*burst, login(10)]) == []
    assert again.statistics()["replayed"] == 2
    assert len(feed(again, [failure(500 + i) for i in range(5)])) == 1
    broken = detector()
    broken.restore(
        {
            "raised": [["x", "not a time"], "junk", [1, 2]],
            "sources": [["k"], "junk", ["k", "sshd", "x", 0, [], None, [], [], []]],
        }
    )  # damaged state
    assert broken.save_state() == {"raised": [], "sources": []}


def test_a_restart_keeps_the_attackers_count() -> None:
    """The windows of active sources are saved: failures before a restart still count
    with those after it, for the fast, slow and enumeration rules alike."""
    first = detector(max_failures=5, window=60)
    assert feed(first, [failure(i) for i in range(3)]) == []
    slow = [failure(100 + 30 * i, source="198.51.100.7", user="operator") for i in range(10)]
    names = [failure(900 + i, source="203.0.113.9", user=f"u{i}") for i in range(5)]
    assert feed(first, slow[:6] + names[:2]) == []
    saved = json.loads(json.dumps(first.save_state()))  # as state.json holds it

    second = detector(max_failures=5, window=60)
    second.restore(saved)
    fast = feed(second, [failure(3), failure(4)])
    assert [a["name"] for a in fast] == ["BruteForce"] and fast[0]["count"] == 5
    assert [a["name"] for a in feed(second, slow[6:])] == ["BruteForceSlow"]
    enumeration = feed(second, names[2:])
    assert "UserEnumeration" in [a["name"] for a in enumeration]


def test_only_the_most_recent_sources_are_saved() -> None:
    det = detector(max_failures=5, window=60)
    for n in range(200):
        feed(det, [failure(n, source=f"192.0.2.{n % 250}")])
    saved = det.save_state()["sources"]
    assert len(saved) == MAX_SAVED_SOURCES
    assert saved[-1][0] == "192.0.2.199" and saved[0][0] == "192.0.2.136"
