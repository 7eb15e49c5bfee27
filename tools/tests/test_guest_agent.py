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
