"""An attacker guesses SSH passwords from the host; the agent raises the right alerts.

These tests share one guest per image profile and run in file order: the first
attack must be seen alone, before the second scenario adds a successful login.
`admin` does not exist in either image. On the embedded image (Dropbear 2022.83)
the first story proves the agent ties the address-less "Login attempt for
nonexistent user" line to the connection's address by PID; Dropbear never logs
that user's name (not in that line, not in the exit line), so the alert's users
list is exactly empty there, and exactly ["admin"] under OpenSSH.
"""

from __future__ import annotations

import time

import pytest
from defender_tools import guest_agent
from defender_tools.images.debian import OPERATOR_PASSWORD, OPERATOR_USER, Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios.ssh_brute_force import (
    failed_password_attempts,
    iter_failed_password_attempts,
    try_password,
)

ATTACKER = "10.0.2.2"  # every host connection, as seen inside QEMU user networking
LATENCY_LIMIT_S = 10.0

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1200)]


def test_password_guessing_raises_one_brute_force_alert(guest: Guest, profile: Profile) -> None:
    assert guest_agent.named(guest_agent.alerts(guest), "BruteForce") == []

    attack = iter_failed_password_attempts(guest.ssh_port, "admin", count=8)
    attempts, alert, seen = guest_agent.watch_attack(guest, "BruteForce", attack)

    assert alert is not None, "no BruteForce alert"
    print(f"\nBruteForce seen {seen - attempts[4]:+.2f} s after the 5th failed attempt")
    assert seen > attempts[3], "alert before the 5th failure: an attempt was counted twice"
    assert seen - attempts[-1] <= LATENCY_LIMIT_S
    payload = alert["payload"]
    assert payload["source"] == ATTACKER
    assert payload["users"] == (["admin"] if profile.logs_unknown_user_names else [])
    assert payload["service"] == profile.ssh_service
    assert payload["severity"] == "low"
    assert alert["schema"] == "defender/1" and alert["type"] == "alert"
    time.sleep(2)  # a duplicate would show up by now
    records = guest_agent.alerts(guest)
    assert len(guest_agent.named(records, "BruteForce")) == 1
    assert guest_agent.named(records, "BruteForceSuccess") == []


def test_login_after_guessing_raises_brute_force_success(guest: Guest, profile: Profile) -> None:
    failed_password_attempts(guest.ssh_port, OPERATOR_USER, count=6)

    assert try_password(guest.ssh_port, OPERATOR_USER, OPERATOR_PASSWORD)
    alert, _seen = guest_agent.wait_for_alert(guest, "BruteForceSuccess", timeout=30)

    payload = alert["payload"]
    assert payload["severity"] == "high"
    assert payload["user"] == OPERATOR_USER
    assert payload["source"] == ATTACKER
    assert payload["service"] == profile.ssh_service
    time.sleep(2)
    assert len(guest_agent.named(guest_agent.alerts(guest), "BruteForceSuccess")) == 1
