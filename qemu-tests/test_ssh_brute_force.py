"""An attacker guesses SSH passwords from the host; the agent raises the right alerts.

The stories and their checks are `defender_tools.scenarios` (the demo runs the first
one too); a test runs one against the profile's guest and asserts that every check
passed, with the failed ones as the message. They share one guest per image profile
and run in file order: the first attack must be seen alone, before the second adds a
successful login and the third restarts the agent.

`admin` does not exist in either image. On the embedded image (Dropbear 2022.83) the
first story proves the agent ties the address-less "Login attempt for nonexistent
user" line to the connection's address by PID; Dropbear never logs that user's name
(not in that line, not in the exit line), so the alert's users list is exactly empty
there, and exactly ["admin"] under OpenSSH.

Two attackers run inside the guest from addresses of their own (scenarios.lab): the
slow one starts before the first story and is judged by the last (its ten attempts take
five minutes, spent alongside the others), and the key-only server's.
"""

from __future__ import annotations

from typing import Any

import pytest
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import (
    BacklogAfterRestart,
    KeysThenLogin,
    LoginAfterGuessing,
    PasswordGuessing,
    PubkeyOnlyServer,
    Scenario,
    SlowGuessing,
    UserEnumeration,
)

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1200)]


def _play(scenario: Scenario[Any], guest: Guest, profile: Profile) -> None:
    result = scenario.run(guest, profile)
    print(f"\n{profile.name}: {result.report()}")
    assert result.passed, result.failures()


@pytest.fixture(scope="module")
def slow_attacker(guest: Guest) -> SlowGuessing:
    """The slow attacker, started once per guest before the first story of this file."""
    story = SlowGuessing()
    story.begin(guest)
    return story


@pytest.fixture(autouse=True)
def _slow_attack_runs_alongside(slow_attacker: SlowGuessing) -> None:
    """Every story here runs while the slow attacker works on its own address."""


def test_password_guessing_raises_one_brute_force_alert(guest: Guest, profile: Profile) -> None:
    _play(PasswordGuessing(user="admin", attempts=8), guest, profile)


def test_login_after_guessing_raises_brute_force_success(guest: Guest, profile: Profile) -> None:
    _play(LoginAfterGuessing(), guest, profile)


def test_attack_while_stopped_is_reported_after_restart(guest: Guest, profile: Profile) -> None:
    _play(BacklogAfterRestart(user="deploy", attempts=6), guest, profile)


def test_many_user_names_raise_user_enumeration(guest: Guest, profile: Profile) -> None:
    _play(UserEnumeration(), guest, profile)


def test_wrong_keys_before_the_right_one_are_no_failures(guest: Guest, profile: Profile) -> None:
    _play(KeysThenLogin(), guest, profile)


def test_key_only_server_attacked_with_many_names(guest: Guest, profile: Profile) -> None:
    _play(PubkeyOnlyServer(), guest, profile)


def test_slow_attacker_raises_brute_force_slow_only(
    slow_attacker: SlowGuessing, guest: Guest, profile: Profile
) -> None:
    _play(slow_attacker, guest, profile)
