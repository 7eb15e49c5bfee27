"""Parsing what the agent's CLI prints inside the guest."""

from __future__ import annotations

import json

import pytest

from defender_tools import guest_agent

ALERT = {
    "schema": "defender/1",
    "type": "alert",
    "device_id": "d",
    "agent_version": "0.1.0",
    "time": "2026-11-27T08:00:00.123Z",
    "payload": {"name": "BruteForce", "severity": "low", "source": "10.0.2.2"},
}


def test_json_lines_and_arrays_both_parse() -> None:
    lines = json.dumps(ALERT) + "\n\n" + json.dumps({**ALERT, "payload": {"name": "X"}}) + "\n"
    assert [r["payload"]["name"] for r in guest_agent.parse_records(lines)] == ["BruteForce", "X"]
    assert guest_agent.parse_records(json.dumps([ALERT])) == [ALERT]
    assert guest_agent.parse_records("  \n") == []


def test_named_filters_by_payload_name() -> None:
    records = [ALERT, {**ALERT, "payload": {"name": "BruteForceSuccess"}}]
    assert guest_agent.named(records, "BruteForceSuccess") == [records[1]]
    assert guest_agent.named(records, "Nope") == []


def test_garbage_is_an_error() -> None:
    with pytest.raises(ValueError):
        guest_agent.parse_records("Traceback (most recent call last):")


class _AlertsGuest:
    """`defender-agent alerts --json` answers from a script: one list of alerts per call."""

    def __init__(self, answers: list[list[dict[str, object]]]) -> None:
        self.answers = answers
        self.calls = 0

    def ssh(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        assert command == "defender-agent alerts --json"
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return 0, "".join(json.dumps(r) + "\n" for r in answer), ""


def test_wait_for_alert_returns_the_first_new_one() -> None:
    second = {**ALERT, "time": "2026-11-27T08:05:00.000Z"}
    guest = _AlertsGuest([[ALERT], [ALERT], [ALERT, second]])
    alert, seen = guest_agent.wait_for_alert(guest, "BruteForce", interval=0, known=1)  # type: ignore[arg-type]
    assert alert == second and seen > 0 and guest.calls == 3


def test_wait_for_alert_gives_none_after_the_timeout() -> None:
    guest = _AlertsGuest([[ALERT]])
    alert, seen = guest_agent.wait_for_alert(guest, "BruteForce", timeout=0, interval=0, known=1)  # type: ignore[arg-type]
    assert (alert, seen) == (None, 0.0)
