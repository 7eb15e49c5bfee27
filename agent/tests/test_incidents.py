"""detectors/incidents.py: one alert per incident, updated rather than repeated, on the
events' own time."""

from __future__ import annotations

from defender_agent.detectors.incidents import MAX_KEY, Incidents
from defender_agent.model import rfc3339


def find(inc: Incidents, key: str, when: float, **evidence: object) -> list[dict[str, object]]:
    records = inc.found("PortScan", key, when, "medium", "a scan", "block it", dict(evidence))
    assert all(r.type == "alert" and r.time is not None for r in records)
    return [r.payload for r in records]


def test_the_first_finding_raises_later_ones_are_counted_then_updated() -> None:
    inc = Incidents(quiet=600, update_every=60)
    (first,) = find(inc, "198.51.100.7", 1000.0, ports=12)
    assert first["name"] == "PortScan" and first["count"] == 1 and "update" not in first
    assert (first["severity"], first["description"], first["remediation"]) == (
        "medium",
        "a scan",
        "block it",
    )
    assert first["first_seen"] == first["last_seen"] == rfc3339(1000.0)
    assert first["ports"] == 12
    for n in range(1, 59):  # a finding a second: counted, not written
        assert find(inc, "198.51.100.7", 1000.0 + n, ports=12 + n) == []
    (update,) = find(inc, "198.51.100.7", 1060.0, ports=80)
    assert update["id"] == first["id"] and update["update"] is True
    assert update["count"] == 60 and update["ports"] == 80
    assert update["first_seen"] == rfc3339(1000.0) and update["last_seen"] == rfc3339(1060.0)
    assert find(inc, "198.51.100.7", 1061.0) == []  # the next update is a minute away
    assert inc.counts == {"alerts": 1, "updates": 1, "findings": 61, "incidents-forgotten": 0}


def test_quiet_ends_an_incident_and_keys_are_separate() -> None:
    inc = Incidents(quiet=600, update_every=60)
    (a,) = find(inc, "198.51.100.7", 0.0)
    (b,) = find(inc, "203.0.113.9", 1.0)
    assert a["id"] != b["id"]
    assert inc.is_open("PortScan", "198.51.100.7", 600.0)
    assert not inc.is_open("PortScan", "198.51.100.7", 600.5)
    (again,) = find(inc, "198.51.100.7", 601.0)  # quiet for more than 600 s: new incident
    assert again["id"] != a["id"] and again["count"] == 1
    inc.prune(1300.0)
    assert len(inc) == 0


def test_ids_are_the_same_for_the_same_incident_in_a_replay() -> None:
    one, two = Incidents(), Incidents()
    assert find(one, "k", 5.5)[0]["id"] == find(two, "k", 5.5)[0]["id"]


def test_memory_is_bounded_and_hostile_keys_are_capped() -> None:
    inc = Incidents(max_incidents=8)
    for n in range(20):
        find(inc, f"{n}" + "x" * 10_000, float(n))
    assert len(inc) == 8 and inc.counts["incidents-forgotten"] == 12
    assert all(len(key) <= MAX_KEY for _name, key in inc._open)
    # a late finding (older than the newest) still belongs to its incident
    inc2 = Incidents()
    find(inc2, "k", 100.0)
    assert find(inc2, "k", 90.0) == []
